"""Reports from MLflow: trial runs written in the docs/ARCHITECTURE.md schema into a SQLite store, read back."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest


from mlflow.entities import Metric, RunTag  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from orchestrator.__main__ import main  # noqa: E402
from reports.collect import ReportInputError, collect_mlflow, default_tracking_uri  # noqa: E402
from reports.tables import build_table, render_markdown  # noqa: E402

DOMAINS = ["C", "B", "M", "S", "AN", "AS", "AR", "AF"]
SWEEP = "mini_ablation"


def _miou(i: int, seed: int, d: int) -> float:
    """Deterministic, distinct, non-round numbers (percent)."""
    return round(10.0 + 3.17 * i + 0.731 * d + 0.19 * seed + 0.0037 * (i * d), 6)


def populate(
    run_dir: Path,
    *,
    seeds=(0,),
    fail: tuple[int, str] | None = None,
    losses: bool = True,
    sweep: str = SWEEP,
    uri: str | None = None,
) -> dict[str, dict]:
    """Write a parent sweep run and 4 × len(seeds) trial runs; returns trial id -> {"metrics", "labels", "run_id"}."""
    run_dir.mkdir(parents=True, exist_ok=True)
    uri = uri or default_tracking_uri(run_dir)
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment(sweep, artifact_location=(run_dir / "mlartifacts").absolute().as_uri())
    parent = client.create_run(exp, tags={"famix.sweep": sweep, "famix.role": "sweep"}).info.run_id
    truth: dict[str, dict] = {}
    grid = [("✗", "✗"), ("✗", "✓"), ("✓", "✗"), ("✓", "✓")]
    index = 0
    for i, (freeze, mix) in enumerate(grid):
        for seed in seeds:
            trial = f"t-{i:02d}{seed:02d}abcdef"
            labels = {"Freeze": freeze, "Mix": mix}
            tags = {
                "mlflow.parentRunId": parent,
                "famix.sweep": sweep,
                "famix.role": "trial",
                "famix.trial": trial,
                "famix.trial_index": str(index),
                "famix.seed": str(seed),
                "famix.labels": json.dumps(labels, ensure_ascii=False),
                "famix.domains": json.dumps(DOMAINS),
                "famix.status": "done",
                "famix.stage.train": f"key{i}{seed}",
                **{f"famix.label.{k}": v for k, v in labels.items()},
            }
            run = client.create_run(exp, tags=tags, run_name=trial).info.run_id
            now = int(time.time() * 1000)
            metrics = {f"miou/{d}": _miou(i, seed, j) for j, d in enumerate(DOMAINS)}
            if fail is not None and fail[0] == index:
                del metrics[f"miou/{fail[1]}"]
                client.set_tag(run, "famix.status", "failed")
            batch = [Metric(k, v, now, 0) for k, v in metrics.items()]
            batch.append(Metric("miou/mean", sum(metrics.values()) / len(metrics), now, 0))
            if losses:
                batch += [Metric("train/loss", 3.0 / (s + 1) + 0.1 * i, now + s, s * 10) for s in range(5)]
            client.log_batch(run, metrics=batch, params=[], tags=[RunTag("famix.backend", "local")])
            client.set_terminated(run)
            truth[trial] = {"metrics": metrics, "labels": labels, "run_id": run, "seed": seed}
            index += 1
    client.set_terminated(parent)
    return truth


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[Path, dict]:
    run_dir = tmp_path_factory.mktemp("mlf") / "runs"
    return run_dir, populate(run_dir, seeds=(0, 1), fail=(3, "AN"))


def test_collect_equals_mlflow_metrics(store):
    run_dir, truth = store
    rs = collect_mlflow(SWEEP, tracking_uri=default_tracking_uri(run_dir))
    assert rs.label_columns == ["Freeze", "Mix"] and rs.domains == DOMAINS
    assert len(rs.runs) == len(truth) and rs.runs["trial_index"].is_monotonic_increasing
    for _, row in rs.runs.iterrows():
        ref = truth[row["trial"]]
        for d in DOMAINS:
            if f"miou/{d}" in ref["metrics"]:
                assert row[d] == ref["metrics"][f"miou/{d}"]
            else:
                assert pd.isna(row[d]) and row["status"] == "failed"
        assert row["run_id"] == ref["run_id"] and row["train_key"].startswith("key")


def test_table_numbers_from_mlflow(store):
    run_dir, truth = store
    table = build_table(collect_mlflow(SWEEP, tracking_uri=default_tracking_uri(run_dir)))
    assert len(table.rows) == 4 and all(r.n == 2 for r in table.rows)
    for r_i, row in enumerate(table.rows):
        trials = [t for t in truth.values() if t["labels"] == row.labels]
        for d in DOMAINS:
            vals = [t["metrics"][f"miou/{d}"] for t in trials if f"miou/{d}" in t["metrics"]]
            assert row.cells[d].mean == pytest.approx(sum(vals) / len(vals), abs=1e-9)
            assert row.cells[d].n == len(vals)
    md = render_markdown(table)
    assert all(c.mean is not None for r in table.rows for c in r.cells.values())  # one seed missing AN still leaves a value (n=1) for that cell
    assert "| ✗ | ✓ | 1–2 |" in md  # that row's n: its AN cell averages one run, the others two
    assert "seed 1: failed (no mIoU for AN)" in md
    last = table.rows[-1]
    assert last.cells["C"].mark == "best" and table.rows[-2].cells["C"].mark == "second"


def test_cli_report_end_to_end(store, capsys):
    run_dir, truth = store
    rc = main(["report", SWEEP, "--run-dir", str(run_dir), "--out", "rep", "--baseline", "1"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    rep = Path("rep")
    for name in ("table.md", "table.tex", "results.csv", "summary.csv", "README.md", "bars.png", "loss.png", "loss.pdf"):
        assert (rep / name).is_file(), name
    back = pd.read_csv(rep / "results.csv")
    assert len(back) == len(truth)
    for _, row in back.iterrows():
        labels = {"Freeze": row["Freeze"], "Mix": row["Mix"]}
        ref = next(t for t in truth.values() if t["labels"] == labels and t["seed"] == int(row["seed"]))
        assert row["C"] == pytest.approx(ref["metrics"]["miou/C"]) and row["AF"] == pytest.approx(ref["metrics"]["miou/AF"])
    summary = pd.read_csv(rep / "summary.csv")
    assert summary["delta"].iloc[0] == pytest.approx(0.0) and summary["delta"].iloc[-1] > 9.0
    assert "| n |" in out and "loss" in (rep / "README.md").read_text()
    # results.csv keeps the trial ids: read back with --csv, its table is the same, footnotes naming the
    # failed trial included (without the column they lost "; trial t-…")
    assert sorted(back["trial"]) == sorted(truth)
    assert main(["report", SWEEP, "--csv", str(rep / "results.csv"), "--out", "rep2", "--baseline", "1", "--no-figures"]) == 0
    md, again = (rep / "table.md").read_text(), Path("rep2/table.md").read_text()
    assert "; trial t-0101abcdef" in md and again == md


def test_default_out_dir_is_under_run_dir(store, capsys):
    run_dir, _ = store
    assert main(["report", SWEEP, "--run-dir", str(run_dir), "--no-figures"]) == 0
    assert (run_dir / SWEEP / "report" / "table.tex").is_file()
    assert not (run_dir / SWEEP / "report" / "bars.png").exists()


def test_no_runs_for_sweep_is_one_line(store, capsys):
    run_dir, _ = store
    rc = main(["report", "other_sweep", "--run-dir", str(run_dir), "--out", "rep"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "no trial runs for sweep 'other_sweep'" in err


def test_missing_store_is_one_line(capsys):
    rc = main(["report", SWEEP, "--run-dir", "nowhere", "--out", "rep"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "no MLflow store at" in err and "nowhere" in err
    assert not Path("nowhere/mlflow.db").exists()  # never creates an empty store
    # the run to make it keeps the report's --profile, --run-dir and overrides (without them: another plan)
    rc = main(["report", "ablation", "--profile", "paper", "--run-dir", "nowhere", "--out", "rep", "train.iterations=5"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.endswith("(run `famix sweep run ablation --profile paper --run-dir nowhere train.iterations=5` first, "
                                    "or pass --tracking-uri or --csv)"), err  # fmt: skip: --run-dir was given
    # a name with no sweep file: `famix sweep run nosuchsweep` would find nothing to run either
    rc = main(["report", "nosuchsweep", "--out", "rep"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.endswith("(nor is 'nosuchsweep' a sweep file: give the sweep file that ran there, or pass --run-dir,"
                                    " --tracking-uri or --csv)"), err  # fmt: skip


def _never_opens_a_client(monkeypatch) -> None:
    """MLflow's client retries a dead server for minutes: a refused URI must never reach it."""

    def refuse(uri):
        raise AssertionError(f"MLflow client opened for {uri}")

    monkeypatch.setattr("reports.mlflow_client.mlflow_client", refuse)


def test_tracking_uri_of_no_known_kind_refused(tmp_path, capsys, monkeypatch):
    _never_opens_a_client(monkeypatch)
    rc = main(["report", SWEEP, "--tracking-uri", "notauri", "--out", "rep"])
    assert rc == 2 and capsys.readouterr().err.strip() == (
        "famix: error: --tracking-uri notauri: not an MLflow tracking URI "
        "(expected http(s)://host:port, sqlite:///path, file:path, databricks or a postgresql/mysql/mssql database URI)"
    )
    sweep = tmp_path / "mini.yaml"
    sweep.write_text("name: mini\ngrid:\n  style.mix: [false, true]\ntracking: {uri: 'mlruns'}\n")
    rc = main(["report", str(sweep), "--out", "rep"])
    assert rc == 2 and capsys.readouterr().err.strip() == (
        f"famix: error: {sweep}: tracking.uri mlruns: not an MLflow tracking URI "
        "(expected http(s)://host:port, sqlite:///path, file:path, databricks or a postgresql/mysql/mssql database URI)"
    )
    assert not Path("rep").exists() and not Path("notauri").exists() and not Path("mlruns").exists()


def test_report_help_gives_the_sweeps_tracking_uri_as_the_default(capsys):
    """A sweep file's tracking.uri is read before the run dir's SQLite store (above): the help says so."""
    with pytest.raises(SystemExit):
        main(["report", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "MLflow URI (default: the sweep's tracking.uri, else sqlite:///<run-dir>/mlflow.db)" in out


def test_tracking_server_that_does_not_answer_is_one_line(capsys, monkeypatch):
    import socket

    with socket.socket() as sock:  # a port nothing listens on once it is closed
        sock.bind(("127.0.0.1", 0))
        uri = f"http://127.0.0.1:{sock.getsockname()[1]}"
    _never_opens_a_client(monkeypatch)
    rc = main(["report", SWEEP, "--tracking-uri", uri, "--out", "rep"])
    assert rc == 2 and capsys.readouterr().err.strip() == (
        f"famix: error: --tracking-uri {uri}: no MLflow server answered at {uri}/health within 2 s"
    )
    assert not Path("rep").exists()


@pytest.mark.parametrize("uri", ["sqlite:///runs/mlflow.db", "file:///tmp/mlruns", "file:mlruns", "databricks", "databricks://prof"])
def test_tracking_uri_kinds_that_pass_the_check(uri, monkeypatch):
    """No server to probe: MLflow opens these itself, once what it needs is there (a file store is
    refused by MLflow 3 unless MLFLOW_ALLOW_FILE_STORE is set)."""
    from reports.collect import check_tracking_uri

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    check_tracking_uri(uri, "--tracking-uri")


def test_latest_run_of_a_trial_wins(store):
    run_dir, _ = store
    truth = populate(run_dir, losses=False, sweep="rerun")
    uri = default_tracking_uri(run_dir)
    client = MlflowClient(tracking_uri=uri)
    first = next(iter(truth))
    old = client.get_run(truth[first]["run_id"])
    time.sleep(0.01)
    rerun = client.create_run(old.info.experiment_id, tags=old.data.tags).info.run_id
    client.log_batch(rerun, metrics=[Metric(f"miou/{d}", 99.0, int(time.time() * 1000), 0) for d in DOMAINS])
    for reader in ("sqlite", "client"):
        rs = collect_mlflow("rerun", tracking_uri=uri, reader=reader)
        assert len(rs.runs) == len(truth)
        row = rs.runs[rs.runs["trial"] == first].iloc[0]
        assert row["run_id"] == rerun and row["C"] == 99.0
        with pytest.raises(ReportInputError, match=r"no MLflow experiment 'nope' at .* \(no sweep has run with that experiment in this store: "
                                                   r"check --experiment, --tracking-uri and --run-dir\)$"):
            collect_mlflow("rerun", tracking_uri=uri, experiment="nope", reader=reader)
    from reports.collect.sqlite import not_run_here

    assert not_run_here("postgresql://db.lab/mlflow").endswith("check --experiment and --tracking-uri)")  # no --run-dir: a database


def test_trials_with_the_same_labels_and_seed_are_kept(store):
    """A results CSV may hold each (labels, seed) once; MLflow trial runs are told apart by their trial ids."""
    run_dir, _ = store
    truth = populate(run_dir, losses=False, sweep="twins")
    uri = default_tracking_uri(run_dir)
    client = MlflowClient(tracking_uri=uri)
    old = client.get_run(next(iter(truth.values()))["run_id"])
    twin = client.create_run(old.info.experiment_id, tags={**old.data.tags, "famix.trial": "t-twin"}).info.run_id
    client.log_batch(twin, metrics=[Metric(f"miou/{d}", 50.0, int(time.time() * 1000), 0) for d in DOMAINS])
    for reader in ("sqlite", "client"):
        rs = collect_mlflow("twins", tracking_uri=uri, reader=reader)
        assert len(rs.runs) == len(truth) + 1 and build_table(rs).rows[0].n == 2


def test_profile_keeps_smoke_and_paper_trials_apart(store):
    """Trials of another profile of the same sweep (same run dir) never enter the table."""
    run_dir, _ = store
    truth = populate(run_dir, losses=False, sweep="profiled")
    uri = default_tracking_uri(run_dir)
    client = MlflowClient(tracking_uri=uri)
    smoke, paper = sorted(truth)[:2], sorted(truth)[2:]
    for trial in smoke:
        client.set_tag(truth[trial]["run_id"], "famix.profile", "smoke")
    for trial in paper:
        client.set_tag(truth[trial]["run_id"], "famix.profile", "paper")
    for reader in ("sqlite", "client"):
        assert sorted(collect_mlflow("profiled", tracking_uri=uri, reader=reader, profile="smoke").runs["trial"]) == smoke
        assert sorted(collect_mlflow("profiled", tracking_uri=uri, reader=reader, profile="paper").runs["trial"]) == paper
        assert len(collect_mlflow("profiled", tracking_uri=uri, reader=reader).runs) == len(truth)
        with pytest.raises(ReportInputError, match=r"with profile 'big'.*profiles found: paper, smoke"):
            collect_mlflow("profiled", tracking_uri=uri, reader=reader, profile="big")


def test_the_overrides_that_made_the_trials_become_a_note(store):
    """``famix.overrides`` (the command line's ``key=value`` words of the run that made a trial): named
    once when every trial has the same ones, counted when they differ, no note without any."""
    run_dir, _ = store
    truth = populate(run_dir, losses=False, sweep="overridden")
    uri = default_tracking_uri(run_dir)
    client = MlflowClient(tracking_uri=uri)
    trials = sorted(truth)
    for reader in ("sqlite", "client"):  # runs that predate the tag: nothing claimed
        assert collect_mlflow("overridden", tracking_uri=uri, reader=reader).notes == []
    for trial in trials:
        client.set_tag(truth[trial]["run_id"], "famix.overrides", json.dumps([]))
    for reader in ("sqlite", "client"):
        assert collect_mlflow("overridden", tracking_uri=uri, reader=reader).notes == []
    for trial in trials:
        client.set_tag(truth[trial]["run_id"], "famix.overrides", json.dumps(["train.iterations=20", "seeds=[0,1]"]))
    for reader in ("sqlite", "client"):
        assert collect_mlflow("overridden", tracking_uri=uri, reader=reader).notes == [
            "made with the command-line overrides `train.iterations=20 'seeds=[0,1]'` (the sweep file's settings with these changes)"
        ]
    client.set_tag(truth[trials[0]]["run_id"], "famix.overrides", json.dumps([]))
    client.delete_tag(truth[trials[1]]["run_id"], "famix.overrides")
    for reader in ("sqlite", "client"):
        assert collect_mlflow("overridden", tracking_uri=uri, reader=reader).notes == [
            "the trials come from runs with different command-line overrides: `train.iterations=20 'seeds=[0,1]'` (2 trials), "
            "none (1 trial), not recorded (1 trial)"
        ]


def test_trials_computed_by_several_code_versions_become_a_note(store):
    """``famix.git_commit`` (the code versions that computed a trial's stages): no note for one committed
    version, a note for uncommitted changes, and the versions counted when the trials differ."""
    run_dir, _ = store
    truth = populate(run_dir, losses=False, sweep="versions")
    uri = default_tracking_uri(run_dir)
    client = MlflowClient(tracking_uri=uri)
    trials = sorted(truth)
    a, b = "a" * 40, "b" * 40

    def notes() -> list[list[str]]:
        return [collect_mlflow("versions", tracking_uri=uri, reader=r).notes for r in ("sqlite", "client")]

    assert notes() == [[], []]  # nothing recorded: nothing claimed
    for trial in trials:
        client.set_tag(truth[trial]["run_id"], "famix.git_commit", a)
    assert notes() == [[], []]
    client.set_tag(truth[trials[0]]["run_id"], "famix.git_commit", f"{a}-dirty")
    client.set_tag(truth[trials[1]]["run_id"], "famix.git_commit", f"{a} {b}")  # a stage recomputed by newer code
    client.delete_tag(truth[trials[2]]["run_id"], "famix.git_commit")
    want = ("the trials were computed by 3 code versions: `aaaaaaaaaaaa` (2 trials), `aaaaaaaaaaaa-dirty` (1 trial), "
            "`bbbbbbbbbbbb` (1 trial), not recorded (1 trial)")
    assert notes() == [[want], [want]]
    for trial in trials:
        client.set_tag(truth[trial]["run_id"], "famix.git_commit", f"{b}-dirty")
    want = "computed by code with uncommitted changes (`bbbbbbbbbbbb-dirty`): that commit alone does not reproduce these numbers"
    assert notes() == [[want], [want]]


def test_sqlite_reader_equals_client_reader(store):
    run_dir, _ = store
    uri = default_tracking_uri(run_dir)
    fast = collect_mlflow(SWEEP, tracking_uri=uri, reader="sqlite")
    slow = collect_mlflow(SWEEP, tracking_uri=uri, reader="client")
    assert fast.label_columns == slow.label_columns and fast.domains == slow.domains
    pd.testing.assert_frame_equal(fast.runs, slow.runs)
    with pytest.raises(ReportInputError, match="unknown MLflow reader"):
        collect_mlflow(SWEEP, tracking_uri=uri, reader="odbc")


def test_sqlite_reader_refuses_a_non_mlflow_file(tmp_path):
    import sqlite3

    db = tmp_path / "other.db"
    sqlite3.connect(db).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(ReportInputError, match="not an MLflow store"):
        collect_mlflow(SWEEP, tracking_uri=f"sqlite:///{db}", reader="sqlite")


def test_label_tags_fallback_and_domains_from_metrics(store):
    """Runs without famix.labels / famix.domains: labels from famix.label.<column>, domains from metrics (paper order)."""
    run_dir, _ = store
    uri = default_tracking_uri(run_dir)
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("fallback", artifact_location=(run_dir / "mlartifacts").absolute().as_uri())
    for i, method in enumerate(["base", "ours"]):
        tags = {"famix.sweep": "fallback", "famix.role": "trial", "famix.trial": f"t-f{i}", "famix.trial_index": str(i),
                "famix.status": "done", "famix.label.Method": method}
        run = client.create_run(exp, tags=tags).info.run_id
        now = int(time.time() * 1000)
        client.log_batch(run, metrics=[Metric("miou/AN", 5.0 + i, now, 0), Metric("miou/C", 30.0 + i, now, 0)])
    for reader in ("sqlite", "client"):
        rs = collect_mlflow("fallback", tracking_uri=uri, reader=reader)
        assert rs.label_columns == ["Method"] and rs.domains == ["C", "AN"]
        assert rs.runs["Method"].tolist() == ["base", "ours"] and rs.runs["AN"].tolist() == [5.0, 6.0]


@pytest.mark.mlflow_server
def test_report_from_tracking_server(mlflow_server_uri, tmp_path, capsys):
    truth = populate(tmp_path / "runs", seeds=(0,), uri=mlflow_server_uri)
    rs = collect_mlflow(SWEEP, tracking_uri=mlflow_server_uri)
    assert len(rs.runs) == len(truth) and rs.domains == DOMAINS
    for _, row in rs.runs.iterrows():
        assert row["C"] == truth[row["trial"]]["metrics"]["miou/C"]
    rc = main(["report", SWEEP, "--tracking-uri", mlflow_server_uri, "--out", "rep"])
    assert rc == 0, capsys.readouterr().err
    assert Path("rep/loss.png").is_file() and Path("rep/table.tex").is_file()
    with pytest.raises(ReportInputError, match=r"no MLflow experiment 'nope' at http://.* \(no sweep has run with that experiment "
                                               r"in this store: check --experiment and --tracking-uri\)$"):  # --run-dir places a local store only
        collect_mlflow(SWEEP, tracking_uri=mlflow_server_uri, experiment="nope")
