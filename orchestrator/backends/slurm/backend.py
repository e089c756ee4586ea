"""The Slurm backend itself: stages submitted wave by wave as job arrays with ``afterok`` dependencies,
adopted again while still queued, then waited for (or left to Slurm: ``detach``). See the package
docstring for the whole picture."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Collection, Mapping, Protocol, Sequence, TypeVar

from famix_core.errors import FamixError
from famix_core.io import atomic_write_json
from famix_core.text import count
from orchestrator.backends.base import Backend
from orchestrator.backends.slurm.cluster import (
    ACTIVE_STATES,
    NEVER_REASONS,
    TERMINAL_STATES,
    SlurmUnavailable,
    cancel_pending,
    cluster_shape,
    max_array_size,
    max_time_min,
    pending_reasons,
    query_states,
    slurm_available,
)
from orchestrator.backends.slurm.job import SlurmPack, SlurmStage
from orchestrator.backends.slurm.options import (
    DEFAULT_ARRAY_PARALLELISM,
    array_parallelism,
    pack_kinds,
    pack_parameters,
    stage_parameters,
    validate_slurm_options,
)
from orchestrator.backends.slurm.records import (
    cancel_jobs, jobs_path, load_jobs, outcome_path, read_outcome, recorded_jobs_ended, slurm_status,
)  # fmt: skip
from orchestrator.backends.slurm.sbatch import chunks, executor_parameters, share_cap
from orchestrator.stages import NOT_STARTED_DISK_FULL, STAGE_KINDS, EventFn, StageOutcome, StageTask, dependency_failed, disk_full

__all__ = ["SlurmBackend", "absolute_path", "packs"]


def absolute_path(path: str | os.PathLike[str], what: str, notes: list[str] | None = None) -> Path:
    """``path`` made absolute; a relative one is resolved against the current folder and noted.

    Slurm jobs run on other nodes, possibly in another folder, so every path a
    job reads (store, logs, submitit folder) must be absolute and on a shared
    filesystem.
    """
    p = Path(path).expanduser()
    if not p.is_absolute():
        p = p.resolve()
        if notes is not None:
            notes.append(f"{what} {str(path)!r} is relative; using {p} (it must be on a filesystem the nodes share)")
    return p


class _StuckJobs:
    """Says once each job that waits in the queue for what its partition cannot give (squeue's reason
    one of :data:`~.cluster.NEVER_REASONS`, e.g. ``PartitionConfig`` for more CPUs than a node has):
    the driver would otherwise wait for it in silence. Each pending job is asked about once per
    ``after_s``, from ``after_s`` after it was first seen pending."""

    def __init__(self, after_s: float, notify: Callable[[str], None]):
        self.after_s = after_s
        self.notify = notify
        self.pending_since: dict[str, float] = {}
        self.asked_at: dict[str, float] = {}
        self.said: set[str] = set()

    def check(self, live: Mapping[str, dict[str, Any]], states: Mapping[str, str], tasks: Mapping[str, StageTask], now: float) -> None:
        due: dict[str, str] = {}  # job id -> a stage of it
        for key, rec in live.items():
            job = rec["job_id"]
            if states.get(job) != "PENDING" or job in self.said:
                continue
            since = self.pending_since.setdefault(job, now)
            if now - since >= self.after_s and now - self.asked_at.get(job, -float("inf")) >= self.after_s:
                due.setdefault(job, key)
        if not due:
            return
        reasons = pending_reasons(due)
        for job, key in due.items():
            self.asked_at[job] = now
            reason = reasons.get(job)
            if reason in NEVER_REASONS:
                self.said.add(job)
                task = tasks[key]
                self.notify(
                    f"slurm job {job} ({task.name or task.kind}) waits in the queue with reason {reason}: its partition "
                    "cannot give what it asks (backend.slurm cpus_per_task, gpus, mem, time or constraint, or "
                    "resources.<kind>); it starts only once an administrator changes the partition (the driver keeps "
                    "waiting): `famix sweep cancel` with this sweep's arguments stops the sweep"
                )


class _Stage(Protocol):
    kind: str
    key: str
    deps: dict[str, str]


S = TypeVar("S", bound=_Stage)


def packs(tasks: Sequence[S], kinds: tuple[str, ...] | list[str]) -> list[list[S]]:
    """``tasks`` as the units of one job each: a stage of a packed kind goes with the other
    stages that read the same inputs (the same dependency keys: one trained model's evaluations), in
    the given order; any other stage is a unit by itself. Stage tasks, or the plan's stages."""
    units: dict[Any, list[S]] = {}
    for t in tasks:
        ident = ("pack", t.kind, tuple(sorted(t.deps.items()))) if t.kind in kinds else ("stage", t.key)
        units.setdefault(ident, []).append(t)
    return list(units.values())


class SlurmBackend(Backend):
    """Runs stage DAGs on Slurm through submitit.

    Args:
        sweep_dir: the sweep's folder (``runs/<sweep>``; its name goes into the job names).
        options: the sweep's backend block (``{kind, max_parallel, resources, slurm: {...}}``), or
            just its ``slurm`` block (validated again here).
        detach: submit and return at once (outcomes ``submitted`` with job ids).
        poll_s: seconds between state polls while waiting.
        max_array_size: tasks per array at most (default: the cluster's ``MaxArraySize``).
        execute: what each job runs (default :func:`orchestrator.execute.execute_stage`, imported on the node).
        python: command that starts Python on the nodes (default: this interpreter).
        max_num_timeout: requeues after timeout/preemption before a job gives up.
        lost_after_s: a job that neither squeue nor sacct knows for this long counts as lost; not while
            the controller does not answer at all (a restart): the driver says so and waits for it.
        notify: where notes go (default: stderr).
        stuck_after_s: a job pending this long is asked why; one that waits for what its partition
            cannot give (:data:`~.cluster.NEVER_REASONS`) is said once, while the driver waits on.
    """

    name = "slurm"
    supports_detach = True
    stages_outlive_driver = True

    def __init__(
        self,
        sweep_dir: str | os.PathLike[str],
        options: Mapping[str, Any] | None = None,
        detach: bool = False,
        poll_s: float = 2.0,
        max_array_size: int | None = None,
        execute: Callable[[StageTask], StageOutcome] | None = None,
        python: str | None = None,
        max_num_timeout: int = 3,
        lost_after_s: float = 120.0,
        notify: Callable[[str], None] | None = None,
        stuck_after_s: float = 30.0,
    ) -> None:
        self.stuck_after_s = stuck_after_s
        self.notes: list[str] = []
        self.sweep_dir = absolute_path(sweep_dir, "sweep folder", self.notes)
        block = dict(options or {})
        # The driver passes the whole backend block (kind, max_parallel, resources, slurm, ...);
        # tests and scripts may pass the slurm block itself.
        is_backend_block = bool({"kind", "resources", "slurm", "ray", "retries", "max_parallel"} & set(block))
        self.options = dict(block.get("slurm") or {}) if is_backend_block else block
        self.backend_max_parallel = block.get("max_parallel") if is_backend_block else None
        validate_slurm_options(self.options, "backend.slurm")
        self.detach = detach
        self.poll_s = poll_s
        self.max_array_size = max_array_size
        self.execute = execute
        self.python = python
        self.max_num_timeout = max_num_timeout
        self.lost_after_s = lost_after_s
        self._notify = notify or (lambda msg: print(f"famix: note: {msg}", file=sys.stderr))
        self.folder: Path | None = None  # this invocation's submitit folder
        self._cut_short: set[tuple[str, int, str | None]] = set()  # packs noted as longer than their partition allows

    @classmethod
    def preflight(cls, options: dict[str, Any], kinds: Collection[str] | None = None) -> None:
        """Plan-time check: each stage kind's job (``kinds``, default all) could run on some node of its
        partition (:meth:`~.cluster.ClusterShape.unrunnable`). sbatch takes a job no node can run and
        leaves it pending for good (``PartitionConfig``), after the earlier stage kinds were submitted.
        Away from the cluster (Slurm does not answer) nothing is checked: `famix sweep run` says so.

        Raises:
            SweepError: one line: the stage kind, what it needs and what the partition has.
        """
        from orchestrator.errors import SweepError

        if slurm_available() is not None or (shape := cluster_shape()) is None:
            return None
        resources, slurm = options.get("resources") or {}, options.get("slurm") or {}
        for kind in [k for k in STAGE_KINDS if kinds is None or k in kinds]:
            why = shape.unrunnable(stage_parameters(kind, resources.get(kind), slurm))
            if why:
                where = (f"backend.slurm.partition or backend.slurm.{kind}.partition" if why.startswith(("partition '", "the cluster has no"))
                         else f"from backend.resources.{kind} and backend.slurm")  # fmt: skip
                raise SweepError(f"slurm backend: the {kind} jobs could never run: {why} ({where}); nothing was submitted")
        return None

    @classmethod
    def unreachable(cls) -> str | None:
        """The Slurm commands missing or ``scontrol ping`` not answering UP."""
        return slurm_available()

    @classmethod
    def remote_workers(cls, options: Mapping[str, Any]) -> bool:
        """Slurm jobs run on compute nodes."""
        return True

    @classmethod
    def stage_gpus(cls, kind: str, options: Mapping[str, Any]) -> int | None:
        """The job's GPUs (``gpus_per_node``: ``resources.<kind>.gpus`` rounded up, or ``backend.slurm``'s
        ``gpus``, its ``<kind>`` block's first), which Slurm's GPU gres shows the job as ``cuda:0`` and up."""
        params = stage_parameters(kind, (options.get("resources") or {}).get(kind), options.get("slurm"))
        return int(params.get("gpus_per_node") or 0)

    @classmethod
    def stage_gpus_key(cls, kind: str, options: Mapping[str, Any]) -> str:
        """``backend.slurm.<kind>.gpus``, ``backend.slurm.gpus`` or ``resources.<kind>.gpus``: the first
        that is set, as :func:`stage_parameters` reads them."""
        slurm = options.get("slurm") or {}
        if "gpus" in (slurm.get(kind) or {}):
            return f"backend.slurm.{kind}.gpus"
        return "backend.slurm.gpus" if "gpus" in slurm else f"resources.{kind}.gpus"

    # ----------------------------------------------------------------- submission

    def _executor(self, folder: Path) -> Any:
        import submitit

        return submitit.SlurmExecutor(folder=folder / "%j", max_num_timeout=self.max_num_timeout, python=self.python)

    def _prepare(self, tasks: list[StageTask]) -> list[StageTask]:
        """Absolute store, log and SQLite tracking paths (noted when they were relative)."""
        out = []
        for t in tasks:
            store = str(absolute_path(t.store, "artifact store", self.notes)) if t.store else t.store
            log = str(absolute_path(t.log_path, "stage log", self.notes)) if t.log_path else t.log_path
            tracking = dict(t.tracking)
            uri = str(tracking.get("uri") or "")
            if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):  # a relative SQLite file
                tracking["uri"] = "sqlite:///" + str(absolute_path(uri[len("sqlite:///") :], "MLflow database", self.notes))
            out.append(dataclasses.replace(t, store=store, log_path=log, tracking=tracking))
        for note in dict.fromkeys(self.notes):
            self._notify(note)
        self.notes.clear()
        return out

    def submit(self, tasks: list[StageTask], *, max_parallel: int = 0, retries: int = 1) -> dict[str, dict[str, Any]]:
        """Submit ``tasks`` as job arrays with afterok dependencies; returns ``{key: job record}``.

        Stages whose jobs from an earlier invocation are still queued or running
        are adopted, not submitted again. Records go to ``slurm/jobs.json``.
        """
        from submitit.core.utils import FailedJobError

        from orchestrator.errors import SweepError

        reason = slurm_available()
        if reason:
            raise SlurmUnavailable(f"slurm backend: {reason}")
        tasks = self._prepare(tasks)
        jobs = load_jobs(self.sweep_dir)
        keys = {t.key for t in tasks}
        old = {k: r for k, r in jobs["stages"].items() if k in keys}
        states = query_states(r["job_id"] for r in old.values())
        records: dict[str, dict[str, Any]] = {}
        for key, rec in old.items():
            if states.get(rec["job_id"]) in ACTIVE_STATES:
                records[key] = dict(rec, adopted=True)
        if records:
            self._notify(f"{count(len(records), 'stage')} still queued or running from an earlier submission; not submitted again")

        self.folder = self.sweep_dir / "slurm" / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        outcome_dir = self.folder / "outcomes"
        outcome_dir.mkdir(parents=True, exist_ok=True)
        body = SlurmStage(retries=retries, outcome_dir=str(outcome_dir), fn=self.execute)
        pack_body = SlurmPack(retries=retries, outcome_dir=str(outcome_dir), fn=self.execute)
        packed = pack_kinds(self.options)
        limits: dict[str | None, int | None] = {}  # partition -> its MaxTime, asked once per submission
        chunk = self.max_array_size if self.max_array_size is not None else max_array_size()
        chunk = max(1, chunk)
        default_cap = max_parallel or self.backend_max_parallel or DEFAULT_ARRAY_PARALLELISM
        submitted_now: list[dict[str, Any]] = []

        order = {kind: i for i, kind in enumerate(STAGE_KINDS)}  # other kinds (synthetic test stages) last
        pending = sorted((t for t in tasks if t.key not in records), key=lambda t: order.get(t.kind, len(order)))
        try:
            self._submit_waves(pending, keys, records, submitted_now, body, pack_body, packed, limits, chunk, default_cap, outcome_dir)
        except FailedJobError as e:  # sbatch refused a job (a partition, a GPU or a constraint the cluster has not)
            why = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
            said = next((ln for ln in why if "error" in ln.lower()), why[0] if why else type(e).__name__)
            raise SweepError(
                f"slurm backend: sbatch refused a job: {said[:300]}; the {count(len(submitted_now), 'stage')} submitted "
                + ("before it runs on and is recorded (a corrected rerun adopts it, `famix sweep cancel` stops it)"
                   if len(submitted_now) == 1 else
                   "before it run on and are recorded (a corrected rerun adopts them, `famix sweep cancel` stops them)")
            ) from None
        finally:  # what was submitted is recorded, also when a later submission failed: status and cancel find it
            jobs["stages"].update({k: {kk: vv for kk, vv in r.items() if kk != "adopted"} for k, r in records.items()})
            jobs["submissions"].append(
                {"folder": str(self.folder), "submitted_at": time.time(), "n_jobs": len({r["job_id"] for r in submitted_now}),
                 "n_stages": len(submitted_now), "array_job_ids": sorted({r["array_job_id"] for r in submitted_now})}
            )  # fmt: skip
            atomic_write_json(jobs_path(self.sweep_dir), jobs, indent=2, sort_keys=True)
        return records

    def _submit_waves(
        self,
        pending: list[StageTask],
        keys: set[str],
        records: dict[str, dict[str, Any]],
        submitted_now: list[dict[str, Any]],
        body: Any,
        pack_body: Any,
        packed: Any,
        limits: dict[str | None, int | None],
        chunk: int,
        default_cap: int,
        outcome_dir: Path,
    ) -> None:
        """Submit ``pending`` (sorted by stage kind) wave by wave, adding each job's record to ``records``
        and ``submitted_now`` as it is submitted.

        A wave is the stages of one kind whose inputs' stages all have jobs: every training of the
        sweep, whether or not it waits on a mining stage, then every evaluation. The arrays of a wave
        share the kind's cap (:meth:`_arrays`). A kind comes back in a later wave only where its stages
        read each other's outputs (the backend tests' synthetic stages); those arrays then also wait
        (``afterany``) for every earlier array of the kind, so the cap holds across waves too.
        """
        earlier: dict[str, list[str]] = defaultdict(list)  # kind -> its arrays' job ids, from the waves before
        while pending:
            ready = [t for t in pending if all(d in records or d not in keys for d in t.dep_keys())]
            if not ready:
                raise FamixError(f"slurm backend: dependency cycle among stages {[t.key[:12] for t in pending]}")
            kind = ready[0].kind
            ready = [t for t in ready if t.kind == kind]
            arrays = self._arrays(ready, records, packed, limits, chunk)
            shares = share_cap(array_parallelism(kind, self.options, default_cap), [len(part) for _, _, part in arrays])
            array_jobs: list[str] = []  # job id of each array of this wave submitted so far
            for (params, dep_jobs, part), (cap, waits_for) in zip(arrays, shares):
                ex = self._executor(self.folder)
                after = [j for j in earlier[kind] if j not in dep_jobs] + [array_jobs[i] for i in waits_for]
                p = executor_parameters(
                    params, sweep=self.sweep_dir.name, kind=kind, dep_jobs=dep_jobs, cap=cap, after_jobs=after
                )
                ex.update_parameters(**p)
                with ex.batch():
                    subs = [ex.submit(pack_body, u) if kind in packed else ex.submit(body, u[0]) for u in part]
                now = time.time()
                for unit, job in zip(part, subs):
                    for t in unit:
                        rec = {
                            "key": t.key,
                            "kind": t.kind,
                            "name": t.name,
                            "job_id": str(job.job_id),
                            "array_job_id": str(job.job_id).split("_")[0],
                            "folder": str(self.folder / "%j"),
                            "outcome_dir": str(outcome_dir),
                            "stdout": str(job.paths.stdout),
                            "stderr": str(job.paths.stderr),
                            "log_path": t.log_path,
                            "deps": t.dep_keys(),
                            "dependency": p.get("dependency"),
                            "submitted_at": now,
                        }
                        if kind in packed:
                            rec["pack"] = [u.key for u in unit]  # the job's stages, in the order it runs them
                        records[t.key] = rec
                        submitted_now.append(rec)
                array_jobs.append(str(subs[0].job_id).split("_")[0])
            earlier[kind] += array_jobs
            done = {t.key for t in ready}
            pending = [t for t in pending if t.key not in done]

    def _arrays(
        self,
        ready: list[StageTask],
        records: Mapping[str, dict[str, Any]],
        packed: Any,
        limits: dict[str | None, int | None],
        chunk: int,
    ) -> list[tuple[dict[str, Any], tuple[str, ...], list[list[StageTask]]]]:
        """The job arrays of one wave (stages of one kind): ``(sbatch parameters, afterok jobs, units)``,
        each unit one task of the array (a pack, or a single stage).

        Stages with the same parameters and the same dependency jobs form one array, split at
        ``MaxArraySize`` (``chunk``). All of them then share the kind's cap (:func:`~.sbatch.share_cap`):
        on a fresh sweep each training's evaluation pack waits on its own training task, so it is an
        array of one, and the cap limits them together.
        """
        groups: dict[tuple[str, tuple[str, ...]], list[StageTask]] = defaultdict(list)
        for t in ready:
            params = stage_parameters(t.kind, t.resources, self.options)
            dep_jobs = tuple(sorted({records[d]["job_id"] for d in t.dep_keys() if d in records}))
            groups[(json.dumps(params, sort_keys=True), dep_jobs)].append(t)
        arrays: list[tuple[dict[str, Any], tuple[str, ...], list[list[StageTask]]]] = []
        for (params_json, dep_jobs), group in groups.items():
            params = json.loads(params_json)
            units = packs(group, packed)  # one task each: a pack, or a single stage
            if group[0].kind in packed:  # the time covers the largest pack, up to what the partition allows
                params = self._pack_parameters(group[0].kind, params, max(len(u) for u in units), limits)
            arrays += [(params, dep_jobs, part) for part in chunks(units, chunk)]
        return arrays

    def _pack_parameters(
        self, kind: str, params: dict[str, Any], size: int, limits: dict[str | None, int | None]
    ) -> dict[str, Any]:
        """:func:`~.options.pack_parameters` under the partition's ``MaxTime``; a pack cut short by it is noted."""
        partition = params.get("partition")
        if partition not in limits:
            limits[partition] = max_time_min(partition)
        p = pack_parameters(params, size, limits[partition])
        if p["time"] < int(params["time"]) * size and (kind, size, partition) not in self._cut_short:
            self._cut_short.add((kind, size, partition))
            self._notify(
                f"a pack of {size} {kind} stages would ask for {int(params['time']) * size} min ({size} x time); "
                f"partition {partition or '(default)'} allows {limits[partition]} min: a pack that runs out of time "
                f"is requeued (up to {self.max_num_timeout} times) and runs the stages it has not finished"
            )
        return p

    # ----------------------------------------------------------------- run / wait

    def run(
        self,
        tasks: list[StageTask],
        *,
        max_parallel: int = 0,
        retries: int = 1,
        on_event: EventFn | None = None,
    ) -> dict[str, StageOutcome]:
        """Submit ``tasks``; in detach mode return ``submitted`` outcomes, else wait for every job.

        A stage whose dependency failed is reported ``failed`` with ``error="dependency <key> failed"``
        (its job is cancelled, if Slurm has not dropped it already). A ``KeyboardInterrupt`` while it
        waits leaves the jobs running: a later ``run`` adopts them from ``jobs.json``.
        """
        emit = on_event or (lambda *_: None)
        if not tasks:
            return {}
        records = self.submit(tasks, max_parallel=max_parallel, retries=retries)
        by_key = {t.key: t for t in tasks}
        if self.detach:
            return {
                t.key: StageOutcome(key=t.key, status="submitted", job_id=records[t.key]["job_id"],
                                    log_path=records[t.key].get("log_path"))
                for t in tasks
            }  # fmt: skip
        return self.wait(by_key, records, emit)

    def wait(
        self, tasks: Mapping[str, StageTask], records: Mapping[str, dict[str, Any]], emit: EventFn
    ) -> dict[str, StageOutcome]:
        """Poll Slurm until every job has ended; emit start/done/failed events as they happen.

        A stage of a pack is over as soon as the pack's job wrote its outcome, while the job goes on
        with the next ones; only the stage the job is running counts as started. After a stage failed
        on a full disk (or quota) the jobs that wait in the queue are cancelled (their stages end
        ``cancelled``, :data:`~orchestrator.stages.NOT_STARTED_DISK_FULL`); running jobs finish.
        """
        outcomes: dict[str, StageOutcome] = {}
        started: set[str] = set()
        first_seen_missing: dict[str, float] = {}
        cancelled_jobs: set[str] = set()  # a pack's stages share their job: cancel it once
        disk_is_full = False
        halted_jobs: set[str] = set()  # queued jobs cancelled after a full disk
        stuck = _StuckJobs(self.stuck_after_s, self._notify)
        silent_since: float | None = None  # when the controller stopped answering (a restart, a crash)
        while len(outcomes) < len(records):
            live = {k: r for k, r in records.items() if k not in outcomes}
            states = query_states(r["job_id"] for r in live.values())
            now = time.time()
            if all(states.get(r["job_id"]) == "UNKNOWN" for r in live.values()) and (why := slurm_available()):
                # neither squeue nor sacct answered: the jobs run on without the controller, and none is lost
                if silent_since is None:
                    silent_since = now
                    self._notify(f"slurm: {why}; waiting for it (the jobs run on without it; Ctrl-C leaves them running)")
                first_seen_missing.clear()
                time.sleep(self.poll_s)
                continue
            if silent_since is not None:
                self._notify(f"slurm: the controller answers again after {now - silent_since:.0f} s")
                silent_since = None
            stuck.check(live, states, tasks, now)
            running_in_pack: dict[str, str | None] = {}  # job id -> the stage its pack is running
            if disk_is_full:  # each job still queued would fail the same way
                # the last submitted first: a cancelled job lets the jobs waiting on it for their turn start
                for rec in reversed(list(live.values())):
                    if states.get(rec["job_id"]) == "PENDING" and rec["job_id"] not in halted_jobs:
                        halted_jobs.add(rec["job_id"])
                        cancel_pending(rec["job_id"])  # one that started meanwhile runs on, and counts as it ends
            for key, rec in live.items():
                task = tasks[key]
                state = states.get(rec["job_id"], "UNKNOWN")
                if rec.get("pack"):
                    written = read_outcome(rec)
                    if written is not None:  # over, whatever the pack's job does next
                        outcomes[key] = self._final_outcome(task, rec, state, written)
                        emit(_event(outcomes[key]), task, outcomes[key])
                        continue
                failed_dep = next((d for d in task.dep_keys() if d in outcomes and outcomes[d].status == "failed"), None)
                if failed_dep is not None and state not in ("RUNNING", "COMPLETED", "COMPLETING"):
                    if state in ACTIVE_STATES and rec["job_id"] not in cancelled_jobs:
                        cancelled_jobs.add(rec["job_id"])
                        self._cancel_job(rec)
                    outcomes[key] = StageOutcome(
                        key=key, status="failed", error=dependency_failed(failed_dep),
                        job_id=rec["job_id"], log_path=rec.get("log_path"), retryable=False,
                    )  # fmt: skip
                    emit("failed", task, outcomes[key])
                    continue
                if state == "RUNNING" and key not in started:
                    if rec.get("pack") and rec["job_id"] not in running_in_pack:
                        running_in_pack[rec["job_id"]] = _running_in_pack(rec)
                    if not rec.get("pack") or running_in_pack[rec["job_id"]] == key:
                        started.add(key)
                        emit("start", task, None)
                if state == "UNKNOWN":
                    t0 = first_seen_missing.setdefault(key, now)
                    if now - t0 < self.lost_after_s:
                        continue
                    state = "LOST"
                elif state not in TERMINAL_STATES:
                    continue
                if state == "CANCELLED" and any(d in records and d not in outcomes for d in task.dep_keys()):
                    # Slurm drops a job whose dependency failed (kill-on-invalid-dep), possibly
                    # before that dependency's own end is seen: settle the dependency first, so
                    # this stage reads "dependency <key> failed" rather than "cancelled".
                    continue
                outcomes[key] = self._final_outcome(task, rec, state)
                if outcomes[key].status == "cancelled" and rec["job_id"] in halted_jobs:
                    outcomes[key].error = NOT_STARTED_DISK_FULL
                emit(_event(outcomes[key]), task, outcomes[key])
            disk_is_full = disk_is_full or any(o.status == "failed" and disk_full(o.error) for o in outcomes.values())
            if len(outcomes) < len(records):
                time.sleep(self.poll_s)
        return outcomes

    def _final_outcome(
        self, task: StageTask, rec: Mapping[str, Any], state: str, outcome: StageOutcome | None = None
    ) -> StageOutcome:
        """The stage's outcome from its job's state and the outcome the job wrote (``outcome``, else read).

        A single stage's outcome counts once its job COMPLETED, or was CANCELLED after the stage ended
        well (the job writes its outcome last; sacct can also name a finished array task CANCELLED for a
        while, by the cancelled range of pending tasks it left). A stage of a pack that ended well counts
        whatever the job does next: the job of a pack where another stage failed ends FAILED.
        """
        outcome = outcome if outcome is not None else read_outcome(rec)
        logs = f"slurm job {rec['job_id']}; logs: {rec['stdout']} {rec['stderr']}"
        if outcome is not None and (
            state == "COMPLETED"
            or (rec.get("pack") and outcome.status != "failed")
            or (state == "CANCELLED" and outcome.status in ("done", "cached"))
        ):
            return dataclasses.replace(outcome, job_id=rec["job_id"])
        if state == "CANCELLED" and outcome is None:
            return StageOutcome(key=task.key, status="cancelled", job_id=rec["job_id"], log_path=rec.get("log_path"),
                                error=f"cancelled ({logs})")  # fmt: skip
        if outcome is not None and outcome.status == "failed":
            error = f"{outcome.error}\n({logs})"
        else:
            error = f"job ended {state} without a stage outcome ({logs})" + _tail(rec.get("stderr"))
        base = outcome or StageOutcome(key=task.key, status="failed")
        return dataclasses.replace(base, status="failed", error=error, job_id=rec["job_id"],
                                   log_path=base.log_path or rec.get("log_path"))  # fmt: skip

    def _cancel_job(self, rec: Mapping[str, Any]) -> None:
        from submitit import SlurmJob

        SlurmJob(folder=rec["folder"], job_id=rec["job_id"]).cancel(check=False)

    # ----------------------------------------------------------------- cancel / status

    def cancel(self, sweep_dir: str | os.PathLike[str]) -> int:
        """Cancel the sweep's queued and running jobs; finished artifacts stay. Returns how many."""
        return cancel_jobs(Path(sweep_dir).expanduser().resolve())

    @classmethod
    def jobs_ended(cls, sweep_dir: str | os.PathLike[str]) -> bool:
        """Whether none of the sweep's recorded jobs is queued or running (squeue / sacct)."""
        return recorded_jobs_ended(Path(sweep_dir))

    @classmethod
    def status(cls, sweep_dir: str | os.PathLike[str]) -> list[str]:
        """Slurm's view of the sweep's recorded stages (squeue / sacct): a count of jobs per state (and of
        stages, where packs hold several), then the stages that failed or whose job has not completed;
        nothing when the sweep never submitted to Slurm."""
        if not jobs_path(Path(sweep_dir)).is_file():
            return []
        rows = slurm_status(sweep_dir)
        job_states = {r["job_id"]: r["state"] for r in rows}
        states: dict[str, int] = {}
        for state in job_states.values():
            states[state] = states.get(state, 0) + 1
        stages = f" ({len(rows)} stages)" if len(rows) != len(job_states) else ""
        lines = ["slurm jobs: " + ", ".join(f"{n} {s}" for s, n in sorted(states.items())) + stages]
        for r in rows:
            ended_well = r["status"] in ("done", "cached")  # a stage of a pack whose job failed on another one
            if r["status"] == "failed" or (r["state"] not in ("COMPLETED", "UNKNOWN") and not ended_well):
                failed = f" (failed; log {r['stderr']})" if r["status"] == "failed" else ""
                lines.append(f"  {r['name']}: job {r['job_id']} {r['state']}{failed}")
        return lines


def _event(outcome: StageOutcome) -> str:
    """The progress event of a settled stage (``cached`` reads as ``done``)."""
    return outcome.status if outcome.status in ("done", "failed", "cancelled") else "done"


def _running_in_pack(rec: Mapping[str, Any]) -> str | None:
    """The stage a running pack's job is on: the first of its stages with no outcome written yet."""
    for key in rec.get("pack") or ():
        path = outcome_path(rec, key)
        if path is None or not path.is_file():
            return key
    return None


def _tail(path: str | None, lines: int = 5) -> str:
    if not path or not Path(path).is_file():
        return ""
    try:
        text = Path(path).read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return "\n" + "\n".join(text) if text else ""
