"""Stage kinds and what a backend is handed and hands back (plain data; imports nothing of the project).

A stage runs as :func:`orchestrator.execute.execute_stage` (``StageTask -> StageOutcome``) wherever a
backend puts it: in the driver, on a Ray worker, in a Slurm job. Both the backends and the stage
runner import this module; neither imports the other for these types.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

__all__ = ["StageKind", "STAGE_KINDS", "Status", "StageTask", "StageOutcome", "EventFn", "HISTORY_FILE", "DISK_FULL_ERRNOS", "NOT_STARTED_DISK_FULL", "disk_full", "dependency_failed", "failed_dependency"]

StageKind = Literal["mine", "train", "evaluate"]
STAGE_KINDS: tuple[str, ...] = ("mine", "train", "evaluate")
"""The stage kinds of a plan, in the order a trial runs them."""
HISTORY_FILE = "history.jsonl"
"""In a stage's artifact: every metric it logged, one JSON line per step (``{"step", "ts", "metrics"}``,
``ts`` in ms), whatever became of its live MLflow logging; what the driver ingests
(:func:`orchestrator.tracking.ingest`)."""
Status = Literal["done", "failed", "cached", "cancelled", "submitted"]


@dataclass(frozen=True)
class StageTask:
    """Everything a worker needs to run one stage; plain data (JSON-able), so it pickles anywhere.

    Attributes:
        kind: ``mine`` | ``train`` | ``evaluate``.
        key: sha256 hex of exactly the inputs the stage reads (DESIGN.md "Stage identity").
        config: the resolved famix_core config (``FamixConfig.to_dict()``).
        deps: keys of the stages whose artifacts this one consumes, by kind
            (e.g. ``{"mine": "ab12…"}`` for train, ``{"train": "cd34…"}`` for evaluate).
        domain: evaluation column (``C`` …) for ``evaluate``, else ``None``.
        store: absolute path of the artifact store root.
        log_path: where the stage's own log goes.
        tracking: MLflow target: ``{"uri": …, "run_ids": [trial run ids this stage reports to],
            (``uri`` None: the stage logs nothing itself; the driver ingests its :data:`HISTORY_FILE`)
            "system_metrics": sampling interval in seconds for training stages, else None}``.
        resources: e.g. ``{"cpus": 1, "gpus": 0, "mem_gb": 4, "timeout_min": 60}``.
        name: human-readable name for progress lines and job names (may contain any characters).
        command: ``famix sweep run <its arguments>``, the command of the sweep, which hints name
            (e.g. ``… --rerun-failed`` for a damaged input); empty outside a sweep.
    """

    kind: StageKind
    key: str
    config: dict[str, Any]
    deps: dict[str, str] = field(default_factory=dict)
    domain: str | None = None
    store: str = ""
    log_path: str = ""
    tracking: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    command: str = ""

    def dep_keys(self) -> list[str]:
        return list(self.deps.values())


@dataclass
class StageOutcome:
    """What became of one stage."""

    key: str
    status: Status
    seconds: float = 0.0
    attempts: int = 0
    error: str | None = None  # first lines of the error, for the summary
    log_path: str | None = None
    job_id: str | None = None  # Slurm job id / Ray task id, when there is one
    result: dict[str, Any] | None = None
    retryable: bool = True  # False for deterministic failures (NaN loss, bad input): retrying cannot help
    node: str | None = None  # the Ray node id that ran it (Ray backend)


EventFn = Callable[[str, StageTask, StageOutcome | None], None]
"""``on_event(event, task, outcome)`` with event in ``start | done | failed | retry | cancelled``;
the driver's progress display and failure printing hang off it (failures are shown when they happen)."""


DISK_FULL_ERRNOS: tuple[int, ...] = (errno.ENOSPC, errno.EDQUOT)
"""A full disk and an exhausted quota: another attempt on the same disk fails the same way."""
NOT_STARTED_DISK_FULL = "not started: a stage failed on a full disk"
"""The error of the stages a backend did not start after a full disk (status ``cancelled``)."""


def disk_full(error: str | None) -> bool:
    """Whether a stage's error text (it crosses processes and Slurm jobs as text) is a full disk or an
    exhausted quota: ``OSError``'s ``[Errno 28]`` / ``[Errno 122]``, or their words where a library
    wrapped the OS error in its own."""
    if not error:
        return False
    return any(f"[Errno {n}]" in error for n in DISK_FULL_ERRNOS) or "No space left on device" in error or "Disk quota exceeded" in error


def dependency_failed(key: str) -> str:
    """The error of a stage not run because the stage ``key`` it needs failed (every backend's wording)."""
    return f"dependency {key} failed"


def failed_dependency(error: str | None) -> str | None:
    """The key in a :func:`dependency_failed` error, else None."""
    words = (error or "").split()
    return words[1] if len(words) == 3 and words[0] == "dependency" and words[2] == "failed" else None
