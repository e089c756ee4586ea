"""The in-process backend: stages run one after another in the driver (debugging, tests, small sweeps)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from famix_core.errors import TrainingInterrupted
from orchestrator.backends.base import Backend
from orchestrator.backends.dag import DagScheduler
from orchestrator.stages import EventFn, StageOutcome, StageTask

if TYPE_CHECKING:
    from orchestrator.execute import StopRequest

__all__ = ["LocalBackend"]


class LocalBackend(Backend):
    """Sequential, in-process.

    Args:
        execute: the stage function, called as ``execute(task, stop)`` (default
            :func:`orchestrator.execute.execute_stage`; tests inject stand-ins).
        stop: the stop request of the driver's SIGTERM handler (a training stage checkpoints and stops).
    """

    name = "local"
    default_parallelism = 1
    in_process = True

    def __init__(
        self,
        execute: Callable[[StageTask, StopRequest | None], StageOutcome] | None = None,
        stop: StopRequest | None = None,
        **_: object,
    ):
        if execute is None:
            from orchestrator.execute import execute_stage

            execute = execute_stage
        self.execute = execute
        self.stop = stop

    def run(self, tasks: list[StageTask], *, max_parallel: int, retries: int, on_event: EventFn) -> dict[str, StageOutcome]:
        dag = DagScheduler(tasks, retries, on_event)
        try:
            while not dag.finished():
                batch = dag.ready(limit=1)
                if not batch:
                    if dag.finished():
                        break
                    raise RuntimeError("dependency cycle or missing dependency among stages")  # plan bug
                task = batch[0]
                dag.complete(task.key, self.execute(task, self.stop))
        except KeyboardInterrupt:
            dag.cancel_rest()
            raise
        except TrainingInterrupted:  # SIGTERM: the training checkpointed its iteration; the sweep stops
            dag.cancel_rest()
            raise KeyboardInterrupt from None
        return dag.outcomes
