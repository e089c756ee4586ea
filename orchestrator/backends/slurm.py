"""The Slurm backend: stages as submitit job arrays with ``afterok`` dependencies.

How a plan becomes jobs:

- Stages are submitted wave by wave (mine, then train, then evaluate: a stage
  goes out once every stage it depends on has a job id). Within a wave, stages
  of the same kind, the same sbatch parameters and the same dependency jobs
  form one job array (``executor.batch()``), capped at ``array_parallelism``
  running tasks (``--array=0-N%cap``). Where the cluster's ``MaxArraySize`` is
  smaller, the group is split into several arrays that share the cap
  (:func:`share_cap`), so the group as a whole still respects it.
- Dependencies are ``--dependency=afterok:<job>[_<task>]:…`` with
  ``--kill-on-invalid-dep=yes``, so the driver may exit right after submitting
  (``detach``): Slurm runs the DAG by itself and drops what can never run.
- Every job runs :class:`SlurmStage` (picklable, checkpointable): it calls
  :func:`orchestrator.execute.execute_stage`, retries a failed stage in the same
  job, writes the outcome as JSON beside the submitit logs, and raises when the
  stage failed for good (so ``afterok`` never fires for it). On preemption or
  timeout (SIGUSR2) a running training first finishes its iteration and saves a
  checkpoint there (:class:`orchestrator.execute.StopRequest`); then submitit calls
  ``checkpoint()``, which requeues the same stage, and the requeued job resumes
  from that checkpoint without losing an iteration. Other stages are requeued at
  once and start over. After an external ``scontrol requeue``, which sends no
  signal, training resumes from its latest periodic checkpoint in
  ``runs/work/train/<key>/``.
- Job ids go to ``<sweep dir>/slurm/jobs.json`` (atomically), so ``status`` and
  ``cancel`` work from a new process, and a rerun attaches to stages whose jobs
  are still queued or running instead of submitting them twice.
- Each invocation uses a fresh submitit folder ``<sweep dir>/slurm/<uuid>/``:
  Slurm job ids restart at 1 on a fresh cluster and submitit would read an old
  result from a reused ``%j`` folder.

submitit is imported lazily: this module (and :func:`validate_slurm_options`)
imports without it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
import uuid
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from famix_core.errors import FamixError
from famix_core.io import atomic_write_json
from orchestrator.backends.base import Backend, EventFn, StageOutcome, StageTask
from orchestrator.backends.slurm_options import (
    SLURM_OPTIONS,
    SlurmOptionError,
    array_parallelism,
    sanitize_job_name,
    stage_parameters,
    validate_slurm_options,
)

if TYPE_CHECKING:
    from orchestrator.execute import StopRequest

__all__ = [
    "SLURM_OPTIONS",
    "SlurmOptionError",
    "SlurmUnavailable",
    "StageFailed",
    "SlurmStage",
    "SlurmBackend",
    "validate_slurm_options",
    "stage_parameters",
    "executor_parameters",
    "share_cap",
    "render_sbatch",
    "slurm_available",
    "max_array_size",
    "query_states",
    "load_jobs",
    "slurm_status",
    "cancel_sweep",
    "absolute_path",
]

JOBS_FILE = "jobs.json"
ACTIVE_STATES = frozenset(
    {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
     "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "RESV_DEL_HOLD", "SPECIAL_EXIT"}
)  # fmt: skip
TERMINAL_STATES = frozenset(
    {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL",
     "DEADLINE", "PREEMPTED", "REVOKED"}
)  # fmt: skip
_KIND_ORDER = {"mine": 0, "train": 1, "evaluate": 2}


class SlurmUnavailable(FamixError):
    """The Slurm commands are missing or the controller does not answer."""


class StageFailed(RuntimeError):
    """Raised inside a job when its stage failed for good, so Slurm marks the job FAILED."""


# --------------------------------------------------------------------------- job body


@dataclasses.dataclass
class SlurmStage:
    """The body of every Slurm job: run one stage, retry it, record the outcome; checkpointable.

    Attributes:
        retries: further attempts after a failed one, inside the same job
            (a diverged training, ``TrainingDiverged``, is not retried: it is deterministic).
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
        try:
            return self._attempts(task, stop)
        except TrainingInterrupted as e:  # SIGUSR2 reached a training: its checkpoint is saved; requeue now
            print(f"[famix] {task.kind} {task.key[:12]}: {e}", flush=True)
            requeue(signal.SIGUSR2, None)  # submitit's handler: checkpoint() -> requeue -> exit
            raise

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
                outcome = StageOutcome(key=task.key, status="failed", error=_error_tail(e), log_path=task.log_path)
            if outcome.status != "failed":
                break
            print(f"[famix] attempt {attempt} failed: {(outcome.error or '').strip()[-2000:]}", flush=True)
            if not _retryable(outcome):
                print("[famix] not retried (deterministic failure)", flush=True)
                break
        assert outcome is not None
        outcome = dataclasses.replace(
            outcome, attempts=attempts, job_id=job_id, seconds=outcome.seconds or time.time() - t0,
            log_path=outcome.log_path or task.log_path or None,
        )  # fmt: skip
        if self.outcome_dir:
            atomic_write_json(Path(self.outcome_dir) / f"{task.key}.json", dataclasses.asdict(outcome), indent=2, sort_keys=True)
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


def _retryable(outcome: StageOutcome) -> bool:
    return bool(getattr(outcome, "retryable", True)) and "TrainingDiverged" not in (outcome.error or "")


def _env_job_id() -> str | None:
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def _error_tail(exc: BaseException, lines: int = 20) -> str:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return "\n".join(text.strip().splitlines()[-lines:])


# --------------------------------------------------------------------------- small helpers


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


def _run(cmd: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def slurm_available(timeout: float = 10) -> str | None:
    """``None`` when the Slurm commands exist and the controller answers, else the reason why not."""
    for tool in ("sbatch", "squeue", "sacct", "scontrol", "srun"):
        if shutil.which(tool) is None:
            return f"'{tool}' not found on PATH (no Slurm client here)"
    try:
        ping = _run(["scontrol", "ping"], timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"'scontrol ping' did not answer within {timeout:.0f}s"
    if ping.returncode != 0 or "UP" not in ping.stdout:
        first = ((ping.stdout + ping.stderr).strip().splitlines() or ["no output"])[0]
        return f"slurmctld does not answer 'scontrol ping': {first}"
    return None


def max_array_size() -> int:
    """The cluster's ``MaxArraySize`` (``scontrol show config``): tasks per array at most (0: no arrays)."""
    out = _run(["scontrol", "show", "config"]).stdout
    for line in out.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "MaxArraySize":
            try:
                return int(value.strip())
            except ValueError:
                break
    return 1001  # Slurm's default


def executor_parameters(
    params: Mapping[str, Any],
    *,
    sweep: str,
    kind: str,
    dep_jobs: Iterable[str] = (),
    cap: int = 256,
    after_jobs: Iterable[str] = (),
) -> dict[str, Any]:
    """Everything ``SlurmExecutor.update_parameters`` gets for one array of stages.

    Args:
        params: :func:`stage_parameters` of the stage kind.
        sweep: sweep name (sanitized into the job name).
        kind: stage kind.
        dep_jobs: job ids (``123`` / ``123_4``) that must end COMPLETED first (``afterok``).
        cap: ``array_parallelism`` (``--array=0-N%cap``).
        after_jobs: job ids that must have ended in any state first (``afterany``): the earlier
            arrays of a split group whose turn this array waits for (see :func:`share_cap`).
    """
    p = dict(params)
    additional = dict(p.pop("additional_parameters", None) or {})
    ok, any_end = list(dep_jobs), list(after_jobs)
    deps = ([f"afterok:{':'.join(ok)}"] if ok else []) + ([f"afterany:{':'.join(any_end)}"] if any_end else [])
    if deps:
        p["dependency"] = ",".join(deps)  # ',' = all of them
        additional["kill-on-invalid-dep"] = "yes"  # a failed dependency drops the job instead of leaving it pending
    if additional:
        p["additional_parameters"] = additional
    p["job_name"] = sanitize_job_name("famix", sweep, kind)
    p["array_parallelism"] = max(1, int(cap))
    return p


def render_sbatch(params: Mapping[str, Any], folder: str, command: str, map_count: int | None = None) -> str:
    """The sbatch script submitit writes for ``params`` (for golden-file tests and debugging)."""
    from submitit.slurm.slurm import _make_sbatch_string

    converted = dict(params)
    if map_count is not None:
        converted["map_count"] = map_count
    return _make_sbatch_string(command=command, folder=folder, **converted)


def share_cap(cap: int, parts: int) -> list[tuple[int, int | None]]:
    """How the ``parts`` arrays of one split group share ``cap`` running tasks.

    Returns, per part, ``(its --array %cap, index of the earlier part it waits for, or None)``.
    The caps add up to ``cap``; where there are more parts than ``cap``, part ``i`` runs one task at
    a time once part ``i - cap`` has ended, so no more than ``cap`` tasks of the group ever run at once.
    """
    cap, parts = max(1, cap), max(1, parts)
    shares = [cap // parts + (1 if i < cap % parts else 0) for i in range(parts)]
    return [(c, None) if c > 0 else (1, i - cap) for i, c in enumerate(shares)]


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    size = max(1, size)
    for i in range(0, len(items), size):
        yield items[i : i + size]


# --------------------------------------------------------------------------- job records and states


def _jobs_path(sweep_dir: Path) -> Path:
    return sweep_dir / "slurm" / JOBS_FILE


def load_jobs(sweep_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The sweep's ``slurm/jobs.json``: ``{"stages": {key: record}, "submissions": [...]}`` (empty when absent)."""
    path = _jobs_path(Path(sweep_dir))
    if not path.is_file():
        return {"version": 1, "stages": {}, "submissions": []}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise FamixError(f"{path}: unreadable job record ({e}); delete it to forget the submitted jobs") from None
    data.setdefault("stages", {})
    data.setdefault("submissions", [])
    return data


def query_states(job_ids: Iterable[str]) -> dict[str, str]:
    """Slurm state of each job id (``123`` or ``123_4``): squeue for live jobs, sacct for finished ones.

    Returns:
        ``{job_id: STATE}``; ``UNKNOWN`` where neither knows the id (yet).
    """
    ids = sorted({str(j) for j in job_ids if j})
    if not ids:
        return {}
    states: dict[str, str] = {}
    bases = sorted({j.split("_")[0] for j in ids})
    acct = _run(["sacct", "-X", "--parsable2", "-o", "JobID,State", "-j", ",".join(bases)])
    if acct.returncode == 0:
        from submitit.slurm.slurm import SlurmInfoWatcher

        info = SlurmInfoWatcher(delay_s=0).read_info(acct.stdout)
        for jid in ids:
            if jid in info:
                states[jid] = (info[jid].get("State") or "UNKNOWN").split()[0].rstrip("+")
    queue = _run(["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(bases)])
    if queue.returncode == 0:
        for line in queue.stdout.splitlines():
            jid, _, state = line.strip().partition("|")
            if jid in ids:
                states[jid] = state.strip()
    for jid in ids:
        states.setdefault(jid, "UNKNOWN")
    return states


def slurm_status(sweep_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """One row per recorded stage: key, kind, name, job id, Slurm state, outcome status and log paths.

    Reads ``slurm/jobs.json`` and asks Slurm (squeue/sacct); usable from any process.
    """
    data = load_jobs(sweep_dir)
    stages = data["stages"]
    states = query_states(r["job_id"] for r in stages.values()) if stages and not slurm_available() else {}
    rows = []
    for key, rec in stages.items():
        outcome = _read_outcome(rec)
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


def cancel_sweep(sweep_dir: str | os.PathLike[str]) -> int:
    """Cancel the sweep's queued and running jobs (submitit ``job.cancel()``: scancel); returns how many.

    Finished artifacts stay in the store; only jobs are cancelled.
    """
    data = load_jobs(sweep_dir)
    stages = data["stages"]
    if not stages:
        return 0
    reason = slurm_available()
    if reason:
        raise SlurmUnavailable(f"cannot cancel the jobs of {sweep_dir}: {reason}")
    states = query_states(r["job_id"] for r in stages.values())
    live = [r for r in stages.values() if states.get(r["job_id"]) in ACTIVE_STATES | {"UNKNOWN"}]
    from submitit.slurm.slurm import SlurmJob

    for rec in live:
        SlurmJob(folder=rec["folder"], job_id=rec["job_id"]).cancel(check=False)
    return sum(1 for r in live if states.get(r["job_id"]) in ACTIVE_STATES)


def _read_outcome(rec: Mapping[str, Any]) -> StageOutcome | None:
    path = Path(rec.get("outcome_dir", "")) / f"{rec.get('key', '')}.json"
    if not rec.get("outcome_dir") or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        return StageOutcome(**{f.name: data.get(f.name) for f in dataclasses.fields(StageOutcome) if f.name in data})
    except (OSError, json.JSONDecodeError, TypeError):
        return None


# --------------------------------------------------------------------------- the backend


class SlurmBackend(Backend):
    """Runs stage DAGs on Slurm through submitit.

    Args:
        run_dir: the sweep's folder (``runs/<sweep>``), or the run directory when ``sweep`` is given.
        sweep: sweep name; then the sweep's folder is ``run_dir/<sweep>``.
        sweep_dir: the sweep's folder (what the driver passes; wins over ``run_dir``/``sweep``).
        options: the sweep's backend block (``{kind, max_parallel, resources, slurm: {...}}``), or
            just its ``slurm`` block (validated again here).
        detach: submit and return at once (outcomes ``submitted`` with job ids).
        poll_s: seconds between state polls while waiting.
        max_array_size: tasks per array at most (default: the cluster's ``MaxArraySize``).
        stage_fn: what each job runs (default :func:`orchestrator.execute.execute_stage`); ``execute`` is an alias.
        python: command that starts Python on the nodes (default: this interpreter).
        max_num_timeout: requeues after timeout/preemption before a job gives up.
        lost_after_s: a job that neither squeue nor sacct knows for this long counts as lost.
        notify: where notes go (default: stderr).
    """

    name = "slurm"

    def __init__(
        self,
        run_dir: str | os.PathLike[str] | None = None,
        sweep: str | None = None,
        *,
        sweep_dir: str | os.PathLike[str] | None = None,
        options: Mapping[str, Any] | None = None,
        detach: bool = False,
        poll_s: float = 2.0,
        max_array_size: int | None = None,
        stage_fn: Callable[[StageTask, StopRequest], StageOutcome] | None = None,
        execute: Callable[[StageTask, StopRequest], StageOutcome] | None = None,
        python: str | None = None,
        max_num_timeout: int = 3,
        lost_after_s: float = 120.0,
        notify: Callable[[str], None] | None = None,
        **_ignored: Any,
    ) -> None:
        self.notes: list[str] = []
        if sweep_dir is not None:
            self.sweep_dir = absolute_path(sweep_dir, "sweep folder", self.notes)
        else:
            base = absolute_path(run_dir if run_dir is not None else "runs", "run directory", self.notes)
            self.sweep_dir = base / sweep if sweep else base
        self.sweep = sweep
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
        self.stage_fn = stage_fn or execute
        self.python = python
        self.max_num_timeout = max_num_timeout
        self.lost_after_s = lost_after_s
        self._notify = notify or (lambda msg: print(f"famix: note: {msg}", file=sys.stderr))
        self.folder: Path | None = None  # this invocation's submitit folder

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
            self._notify(f"{len(records)} stage(s) still queued or running from an earlier submission; not submitted again")

        self.folder = self.sweep_dir / "slurm" / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        outcome_dir = self.folder / "outcomes"
        outcome_dir.mkdir(parents=True, exist_ok=True)
        body = SlurmStage(retries=retries, outcome_dir=str(outcome_dir), fn=self.stage_fn)
        chunk = self.max_array_size if self.max_array_size is not None else max_array_size()
        chunk = max(1, chunk)
        default_cap = max_parallel or self.backend_max_parallel or 256
        sweep_label = self.sweep or self.sweep_dir.name
        submitted_now: list[dict[str, Any]] = []

        pending = sorted((t for t in tasks if t.key not in records), key=lambda t: _KIND_ORDER.get(t.kind, 9))
        while pending:
            ready = [t for t in pending if all(d in records or d not in keys for d in t.dep_keys())]
            if not ready:
                raise FamixError(f"slurm backend: dependency cycle among stages {[t.key[:12] for t in pending]}")
            groups: dict[tuple[str, str, tuple[str, ...]], list[StageTask]] = defaultdict(list)
            for t in ready:
                params = stage_parameters(t.kind, t.resources, self.options)
                dep_jobs = tuple(sorted({records[d]["job_id"] for d in t.dep_keys() if d in records}))
                groups[(t.kind, json.dumps(params, sort_keys=True), dep_jobs)].append(t)
            for (kind, params_json, dep_jobs), group in groups.items():
                params = json.loads(params_json)
                parts = list(_chunks(group, chunk))
                shares = share_cap(array_parallelism(kind, self.options, default_cap), len(parts))
                part_jobs: list[str] = []  # array job id of each part submitted so far
                for part, (cap, wait_for) in zip(parts, shares):
                    ex = self._executor(self.folder)
                    after = [part_jobs[wait_for]] if wait_for is not None else []
                    p = executor_parameters(
                        params, sweep=sweep_label, kind=kind, dep_jobs=dep_jobs, cap=cap, after_jobs=after
                    )
                    ex.update_parameters(**p)
                    with ex.batch():
                        subs = [ex.submit(body, t) for t in part]
                    now = time.time()
                    for t, job in zip(part, subs):
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
                        records[t.key] = rec
                        submitted_now.append(rec)
                    part_jobs.append(str(subs[0].job_id).split("_")[0])
            done = {t.key for t in ready}
            pending = [t for t in pending if t.key not in done]

        jobs["stages"].update({k: {kk: vv for kk, vv in r.items() if kk != "adopted"} for k, r in records.items()})
        jobs["submissions"].append(
            {"folder": str(self.folder), "submitted_at": time.time(), "n_jobs": len(submitted_now),
             "array_job_ids": sorted({r["array_job_id"] for r in submitted_now})}
        )  # fmt: skip
        atomic_write_json(_jobs_path(self.sweep_dir), jobs, indent=2, sort_keys=True)
        return records

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
        (its job is cancelled, if Slurm has not dropped it already).
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
        """Poll Slurm until every job has ended; emit start/done/failed events as they happen."""
        outcomes: dict[str, StageOutcome] = {}
        started: set[str] = set()
        first_seen_missing: dict[str, float] = {}
        try:
            while len(outcomes) < len(records):
                live = {k: r for k, r in records.items() if k not in outcomes}
                states = query_states(r["job_id"] for r in live.values())
                now = time.time()
                for key, rec in live.items():
                    task = tasks[key]
                    state = states.get(rec["job_id"], "UNKNOWN")
                    failed_dep = next((d for d in task.dep_keys() if d in outcomes and outcomes[d].status == "failed"), None)
                    if failed_dep is not None and state not in ("RUNNING", "COMPLETED", "COMPLETING"):
                        if state in ACTIVE_STATES:
                            self._cancel_job(rec)
                        outcomes[key] = StageOutcome(
                            key=key, status="failed", error=f"dependency {failed_dep} failed",
                            job_id=rec["job_id"], log_path=rec.get("log_path"), retryable=False,
                        )  # fmt: skip
                        emit("failed", task, outcomes[key])
                        continue
                    if state == "RUNNING" and key not in started:
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
                    outcome = self._final_outcome(task, rec, state)
                    outcomes[key] = outcome
                    emit(outcome.status if outcome.status in ("done", "failed", "cancelled") else "done", task, outcome)
                if len(outcomes) < len(records):
                    time.sleep(self.poll_s)
        except KeyboardInterrupt:
            self._notify(
                f"driver interrupted; the jobs keep running on Slurm (records in {_jobs_path(self.sweep_dir)}): "
                "rerun the same command to wait for them, or `famix sweep cancel`"
            )
            raise
        return outcomes

    def _final_outcome(self, task: StageTask, rec: Mapping[str, Any], state: str) -> StageOutcome:
        outcome = _read_outcome(rec)
        logs = f"slurm job {rec['job_id']}; logs: {rec['stdout']} {rec['stderr']}"
        if state == "COMPLETED" and outcome is not None:
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
        from submitit.slurm.slurm import SlurmJob

        SlurmJob(folder=rec["folder"], job_id=rec["job_id"]).cancel(check=False)

    # ----------------------------------------------------------------- cancel / status

    def _resolve_sweep_dir(self, run_dir: str | os.PathLike[str] | None) -> Path:
        if run_dir is None:
            return self.sweep_dir
        p = Path(run_dir).expanduser().resolve()
        if _jobs_path(p).is_file() or not self.sweep:
            return p
        return p / self.sweep

    def cancel(self, run_dir: str | os.PathLike[str] | None = None) -> int:
        """Cancel the sweep's queued and running jobs; finished artifacts stay. Returns how many."""
        return cancel_sweep(self._resolve_sweep_dir(run_dir))

    def status(self, run_dir: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
        """One row per recorded stage (see :func:`slurm_status`)."""
        return slurm_status(self._resolve_sweep_dir(run_dir))


def _tail(path: str | None, lines: int = 5) -> str:
    if not path or not Path(path).is_file():
        return ""
    try:
        text = Path(path).read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return "\n" + "\n".join(text) if text else ""
