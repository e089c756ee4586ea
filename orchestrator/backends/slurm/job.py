"""The body of every Slurm job: run one stage (:class:`SlurmStage`) or several that read the same input,
one after another (:class:`SlurmPack`), retry each, record each outcome, and route SIGUSR2 (preemption,
time limit) through a running training before submitit requeues the job."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
import traceback
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator

from famix_core.io import atomic_write_json
from famix_core.text import count
from orchestrator.backends.slurm.records import outcome_path, read_outcome
from orchestrator.stages import StageOutcome, StageTask

if TYPE_CHECKING:
    from orchestrator.execute import StopRequest

__all__ = ["SlurmStage", "SlurmPack", "StageFailed"]


class StageFailed(RuntimeError):
    """Raised inside a job when its stage (or a stage of its pack) failed for good, so Slurm marks the job FAILED."""


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
        from orchestrator.execute import StopRequest

        stop = StopRequest()
        requeue = _defer_requeue_to_training(stop)
        with _checkpoint_on_cancel(stop) as cancelled:
            outcome = self._run(task, stop, cancelled, requeue)
        if outcome.status == "failed":
            raise StageFailed(f"stage {task.kind} {task.key} failed after {count(outcome.attempts, 'attempt')}: {outcome.error}")
        return outcome

    def _run(
        self, task: StageTask, stop: StopRequest, cancelled: threading.Event, requeue: Callable[[int, Any], Any]
    ) -> StageOutcome:
        """One stage, its attempts and its outcome file; a signal that reached a training ends it
        ``cancelled`` (``famix sweep cancel``) or requeues the job (preemption, time limit)."""
        from famix_core.errors import TrainingInterrupted

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
        path = outcome_path({"outcome_dir": self.outcome_dir}, outcome.key)
        if path is not None:
            atomic_write_json(path, dataclasses.asdict(outcome), indent=2, sort_keys=True)

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


@dataclasses.dataclass
class SlurmPack(SlurmStage):
    """The body of a job that runs several stages reading the same input (the evaluations of one trained
    model), one after another in one process: Python, torch and the model are loaded once, not once a stage.

    Each stage is run, retried and recorded as :class:`SlurmStage` does it (``<outcome_dir>/<key>.json``
    as soon as it is over, so the driver reports it while the job goes on); a failed stage does not stop
    the others. Once all have run, :class:`StageFailed` is raised if any failed, so Slurm marks the job
    FAILED. A requeued pack (preemption, time limit) starts again from its first stage: a stage whose
    outcome this job already wrote keeps it and is not run again.
    """

    def __call__(self, tasks: list[StageTask]) -> list[StageOutcome]:  # type: ignore[override]
        """Run every stage of ``tasks`` in turn; raise :class:`StageFailed` once all ran if any failed."""
        from orchestrator.execute import StopRequest, sharing_inputs

        stop = StopRequest()
        requeue = _defer_requeue_to_training(stop)
        outcomes: list[StageOutcome] = []
        with _checkpoint_on_cancel(stop) as cancelled, sharing_inputs(tasks):
            for i, task in enumerate(tasks):
                earlier = read_outcome({"outcome_dir": self.outcome_dir, "key": task.key}) if self.outcome_dir else None
                if earlier is not None:  # this job ran it before it was requeued
                    print(f"[famix] {task.kind} {task.key[:12]} ({task.name}): {earlier.status} before the requeue", flush=True)
                    outcomes.append(earlier)
                    continue
                outcomes.append(self._run(task, stop, cancelled, requeue))
                if outcomes[-1].status == "cancelled":  # `famix sweep cancel`: the rest of the pack does not start
                    for rest in tasks[i + 1 :]:
                        outcome = StageOutcome(rest.key, "cancelled", error="cancelled before it started (its pack was cancelled)",
                                               log_path=rest.log_path or None, job_id=_env_job_id())  # fmt: skip
                        self._write_outcome(outcome)
                        outcomes.append(outcome)
                    break
        failed = [(t, o) for t, o in zip(tasks, outcomes) if o.status == "failed"]
        if failed:
            names = ", ".join(f"{t.kind} {t.key[:12]}" for t, _ in failed)
            raise StageFailed(f"{len(failed)} of {count(len(tasks), 'stage')} of the pack failed ({names}): {failed[0][1].error}")
        return outcomes

    def checkpoint(self, tasks: list[StageTask]) -> Any:  # type: ignore[override]
        """Requeue the whole pack (called by submitit on preemption / timeout); its finished stages are kept."""
        from submitit.helpers import DelayedSubmission

        print(f"[famix] pack of {count(len(tasks), 'stage')} from {tasks[0].key[:12]}: preempted or timed out; requeueing", flush=True)
        return DelayedSubmission(self, tasks)


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
