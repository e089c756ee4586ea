"""The driver with stand-in engine functions: MLflow schema, results CSV, rerun does nothing twice, failures summarized."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from orchestrator import execute
from orchestrator.driver import RunOptions, prepare, run_plan
from orchestrator.tracking import Tracker, default_uri

SWEEP = """\
name: mini
grid:
  model.freeze: [none, paper]
  style.augment: [false, true]
labels:
  model.freeze: {column: Freeze, values: {paper: "✓", none: "✗"}}
  style.augment: {column: Augment, values: {true: "✓", false: "✗"}}
domains: [C, B]
"""


@pytest.fixture
def fake_engine(monkeypatch):
    """Stand-ins for mine/train/evaluate that write small artifacts and count calls."""
    calls: list[tuple[str, str]] = []

    def mine(ctx):
        calls.append(("mine", ctx.task.key))
        (ctx.tmp / "summary.json").write_text(json.dumps({"n_styles": 3}))
        ctx.artifact(ctx.tmp / "summary.json", "styles")
        return {"n_styles": 3}

    def train(ctx):
        calls.append(("train", ctx.task.key))
        cfg = ctx.config()
        if cfg.train.lr_decoder > 1e20:
            from famix_core.errors import TrainingDiverged

            raise TrainingDiverged("train: loss is nan at iteration 2 (lower train.lr_decoder)")
        for step in range(3):
            ctx.log({"train/loss": 1.0 / (step + 1), "train/lr": 0.1}, step)
        (ctx.tmp / "model.safetensors").write_bytes(b"weights")
        return {"iterations": 3}

    def evaluate(ctx):
        calls.append(("evaluate", ctx.task.key))
        assert (ctx.store.path("train", ctx.task.deps["train"]) / "model.safetensors").is_file()
        miou = int(hashlib.sha256(ctx.task.key.encode()).hexdigest()[:4], 16) / 65535
        result = {"miou": miou, "iou": {"road": miou}, "pixel_acc": 0.9, "n_images": 2}
        ctx.tracker.log_metrics({f"miou/{ctx.task.domain}": 100 * miou}, 0)
        return result

    monkeypatch.setitem(execute.STAGE_RUNNERS, "mine", mine)
    monkeypatch.setitem(execute.STAGE_RUNNERS, "train", train)
    monkeypatch.setitem(execute.STAGE_RUNNERS, "evaluate", evaluate)
    return calls


def _run(overrides=(), sweep="mini", **opts):
    Path("sweeps").mkdir(exist_ok=True)
    Path("sweeps/mini.yaml").write_text(SWEEP)
    plan = prepare(sweep, run_dir="runs", overrides=list(overrides), check_data=lambda c: None, check_weights=lambda c: None)
    buf = io.StringIO()
    result = run_plan(plan, RunOptions(backend="local", **opts), Console(file=buf, width=200))
    return plan, result, buf.getvalue()


def test_sweep_logs_schema_and_rerun_is_a_no_op(fake_engine):
    plan, result, out = _run()
    assert result.exit_code == 0
    kinds = [k for k, _ in fake_engine]
    assert kinds.count("mine") == 1 and kinds.count("train") == 4 and kinds.count("evaluate") == 8
    tr = Tracker(default_uri(plan.run_dir), "mini")
    trials = tr.find({"famix.sweep": "mini", "famix.role": "trial"})
    parents = tr.find({"famix.sweep": "mini", "famix.role": "sweep"})
    assert len(trials) == 4 and len(parents) == 1
    by_index = sorted(trials, key=lambda r: int(r.data.tags["famix.trial_index"]))
    r = by_index[3]
    tags = r.data.tags
    assert tags["mlflow.parentRunId"] == parents[0].info.run_id
    assert json.loads(tags["famix.labels"]) == {"Freeze": "✓", "Augment": "✓"}
    assert tags["famix.label.Freeze"] == "✓" and tags["famix.status"] == "done" and tags["famix.seed"] == "0"
    assert json.loads(tags["famix.domains"]) == ["C", "B"] and json.loads(tags["famix.overrides"]) == []
    assert {"famix.stage.mine", "famix.stage.train", "famix.stage.evaluate.C", "famix.stage.evaluate.B"} <= set(tags)
    assert "famix.stage.mine" not in by_index[0].data.tags  # no bank, no mine stage
    assert tags["famix.git_commit"] and tags["famix.backend"] == "local" and tags["famix.profile"] == "smoke"
    # where the run's models and logs are: `<famix.run_dir>/store/train/<famix.stage.train>/model.safetensors`
    assert tags["famix.run_dir"] == parents[0].data.tags["famix.run_dir"] == str(Path(plan.run_dir).absolute())
    assert (Path(tags["famix.run_dir"]) / "store" / "train" / tags["famix.stage.train"] / "model.safetensors").is_file()
    assert r.data.params["model.freeze"] == "paper" and r.data.params["train.seed"] == "0"
    m = r.data.metrics
    assert {"miou/C", "miou/B", "miou/mean", "iou/C/road", "pixel_acc/C", "train/loss"} <= set(m)
    assert m["miou/mean"] == pytest.approx((m["miou/C"] + m["miou/B"]) / 2)
    assert len(tr.client.get_metric_history(r.info.run_id, "train/loss")) == 3
    arts = {a.path for a in tr.client.list_artifacts(r.info.run_id)}
    assert {"config.yaml", "styles"} <= arts
    # results.csv: wide, one row per trial, percent
    df = pd.read_csv(plan.sweep_dir / "results.csv")
    assert list(df.columns) == ["Freeze", "Augment", "seed", "status", "trial", "C", "B"]
    assert len(df) == 4 and df.loc[3, "C"] == pytest.approx(m["miou/C"], abs=1e-3)
    assert "Freeze" in result.table and "|" in result.table
    # rerun: nothing runs, no run is duplicated, no metric is logged twice
    fake_engine.clear()
    _, again, out2 = _run()
    assert fake_engine == [] and again.exit_code == 0
    assert "all done; MLflow complete" in out2 and again.table == result.table  # fast path: MLflow not even loaded
    assert f"report: {plan.sweep_dir / 'report'} (tables, figures" in "".join(out2.split("\n"))  # it said where, as the run did
    table_md = plan.sweep_dir / "report" / "table.md"
    table_md.write_text(table_md.read_text() + "\n(a `famix report` with other inputs wrote here since)\n")
    assert "report: " not in _run()[2]  # not a report this plan left
    shutil.rmtree(plan.sweep_dir / "report")  # a report this plan left, deleted: written again (the fast path had said nothing)
    _, again, out2 = _run()
    assert fake_engine == [] and table_md.is_file() and f"report: {plan.sweep_dir / 'report'}" in "".join(out2.split("\n"))
    assert len(tr.find({"famix.sweep": "mini"})) == 5 and "all done; MLflow complete" in _run()[2]
    # the same file named by its path (`make sweep SWEEP=sweeps/mini.yaml`) is the same plan: the fast path too
    for sweep in ("sweeps/mini.yaml", str(Path("sweeps/mini.yaml").absolute()), "mini"):
        assert "all done; MLflow complete" in _run(sweep=sweep)[2], sweep
    # without the marker the full path runs: still nothing runs, nothing is duplicated
    (plan.sweep_dir / "finalized.json").unlink()
    _, again, out2 = _run()
    assert fake_engine == [] and again.exit_code == 0 and "13 cached, 0 to run" in out2  # as the progress line and the last line count them
    assert len(tr.find({"famix.sweep": "mini"})) == 5
    assert len(tr.client.get_metric_history(r.info.run_id, "miou/C")) == 1
    # a changed plan never takes the fast path: only the evaluations (whose inputs changed) run again
    assert (plan.sweep_dir / "finalized.json").is_file()
    _, again, out3 = _run(overrides=["eval.max_images=3"])
    assert "MLflow complete" not in out3 and [k for k, _ in fake_engine] == ["evaluate"] * 8
    # the 4 trials of the previous config are superseded (hidden from reports, kept in MLflow); 4 new ones
    assert len(tr.find({"famix.sweep": "mini", "famix.role": "trial"})) == 4
    assert len(tr.find({"famix.sweep": "mini", "famix.role": "superseded"})) == 4
    assert len(pd.read_csv(plan.sweep_dir / "results.csv")) == 4
    # going back restores them (found by trial id), nothing runs
    fake_engine.clear()
    _run()
    assert fake_engine == [] and len(tr.find({"famix.sweep": "mini", "famix.role": "trial"})) == 4
    assert {r.info.run_id for r in tr.find({"famix.sweep": "mini", "famix.role": "trial"})} == {x.info.run_id for x in trials}
    # status shows the same without running anything
    from orchestrator.__main__ import main

    assert main(["sweep", "status", "mini", "--run-dir", "runs"]) == 0


def test_status_and_report_without_the_runs_overrides_leave_its_mlflow_runs(fake_engine, capsys):
    """A sweep run with overrides (``make sweep ARGS=…``), then ``status`` and ``report`` without them:
    they plan other trials, and must neither hide the sweep's runs nor add empty ones."""
    from orchestrator.__main__ import main

    plan, result, printed = _run(overrides=["eval.max_images=3"])
    assert result.exit_code == 0
    # the run's own table says so, and so does its rerun's (the cached table)
    made = "note: made with the command-line overrides `eval.max_images=3`"
    assert made in " ".join(printed.split()) and made in " ".join(_run(overrides=["eval.max_images=3"])[2].split())
    tr = Tracker(default_uri(plan.run_dir), "mini")
    before = {r.info.run_id for r in tr.find({"famix.sweep": "mini", "famix.role": "trial"})}
    assert len(before) == 4
    (plan.sweep_dir / "finalized.json").unlink(missing_ok=True)
    capsys.readouterr()
    assert main(["sweep", "status", "mini", "--run-dir", "runs"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "4 trial runs of this sweep come from another plan" in out, out[-400:]
    assert "the last run had `mini --profile smoke eval.max_images=3`: give this command the same" in out
    assert main(["report", "mini", "--run-dir", "runs", "--out", "rep", "--no-figures"]) == 0
    assert {r.info.run_id for r in tr.find({"famix.sweep": "mini", "famix.role": "trial"})} == before
    assert tr.find({"famix.sweep": "mini", "famix.role": "superseded"}) == []
    assert len(tr.find({"famix.sweep": "mini"})) == 5  # the parent and the 4 trials, nothing added
    report = pd.read_csv("rep/results.csv")
    assert len(report) == 4 and report["C"].notna().all()  # the overridden run's numbers
    note = "made with the command-line overrides `eval.max_images=3`"  # so the table is not taken for the file's own
    assert note in " ".join(capsys.readouterr().out.split()) and note in Path("rep/README.md").read_text()
    assert note in (plan.sweep_dir / "report" / "README.md").read_text()  # the driver's report says it too
    # and the tables themselves, which are pasted elsewhere (README, paper)
    assert f"Note: {note}" in Path("rep/table.md").read_text() and f"% Note: {note}" in Path("rep/table.tex").read_text()
    assert Path("rep/table.tex").read_text().startswith("% FAMix report: ")
    (parent,) = tr.find({"famix.sweep": "mini", "famix.role": "sweep"})
    assert "Command-line overrides: `eval.max_images=3`." in parent.data.tags["mlflow.note.content"]
    # the plain command again: all cached; it says whose results it replaces, and its report has no note
    _, again, out = _run()
    assert again.exit_code == 0
    assert ("note: these replace the results and report of another plan (`famix sweep run mini --profile smoke "
            "eval.max_images=3`)") in " ".join(out.split()), out[-400:]
    assert json.loads((plan.sweep_dir / "driver.json").read_text())["results_of"] == "mini --profile smoke"
    assert "command-line overrides" not in (plan.sweep_dir / "report" / "README.md").read_text()
    assert "command-line overrides" not in (plan.sweep_dir / "report" / "table.md").read_text()
    assert "these replace" not in " ".join(_run()[2].split())  # the same plan again: nothing replaced


def test_a_trials_git_commit_is_the_code_that_computed_it_not_the_last_rerun(fake_engine, monkeypatch):
    """``famix.git_commit`` of a trial run names the code versions recorded in its stages' DONE.json: a
    rerun by newer code that finds them cached keeps it (it was re-tagged with the rerun's commit), a
    stage that newer code computes again adds its version, and the report counts the versions."""
    from orchestrator import store, tracking

    old, new = "0123456789ab" + "c" * 28, "fedcba987654" + "d" * 28
    monkeypatch.setattr(store, "code_version", lambda: old)
    monkeypatch.setattr(tracking, "code_version", lambda: old)
    plan, result, _ = _run()
    assert result.exit_code == 0
    tr = Tracker(default_uri(plan.run_dir), "mini")

    def commits() -> dict[int, str]:
        runs = tr.find({"famix.sweep": "mini", "famix.role": "trial"})
        return {int(r.data.tags["famix.trial_index"]): r.data.tags["famix.git_commit"] for r in runs}

    def readme() -> str:
        return " ".join((plan.sweep_dir / "report" / "README.md").read_text().split())

    assert commits() == {i: old for i in range(4)} and "code version" not in readme()
    assert {json.loads(p.read_text())["code"] for p in Path("runs/store").glob("*/*/DONE.json")} == {old}
    monkeypatch.setattr(store, "code_version", lambda: new)
    monkeypatch.setattr(tracking, "code_version", lambda: new)
    (plan.sweep_dir / "finalized.json").unlink()
    fake_engine.clear()
    assert _run()[1].exit_code == 0 and fake_engine == []
    assert commits() == {i: old for i in range(4)} and "code version" not in readme()
    (parent,) = tr.find({"famix.sweep": "mini", "famix.role": "sweep"})
    assert parent.data.tags["famix.git_commit"] == new  # the parent run: the driver's code
    trial = next(t for t in plan.trials if t.index == 3)
    shutil.rmtree(plan.store.path("evaluate", plan.trial_stages[trial.id].evaluate["B"]))
    assert _run()[1].exit_code == 0 and fake_engine == [("evaluate", plan.trial_stages[trial.id].evaluate["B"])]
    assert commits() == {0: old, 1: old, 2: old, 3: f"{old} {new}"}
    assert "the trials were computed by 2 code versions: `0123456789ab` (4 trials), `fedcba987654` (1 trial)" in readme()


def test_a_report_during_a_run_and_the_drivers_final_report_take_turns(fake_engine, capsys):
    """``famix report`` and the driver write the sweep's report folder one at a time (``report.lock``):
    while one holds it the other waits, says so once, and writes nothing, so a report begun during a
    run can never finish after the driver's final one and replace it with older numbers."""
    import threading
    import time

    from orchestrator.__main__ import main
    from reports.report import report_lock

    plan, result, _ = _run()
    assert result.exit_code == 0
    folder = plan.sweep_dir / "report"
    readme = folder / "README.md"
    for name, work in [
        ("famix report", lambda: main(["report", "mini", "--run-dir", "runs", "--no-figures"])),
        ("the driver", lambda: (plan.sweep_dir / "finalized.json").unlink() or _run()[1].exit_code),
    ]:
        readme.unlink()
        capsys.readouterr()
        done: list[int] = []
        with report_lock(folder):
            thread = threading.Thread(target=lambda: done.append(work()))
            thread.start()
            err, deadline = "", time.monotonic() + 120
            while "waiting: another process writes the report" not in err and time.monotonic() < deadline:
                time.sleep(0.1)
                err += capsys.readouterr().err
            assert "waiting: another process writes the report in " in err and "runs/mini/report (" in err, (name, err[-300:])
            assert not readme.exists() and thread.is_alive(), name
        thread.join(timeout=120)
        assert done == [0] and "Freeze" in readme.read_text(), name
        assert err.count("waiting:") == 1


def test_status_without_the_runs_overrides_names_them_when_none_of_its_plan_is_done(fake_engine, capsys):
    """Overrides that re-key every stage (``train.iterations``, ``mining.steps``): ``status`` without them
    finds nothing of its own plan done, and still says which arguments the last run had, once."""
    from orchestrator.__main__ import main

    plan, result, _ = _run(overrides=["train.iterations=7", "mining.steps=7"])
    assert result.exit_code == 0
    capsys.readouterr()
    assert main(["sweep", "status", "mini", "--run-dir", "runs"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "evaluate: 0 done / 8 to run" in out, out[-400:]
    ran = "mini --profile smoke train.iterations=7 mining.steps=7"
    assert out.count(f"the last run had `{ran}`") == 1, out[-400:]
    assert main(["sweep", "status", "mini", "--run-dir", "runs", "train.iterations=7", "mining.steps=7"]) == 0
    assert "the last run had" not in capsys.readouterr().out


def test_status_shows_the_stages_a_process_runs_now(fake_engine):
    """A stage whose lock a process holds (a worker training it) is ``running`` in ``status``, not ``to run``;
    once it is released it is ``to run`` again, and probing created no lock file."""
    from orchestrator.driver import sweep_status

    Path("sweeps").mkdir(exist_ok=True)
    Path("sweeps/mini.yaml").write_text(SWEEP)
    plan = prepare("mini", run_dir="runs", check_data=lambda c: None, check_weights=lambda c: None)
    train = next(k for k, s in plan.stages.items() if s.kind == "train")
    evaluate = next(k for k, s in plan.stages.items() if s.kind == "evaluate" and s.deps.get("train") == train)

    def status() -> str:
        buf = io.StringIO()
        sweep_status(plan, Console(file=buf, width=250))
        return " ".join(buf.getvalue().split())

    with plan.store.running("train", train), plan.store.running("evaluate", evaluate):
        out = status()
    assert "train: 0 done / 4 to run (1 running)" in out and "evaluate: 0 done / 8 to run (1 running)" in out, out
    assert out.count("│ running │") == 1 and out.count("0/2 done, 1 running") == 1, out
    out = status()
    assert "running" not in out.replace("driver: not running", ""), out
    assert sorted(p.name for p in (plan.store.root / ".locks").iterdir()) == sorted([f"train-{train}.lock", f"evaluate-{evaluate}.lock"])


def _sweep_run(run_dir: str) -> tuple[str, str]:
    """(famix.status, MLflow status) of the sweep's parent run in ``run_dir``'s embedded MLflow."""
    (run,) = Tracker(default_uri(Path(run_dir)), "mini").find({"famix.role": "sweep"})
    return run.data.tags.get("famix.status"), run.info.status


def test_report_with_the_runs_overrides_logs_that_plans_finished_stages(fake_engine, capsys):
    """``famix report SWEEP key=value`` logs the finished stages of the plan those overrides make
    (here a run dir copied without its MLflow database; after ``--detach`` alike) and reports that
    run's numbers; without them the same report has no domain numbers (and is refused). Overrides
    without a sweep file: one line."""
    import shutil

    from orchestrator.__main__ import main

    plan, result, _ = _run(overrides=["eval.max_images=3", "seeds=[0,1]"])
    assert result.exit_code == 0
    ran = pd.read_csv(plan.sweep_dir / "results.csv").sort_values(["Freeze", "Augment", "seed"], ignore_index=True)
    assert len(ran) == 8
    for copy in ("plain", "copied"):
        shutil.copytree("runs", copy, ignore=shutil.ignore_patterns("mlflow.db", "mlartifacts"))
    capsys.readouterr()
    # the default plan: one seed, its evaluations never ran: nothing to report (a table of dashes is not written)
    assert main(["report", "mini", "--run-dir", "plain", "--out", "plain-report", "--no-figures"]) == 2
    assert "mini: none of the sweep's 4 trial runs in MLflow has an mIoU yet" in capsys.readouterr().err
    assert not Path("plain-report").exists()
    status, state = _sweep_run("plain")
    assert status != "done" and state == "RUNNING"  # not every trial of that plan is done
    args = ["report", "mini", "eval.max_images=3", "seeds=[0,1]", "--run-dir", "copied", "--out", "rep", "--no-figures"]
    assert main(args) == 0
    got = pd.read_csv("rep/results.csv").sort_values(["Freeze", "Augment", "seed"], ignore_index=True)
    assert len(got) == 8 and set(got["status"]) == {"done"}  # every stage done: marked so, as the driver does
    assert _sweep_run("copied") == ("done", "FINISHED")  # and so is the sweep's run
    for col in ("C", "B"):
        assert got[col].to_numpy() == pytest.approx(ran[col].to_numpy(), abs=1e-3)
    capsys.readouterr()
    assert main(["report", "no_such_sweep", "seeds=[0,1]", "--csv", "rep/results.csv", "--out", "x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "overrides need a sweep file" in err[0], err
    assert not Path("x").exists()


def test_domains_given_by_name_fill_their_columns(fake_engine):
    """`domains=[cityscapes]` (a name, not the column C): results.csv had a `cityscapes` column left
    empty, as the trials' evaluations are keyed by column; the printed table had the value."""
    plan, result, out = _run(overrides=["domains=[cityscapes,AN]"])
    assert result.exit_code == 0
    df = pd.read_csv(plan.sweep_dir / "results.csv")
    assert list(df.columns[-2:]) == ["C", "AN"] and df[["C", "AN"]].notna().all().all()


def test_nan_loss_fails_without_retry_and_is_summarized(fake_engine):
    plan, result, out = _run(overrides=["train.lr_decoder=1e30"], retries=2)
    assert result.exit_code == 1
    assert [k for k, _ in fake_engine].count("train") == 4  # one attempt each: a NaN loss is deterministic
    assert "FAILED  train" in out and "loss is nan at iteration 2" in out
    assert "stages failed:" in out
    assert len(result.failed) == 4 + 8
    skipped = [line for line in out.splitlines() if " SKIPPED " in line]  # named by the training they need, not its hash
    assert len(skipped) == 8 and all(re.search(r"SKIPPED evaluate/[CB] \S+ \S+: needs train \S+ [0-9a-f]{8}, which failed$", s) for s in skipped), skipped
    summary = out[out.index("4 stages failed:"):]  # the four trainings, each with its error; one line for the rest
    assert summary.count("\n- train ") == 4 and "\n- evaluate" not in summary
    assert "8 stages (evaluate ×8) not run: a stage they need failed (above)" in summary
    assert 'File "' not in summary  # an engine error is its message; the traceback is in the stage's log
    log = next((plan.sweep_dir / "logs").glob("train-*.log")).read_text()
    assert "TrainingDiverged: train: loss is nan at iteration 2" in log and 'File "' in log
    assert "finished in" in summary and ", 0 cached, 4 failed, 8 not run (a stage they need failed)\n" in summary  # it said 12 failed
    df = pd.read_csv(plan.sweep_dir / "results.csv")
    assert set(df["status"]) == {"failed"} and df["C"].isna().all()
    tr = Tracker(default_uri(plan.run_dir), "mini")
    assert {r.data.tags["famix.status"] for r in tr.find({"famix.role": "trial"})} == {"failed"}
    log = next((plan.sweep_dir / "logs").glob("train-*.log")).read_text()
    assert "TrainingDiverged" in log
    # MLflow says why, where its UI shows it: a failed run had only its config.yaml, the cause in the run dir's logs
    for r in tr.find({"famix.role": "trial"}):
        key = r.data.tags["famix.stage.train"]
        assert r.data.tags["famix.error"] == f"train {key[:8]}: TrainingDiverged: train: loss is nan at iteration 2 (lower train.lr_decoder)"
        (logged,) = tr.artifact_names(r.info.run_id, "logs")
        text = Path(tr.client.download_artifacts(r.info.run_id, f"logs/{logged}", str(plan.run_dir / "dl"))).read_text()
        assert key[:8] in logged and "TrainingDiverged: train: loss is nan at iteration 2" in text


def test_the_sweep_run_summarizes_the_last_plan_only(fake_engine):
    """The sweep's MLflow run is every plan's (one per sweep and profile): after `domains=[C]`, it still
    showed `best/miou/B` of the earlier two-domain run beside this table's numbers. A summary metric the
    last plan's table lacks now reads NaN (MLflow deletes no metric), until a plan that has it runs."""
    import math

    plan, result, _ = _run()
    assert result.exit_code == 0
    tr = Tracker(default_uri(plan.run_dir), "mini")
    (parent,) = tr.find({"famix.sweep": "mini", "famix.role": "sweep"})
    both = tr.metrics(parent.info.run_id)
    assert not math.isnan(both["best/miou/B"])
    assert _run(overrides=["domains=[C]"])[1].exit_code == 0
    only_c = tr.metrics(parent.info.run_id)
    assert math.isnan(only_c["best/miou/B"]) and not math.isnan(only_c["best/miou/C"])
    assert only_c["best/miou/mean"] == pytest.approx(only_c["best/miou/C"])  # one domain: the best Mean is the best C
    assert _run()[1].exit_code == 0  # the two-domain plan again, from its cached stages
    assert tr.metrics(parent.info.run_id) == pytest.approx(both)
    assert {"famix.best_row", "famix.best_row_index"} <= set(tr.client.get_run(parent.info.run_id).data.tags)
    assert _run(overrides=["train.lr_decoder=1e30"])[1].exit_code == 1  # every training fails: no row, no best
    assert all(math.isnan(v) for v in tr.metrics(parent.info.run_id).values())
    assert not {"famix.best_row", "famix.best_row_index"} & set(tr.client.get_run(parent.info.run_id).data.tags)


def test_a_trial_done_at_last_loses_the_error_of_its_failed_run(fake_engine):
    """`famix.error` names why a trial failed; once its stages are done (`--rerun-failed`, a fix), the run
    must not go on showing an error beside its numbers."""
    plan, result, _ = _run()
    assert result.exit_code == 0
    tr = Tracker(default_uri(plan.run_dir), "mini")
    first = tr.find({"famix.role": "trial"})[0].info.run_id
    tr.set_tags(first, {"famix.error": "train 0d218b1f: TrainingDiverged: an earlier run's"})  # as that failed run left it
    (plan.sweep_dir / "finalized.json").unlink()  # MLflow is visited again; every stage is cached
    assert _run()[1].exit_code == 0
    assert not any("famix.error" in r.data.tags for r in tr.find({"famix.role": "trial"}))
    # nor where `status` marks it done (stages finished without a driver, after --detach)
    from orchestrator.__main__ import main

    tr.set_tags(first, {"famix.error": "train 0d218b1f: TrainingDiverged: an earlier run's", "famix.status": "failed"})
    assert main(["sweep", "status", "mini", "--run-dir", "runs"]) == 0
    tags = tr.client.get_run(first).data.tags
    assert tags["famix.status"] == "done" and "famix.error" not in tags


def test_cancel_stops_a_running_driver(tmp_path, capsys):
    import subprocess
    import sys
    import time

    from orchestrator.__main__ import main

    Path("sweeps").mkdir(exist_ok=True)
    Path("sweeps/mini.yaml").write_text(SWEEP)
    script = """
import sys, time
from orchestrator import execute
from orchestrator import checks
checks.check_data = lambda cfg, **kw: None
def slow(ctx):
    time.sleep(60)
    return {}
execute.STAGE_RUNNERS.update(mine=slow, train=slow, evaluate=slow)
from orchestrator.__main__ import main
sys.exit(main(["sweep", "run", "mini", "--run-dir", "runs", "eval.max_images=3"]))
"""
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not list(Path("runs/mini/logs").glob("mine-*.log")) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        # a second driver on the same sweep is refused while the first one runs
        from orchestrator.errors import SweepError

        plan = prepare("mini", run_dir="runs", check_data=lambda c: None, check_weights=lambda c: None)
        with pytest.raises(SweepError, match=rf"another driver \(pid {proc.pid}\) is running this sweep"):
            run_plan(plan, RunOptions(backend="local"), Console(file=io.StringIO()))
        # `status` without the running driver's overrides says whose plan it shows; with them it does not
        capsys.readouterr()
        assert main(["sweep", "status", "mini", "--run-dir", "runs"]) == 0
        out = " ".join(capsys.readouterr().out.split())
        assert f"driver pid {proc.pid}" in out and "running" in out, out
        assert "note: the running driver's plan is `famix sweep run mini --profile smoke eval.max_images=3`" in out, out
        assert main(["sweep", "status", "mini", "--run-dir", "runs", "eval.max_images=3"]) == 0
        out = " ".join(capsys.readouterr().out.split())
        assert f"driver pid {proc.pid}" in out and "running driver's plan" not in out, out
        rc = main(["sweep", "cancel", "mini", "--run-dir", "runs"])
        assert rc == 0
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130 and "interrupted" in err
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not any(Path("runs/store").glob("*/*/DONE.json"))


def test_detach_is_refused_without_slurm(tmp_path, capsys):
    """--detach only makes sense where jobs outlive the driver: one line, exit 2, nothing run."""
    from orchestrator.__main__ import main

    rc = main(["sweep", "run", "ablation.yaml", "--backend", "local", "--detach", "--run-dir", str(tmp_path / "runs")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--detach: only the slurm backend" in err
    assert not (tmp_path / "runs").exists()  # refused before the synthetic benchmark is generated there


def test_a_slurm_controller_that_is_down_is_said_before_mlflow_runs_are_made(tmp_path, fake_engine, capsys, monkeypatch):
    """`sweep run --backend slurm` with slurmctld down made the MLflow store, with 25 RUNNING runs that a
    later `status` ended KILLED, for a sweep that never started; a finished sweep still gives its table
    back (it needs no scheduler). The Slurm commands here answer as they do when the controller is down."""
    from orchestrator.__main__ import main
    from orchestrator.errors import SweepError

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sbatch", "squeue", "sacct", "srun"):
        (bin_dir / tool).write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "scontrol").write_text("#!/bin/sh\necho 'Slurmctld(primary) at vm is DOWN'\nexit 1\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    Path("sweeps").mkdir(exist_ok=True)
    Path("sweeps/mini.yaml").write_text(SWEEP)
    plan = prepare("mini", run_dir="runs", check_data=lambda c: None, check_weights=lambda c: None)
    with pytest.raises(SweepError) as e:
        run_plan(plan, RunOptions(backend="slurm", detach=True), Console(file=io.StringIO()))
    assert str(e.value) == "slurm backend: slurmctld does not answer 'scontrol ping': Slurmctld(primary) at vm is DOWN; nothing was submitted"
    assert not Path("runs/mlflow.db").exists() and fake_engine == []
    assert main(["sweep", "plan", "mini", "--backend", "slurm"]) == 0  # a plan made away from the cluster is still a plan
    assert "note: slurm backend: slurmctld does not answer 'scontrol ping'" in capsys.readouterr().err
    # `famix sweep run` said it only after the run dir, its plan and the synthetic benchmark were made
    assert main(["sweep", "run", "mini", "--backend", "slurm", "--run-dir", "elsewhere"]) == 2
    assert "slurmctld does not answer 'scontrol ping'" in capsys.readouterr().err and not Path("elsewhere").exists()
    _, first, _ = _run()  # finished on this machine
    again = run_plan(plan, RunOptions(backend="slurm"), Console(file=io.StringIO()))
    assert first.exit_code == again.exit_code == 0 and again.table == first.table
    assert main(["sweep", "run", "mini", "--backend", "slurm"]) == 0  # finished: the table again, no scheduler needed


PTY_SCRIPT = """
import hashlib, json, sys, time
from orchestrator import execute, checks
checks.check_data = lambda cfg, **kw: None

def mine(ctx):
    return {"n_styles": 1}

def train(ctx):
    for step in range(1, 4):
        time.sleep(0.4)
        ctx.log({"train/loss": 1.0 / step}, step * 100)
    (ctx.tmp / "model.safetensors").write_bytes(b"w")
    return {"iterations": 300}

def evaluate(ctx):
    miou = int(hashlib.sha256(ctx.task.key.encode()).hexdigest()[:4], 16) / 65535
    return {"miou": miou, "iou": {}, "pixel_acc": 0.9, "n_images": 1}

execute.STAGE_RUNNERS.update(mine=mine, train=train, evaluate=evaluate)
from orchestrator.__main__ import main
sys.exit(main(["sweep", "run", "mini", "--run-dir", "runs", "train.iterations=300"]))
"""


def _run_on_pty(cwd: Path, script: str) -> tuple[int, str, str]:
    """Run ``script`` with stdout on a pseudo-terminal (as a user's shell would); returns (rc, screen bytes, stderr)."""
    import os
    import pty
    import subprocess
    import sys

    master, slave = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "160", "LINES": "50"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=cwd, stdout=slave, stderr=subprocess.PIPE, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    _, err = proc.communicate(timeout=120)
    os.close(master)
    return proc.returncode, b"".join(chunks).decode("utf-8", "replace"), err.decode("utf-8", "replace")


def test_on_a_terminal_the_table_is_rich_and_progress_is_live(tmp_path, capsys):
    """On a pty: live progress (counts, running training's iteration i/N, ETA), then a rich table with
    ANSI bold for the best and underline for the second; no Markdown markers; MLflow's INFO lines absent."""
    import re

    Path("sweeps").mkdir(exist_ok=True)
    Path("sweeps/mini.yaml").write_text(SWEEP)
    rc, screen, err = _run_on_pty(tmp_path, PTY_SCRIPT)
    assert rc == 0, err[-2000:]
    assert "Creating initial MLflow database tables" not in screen + err and "INFO mlflow" not in screen + err
    assert "**" not in screen and "<ins>" not in screen and "|:-:|" not in screen
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen)
    assert "done 0 · running 1 · failed 0 · cached 0" in plain  # live counts
    assert re.search(r"train \[.*\] \w{8}.*iteration [123]00/300", plain)  # the running training's own progress
    assert "ETA" in plain and "13/13" in plain
    # the final table: header, right-aligned numbers, best bold, second underlined
    df = pd.read_csv(Path("runs/mini/results.csv"))
    best_c = df["C"].round(2).max()
    second_c = sorted(set(df["C"].round(2)), reverse=True)[1]
    assert re.search(r"\x1b\[1m" + re.escape(f"{best_c:.2f}") + r"\x1b\[0m", screen)
    assert re.search(r"\x1b\[4m" + re.escape(f"{second_c:.2f}") + r"\x1b\[0m", screen)
    header = next(ln for ln in plain.splitlines() if "Freeze" in ln and "Mean" in ln)
    row = next(ln for ln in plain.splitlines() if f"{best_c:.2f}" in ln and "│" not in ln and "stages" not in ln)
    assert row.rindex(f"{best_c:.2f}") + 5 == header.index("C") + 1  # numbers end under their header's last character
    # the same run again, piped: the Markdown table (rerun fast path keeps the format choice)
    from orchestrator.__main__ import main

    capsys.readouterr()
    assert main(["sweep", "run", "mini", "--run-dir", "runs", "train.iterations=300"]) == 0
    out = capsys.readouterr().out
    assert "all done" in out and "| Freeze | Augment |" in out and f"**{best_c:.2f}**" in out


def test_parent_run_carries_the_sweep_the_report_and_summary_metrics(fake_engine, monkeypatch):
    """A user who opens only the MLflow UI: description, sweep file (as written and resolved), plan,
    then the report (md, tex, csv, figures), the table in the description, best/row metrics and tags."""
    import yaml

    from orchestrator import tracking

    searches = []
    monkeypatch.setattr(tracking, "_trial_runs", lambda *a, f=tracking._trial_runs: searches.append(1) or f(*a))
    Path("sweeps").mkdir(exist_ok=True)
    Path("sweeps/mini.yaml").write_text("description: Freeze x Augment on two domains\n" + SWEEP)
    plan = prepare("mini", run_dir="runs", overrides=["train.iterations=7"], check_data=lambda c: None, check_weights=lambda c: None)
    result = run_plan(plan, RunOptions(backend="local"), Console(file=io.StringIO(), width=200))
    assert result.exit_code == 0
    assert len(searches) == 1  # the sweep's runs are searched once (at the end), not per finished stage or trial
    tr = Tracker(default_uri(plan.run_dir), "mini")
    (parent,) = tr.find({"famix.sweep": "mini", "famix.role": "sweep"})
    trials = sorted(tr.find({"famix.sweep": "mini", "famix.role": "trial"}), key=lambda r: int(r.data.tags["famix.trial_index"]))
    pid = parent.info.run_id
    note = parent.data.tags["mlflow.note.content"]
    assert note.startswith("**mini** (profile `smoke`): Freeze x Augment on two domains")
    assert "4 trials (4 rows × 1 seed), 13 stages on `local`" in note and result.table.splitlines()[0] in note
    arts = {a.path for a in tr.client.list_artifacts(pid, "sweep")}
    assert arts == {"sweep/mini.yaml", "sweep/sweep.resolved.yaml", "sweep/plan.json"}
    resolved = yaml.safe_load(Path(tr.client.download_artifacts(pid, "sweep/sweep.resolved.yaml", "dl")).read_text())
    assert resolved["profile"] == "smoke" and resolved["overrides"] == {"train.iterations": 7}
    assert resolved["base"]["train"]["iterations"] == 7 and resolved["domains"] == ["C", "B"]
    report = {a.path for a in tr.client.list_artifacts(pid, "report")}
    assert {f"report/{n}" for n in ("table.md", "table.tex", "results.csv", "summary.csv", "README.md",
                                    "bars.png", "bars.pdf", "delta.png", "delta.pdf", "loss.png", "loss.pdf")} <= report  # fmt: skip
    assert (plan.sweep_dir / "report" / "table.md").is_file()
    # summary metrics: each row's Mean, the best Mean and per-domain bests; the best row's labels as tags
    means = [r.data.metrics["miou/mean"] for r in trials]
    m = tr.client.get_run(pid).data.metrics
    # the table's cells are the trials' unrounded values (they were rounded to 4 decimals first, and a
    # value such as 9.614985 then read 9.62 in the run's table and 9.61 in `famix report`'s)
    assert [m[f"row/{i:02d}/miou/mean"] for i in range(1, 5)] == pytest.approx(means, abs=1e-9)
    assert m["best/miou/mean"] == pytest.approx(max(means), abs=1e-9)
    assert m["best/miou/C"] == pytest.approx(max(r.data.metrics["miou/C"] for r in trials), abs=1e-9)
    csv = pd.read_csv(plan.sweep_dir / "results.csv")
    assert sorted(csv["C"]) == pytest.approx(sorted(r.data.metrics["miou/C"] for r in trials), abs=1e-9)
    best = max(range(4), key=lambda i: means[i])
    tags = tr.client.get_run(pid).data.tags
    labels = json.loads(trials[best].data.tags["famix.labels"])
    assert tags["famix.best_row_index"] == str(best + 1)
    assert tags["famix.best_row"] == f"Freeze={labels['Freeze']},Augment={labels['Augment']}"
    assert tags["famix.best_row"] in trials[best].info.run_name  # pasted into a run-name search, it finds the row
    # run names stay readable: number, labels, seed; numbered from 01 as the table's rows, row/NN metrics
    # and famix.best_row_index are (they counted from 00: row/08 was run 07)
    assert trials[3].info.run_name == "04 Freeze=✓,Augment=✓ seed=0"
    assert trials[best].info.run_name.startswith(f"{int(tags['famix.best_row_index']):02d} ")
    # each trial run ends as its own last stage finishes, not when the whole sweep does
    last = {t.id: max(plan.store.done_info(plan.stages[k].kind, k)["finished"] for k in plan.trial_stages[t.id].keys()) for t in plan.trials}
    ended = {r.data.tags["famix.trial"]: r.info.end_time / 1000 for r in trials}
    assert all(last[t] - 1e-3 <= ended[t] for t in last) and {r.info.status for r in trials} == {"FINISHED"}
    first = min(last, key=last.get)
    assert ended[first] < max(last.values()), (ended, last)
    # MLflow's own User and Source columns and the driver's host (a client-made run left them 'unknown')
    import getpass
    import socket

    for run in (tr.client.get_run(pid), *trials):
        assert run.info.user_id == getpass.getuser()
        assert run.data.tags["mlflow.source.name"] == "famix sweep" and run.data.tags["famix.host"] == socket.gethostname()


def test_system_metrics_only_for_training_and_off_switch(fake_engine):
    from orchestrator.driver import stage_tasks

    Path("sweeps").mkdir(exist_ok=True)
    for flag, interval in (("", 10.0), ("tracking: {system_metrics: false}\n", None), ("tracking: {system_metrics_interval: 2}\n", 2.0)):
        Path("sweeps/mini.yaml").write_text(SWEEP + flag)
        plan = prepare("mini", run_dir="runs", check_data=lambda c: None, check_weights=lambda c: None)
        tasks = stage_tasks(plan, plan.status(), {t.id: "r" for t in plan.trials}, "sqlite:///x", {})
        assert {t.kind: t.tracking["system_metrics"] for t in tasks if t.kind == "train"} == {"train": interval}
        assert all(t.tracking["system_metrics"] is None for t in tasks if t.kind != "train")


def test_system_metrics_are_logged_by_mlflow_while_the_block_runs(tmp_path, monkeypatch):
    import sys
    import time

    from orchestrator.tracking import system_metrics

    tr = Tracker(default_uri(tmp_path), "sysm")
    run_id, _ = tr.ensure_run({"famix.sweep": "s", "famix.role": "trial"}, {}, name="t")
    notes: list[str] = []
    with system_metrics({"uri": tr.uri, "run_ids": [run_id], "system_metrics": 0.3}, notes.append) as n:
        deadline = time.monotonic() + 30  # two samples logged while the block runs (a busy machine takes longer)
        while len(tr.client.get_metric_history(run_id, "system/cpu_utilization_percentage")) < 2 and time.monotonic() < deadline:
            time.sleep(0.3)
    assert n == 1 and notes == []
    keys = set(tr.metrics(run_id))
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= keys
    cpu = tr.client.get_metric_history(run_id, "system/cpu_utilization_percentage")
    assert len(cpu) >= 2 and all(0.0 <= x.value <= 100.0 * (os.cpu_count() or 1) for x in cpu)
    # off: nothing starts; psutil missing: one note, the stage goes on
    with system_metrics({"uri": tr.uri, "run_ids": [run_id], "system_metrics": None}, notes.append) as n:
        assert n == 0
    monkeypatch.setitem(sys.modules, "psutil", None)
    with system_metrics({"uri": tr.uri, "run_ids": [run_id], "system_metrics": 1.0}, notes.append) as n:
        assert n == 0
    assert len(notes) == 1 and "psutil is not installed" in notes[0]


def _modes(root: Path) -> tuple[dict[str, int], dict[str, int]]:
    files, dirs = {}, {}
    for p in [root, *root.rglob("*")]:
        (dirs if p.is_dir() else files)[str(p.relative_to(root))] = p.stat().st_mode & 0o777
    return files, dirs


def test_everything_written_follows_the_umask(fake_engine):
    """Under umask 022 a sweep's run dir (plan, driver.json, results, logs, store, MLflow artifacts, report)
    and a training checkpoint are 0644 files in 0755 folders; under 027, 0640 / 0750 (the umask, not a constant)."""
    import torch

    from famix_core.checkpoint import CheckpointState, save_checkpoint
    from famix_core.io import atomic_write_json, make_temp_dir

    old = os.umask(0o022)
    try:
        plan, result, _ = _run()
        save_checkpoint(plan.run_dir / "work" / "train" / "k", CheckpointState(iteration=3, model={"w": torch.zeros(2)}))
    finally:
        os.umask(old)
    assert result.exit_code == 0
    files, dirs = _modes(plan.run_dir)
    for name in ("mini/plan.json", "mini/driver.json", "mini/results.csv", "mini/finalized.json", "mini/report/table.tex",
                 "mini/report/bars.pdf", "work/train/k/latest.json", "work/train/k/iter-00000003/state.json"):  # fmt: skip
        assert name in files, name
    assert {k: oct(v) for k, v in files.items() if v != 0o644} == {}
    assert {k: oct(v) for k, v in dirs.items() if v != 0o755} == {}
    assert any(k.startswith("mlartifacts/") for k in files) and any(k.startswith("store/train/") for k in files)
    old = os.umask(0o027)
    try:
        atomic_write_json(Path("strict/a.json"), {"a": 1})
        folder = make_temp_dir(Path("strict"))
    finally:
        os.umask(old)
    assert Path("strict/a.json").stat().st_mode & 0o777 == 0o640 and folder.stat().st_mode & 0o777 == 0o750


def test_has_artifacts_answers_no_only_for_a_missing_path(tmp_path, monkeypatch):
    """A missing artifact path means "not logged yet"; any other MLflow error is not swallowed."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, RESOURCE_DOES_NOT_EXIST

    tracker = Tracker(default_uri(tmp_path), "exp", artifact_location=(tmp_path / "mlartifacts").as_uri())
    run_id, _ = tracker.ensure_run({"famix.sweep": "s"}, {}, name="r")
    assert not tracker.has_artifacts(run_id, "styles")
    tracker.log_text(run_id, "{}", "styles/summary.json")
    assert tracker.has_artifacts(run_id, "styles")

    def missing(*args, **kwargs):
        raise MlflowException("no such path", error_code=RESOURCE_DOES_NOT_EXIST)

    monkeypatch.setattr(tracker.client, "list_artifacts", missing)
    assert not tracker.has_artifacts(run_id, "styles")

    def broken(*args, **kwargs):
        raise MlflowException("artifact store unreachable", error_code=INTERNAL_ERROR)

    monkeypatch.setattr(tracker.client, "list_artifacts", broken)
    with pytest.raises(MlflowException, match="unreachable"):
        tracker.has_artifacts(run_id, "styles")



def _duplicate_metric_rows(db: Path) -> list[tuple]:
    """(run, key, step, count) of every metric MLflow holds more than once at one step."""
    import sqlite3

    with sqlite3.connect(db) as con:
        return con.execute("SELECT run_uuid, key, step, COUNT(*) FROM metrics GROUP BY run_uuid, key, step HAVING COUNT(*) > 1").fetchall()


def test_driver_as_the_only_mlflow_writer(fake_engine, capsys):
    """``tracking.writer: driver`` (what ``auto`` picks for Slurm or a Ray cluster with the SQLite store):
    the stages log nothing themselves, the driver logs their recorded metrics, curves and artifacts as
    they finish; ``sweep status`` and ``famix report`` ingest what stages finished without a driver;
    every ingestion again adds nothing."""
    import shutil

    from orchestrator.__main__ import main

    seen_trackers: list[bool] = []
    train = execute.STAGE_RUNNERS["train"]

    def spy_train(ctx):
        seen_trackers.append(ctx.tracker.enabled)
        return train(ctx)

    execute.STAGE_RUNNERS["train"] = spy_train
    Path("sweeps").mkdir(exist_ok=True)
    Path("sweeps/mini.yaml").write_text(SWEEP + "tracking: {writer: driver}\n")
    plan = prepare("mini", run_dir="runs", check_data=lambda c: None, check_weights=lambda c: None)
    buf = io.StringIO()
    assert run_plan(plan, RunOptions(backend="local"), Console(file=buf, width=300)).exit_code == 0
    assert "this driver logs them as they finish" in buf.getvalue()
    assert seen_trackers == [False] * 4  # no stage opened MLflow

    def snapshot() -> dict[str, tuple]:
        tr = Tracker(default_uri(plan.run_dir), "mini")
        out = {}
        for r in tr.find({"famix.sweep": "mini", "famix.role": "trial"}):
            hist = [(m.step, m.value) for m in tr.client.get_metric_history(r.info.run_id, "train/loss")]
            arts = {a.path for a in tr.client.list_artifacts(r.info.run_id, "confusion")} | {a.path for a in tr.client.list_artifacts(r.info.run_id)}
            out[r.data.tags["famix.trial"]] = (dict(r.data.metrics), sorted(hist), arts)
        return out

    first = snapshot()
    assert len(first) == 4
    for metrics, hist, arts in first.values():
        assert {"miou/C", "miou/B", "miou/mean", "iou/C/road", "pixel_acc/B", "train/loss", "train/lr"} <= set(metrics)
        assert hist == [(0, 1.0), (1, 0.5), (2, pytest.approx(1 / 3))]
    assert any("styles" in arts for _, _, arts in first.values())
    db = plan.run_dir / "mlflow.db"
    assert _duplicate_metric_rows(db) == []
    # the store's history is in the artifact, the training's work folder is gone
    train_key = plan.trial_stages[plan.trials[0].id].train
    assert len((plan.store.path("train", train_key) / "history.jsonl").read_text().splitlines()) == 3

    # status, report and a full rerun ingest again: nothing changes, nothing is duplicated
    assert main(["sweep", "status", "mini", "--run-dir", "runs"]) == 0
    assert main(["report", "mini", "--run-dir", "runs", "--no-figures"]) == 0
    (plan.sweep_dir / "finalized.json").unlink()
    assert run_plan(plan, RunOptions(backend="local"), Console(file=io.StringIO(), width=300)).exit_code == 0
    assert snapshot() == first and _duplicate_metric_rows(db) == []

    # stages that finished without a driver (a detached run): a copy of the run dir without MLflow
    for name in ("status", "report"):
        shutil.copytree("runs", name, ignore=shutil.ignore_patterns("mlflow.db", "mlartifacts", "finalized.json"))
        plan = prepare("mini", run_dir=name, check_data=lambda c: None, check_weights=lambda c: None)
        capsys.readouterr()
        if name == "status":
            assert main(["sweep", "status", "mini", "--run-dir", name]) == 0
            out = " ".join(capsys.readouterr().out.split())
            assert "MLflow: logged the finished stages' metrics of 4 trial runs" in out, out[-600:]
        else:
            assert main(["report", "mini", "--run-dir", name, "--no-figures"]) == 0
            assert "| Freeze" in capsys.readouterr().out
        again = snapshot()
        assert {t: (m, h) for t, (m, h, _) in again.items()} == {t: (m, h) for t, (m, h, _) in first.items()}
        assert {t: a for t, (_, _, a) in again.items()} == {t: a for t, (_, _, a) in first.items()}
        assert _duplicate_metric_rows(plan.run_dir / "mlflow.db") == []


def test_auto_writer_is_the_driver_only_for_sqlite_and_remote_stages():
    from orchestrator.backends import get_backend_class
    from orchestrator.driver import tracking_writer

    local, ray, slurm = (get_backend_class(n) for n in ("local", "ray", "slurm"))
    assert tracking_writer("auto", "sqlite:////r/mlflow.db", slurm, {}) == "driver"
    assert tracking_writer("auto", "http://127.0.0.1:5000", slurm, {}) == "stages"
    assert tracking_writer("auto", "sqlite:////r/mlflow.db", local, {}) == "stages"
    assert tracking_writer("auto", "sqlite:////r/mlflow.db", ray, {"ray": {}}) == "stages"
    assert tracking_writer("auto", "sqlite:////r/mlflow.db", ray, {"ray": {"address": "127.0.0.1:6379"}}) == "driver"
    assert tracking_writer("stages", "sqlite:////r/mlflow.db", slurm, {}) == "stages"
    assert tracking_writer("driver", "http://127.0.0.1:5000", local, {}) == "driver"


def test_history_reading_keeps_the_first_value_of_a_step_and_skips_a_torn_line(tmp_path):
    from orchestrator.tracking import read_history

    p = tmp_path / "history.jsonl"
    p.write_text(
        '{"step": 1, "ts": 10, "metrics": {"train/loss": 2.0}}\n'
        '{"step": 2, "ts": 20, "metrics": {"train/loss": 1.5, "train/lr": 0.1}}\n'
        '{"step": 2, "ts": 30, "metrics": {"train/loss": 9.9}}\n'  # a resumed attempt logs step 2 again
        '{"step": 3, "ts": 40, "metrics": {"train/lo'
    )
    assert read_history(p) == [(1, 10, {"train/loss": 2.0}), (2, 20, {"train/loss": 1.5, "train/lr": 0.1})]
    assert read_history(tmp_path / "missing.jsonl") == []


def test_a_full_disk_starts_nothing_more_and_the_rerun_finishes_the_sweep(fake_engine, monkeypatch):
    """A stage that fails on a full disk (or quota) is not retried, and no waiting stage is started
    (each would fail the same way: a training after hours); the summary says what to do, and the
    same command, once there is space, runs only what is left."""
    import errno

    real_train = execute.STAGE_RUNNERS["train"]
    full = {"yes": True}

    def train(ctx):
        if full["yes"] and ctx.config().model.freeze == "paper":
            raise OSError(errno.ENOSPC, "No space left on device", str(ctx.tmp / "model.safetensors"))
        return real_train(ctx)

    monkeypatch.setitem(execute.STAGE_RUNNERS, "train", train)
    plan, result, out = _run(retries=2)
    assert result.exit_code == 1
    ran = [k for k, _ in fake_engine]
    assert ran.count("train") == 2  # the two fine-tuned ones, in plan order before the first frozen one
    assert "HALT    the disk is full: no further stage is started" in out
    halted = [o for o in result.outcomes.values() if o.status == "cancelled"]
    assert halted and all(o.error == "not started: a stage failed on a full disk" for o in halted)
    assert "RETRY" not in out  # retries=2, and not one of them spent on the same full disk
    flat = " ".join(out.split())  # the console wraps long lines
    assert "the disk is full, or its quota used up (" in flat and "free where the run dir" in flat
    assert "Free space (or choose another --run-dir) and run the same command again: the finished stages are kept." in flat
    assert f"1 failed, {len(halted)} not started" in flat

    full["yes"] = False
    done_before = {k for k, o in result.outcomes.items() if o.status == "done"}
    fake_engine.clear()
    plan, result, out = _run()
    assert result.exit_code == 0 and "HALT" not in out
    assert not done_before & {key for _, key in fake_engine}  # what finished before is not run again
    assert [k for k, _ in fake_engine].count("train") == 2  # only the two that were refused
