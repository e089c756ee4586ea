"""The body of every Slurm job (:class:`SlurmStage`): run one stage, retry it, record its outcome, and
route SIGUSR2 (preemption, time limit) through a running training before submitit requeues the job."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from famix_core.io import atomic_write_json
from orchestrator.stages import StageOutcome, StageTask

if TYPE_CHECKING:
    from orchestrator.execute import StopRequest

__all__ = ["SlurmStage", "StageFailed"]


class StageFailed(RuntimeError):
    """Raised inside a job when its stage failed for good, so Slurm marks the job FAILED."""


@dataclasses.dataclass
class SlurmStage:
    """The body of every Slurm job: run one stage, retry it, record the outcome; checkpointable.

    Attributes:
        retries: further attempts after a failed one, inside the same job (an outcome that is not
            ``retryable``, e.g. a diverged training, is not retried: it is deterministic).
        outcome_dir: folder where ``<key>.json`` (the :class:`StageOutcome`) is written atomically.
        fn: the stage runner, ``(StageTask, StopRequest) -> StageOutcome``; ``None`` means
            :func:`orchestrator.execute.execute_stage`, imported on the node.
    """

    retries: int = 1
    outcome_dir: str = ""
    fn: Callable[[StageTask, StopRequest], StageOutcome] | None = None

    def _runner(self) -> Callable[[StageTask, StopRequest], StageOutcome]:
        if self.fn is not None:
            return self.fn
        from orchestrator.execute import execute_stage

        return execute_stage

    def __call__(self, task: StageTask) -> StageOutcome:
        """Run ``task`` up to ``1 + retries`` times; raise :class:`StageFailed` when every attempt failed."""
        from famix_core.errors import TrainingInterrupted
        from orchestrator.execute import StopRequest

        stop = StopRequest()
        requeue = _defer_requeue_to_training(stop)
        with _checkpoint_on_cancel(stop) as cancelled:
            try:
                return self._attempts(task, stop)
            except TrainingInterrupted as e:  # a signal reached a training: its checkpoint is saved
                print(f"[famix] {task.kind} {task.key[:12]}: {e}", flush=True)
                if cancelled.is_set():  # `famix sweep cancel`: stop here; a later run resumes
                    outcome = StageOutcome(task.key, "cancelled", error=str(e), log_path=task.log_path or None, job_id=_env_job_id())
                    self._write_outcome(outcome)
                    return outcome
                requeue(signal.SIGUSR2, None)  # preemption, time limit: checkpoint() -> requeue -> exit
                raise

    def _write_outcome(self, outcome: StageOutcome) -> None:
        """``<outcome_dir>/<key>.json``, atomically: what the driver reads back (records.read_outcome)."""
        if self.outcome_dir:
            atomic_write_json(Path(self.outcome_dir) / f"{outcome.key}.json", dataclasses.asdict(outcome), indent=2, sort_keys=True)

    def _attempts(self, task: StageTask, stop: StopRequest) -> StageOutcome:
        run = self._runner()
        job_id = _env_job_id()
        t0 = time.time()
        outcome: StageOutcome | None = None
        attempts = 0
        for attempt in range(1, self.retries + 2):
            attempts = attempt
            print(f"[famix] {task.kind} {task.key[:12]} ({task.name}): attempt {attempt}/{self.retries + 1}", flush=True)
            try:
                outcome = run(task, stop)
            except Exception as e:  # the runner should not raise; keep the job's outcome readable anyway
                from orchestrator.execute import retryable

                outcome = StageOutcome(
                    key=task.key, status="failed", error=_error_tail(e), log_path=task.log_path, retryable=retryable(e)
                )
            if outcome.status != "failed":
                break
            print(f"[famix] attempt {attempt} failed: {(outcome.error or '').strip()[-2000:]}", flush=True)
            if not outcome.retryable:
                print("[famix] not retried (deterministic failure)", flush=True)
                break
        assert outcome is not None
        outcome = dataclasses.replace(
            outcome, attempts=attempts, job_id=job_id, seconds=outcome.seconds or time.time() - t0,
            log_path=outcome.log_path or task.log_path or None,
        )  # fmt: skip
        self._write_outcome(outcome)
        if outcome.status == "failed":
            raise StageFailed(f"stage {task.kind} {task.key} failed after {attempts} attempt(s): {outcome.error}")
        return outcome

    def checkpoint(self, task: StageTask) -> Any:
        """Requeue the same stage (called by submitit on preemption / timeout).

        Nothing is saved here: by the time a training stage gets here it has
        already checkpointed at an iteration boundary (see :meth:`__call__`);
        saving inside the signal handler could catch a half-finished optimizer step.
        """
        from submitit.helpers import DelayedSubmission

        print(f"[famix] {task.kind} {task.key[:12]}: preempted or timed out; requeueing", flush=True)
        return DelayedSubmission(self, task)


def _defer_requeue_to_training(stop: StopRequest) -> Callable[[int, Any], Any]:
    """Route SIGUSR2 through ``stop``: a training running under it checkpoints at its next iteration first.

    submitit's handler (requeue now) stays in charge whenever no training is running. Returns that
    handler, which the caller invokes once the training has stopped. Outside a submitit job (no
    callable handler installed) nothing changes and the returned function does nothing.
    """
    requeue = signal.getsignal(signal.SIGUSR2)
    if not callable(requeue):
        return lambda signum, frame: None

    def on_usr2(signum: int, frame: Any) -> None:
        if not stop.ask():
            requeue(signum, frame)

    signal.signal(signal.SIGUSR2, on_usr2)
    return requeue


CANCEL_SIGNAL = signal.SIGUSR1
"""What ``famix sweep cancel`` sends a running job first (``scancel --signal=USR1``): a training
checkpoints and its stage ends ``cancelled``. Not SIGTERM: Slurm also sends SIGTERM on preemption,
which must stay a requeue (SIGUSR2, submitit's)."""


@contextmanager
def _checkpoint_on_cancel(stop: StopRequest) -> Iterator[threading.Event]:
    """While the block runs, :data:`CANCEL_SIGNAL` reaches a running training like SIGUSR2 does: it
    checkpoints the iteration it is in, then the stage ends ``cancelled`` without a requeue, so a later
    ``famix sweep run`` resumes there. Without a training running the signal is ignored here: the
    plain ``scancel`` that ``famix sweep cancel`` sends next ends the job.

    Yields:
        An event set once the signal asked a training to stop. Outside the main thread nothing is installed.
    """
    cancelled = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield cancelled
        return

    def on_cancel(signum: int, frame: Any) -> None:
        if stop.ask():
            cancelled.set()

    before = signal.signal(CANCEL_SIGNAL, on_cancel)
    try:
        yield cancelled
    finally:
        signal.signal(CANCEL_SIGNAL, before)


def _env_job_id() -> str | None:
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def _error_tail(exc: BaseException, lines: int = 20) -> str:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return "\n".join(text.strip().splitlines()[-lines:])
