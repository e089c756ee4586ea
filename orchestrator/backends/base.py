"""The backend interface: what the planner hands over, and what comes back.

A backend receives the stages that still have to run (their artifacts are
missing from the store, :mod:`orchestrator.stages`), each with the keys of the
stages it depends on, and runs them respecting those dependencies. Running one
stage is always the ``execute`` function it was constructed with
(:func:`orchestrator.execute.execute_stage` unless a test injects a stand-in;
picklable, importable on a worker or a Slurm node): the backend only decides
*where and when*.

Everything the driver asks of a backend is on :class:`Backend` (running, plan-time checks,
default parallelism, detaching, status, cancel), so the driver never names one. Adding a backend
is one module under ``orchestrator/backends/`` and one line in
:data:`orchestrator.backends.BACKENDS`.
"""

from __future__ import annotations

import abc
import os
import time
from pathlib import Path
from typing import Any, ClassVar, Collection

from orchestrator.stages import EventFn, StageOutcome, StageTask


class Backend(abc.ABC):
    """Runs stage DAGs. Subclasses register themselves in ``orchestrator.backends.BACKENDS``.

    Constructed as ``cls(sweep_dir=..., options=<the sweep's backend block>, execute=...)``, plus
    ``detach=True`` where :attr:`supports_detach` and ``stop=`` where :attr:`in_process`.
    ``execute(task, stop)`` runs one stage (``stop``: a :class:`orchestrator.execute.StopRequest` or None).
    """

    name: ClassVar[str] = "abstract"

    supports_detach: ClassVar[bool] = False
    """Whether ``run`` can submit and return while the stages go on without the driver (``--detach``)."""

    stages_outlive_driver: ClassVar[bool] = False
    """Whether stages go on when their driver dies (Slurm jobs do; local workers and the tasks of a Ray
    job end with it). Where they do not, the MLflow runs that a killed driver left ``RUNNING`` are
    ended ``KILLED`` by the next ``famix sweep status`` or ``famix report``."""

    default_parallelism: ClassVar[int] = 0
    """Stages in flight when neither ``--max-parallel`` nor ``backend.max_parallel`` says (0: the backend
    decides from its own resources or options)."""

    in_process: ClassVar[bool] = False
    """Whether stages run in the driver's own process; such a backend is also constructed with
    ``stop=`` (the driver's SIGTERM handler's :class:`orchestrator.execute.StopRequest`), so a
    running training checkpoints before the driver stops. Other backends stop their stages themselves."""

    @abc.abstractmethod
    def run(
        self,
        tasks: list[StageTask],
        *,
        max_parallel: int,
        retries: int,
        on_event: EventFn,
    ) -> dict[str, StageOutcome]:
        """Run ``tasks`` (topologically sorted; a dep missing from ``tasks`` is already done).

        A task whose dependency failed is not run and is reported ``failed`` with
        ``error="dependency <key> failed"``. Returns one outcome per task key.
        """

    @classmethod
    def parallelism(cls, options: dict[str, Any]) -> int:
        """Stages in flight under ``options`` (the sweep's backend block) when neither
        ``--max-parallel`` nor ``backend.max_parallel`` says; default :attr:`default_parallelism`."""
        return cls.default_parallelism

    @classmethod
    def unreachable(cls) -> str | None:
        """Why the scheduler this backend submits to cannot be used from here (its commands missing,
        its controller down), else None (default: nothing to reach). ``famix sweep run`` with stages to
        run refuses before MLflow's runs are made; ``famix sweep plan`` notes it."""
        return None

    @classmethod
    def preflight(cls, options: dict[str, Any], kinds: Collection[str] | None = None) -> Any:
        """Plan-time checks of the backend's own settings against what it runs on (default: none).
        ``kinds``: the stage kinds the plan holds (None: any).

        Raises:
            SweepError: one line, before anything is submitted.
        """
        return None

    @classmethod
    def remote_workers(cls, options: dict[str, Any]) -> bool:
        """Whether stages may run on other machines than the driver's under ``options`` (the sweep's
        backend block). Such stages leave an embedded SQLite MLflow store to the driver
        (``tracking.writer: auto``): SQLite's locking is unreliable on shared network filesystems.
        Where they run here, the plan checks ``train.device`` against this machine's GPUs
        (:func:`orchestrator.checks.check_device`)."""
        return False

    @classmethod
    def stage_gpus(cls, kind: str, options: dict[str, Any]) -> int | None:
        """How many GPUs a stage of ``kind`` is given under ``options`` (the sweep's backend block),
        which it sees as ``cuda:0`` and up (the scheduler sets ``CUDA_VISIBLE_DEVICES``); None where
        the backend gives none and a stage sees the machine's (default). The plan checks
        ``train.device`` against it (:func:`orchestrator.checks.check_stage_gpus`)."""
        return None

    @classmethod
    def stage_gpus_key(cls, kind: str, options: dict[str, Any]) -> str:
        """The key of the sweep file that sets :meth:`stage_gpus` of ``kind`` (for messages)."""
        return f"resources.{kind}.gpus"

    @classmethod
    def status(cls, sweep_dir: str | os.PathLike[str]) -> list[str]:
        """Lines for ``famix sweep status`` about what this backend still holds for the sweep in
        ``sweep_dir`` (e.g. queued jobs), readable from any process; default: nothing."""
        return []

    def cancel(self, sweep_dir: str | os.PathLike[str]) -> int:
        """Cancel what this backend still runs for the sweep in ``sweep_dir``; returns how many."""
        return 0

    @classmethod
    def jobs_ended(cls, sweep_dir: str | os.PathLike[str]) -> bool:
        """Whether every job this backend was given for the sweep in ``sweep_dir`` has ended, so a stage
        not done now stays so until a new run (``status`` then ends its MLflow runs); False where it
        cannot tell. Only asked of a backend whose stages outlive the driver (default: False)."""
        return False

    def close(self) -> None:
        """Release resources (shut Ray down, …)."""


def backend_failure(task: StageTask, error: str, *, retryable: bool) -> StageOutcome:
    """A failure the backend decided for a stage (unschedulable, timed out, its worker died): one
    ``failed:`` line in the stage's log, as ``execute_stage`` writes its own, and the outcome."""
    if task.log_path:
        Path(task.log_path).parent.mkdir(parents=True, exist_ok=True)
        with open(task.log_path, "a", encoding="utf-8") as f:
            f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} failed: {error}\n")
    return StageOutcome(task.key, "failed", error=error, log_path=task.log_path or None, retryable=retryable)


def timed_out(task: StageTask, minutes: float, backend: str) -> StageOutcome:
    """The retryable failure of a stage that ``backend`` stopped after ``minutes`` of running."""
    error = f"timed out after {float(minutes):g} min of running (resources.timeout_min); stopped by the {backend} backend"
    return backend_failure(task, error, retryable=True)
