"""MLflow tracking: runs found again by tags (never duplicated), concurrent SQLite logging loses nothing, a real server;
a sweep's tracking.uri that is no MLflow store, or a server that does not answer, is refused before anything is written."""

from __future__ import annotations

import http.server
import multiprocessing as mp
import socket
import threading
from pathlib import Path

import pytest

from conftest import plain_tiny_config
from orchestrator.__main__ import main
from orchestrator.tracking import RunLogger, Tracker, default_uri, metrics_from_eval, with_retry


def _tracker(uri: str | None = None) -> Tracker:
    run_dir = Path("runs").absolute()
    run_dir.mkdir(exist_ok=True)
    return Tracker(uri or default_uri(run_dir), "exp", artifact_location=(run_dir / "mlartifacts").as_uri())


def test_ensure_run_finds_existing_by_tags_and_logs_params_once():
    tr = _tracker()
    params = {f"p{i}": "x" * (7000 if i == 0 else 3) for i in range(150)}  # > 100 params, one over 6000 chars
    find = {"famix.sweep": "s", "famix.role": "trial", "famix.trial": "t-1"}
    rid, created = tr.ensure_run(find, {"famix.status": "partial"}, name="one", params=params)
    assert created
    rid2, created2 = _tracker().ensure_run(find, {"famix.status": "done"}, name="one")
    assert rid2 == rid and not created2
    runs = tr.find({"famix.sweep": "s"})
    assert len(runs) == 1
    run = runs[0]
    assert run.data.tags["famix.status"] == "done"
    assert len(run.data.params) == 150 and len(run.data.params["p0"]) == 6000
    assert Path("runs/mlflow.db").is_file() and not Path("mlruns").exists()


def test_find_reads_every_page(monkeypatch):
    """A search stopped at its first page (1000 runs): a sweep with more runs (its superseded trials
    included) had runs that the driver did not find, and made again."""
    from orchestrator import tracking

    tr = _tracker()
    ids = [tr.ensure_run({"famix.sweep": "big", "famix.trial": f"t-{i}"}, {}, name=f"r{i}")[0] for i in range(5)]
    monkeypatch.setattr(tracking, "FIND_PAGE", 2)
    pages = []
    search = tr.client.search_runs
    monkeypatch.setattr(tr.client, "search_runs", lambda *a, **k: pages.append(k["max_results"]) or search(*a, **k))
    found = tr.find({"famix.sweep": "big"})
    assert sorted(r.info.run_id for r in found) == sorted(ids) and pages == [2, 2, 2]  # 2 + 2 + 1
    assert [r.info.run_id for r in tr.find({"famix.sweep": "big", "famix.trial": "t-3"})] == [ids[3]]


def _worker(uri: str, run_ids: list[str], worker: int, n: int) -> None:
    logger = RunLogger({"uri": uri, "run_ids": run_ids})
    for step in range(n):
        logger.log_metrics({f"w{worker}/loss": float(step), "shared/x": float(worker)}, step=step + worker * 1000)


def test_four_processes_logging_to_one_sqlite_lose_nothing():
    tr = _tracker()
    ids = [tr.ensure_run({"famix.trial": f"t{i}"}, {}, name=f"t{i}")[0] for i in range(2)]
    ctx = mp.get_context("fork")  # children build their own MlflowClient
    procs = [ctx.Process(target=_worker, args=(tr.uri, ids, w, 15)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    for rid in ids:
        for w in range(4):
            hist = tr.client.get_metric_history(rid, f"w{w}/loss")
            assert sorted(m.step for m in hist) == [s + w * 1000 for s in range(15)]
        assert len(tr.client.get_metric_history(rid, "shared/x")) == 60


def test_with_retry_retries_only_transient_errors():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("(sqlite3.OperationalError) database is locked")
        return "ok"

    assert with_retry(flaky) == "ok" and len(calls) == 3
    with pytest.raises(ValueError):
        with_retry(lambda: (_ for _ in ()).throw(ValueError("bad")))


def test_metrics_from_eval_in_percent():
    m = metrics_from_eval("C", {"miou": 0.25, "iou": {"road": 0.5, "sky": None}, "pixel_acc": 0.75})
    assert m == {"miou/C": 25.0, "iou/C/road": 50.0, "pixel_acc/C": 75.0}


@pytest.mark.mlflow_server
def test_real_server_runs_are_found_again(mlflow_server_uri, capfd):
    tr = Tracker(mlflow_server_uri, "srv")
    find = {"famix.sweep": "s", "famix.role": "trial", "famix.trial": "t-9"}
    rid, created = tr.ensure_run(find, {}, name="t9", params={"a": 1})
    RunLogger({"uri": mlflow_server_uri, "run_ids": [rid]}).log_metrics({"miou/C": 12.5}, 0)
    rid2, created2 = Tracker(mlflow_server_uri, "srv").ensure_run(find, {}, name="t9")
    assert created and not created2 and rid == rid2
    assert tr.metrics(rid) == {"miou/C": 12.5}
    capfd.readouterr()
    tr.finish(rid, True)  # MLflow printed `🏃 View run t9 at: …` for each run a sweep ended, through its progress lines
    assert "View run" not in capfd.readouterr().out


def test_a_resumed_training_does_not_log_its_steps_twice(tmp_path, one_torch_thread):
    """A training dies after step 5 (checkpoint at 4); the rerun logs steps 5 and 6 to its stage log,
    but to MLflow only step 6: the loss curve holds each step once."""
    from famix_core.train import train
    from orchestrator.stages import StageTask
    from orchestrator.execute import execute_stage
    from orchestrator.store import Store

    tr = _tracker()
    rid, _ = tr.ensure_run({"famix.sweep": "s", "famix.role": "trial", "famix.trial": "t"}, {}, name="t")
    cfg = plain_tiny_config(tmp_path / "data", iterations=6, checkpoint_every=4)
    store = tmp_path / "store"
    task = StageTask(
        kind="train", key="t" * 64, config=cfg.to_dict(), store=str(store), name="train",
        log_path=str(tmp_path / "train.log"), tracking={"uri": tr.uri, "run_ids": [rid]},
    )  # fmt: skip
    logger = RunLogger(task.tracking)

    class Died(Exception):
        pass

    def log_then_die_at_5(metrics, step):
        logger.log_metrics(metrics, step)
        if step == 5:
            raise Died

    with pytest.raises(Died):  # the first attempt, as a killed worker leaves it
        train(cfg, tmp_path / "out", ckpt_dir=Store(str(store)).work_dir("train", task.key), log=log_then_die_at_5)

    out = execute_stage(task)
    assert out.status == "done", out.error
    assert [line.split("step=")[1].split()[0] for line in Path(task.log_path).read_text().splitlines() if "step=" in line] == ["5", "6"]
    steps = [m.step for m in tr.client.get_metric_history(rid, "train/loss")]
    assert sorted(steps) == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("dies_at", [3, 5], ids=["before-its-first-checkpoint", "after-a-checkpoint"])
def test_a_retried_training_logs_each_step_once_to_mlflow_and_its_history(tmp_path, one_torch_thread, monkeypatch, dies_at):
    """An attempt dies at step ``dies_at`` (checkpoints every 4 iterations); the retry through the
    same stage runner finishes. A retry from scratch (no checkpoint yet) logged steps 1-3 to MLflow
    a second time and its history.jsonl kept both attempts' lines; now each step is in both once."""
    import json

    from famix_core.train import Trainer
    from orchestrator.execute import execute_stage
    from orchestrator.stages import StageTask
    from orchestrator.store import Store
    from orchestrator.tracking import read_history

    tr = _tracker()
    rid, _ = tr.ensure_run({"famix.sweep": "s", "famix.role": "trial", "famix.trial": "t"}, {}, name="t")
    cfg = plain_tiny_config(tmp_path / "data", iterations=6, checkpoint_every=4)
    task = StageTask(
        kind="train", key="r" * 64, config=cfg.to_dict(), store=str(tmp_path / "store"), name="train",
        log_path=str(tmp_path / "train.log"), tracking={"uri": tr.uri, "run_ids": [rid]},
    )  # fmt: skip
    validate = Trainer.validate_if_due

    def die(self):
        if self.iteration == dies_at:
            raise RuntimeError("worker lost")
        validate(self)

    monkeypatch.setattr(Trainer, "validate_if_due", die)
    assert execute_stage(task).status == "failed"
    monkeypatch.setattr(Trainer, "validate_if_due", validate)
    out = execute_stage(task)
    assert out.status == "done", out.error
    assert sorted(m.step for m in tr.client.get_metric_history(rid, "train/loss")) == [1, 2, 3, 4, 5, 6]
    history = Store(task.store).path("train", task.key) / "history.jsonl"
    assert [json.loads(line)["step"] for line in history.read_text().splitlines()] == [1, 2, 3, 4, 5, 6]
    assert [step for step, _, _ in read_history(history)] == [1, 2, 3, 4, 5, 6]


def test_a_history_record_left_without_its_newline_is_kept_apart_from_the_next_attempts(tmp_path):
    """A writer cut off after a record's JSON but before its newline left a whole record that the next
    attempt's first append joined onto: both lines were then unreadable and dropped, silently."""
    import json

    from orchestrator.execute import _keep_history_through
    from orchestrator.tracking import read_history

    path = tmp_path / "history.jsonl"
    record = lambda step: json.dumps({"step": step, "ts": 1000 + step, "metrics": {"train/loss": 1.0 / step}})  # noqa: E731
    path.write_text(record(1) + "\n" + record(2) + "\n" + record(3))  # killed before the last newline
    assert _keep_history_through(path, 3) is True
    with path.open("a") as f:  # the next attempt goes on from step 4
        f.write(record(4) + "\n")
    assert [step for step, _, _ in read_history(path)] == [1, 2, 3, 4]
    path.write_text(record(1) + "\n" + record(2) + "\n" + record(3)[:9])  # a torn record is still dropped
    _keep_history_through(path, 3)
    assert path.read_text() == record(1) + "\n" + record(2) + "\n"


TINY_SWEEP = """\
name: tiny
base:
  style: {strategy: none}
  train: {iterations: 1, batch_size: 2}
  eval: {max_images: 1}
  data: {synthetic: {height: 64, width: 96, train_images: 2, val_images: 1}}
domains: [C]
"""


def _sweep_error(capsys, uri: str, command: str) -> str:
    """``famix sweep <command>`` of a one-trial sweep with ``tracking.uri: <uri>``: its one error line."""
    Path("tiny.yaml").write_text(TINY_SWEEP + f"tracking: {{uri: '{uri}'}}\n")
    rc = main(["sweep", command, "tiny.yaml", "--run-dir", "out"])
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert rc == 2 and len(lines) == 1, err
    assert not any(Path("out").glob("**/plan.json")) and not any(Path("out").glob("**/driver.json"))
    assert not Path("out/mlflow.db").exists() and not Path("out").exists()  # not even the run dir or synthetic data
    return lines[0]


@pytest.mark.parametrize("command", ["plan", "run"])
def test_a_sweep_tracking_uri_of_no_known_kind_is_refused_before_anything_is_written(capsys, command):
    line = _sweep_error(capsys, "ftp://x", command)
    assert line == (
        "famix: error: tiny.yaml: tracking.uri ftp://x: not an MLflow tracking URI "
        "(expected http(s)://host:port, sqlite:///path, file:path, databricks or a postgresql/mysql/mssql database URI)"
    )


@pytest.mark.parametrize("command", ["plan", "run"])
def test_a_sweep_tracking_uri_mlflow_cannot_open_here_is_one_line_before_anything_is_written(capsys, monkeypatch, command):
    """The plan let through every URI of a known kind, and `sweep run` then made the run dir, the
    synthetic benchmark, plan.json and driver.json before MLflow failed with a traceback: a file
    store (MLflow 3 refuses them), a SQLite file under a file, a database whose driver is not
    installed or whose host does not answer."""
    from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    Path("afile").write_text("")
    with socket.socket() as sock:  # a port nothing listens on once it is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cases = {
        "file:./mlruns": "this MLflow no longer opens file stores (`mlflow migrate-filestore` moves one into SQLite); "
                         "use sqlite:///<path>/mlflow.db, or set MLFLOW_ALLOW_FILE_STORE=true",
        f"sqlite:///{Path('afile/db/mlflow.db').absolute()}": f"{Path('afile').absolute()} is a file, so the database's folder "
                                                              f"{Path('afile/db').absolute()} cannot be made",
        "mysql+pymysql://u@127.0.0.1/db": "its Python driver is not installed (pymysql); install it into this environment",
    }  # fmt: skip
    for uri, problem in cases.items():
        assert _sweep_error(capsys, uri, command) == f"famix: error: tiny.yaml: tracking.uri {uri}: {problem}"
    monkeypatch.setattr(PGDialect_psycopg, "import_dbapi", classmethod(lambda cls: object()))  # as if psycopg were installed
    uri = f"postgresql://u@127.0.0.1:{port}/db"
    assert _sweep_error(capsys, uri, command).startswith(
        f"famix: error: tiny.yaml: tracking.uri {uri}: nothing accepted a connection at 127.0.0.1:{port} within 2 s")


def test_a_sweep_sqlite_tracking_uri_in_a_new_folder_passes_the_check(capsys):
    """`tracking.uri: sqlite:///<folder that does not exist yet>/mlflow.db`: the plan-time check of the
    database's folder looks at the nearest folder that exists, and MLflow makes the rest."""
    db = Path("mlflow-store/sub/mlflow.db").absolute()
    Path("tiny.yaml").write_text(TINY_SWEEP + f"tracking: {{uri: 'sqlite:///{db}'}}\n")
    assert main(["sweep", "run", "tiny.yaml", "--run-dir", "out"]) == 0, capsys.readouterr().err
    assert db.is_file() and not Path("out/mlflow.db").exists()


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 — http.server's name
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("command", ["plan", "run"])
def test_a_sweep_tracking_server_that_does_not_answer_is_one_line_within_seconds(capsys, command):
    with socket.socket() as sock:  # a port nothing listens on once it is closed
        sock.bind(("127.0.0.1", 0))
        uri = f"http://127.0.0.1:{sock.getsockname()[1]}"
    line = _sweep_error(capsys, uri, command)  # the /health check's line, not MLflow's minutes of HTTP retries
    assert line == (
        f"famix: error: tiny.yaml: tracking.uri {uri}: no MLflow server answered at {uri}/health within 2 s; start that "
        f"MLflow server, or remove tracking.uri to use the run dir's SQLite store ({Path('out').absolute() / 'mlflow.db'})"
    )


def test_a_sweep_tracking_server_that_answers_its_health_passes_the_plan(capsys):
    srv = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        Path("tiny.yaml").write_text(TINY_SWEEP + f"tracking: {{uri: 'http://127.0.0.1:{srv.server_port}'}}\n")
        assert main(["sweep", "plan", "tiny.yaml", "--run-dir", "out"]) == 0, capsys.readouterr().err
    finally:
        srv.shutdown()
        srv.server_close()


def test_a_moved_run_dir_keeps_its_mlflow_artifacts_and_its_plan(capsys):
    """MLflow keeps artifact locations as absolute paths: after `mv runs moved`, `famix report`
    logged into runs/mlartifacts (making the old folder again) and the moved artifacts were not
    found; `status` and a rerun took the last run for another plan (its --run-dir differed)."""
    import shutil

    from mlflow.tracking import MlflowClient

    Path("tiny.yaml").write_text(TINY_SWEEP)
    assert main(["sweep", "run", "tiny.yaml", "--run-dir", "runs"]) == 0
    capsys.readouterr()
    shutil.move("runs", "moved")
    assert main(["report", "tiny.yaml", "--run-dir", "moved"]) == 0
    err = capsys.readouterr().err
    new = Path("moved/mlartifacts").absolute().as_uri()
    assert f"MLflow: the run dir was moved (from {Path('runs').absolute().as_uri()}); its runs' artifacts are now looked for in {new}" in err, err
    assert not Path("runs").exists()  # nothing written to the old place
    client = MlflowClient(default_uri("moved"))
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert runs and all(r.info.artifact_uri.startswith(new + "/") for r in runs)
    sweep_run = next(r for r in runs if r.data.tags.get("famix.role") == "sweep")
    assert "report" in {a.path for a in client.list_artifacts(sweep_run.info.run_id)}  # the moved files, found
    assert main(["sweep", "status", "tiny.yaml", "--run-dir", "moved"]) == 0
    out = capsys.readouterr().out
    assert "the last run had" not in out, out
    assert main(["sweep", "run", "tiny.yaml", "--run-dir", "moved"]) == 0
    out, err = capsys.readouterr()
    assert "another plan" not in out and "moved" not in err, (out, err)  # relocated once
    assert not Path("runs").exists()


def test_a_report_of_a_plan_that_never_ran_says_its_table_is_of_other_runs(capsys, monkeypatch):
    """`famix report tiny.yaml 'seeds=[5]'` after a run of seed 0 printed seed 0's table with no
    word that none of the plan it was given had run. The plan is expanded once: the MLflow sync
    before the report and the report's list of the plan's trials expanded it a time each."""
    import orchestrator.plan
    import orchestrator.sweep

    Path("tiny.yaml").write_text(TINY_SWEEP)
    assert main(["sweep", "run", "tiny.yaml", "--run-dir", "runs"]) == 0
    capsys.readouterr()
    expanded: list[str] = []

    def expand_trials(rs, expand=orchestrator.sweep.expand_trials):
        expanded.append(rs.name)
        return expand(rs)

    for module in (orchestrator.sweep, orchestrator.plan):  # the names the report's path calls it by
        monkeypatch.setattr(module, "expand_trials", expand_trials)
    assert main(["report", "tiny.yaml", "--run-dir", "runs", "--no-figures", "seeds=[5]"]) == 0
    out = capsys.readouterr().out
    assert ("note: none of the 1 trial of this command's plan (`'seeds=[5]'`) has results: the table holds other "
            "runs of the sweep; give `famix report` the overrides of the run you mean") in out, out
    assert expanded == ["tiny"]
    # the table files say it too (only stdout and README.md did): a pasted table is of other runs
    assert "Note: none of the 1 trial of this command's plan" in Path("runs/tiny/report/table.md").read_text()
    assert "none of the 1 trial of this command" in Path("runs/tiny/report/table.tex").read_text()
    assert main(["report", "tiny.yaml", "--run-dir", "runs", "--no-figures"]) == 0
    assert "this command's plan" not in capsys.readouterr().out


def test_a_report_shows_the_plan_its_arguments_make_also_after_a_run_of_another_plan(capsys):
    """`famix report tiny.yaml` after a run with `seeds=[5]` showed seed 5's table: the later run had
    made its trial runs the sweep's and marked seed 0's superseded. The report reads the runs of the
    plan it is given, superseded or not, with either reader; the last run's where that plan has none."""
    import pandas as pd

    from reports.collect import collect_mlflow

    Path("tiny.yaml").write_text(TINY_SWEEP)
    assert main(["sweep", "run", "tiny.yaml", "--run-dir", "runs"]) == 0
    assert main(["sweep", "run", "tiny.yaml", "--run-dir", "runs", "seeds=[5]"]) == 0
    capsys.readouterr()

    def reported(*words: str) -> list[int]:
        assert main(["report", "tiny.yaml", "--run-dir", "runs", "--no-figures", *words]) == 0
        out = capsys.readouterr().out
        assert "this command's plan" not in out, out
        return sorted(pd.read_csv("runs/tiny/report/results.csv")["seed"].astype(int))

    assert reported() == [0]
    assert reported("seeds=[5]") == [5]
    assert main(["report", "tiny.yaml", "--run-dir", "runs", "--no-figures", "seeds=[7]"]) == 0
    out = capsys.readouterr().out
    assert "none of the 1 trial of this command's plan (`'seeds=[7]'`) has results" in out, out
    assert list(pd.read_csv("runs/tiny/report/results.csv")["seed"]) == [5]  # the last run's, as the note says
    uri = f"sqlite:///{Path('runs/mlflow.db').resolve()}"
    for reader in ("sqlite", "client"):
        every = collect_mlflow("tiny", tracking_uri=uri, reader=reader).runs
        assert list(every["seed"]) == [5], reader  # no trials given: the last run's
        first = every["trial"].iloc[0]
        older = collect_mlflow("tiny", tracking_uri=uri, reader=reader, trials=["x", first]).runs
        assert list(older["seed"]) == [5]
        both = collect_mlflow("tiny", tracking_uri=uri, reader=reader, trials=["x", first, *_superseded_trials(uri)]).runs
        assert sorted(both["seed"]) == [0, 5], reader
    assert reported("seeds=[0,5]") == [0, 5]


def _superseded_trials(uri: str) -> list[str]:
    from mlflow.tracking import MlflowClient

    runs = MlflowClient(uri).search_runs(
        [e.experiment_id for e in MlflowClient(uri).search_experiments()], "tags.`famix.role` = 'superseded'"
    )
    return [r.data.tags["famix.trial"] for r in runs]


def test_a_report_of_trial_runs_without_any_result_writes_nothing(capsys):
    """A run of another plan stopped before its evaluations (Ctrl-C) leaves the sweep's trial runs
    without an mIoU; `famix report` then wrote a table of dashes over the report of the finished run,
    and exited 0. It now says why there is nothing to report, and leaves that report as it was; the
    report of the finished run's own arguments is that run's table (its trial runs, superseded)."""
    from orchestrator.driver import prepare
    from orchestrator.tracking import ensure_runs, open_tracker

    Path("tiny.yaml").write_text(TINY_SWEEP)
    assert main(["sweep", "run", "tiny.yaml", "--run-dir", "runs"]) == 0
    table = Path("runs/tiny/report/table.md").read_text()
    plan = prepare("tiny.yaml", run_dir="runs", overrides=["train.iterations=2"], check_data=lambda c: None, check_weights=lambda c: None)
    Path("runs/tiny/finalized.json").unlink()  # what the stopped run did and left: its trial run in MLflow, no results
    ensure_runs(plan, open_tracker(plan), "local")
    capsys.readouterr()
    assert main(["report", "tiny.yaml", "--run-dir", "runs", "--no-figures", "train.iterations=2"]) == 2
    out, err = capsys.readouterr()
    assert err.splitlines()[-1] + "\n" == ("famix: error: tiny: none of the sweep's 1 trial run in MLflow has an mIoU yet (its last run still going, "
                   "or stopped before its evaluations); nothing written. `famix sweep status tiny.yaml train.iterations=2` names that run's arguments; "
                   "`famix sweep run` with them finishes it, or, with the arguments of an earlier run, gives that run's table back "
                   "from its cached stages\n"), err  # fmt: skip
    assert out == "" and Path("runs/tiny/report/table.md").read_text() == table
    assert main(["report", "tiny.yaml", "--run-dir", "runs", "--no-figures"]) == 0, capsys.readouterr()  # the finished run's arguments
    assert Path("runs/tiny/report/table.md").read_text() == table
    assert main(["sweep", "run", "tiny.yaml", "--run-dir", "runs"]) == 0  # the first run's table, back from its cached stages
    capsys.readouterr()
    assert main(["report", "tiny.yaml", "--run-dir", "runs", "--no-figures"]) == 0, capsys.readouterr()
    assert Path("runs/tiny/report/table.md").read_text() == table
    # nor when the columns asked for have no value, from MLflow or from a CSV
    capsys.readouterr()
    for args, line in [
        (["--domains", "B"], "tiny: no value for B, the domains asked for (mlflow "),
        (["domains=[AN]"], "tiny: no value for AN, the domains asked for (mlflow "),
        (["--csv", "empty.csv", "--out", "elsewhere"], "empty.csv: no value in the columns C; nothing written"),
    ]:
        Path("empty.csv").write_text("seed,C\n0,\n")
        assert main(["report", "tiny.yaml", "--run-dir", "runs", "--no-figures", *args]) == 2
        err = capsys.readouterr().err.splitlines()
        assert err[-1].startswith(f"famix: error: {line}"), err
    assert Path("runs/tiny/report/table.md").read_text() == table and not Path("elsewhere").exists()


def test_a_run_dir_by_another_name_or_an_empty_store_is_not_relocated(capsys):
    """The same run dir through a symlink is not a move (the store would flip between the two names,
    with a warning each time); an empty mlflow.db (0 bytes: a killed first open) is MLflow's to fill,
    not a traceback (`no such table: experiments`)."""
    import os

    from mlflow.tracking import MlflowClient

    Path("tiny.yaml").write_text(TINY_SWEEP)
    Path("runs").mkdir()
    Path("runs/mlflow.db").write_text("")
    assert main(["sweep", "run", "tiny.yaml", "--run-dir", "runs"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    os.symlink("runs", "link")
    assert main(["sweep", "status", "tiny.yaml", "--run-dir", "link"]) == 0
    assert "was moved" not in capsys.readouterr().err
    client = MlflowClient(default_uri("runs"))
    assert client.get_experiment_by_name("tiny").artifact_location == Path("runs/mlartifacts").absolute().as_uri()


def test_mlflow_version_column_names_the_commit_that_computed_the_numbers(capsys, monkeypatch):
    """MLflow's Version column (`mlflow.source.git.commit`) held the driver's commit, set when the run was
    made: a rerun on a clean checkout that found the stages cached (computed by uncommitted code) showed
    that clean commit beside numbers it never computed. A trial run now shows its stages' commit, or
    none when they ran on a modified checkout; the sweep's run shows the driver's (its table's)."""
    import json

    from mlflow.tracking import MlflowClient

    from orchestrator import tracking

    Path("tiny.yaml").write_text(TINY_SWEEP)
    assert main(["sweep", "run", "tiny.yaml", "--run-dir", "runs"]) == 0
    client = MlflowClient(default_uri(Path("runs").absolute()))
    (exp,) = [e.experiment_id for e in client.search_experiments() if e.name == "tiny"]

    def rerun(stage_code: str, driver_code: str) -> tuple[dict[str, str], dict[str, str]]:
        for done in Path("runs/store").glob("*/*/DONE.json"):  # the commit that computed each stage
            info = json.loads(done.read_text())
            done.write_text(json.dumps({**info, "code": stage_code}))
        Path("runs/tiny/finalized.json").unlink()  # MLflow is visited again (no stage runs)
        monkeypatch.setattr(tracking, "code_version", lambda: driver_code)
        assert main(["sweep", "run", "tiny.yaml", "--run-dir", "runs"]) == 0, capsys.readouterr()
        runs = {r.data.tags["famix.role"]: r.data.tags for r in client.search_runs([exp])}
        return runs["trial"], runs["sweep"]

    trial, sweep = rerun("c" * 40, "d" * 40 + "-dirty")
    assert trial["mlflow.source.git.commit"] == trial["famix.git_commit"] == "c" * 40
    assert "mlflow.source.git.commit" not in sweep and sweep["famix.git_commit"] == "d" * 40 + "-dirty"
    trial, sweep = rerun("c" * 40 + "-dirty", "e" * 40)
    assert "mlflow.source.git.commit" not in trial and trial["famix.git_commit"] == "c" * 40 + "-dirty"
    assert sweep["mlflow.source.git.commit"] == sweep["famix.git_commit"] == "e" * 40


def test_a_superseded_trial_run_says_so_in_its_name_until_a_plan_holds_it_again(capsys):
    """Four reruns of a sweep with other overrides left four FINISHED runs named `01 … seed=0` under its
    run; only a tag told the current one. A superseded run's name now starts with `[superseded] `, and
    loses it when a plan holds its trial again."""
    from mlflow.tracking import MlflowClient

    Path("tiny.yaml").write_text(TINY_SWEEP)
    uri = default_uri(Path("runs").absolute())

    def names() -> dict[str, str]:
        client = MlflowClient(uri)
        runs = client.search_runs([e.experiment_id for e in client.search_experiments() if e.name == "tiny"])
        return {r.data.tags["famix.trial"]: r.info.run_name for r in runs if r.data.tags["famix.role"] != "sweep"}

    assert main(["sweep", "run", "tiny.yaml", "--run-dir", "runs"]) == 0
    (first,) = names()
    assert main(["sweep", "run", "tiny.yaml", "--run-dir", "runs", "train.iterations=2"]) == 0
    shown = names()
    (second,) = set(shown) - {first}
    assert shown == {first: "[superseded] 01 seed=0", second: "01 seed=0"}
    assert main(["sweep", "run", "tiny.yaml", "--run-dir", "runs"]) == 0  # the first plan again, from its cached stages
    assert names() == {first: "01 seed=0", second: "[superseded] 01 seed=0"}
    capsys.readouterr()
