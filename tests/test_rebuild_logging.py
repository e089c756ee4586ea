"""A stage run again (rebuilt by ``--rerun-failed``, or its artifact deleted) logs nothing twice to MLflow.

The audit: a damaged ``model.safetensors`` rebuilt, and an evaluation run again, gave the trial run its
loss curve twice (train/loss and train/lr at every step), ``miou/C``, ``iou/C/*``, ``pixel_acc/C``
twice (the evaluation's live logging) and ``train/seconds`` twice (the driver's ingestion of the
rebuilt training's cost): 63 repeated (metric, step) pairs in a 2-trial sweep.
"""

from __future__ import annotations

import io
import time

import pytest
from rich.console import Console

from orchestrator import execute
from orchestrator.driver import RunOptions, run_plan
from orchestrator.tracking import Tracker, default_uri
from test_faults import _plan
from test_orch_driver import _duplicate_metric_rows, fake_engine  # noqa: F401 — the engine stand-ins (fixture)

SWEEP = """\
name: mini
grid:
  style.mix: [false, true]
domains: [C, B]
"""


@pytest.fixture
def logging_engine(fake_engine):  # noqa: F811 — the fixture imported above
    """The stand-ins, with a bank that logs its loss curve and a training whose cost (wall seconds)
    differs on each run, as a real training's does."""
    mine, train = execute.STAGE_RUNNERS["mine"], execute.STAGE_RUNNERS["train"]

    def logging_mine(ctx):
        for step in range(3):
            ctx.log({"mine/loss": 2.0 / (step + 1)}, step)
        return mine(ctx)

    def costly_train(ctx):
        return {**train(ctx), "seconds": time.perf_counter(), "images_per_s": 3.0}

    execute.STAGE_RUNNERS["mine"] = logging_mine  # restored by fake_engine's monkeypatch (setitem)
    execute.STAGE_RUNNERS["train"] = costly_train
    return fake_engine


@pytest.mark.parametrize("writer", ["stages", "driver"])
def test_rebuilt_and_rerun_stages_log_no_metric_step_twice(logging_engine, writer):
    """A truncated model and a changed bank, rebuilt by `--rerun-failed`, and two evaluations deleted by
    hand: every stage runs again, and each trial run still holds each (metric, step) once, with every
    metric of the first run. Stages logging themselves (every local, Ray or Slurm stage with a server)
    and the driver as the only writer (Slurm or a Ray cluster with the SQLite store) alike."""
    plan = _plan(SWEEP + ("tracking: {writer: driver}\n" if writer == "driver" else ""))
    console = lambda: Console(file=io.StringIO(), width=200)  # noqa: E731
    assert run_plan(plan, RunOptions(backend="local"), console()).exit_code == 0
    db = plan.run_dir / "mlflow.db"
    assert _duplicate_metric_rows(db) == []
    tr = Tracker(default_uri(plan.run_dir), "mini")

    def curves() -> dict[str, dict[str, list[int]]]:
        return {r.data.tags["famix.trial"]: {k: sorted(m.step for m in tr.client.get_metric_history(r.info.run_id, k)) for k in r.data.metrics}
                for r in tr.find({"famix.sweep": "mini", "famix.role": "trial"})}  # fmt: skip

    first = curves()
    assert all({"mine/loss", "train/loss", "train/lr", "train/seconds", "miou/C", "iou/B/road"} <= set(m) for m in first.values()), first

    damaged, rerun = plan.trials[1], plan.trials[0]
    ts = plan.trial_stages[damaged.id]
    model = plan.store.path("train", ts.train) / "model.safetensors"
    model.write_bytes(model.read_bytes()[:3])  # truncated
    (plan.store.path("mine", ts.mine) / "summary.json").write_text('{"n_styles": 4}')  # changed
    import shutil

    shutil.rmtree(plan.store.path("evaluate", ts.evaluate["C"]))  # deleted: runs again on the damaged weights, fails once
    shutil.rmtree(plan.store.path("evaluate", plan.trial_stages[rerun.id].evaluate["B"]))  # deleted: runs again
    assert run_plan(plan, RunOptions(backend="local"), console()).exit_code == 1
    logging_engine.clear()
    assert run_plan(plan, RunOptions(backend="local", rerun_failed=True), console()).exit_code == 0
    assert {("mine", ts.mine), ("train", ts.train), ("evaluate", ts.evaluate["C"])} <= set(logging_engine)  # rebuilt

    trial_runs = {r.info.run_id for r in tr.find({"famix.sweep": "mini", "famix.role": "trial"})}
    # (the sweep's run logs its summary again when the table changed: the failed run's had a gap)
    assert [row for row in _duplicate_metric_rows(db) if row[0] in trial_runs] == []
    assert curves() == first  # nothing lost either: each metric at each of its steps, once
