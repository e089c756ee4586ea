"""Dependency bookkeeping shared by the local and Ray backends (pure Python).

Tracks which tasks are ready (every dependency done, or not part of this run =
already done), hands out retries, and fails the dependents of a failed task
with ``error="dependency <key> failed"`` without running them. After a stage
failed on a full disk (or quota) nothing more is started: the tasks that wait
are ``cancelled`` (``error`` :data:`NOT_STARTED_DISK_FULL`), the running ones end.
"""

from __future__ import annotations

from typing import Callable

from orchestrator.stages import NOT_STARTED_DISK_FULL, EventFn, StageOutcome, StageTask, dependency_failed, disk_full

__all__ = ["DagScheduler"]

_OK = ("done", "cached")


class DagScheduler:
    """Ready queue + retries over a list of stage tasks.

    Args:
        tasks: topologically sorted stage tasks.
        retries: extra attempts for a retryable failure.
        on_event: the driver's event callback.
    """

    def __init__(self, tasks: list[StageTask], retries: int, on_event: EventFn):
        self.tasks = {t.key: t for t in tasks}
        self.order = [t.key for t in tasks]
        self.retries = retries
        self.on_event = on_event
        self.outcomes: dict[str, StageOutcome] = {}
        self.attempts: dict[str, int] = {}
        self.running: set[str] = set()
        self._pending = list(self.order)

    def finished(self) -> bool:
        return len(self.outcomes) == len(self.tasks)

    def _dep_state(self, task: StageTask) -> tuple[bool, str | None]:
        """(all deps ok, key of a failed dep or None)."""
        ok = True
        for dep in task.dep_keys():
            if dep not in self.tasks:
                continue  # done before this run
            out = self.outcomes.get(dep)
            if out is None:
                ok = False
            elif out.status not in _OK:
                return False, dep
        return ok, None

    def ready(
        self, limit: int | None = None, fits: Callable[[StageTask], bool] | None = None, announce: bool = True
    ) -> list[StageTask]:
        """Tasks to start now (at most ``limit``, in plan order, skipping those ``fits`` refuses);
        marks them running and fires ``start`` (``announce=False``: the backend fires it with
        :meth:`started` once the stage really runs, e.g. after a wait in Ray's queue)."""
        out: list[StageTask] = []
        still: list[str] = []
        for key in self._pending:
            task = self.tasks[key]
            ok, failed_dep = self._dep_state(task)
            if failed_dep is not None:
                self._fail_dependency(task, failed_dep)
            elif ok and (limit is None or len(out) < limit) and (fits is None or fits(task)):
                out.append(task)
                self.running.add(key)
                self.attempts[key] = self.attempts.get(key, 0) + 1
                if announce:
                    self.on_event("start", task, None)
            else:
                still.append(key)
        self._pending = still
        return out

    def started(self, key: str) -> None:
        """Fire ``start`` for a task :meth:`ready` handed out with ``announce=False``."""
        self.on_event("start", self.tasks[key], None)

    def _fail_dependency(self, task: StageTask, dep: str) -> None:
        outcome = StageOutcome(task.key, "failed", error=dependency_failed(dep), log_path=task.log_path or None, retryable=False)
        self.outcomes[task.key] = outcome
        self.on_event("failed", task, outcome)

    def complete(self, key: str, outcome: StageOutcome) -> bool:
        """Record an attempt's outcome; returns True when the task will be retried (it goes back to the queue)."""
        task = self.tasks[key]
        self.running.discard(key)
        outcome.attempts = self.attempts.get(key, 1)
        if outcome.status == "failed" and outcome.retryable and not disk_full(outcome.error) and self.attempts[key] <= self.retries:
            self.on_event("retry", task, outcome)
            self._pending.insert(0, key)
            return True
        self.outcomes[key] = outcome
        event = outcome.status if outcome.status in ("failed", "cancelled") else "done"  # done | cached -> "done"
        self.on_event(event, task, outcome)
        if outcome.status == "failed" and disk_full(outcome.error):
            self._cancel(self._pending, NOT_STARTED_DISK_FULL)  # each would fail the same way, a training after hours
        return False

    def cancel_rest(self) -> None:
        """Mark everything not finished as cancelled (interrupt)."""
        self._cancel([key for key in self.order if key not in self.outcomes], "cancelled")
        self.running.clear()

    def _cancel(self, keys: list[str], error: str) -> None:
        """``keys`` end ``cancelled`` with ``error``; nothing waits to start any more."""
        for key in keys:
            out = StageOutcome(key, "cancelled", error=error, attempts=self.attempts.get(key, 0))
            self.outcomes[key] = out
            self.on_event("cancelled", self.tasks[key], out)
        self._pending = []
