"""The Slurm job body in this process (no cluster): SIGUSR2 reaches a running training before submitit requeues;
a pack runs its stages in turn and a failed one fails alone, as the driver reports it (Slurm's states stood in).

The Slurm integration tests (tests/test_slurm.py) send the real signals through a real cluster;
these pin the mechanism where every step can be watched: submitit's handler is stood in for by a
recorder that ends the job the way submitit does (``sys.exit``).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from conftest import plain_tiny_config
from orchestrator.backends.slurm.job import SlurmStage
from orchestrator.execute import StopRequest
from orchestrator.stages import StageOutcome, StageTask


class _Requeued(SystemExit):
    """What submitit's handler ends with after ``scontrol requeue``."""


@pytest.fixture
def submitit_handler():
    """A stand-in for submitit's SIGUSR2 handler (checkpoint + requeue + exit), restored afterwards."""
    calls: list[int] = []

    def handler(signum, frame):
        calls.append(signum)
        raise _Requeued(-1)

    previous = signal.signal(signal.SIGUSR2, handler)
    yield calls
    signal.signal(signal.SIGUSR2, previous)


def _task(tmp_path: Path, kind: str = "train") -> StageTask:
    return StageTask(kind=kind, key="k" * 64, config={}, store=str(tmp_path / "store"), name="stage")  # type: ignore[arg-type]


def test_a_training_checkpoints_at_its_iteration_before_the_job_is_requeued(submitit_handler, tmp_path):
    from famix_core.train import train

    cfg = plain_tiny_config(tmp_path / "data", iterations=8, checkpoint_every=6)
    steps: list[int] = []

    def preempt_at_3(metrics, step):
        steps.append(step)
        if step == 3:
            os.kill(os.getpid(), signal.SIGUSR2)  # the handler runs here, in the middle of iteration 3

    def run(task: StageTask, stop: StopRequest) -> StageOutcome:  # what execute_stage does for a training
        with stop.training() as event:
            train(cfg, tmp_path / "out", ckpt_dir=tmp_path / "ckpt", log=preempt_at_3, stop=event)
        return StageOutcome(task.key, "done", 0.0, 1)

    with pytest.raises(_Requeued):
        SlurmStage(retries=2, fn=run)(_task(tmp_path))
    assert submitit_handler == [signal.SIGUSR2]  # requeued once, after the training stopped
    assert steps == [1, 2, 3]  # iteration 3 finished; no retry attempt started
    assert json.loads((tmp_path / "ckpt" / "latest.json").read_text())["iteration"] == 3  # not the periodic 6


def test_cancel_signal_checkpoints_a_training_and_ends_the_stage_without_requeue(submitit_handler, tmp_path):
    """SIGUSR1 (what ``famix sweep cancel`` sends a running training job first) stops a training at its
    iteration with a checkpoint, like SIGUSR2, but the stage ends ``cancelled`` instead of being requeued."""
    from famix_core.train import train

    cfg = plain_tiny_config(tmp_path / "data", iterations=8, checkpoint_every=6)
    steps: list[int] = []

    def cancel_at_3(metrics, step):
        steps.append(step)
        if step == 3:
            os.kill(os.getpid(), signal.SIGUSR1)

    def run(task: StageTask, stop: StopRequest) -> StageOutcome:
        with stop.training() as event:
            train(cfg, tmp_path / "out", ckpt_dir=tmp_path / "ckpt", log=cancel_at_3, stop=event)
        return StageOutcome(task.key, "done", 0.0, 1)

    before = signal.getsignal(signal.SIGUSR1)
    out = SlurmStage(retries=2, fn=run, outcome_dir=str(tmp_path / "outcomes"))(_task(tmp_path))
    assert out.status == "cancelled" and "stopped on request at iteration 3" in out.error
    assert submitit_handler == []  # not requeued
    assert steps == [1, 2, 3]  # no retry attempt started
    assert json.loads((tmp_path / "ckpt" / "latest.json").read_text())["iteration"] == 3
    assert json.loads((tmp_path / "outcomes" / f"{'k' * 64}.json").read_text())["status"] == "cancelled"
    assert signal.getsignal(signal.SIGUSR1) is before  # the job body's handler is gone again


def test_other_stages_are_requeued_at_once(submitit_handler, tmp_path):
    def run(task: StageTask, stop: StopRequest) -> StageOutcome:
        os.kill(os.getpid(), signal.SIGUSR2)
        raise AssertionError("the signal should have ended the job")

    with pytest.raises(_Requeued):
        SlurmStage(retries=2, fn=run)(_task(tmp_path, "evaluate"))
    assert submitit_handler == [signal.SIGUSR2]


def test_outside_a_submitit_job_the_signal_handler_is_left_alone(tmp_path):
    before = signal.getsignal(signal.SIGUSR2)
    assert not callable(before)  # pytest installs none
    out = SlurmStage(retries=0, fn=lambda t, stop: StageOutcome(t.key, "done", 0.0, 1))(_task(tmp_path))
    assert out.status == "done"
    assert signal.getsignal(signal.SIGUSR2) is before


@pytest.mark.parametrize(
    "outcome, attempts",
    [
        (StageOutcome("k" * 64, "failed", error="RuntimeError: TrainingDiverged in a message", retryable=True), 3),
        (StageOutcome("k" * 64, "failed", error="loss is nan", retryable=False), 1),
    ],
)
def test_retries_follow_the_outcome_flag_not_its_text(tmp_path, outcome, attempts):
    """Whether a stage is retried comes from ``retryable``, set from the exception's type where it was raised."""
    from orchestrator.backends.slurm.job import StageFailed

    calls: list[int] = []

    def run(task: StageTask, stop: StopRequest) -> StageOutcome:
        calls.append(1)
        return outcome

    with pytest.raises(StageFailed):
        SlurmStage(retries=2, fn=run)(_task(tmp_path))
    assert len(calls) == attempts


def test_a_raising_runner_is_retried_by_the_exception_type(tmp_path):
    from famix_core.errors import TrainingDiverged
    from orchestrator.backends.slurm.job import StageFailed

    for exc, attempts in ((RuntimeError("node hiccup"), 3), (TrainingDiverged("train: loss is nan at iteration 2"), 1)):
        calls: list[int] = []

        def run(task: StageTask, stop: StopRequest, exc=exc, calls=calls) -> StageOutcome:
            calls.append(1)
            raise exc

        out_dir = tmp_path / type(exc).__name__
        with pytest.raises(StageFailed):
            SlurmStage(retries=2, outcome_dir=str(out_dir), fn=run)(_task(tmp_path))
        assert len(calls) == attempts
        assert json.loads((out_dir / f"{'k' * 64}.json").read_text())["retryable"] is (attempts > 1)


# ----------------------------------------------------------------------------- packs (backend.slurm.pack)


def _eval_tasks(tmp_path: Path, n: int = 3) -> list[StageTask]:
    """``n`` evaluations of one trained model (the same ``deps``): one pack."""
    return [
        StageTask(kind="evaluate", key=f"{i}" * 64, config={}, deps={"train": "t" * 64}, domain=d,
                  store=str(tmp_path / "store"), name=f"evaluate/{d}")
        for i, d in zip(range(n), ("C", "B", "M", "S"))
    ]  # fmt: skip


def test_a_pack_runs_every_stage_and_a_failed_one_fails_alone(tmp_path):
    """One stage of three fails: the others still run and are recorded done; the job fails once all ran."""
    from orchestrator.backends.slurm.job import SlurmPack, StageFailed

    tasks = _eval_tasks(tmp_path)
    bad = tasks[1].key
    calls: list[str] = []

    def run(task: StageTask, stop: StopRequest) -> StageOutcome:
        calls.append(task.key)
        if task.key == bad:
            return StageOutcome(task.key, "failed", error="ValueError: broken domain folder", retryable=False)
        return StageOutcome(task.key, "done", 0.1, 1, result={"miou": 0.5})

    out_dir = tmp_path / "outcomes"
    with pytest.raises(StageFailed, match=r"1 of 3 stages of the pack failed .*broken domain folder"):
        SlurmPack(retries=2, outcome_dir=str(out_dir), fn=run)(tasks)
    assert calls == [t.key for t in tasks]  # in order, the failed one not retried (deterministic), the last still ran
    written = {t.key: json.loads((out_dir / f"{t.key}.json").read_text())["status"] for t in tasks}
    assert written == {tasks[0].key: "done", bad: "failed", tasks[2].key: "done"}

    # a requeued pack keeps what it wrote: nothing runs again, and it still ends failed
    calls.clear()
    pack = SlurmPack(retries=2, outcome_dir=str(out_dir), fn=run)
    with pytest.raises(StageFailed):
        pack(tasks)
    assert calls == []
    again = pack.checkpoint(tasks)  # preemption / time limit: the whole pack is requeued
    assert again.function is pack and again.args == (tasks,)


def test_a_pack_of_good_stages_returns_their_outcomes(tmp_path):
    from orchestrator.backends.slurm.job import SlurmPack

    tasks = _eval_tasks(tmp_path, 2)
    out = SlurmPack(retries=0, outcome_dir=str(tmp_path / "o"), fn=lambda t, stop: StageOutcome(t.key, "done", 0.1, 1))(tasks)
    assert [o.status for o in out] == ["done", "done"] and [o.key for o in out] == [t.key for t in tasks]


def _pack_records(tasks: list[StageTask], out_dir: Path, job_id: str = "77") -> dict[str, dict]:
    return {
        t.key: {"key": t.key, "kind": t.kind, "name": t.name, "job_id": job_id, "folder": str(out_dir / "%j"),
                "outcome_dir": str(out_dir), "stdout": "job.out", "stderr": "job.err", "log_path": "",
                "pack": [u.key for u in tasks]}
        for t in tasks
    }  # fmt: skip


def test_the_driver_reports_each_stage_of_a_pack(tmp_path, monkeypatch):
    """While the pack's job runs, each stage is reported as its outcome appears; when the job ends FAILED
    because one stage failed, the others stay done and only that one is failed."""
    from orchestrator.backends.slurm import backend as mod
    from orchestrator.backends.slurm.job import SlurmPack, StageFailed

    tasks = _eval_tasks(tmp_path)
    out_dir = tmp_path / "outcomes"
    records = _pack_records(tasks, out_dir)
    job = {"state": "RUNNING"}
    ran: list[str] = []

    def run(task: StageTask, stop: StopRequest) -> StageOutcome:
        ran.append(task.key)
        if task.key == tasks[1].key:
            return StageOutcome(task.key, "failed", error="RuntimeError: no images", retryable=False)
        return StageOutcome(task.key, "done", 0.1, 1)

    pack = SlurmPack(retries=0, outcome_dir=str(out_dir), fn=run)
    polls: list[list[tuple[str, str]]] = []
    events: list[tuple[str, str]] = []

    def states(job_ids):
        """Slurm as the driver sees it: the job runs one more stage between two polls, then ends FAILED."""
        polls.append(list(events))
        if len(polls) == 2:
            pack([tasks[0]])  # the first stage is over, the job goes on
        if len(polls) == 3:
            with pytest.raises(StageFailed):
                pack(tasks)  # the requeue-safe body: the first stage is kept, the others run
            job["state"] = "FAILED"
        return {j: job["state"] for j in job_ids}

    monkeypatch.setattr(mod, "query_states", states)
    backend = mod.SlurmBackend(tmp_path / "sweep", poll_s=0.0)
    out = backend.wait({t.key: t for t in tasks}, records, lambda e, t, o: events.append((e, t.key)))
    assert {k: o.status for k, o in out.items()} == {tasks[0].key: "done", tasks[1].key: "failed", tasks[2].key: "done"}
    assert "no images" in out[tasks[1].key].error and "slurm job 77" in out[tasks[1].key].error
    assert all(o.job_id == "77" for o in out.values())
    assert ran == [t.key for t in tasks]
    # only the stage the job is on counts as started; the first is done before the job ends
    assert polls[1] == [("start", tasks[0].key)]
    assert polls[2] == [("start", tasks[0].key), ("done", tasks[0].key), ("start", tasks[1].key)]


def test_a_pack_whose_job_died_reports_its_unfinished_stages_failed(tmp_path, monkeypatch):
    from orchestrator.backends.slurm import backend as mod

    tasks = _eval_tasks(tmp_path)
    out_dir = tmp_path / "outcomes"
    out_dir.mkdir()
    (out_dir / f"{tasks[0].key}.json").write_text(json.dumps({"key": tasks[0].key, "status": "done", "attempts": 1}))
    monkeypatch.setattr(mod, "query_states", lambda ids: {j: "OUT_OF_MEMORY" for j in ids})
    out = mod.SlurmBackend(tmp_path / "sweep", poll_s=0.0).wait({t.key: t for t in tasks}, _pack_records(tasks, out_dir), lambda *a: None)
    assert out[tasks[0].key].status == "done"
    for t in tasks[1:]:
        assert out[t.key].status == "failed" and "job ended OUT_OF_MEMORY without a stage outcome" in out[t.key].error


def test_the_stages_of_an_evaluate_pack_share_the_loaded_model(tmp_path):
    """Inside a pack, evaluate_domain keeps the model it loaded (famix_core.evaluate.keep_loaded_model); after it, not."""
    from famix_core import evaluate as ev
    from orchestrator.backends.slurm.job import SlurmPack

    seen: list[int] = []

    def run(task: StageTask, stop: StopRequest) -> StageOutcome:
        seen.append(ev._kept["depth"])
        return StageOutcome(task.key, "done", 0.1, 1)

    SlurmPack(retries=0, fn=run)(_eval_tasks(tmp_path, 2))
    assert seen == [1, 1] and ev._kept["depth"] == 0
