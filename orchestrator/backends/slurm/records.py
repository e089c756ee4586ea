"""The sweep's Slurm job records (``<sweep dir>/slurm/jobs.json``) and what can be read or done from them
in any process: each stage's outcome, a status row per stage, cancelling what is still queued or running.

There is one record per stage. The stages of a pack (``backend.slurm.pack``) share one job: their records
hold the same ``job_id`` and list the pack's stage keys in run order (``pack``); each stage still has
its own outcome file."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Mapping

from famix_core.errors import FamixError
from orchestrator.backends.slurm.cluster import ACTIVE_STATES, SlurmUnavailable, query_states, slurm_available
from orchestrator.stages import StageOutcome

__all__ = ["JOBS_FILE", "jobs_path", "load_jobs", "outcome_path", "read_outcome", "slurm_status", "cancel_jobs", "recorded_jobs_ended"]

JOBS_FILE = "jobs.json"


def jobs_path(sweep_dir: Path) -> Path:
    """Where a sweep's job records live."""
    return sweep_dir / "slurm" / JOBS_FILE


def load_jobs(sweep_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The sweep's ``slurm/jobs.json``: ``{"stages": {key: record}, "submissions": [...]}`` (empty when absent)."""
    path = jobs_path(Path(sweep_dir))
    if not path.is_file():
        return {"version": 1, "stages": {}, "submissions": []}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise FamixError(f"{path}: unreadable job record ({e}); delete it to forget the submitted jobs") from None
    data.setdefault("stages", {})
    data.setdefault("submissions", [])
    return data


def slurm_status(sweep_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """One row per recorded stage: key, kind, name, job id, Slurm state, outcome status and log paths.

    Reads ``slurm/jobs.json`` and asks Slurm (squeue/sacct); usable from any process.
    """
    data = load_jobs(sweep_dir)
    stages = data["stages"]
    states = query_states((r["job_id"] for r in stages.values()), settled=True) if stages and not slurm_available() else {}
    rows = []
    for key, rec in stages.items():
        outcome = read_outcome(rec)
        rows.append(
            {
                "key": key,
                "kind": rec.get("kind"),
                "name": rec.get("name"),
                "job_id": rec.get("job_id"),
                "state": states.get(rec.get("job_id", ""), "UNKNOWN"),
                "status": outcome.status if outcome else None,
                "stdout": rec.get("stdout"),
                "stderr": rec.get("stderr"),
                "log_path": rec.get("log_path"),
            }
        )
    return rows


def recorded_jobs_ended(sweep_dir: str | os.PathLike[str]) -> bool:
    """Whether Slurm knows every recorded job of the sweep to have ended (none queued or running; no
    record: none was submitted). False where it cannot tell: Slurm does not answer, or a job is
    known to neither squeue nor sacct (just submitted, or accounting is off)."""
    stages = load_jobs(sweep_dir)["stages"]
    if not stages:
        return True
    if slurm_available():
        return False
    states = query_states((r["job_id"] for r in stages.values()), settled=True)
    return not any(state in ACTIVE_STATES or state == "UNKNOWN" for state in states.values())


def cancel_jobs(sweep_dir: str | os.PathLike[str], grace_s: float = 60.0) -> int:
    """Cancel the sweep's queued and running jobs; returns how many jobs (a pack's stages share one).

    The queued jobs go first: a training that ends on its checkpoint ends its job well, which would
    start the evaluations waiting on it (``afterok``), to fail on a model that is not there. Then
    running training jobs get ``scancel --signal=USR1`` (:data:`~orchestrator.backends.slurm.job.CANCEL_SIGNAL`):
    a training checkpoints the iteration it is in and its job ends by itself (waited for up to
    ``grace_s``); then every job still queued or running is cancelled (submitit ``job.cancel()``:
    scancel). Finished artifacts stay in the store; a later ``famix sweep run`` resumes the trainings.
    """
    import subprocess
    import time

    data = load_jobs(sweep_dir)
    stages = data["stages"]
    if not stages:
        return 0
    reason = slurm_available()
    if reason:
        raise SlurmUnavailable(f"cannot cancel the jobs of {sweep_dir}: {reason}")
    states = query_states(r["job_id"] for r in stages.values())
    by_job = {r["job_id"]: r for r in stages.values()}  # one record per job: the stages of a pack share theirs
    live = [r for r in by_job.values() if states.get(r["job_id"]) in ACTIVE_STATES | {"UNKNOWN"}]
    running = [r["job_id"] for r in live if states.get(r["job_id"]) == "RUNNING" and r.get("kind") == "train"]
    from submitit import SlurmJob

    for rec in live:
        if states.get(rec["job_id"]) == "PENDING":
            SlurmJob(folder=rec["folder"], job_id=rec["job_id"]).cancel(check=False)
    if running:
        subprocess.run(["scancel", "--signal=USR1", *running], capture_output=True, check=False)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            now = query_states(running)
            if not any(now.get(j) in ACTIVE_STATES for j in running):
                break
            time.sleep(0.5)
    for rec in live:
        SlurmJob(folder=rec["folder"], job_id=rec["job_id"]).cancel(check=False)
    return sum(1 for r in live if states.get(r["job_id"]) in ACTIVE_STATES)


def outcome_path(rec: Mapping[str, Any], key: str | None = None) -> Path | None:
    """Where the job of record ``rec`` writes the outcome of stage ``key`` (default: the record's own)."""
    if not rec.get("outcome_dir"):
        return None
    return Path(rec["outcome_dir"]) / f"{key or rec.get('key', '')}.json"


def read_outcome(rec: Mapping[str, Any]) -> StageOutcome | None:
    """The :class:`StageOutcome` a job wrote beside its logs, or None (not written yet, unreadable)."""
    path = outcome_path(rec)
    if path is None or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        return StageOutcome(**{f.name: data.get(f.name) for f in dataclasses.fields(StageOutcome) if f.name in data})
    except (OSError, json.JSONDecodeError, TypeError):
        return None
