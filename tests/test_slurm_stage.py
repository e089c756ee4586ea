"""The Slurm job body in this process (no cluster): SIGUSR2 reaches a running training before submitit requeues.

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
