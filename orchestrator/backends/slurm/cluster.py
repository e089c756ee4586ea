"""Asking Slurm: are its commands here and does the controller answer, how large may an array be, how
long may a job run, could any node run a job at all, what state is each job in (squeue for live
jobs, sacct for finished ones)."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, NamedTuple

from famix_core.errors import FamixError
from famix_core.text import count
from orchestrator.backends.slurm.options import parse_mem_gb, parse_time_min

__all__ = [
    "ACTIVE_STATES",
    "TERMINAL_STATES",
    "SlurmUnavailable",
    "slurm_available",
    "max_array_size",
    "max_time_min",
    "ClusterShape",
    "cluster_shape",
    "query_states",
    "sacct_states",
    "cancel_pending",
]

ACTIVE_STATES = frozenset(
    {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
     "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "RESV_DEL_HOLD", "SPECIAL_EXIT"}
)  # fmt: skip
TERMINAL_STATES = frozenset(
    {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL",
     "DEADLINE", "PREEMPTED", "REVOKED"}
)  # fmt: skip


FORGOTTEN_JOB = "Invalid job id specified"  # squeue's error for a lone id the controller no longer holds


class SlurmUnavailable(FamixError):
    """The Slurm commands are missing or the controller does not answer."""


def _run(cmd: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def _ask(cmd: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """:func:`_run` for the wait loop's questions: one that outlives ``timeout`` (a controller whose host
    is gone: each connection waits for its own timeout) reads as a failed answer, not an exception."""
    try:
        return _run(cmd, timeout=timeout)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(cmd, 124, "", f"{cmd[0]}: no answer within {timeout:g} s\n")


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


def _fields(line: str) -> dict[str, str]:
    """``Key=Value`` words of one line of ``scontrol -o show …``."""
    return dict(f.partition("=")[::2] for f in line.split())


def _max_time(fields: Mapping[str, str]) -> int | None:
    """A partition's ``MaxTime`` in minutes; None when ``UNLIMITED``/``INFINITE`` or unreadable."""
    try:
        return parse_time_min(fields.get("MaxTime", "UNLIMITED"))
    except ValueError:
        return None


class Partition(NamedTuple):
    """What the plan-time check needs of a partition."""

    default: bool
    max_time: int | None  # minutes; None: unlimited
    total_nodes: int


class Node(NamedTuple):
    """What the plan-time check needs of a node."""

    cpus: int
    mem_mb: int
    gpus: int
    partitions: tuple[str, ...]


def _scontrol_show(what: str, *flags: str, timeout: float = 30) -> list[dict[str, str]] | None:
    """The records of ``scontrol -a <flags> -o show <what>`` (``-a``: hidden partitions too), each as its
    ``Key=Value`` words; None where Slurm does not answer."""
    try:
        out = _run(["scontrol", "-a", *flags, "-o", "show", what], timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return None if out.returncode else [_fields(line) for line in out.stdout.splitlines()]


def _partitions(timeout: float = 30) -> dict[str, Partition] | None:
    """Every partition, or None where Slurm does not answer."""
    records = _scontrol_show("partition", timeout=timeout)
    if records is None:
        return None
    partitions: dict[str, Partition] = {}
    for f in records:
        if "PartitionName" in f:
            total = f.get("TotalNodes", "0")
            partitions[f["PartitionName"]] = Partition(f.get("Default") == "YES", _max_time(f), int(total) if total.isdigit() else 0)
    return partitions


def max_time_min(partition: str | None = None) -> int | None:
    """The ``MaxTime`` of ``partition`` in minutes (``scontrol show partition``).

    Args:
        partition: a partition, several joined by ``,`` (the longest of their limits counts: the job may
            run in any of them), or None for the cluster's default partition.

    Returns:
        Minutes, or None when the limit is ``UNLIMITED`` or cannot be read.
    """
    partitions = _partitions()
    if partitions is None:
        return None
    wanted = set(partition.split(",")) if partition else None
    limits = [p.max_time for name, p in partitions.items() if (name in wanted if wanted else p.default)]
    if None in limits:  # no limit known
        return None
    return max(m for m in limits if m is not None) if limits else None


@dataclass(frozen=True)
class ClusterShape:
    """The partitions and nodes of a cluster, as far as whether a job could ever run there."""

    partitions: Mapping[str, Partition]
    nodes: Mapping[str, Node]

    def unrunnable(self, params: Mapping[str, Any]) -> str | None:
        """Why no node could ever run a job of ``params`` (:func:`~.options.stage_parameters`), or None.

        Checked per partition the job may run in (several joined by ``,``: refused only when none
        could run it): it exists; one node of it has the job's CPUs, memory and GPUs; its time fits
        the partition's ``MaxTime``. A drained or down node counts: it may come back, and the job
        waits for it. Where fewer of a partition's nodes are seen than it has (nodes hidden from this
        user) its nodes are not checked. Not checked: ``constraint``, ``account``, ``qos``, a
        reservation (sbatch itself refuses a wrong one, at submission).
        """
        named = params.get("partition")
        wanted = [p.strip() for p in str(named).split(",") if p.strip()] if named else [n for n, p in self.partitions.items() if p.default]
        if not wanted:
            return "the cluster has no default partition: set backend.slurm.partition"
        missing = [p for p in wanted if p not in self.partitions]
        if missing:
            return f"partition {missing[0]!r} does not exist (partitions: {', '.join(sorted(self.partitions)) or 'none'})"
        reasons = [self._unrunnable_in(p, params, f"partition {p}" if named else f"the default partition ({p})") for p in wanted]
        return None if None in reasons else reasons[0]

    def _unrunnable_in(self, partition: str, params: Mapping[str, Any], where: str) -> str | None:
        limit = self.partitions[partition].max_time
        minutes = int(params.get("time") or 0)
        if limit is not None and minutes > limit:
            return f"needs {minutes} min, {where} allows {limit} (MaxTime)"
        nodes = [n for n in self.nodes.values() if partition in n.partitions]
        if len(nodes) < self.partitions[partition].total_nodes:  # some are hidden from here: no verdict
            return None
        if not nodes:
            return f"{where} has no node"
        cpus, gpus = int(params.get("cpus_per_task") or 1), int(params.get("gpus_per_node") or 0)
        mem_mb = int(parse_mem_gb(params["mem"]) * 1024) if params.get("mem") else 0
        if any(n.cpus >= cpus and n.mem_mb >= mem_mb and n.gpus >= gpus for n in nodes):
            return None
        for need, have, what in ((cpus, max(n.cpus for n in nodes), "CPU"), (gpus, max(n.gpus for n in nodes), "GPU")):
            if need > have:
                return f"needs {count(need, what)}, the largest node of {where} has {have}"
        if mem_mb > (most := max(n.mem_mb for n in nodes)):
            return f"needs {params['mem']} of memory, the largest node of {where} has {most} MB (RealMemory)"
        asked = [count(cpus, "CPU")] + ([count(gpus, "GPU")] if gpus else []) + ([f"{params['mem']} of memory"] if mem_mb else [])
        return f"needs {', '.join(asked[:-1])} and {asked[-1]} on one node; no node of {where} has all of them"


def _gpus(gres: str) -> int:
    """The GPUs in a node's ``Gres`` (``gpu:4``, ``gpu:a100:4(S:0-1)``, ``gpu:a100:2,gpu:v100:2``,
    ``gpu:a100:no_consume:4``; ``(null)``: 0)."""
    total = 0
    for item in re.sub(r"\([^)]*\)", "", gres).split(","):
        parts = item.strip().split(":")
        if parts[0] == "gpu" and len(parts) > 1 and parts[-1].isdigit():
            total += int(parts[-1])
    return total


def cluster_shape(timeout: float = 30) -> ClusterShape | None:
    """The cluster's partitions and nodes (``scontrol -a -o show partition``, ``… -F … show node``: hidden
    partitions and future nodes too), or None where Slurm does not answer."""
    partitions = _partitions(timeout)
    nodes = _scontrol_show("node", "-F", timeout=timeout) if partitions is not None else None  # -F: future nodes too
    if partitions is None or nodes is None:
        return None
    shape: dict[str, Node] = {}
    for f in nodes:
        cpus, mem = f.get("CPUTot", ""), f.get("RealMemory", "")
        if "NodeName" in f and cpus.isdigit() and mem.isdigit():
            shape[f["NodeName"]] = Node(int(cpus), int(mem), _gpus(f.get("Gres", "")), tuple(p for p in f.get("Partitions", "").split(",") if p))
    return ClusterShape(partitions, shape)


def sacct_states(stdout: str) -> dict[str, str]:
    """``{job_id: STATE}`` from ``sacct -X --parsable2 -o JobID,State``, array ranges expanded.

    A pending array's remainder is one record (``123_[1-4%1]``); once it is cancelled, its range still
    names tasks that had left it and ended otherwise (``123_1|COMPLETED``): a task's own line wins
    over the range it was split from.
    """
    from submitit.slurm.slurm import SlurmInfoWatcher  # sacct's parser (a public class)

    header, *rows = stdout.splitlines() or [""]
    info: dict[str, dict[str, str]] = {}
    for part in ([r for r in rows if "[" in r.split("|")[0]], [r for r in rows if "[" not in r.split("|")[0]]):
        if part:
            info.update(SlurmInfoWatcher(delay_s=0).read_info("\n".join([header, *part])))
    return {jid: (row.get("State") or "UNKNOWN").split()[0].rstrip("+") for jid, row in info.items()}


def _tasks_of_bare_arrays(ids: list[str], known: dict[str, str], info: dict[str, str]) -> dict[str, str]:
    """The ended state of the bare sacct line (``1358``) of each task (``1358_0``) not in ``known``."""
    found = {}
    for jid in ids:
        base, _, task = jid.partition("_")
        if task and jid not in known and info.get(base) in TERMINAL_STATES:
            found[jid] = info[base]
    return found


def cancel_pending(job_id: str) -> None:
    """``scancel --state=PENDING``: Slurm itself checks the state, so a job that started since the
    last poll is not killed half-way."""
    _ask(["scancel", "--state=PENDING", job_id])


NEVER_REASONS = frozenset(
    {"PartitionConfig", "PartitionNodeLimit", "PartitionTimeLimit", "BadConstraints", "InvalidAccount", "InvalidQOS"}
)
"""squeue's reasons for a pending job that waits for what its partition, account or QOS cannot give
(more CPUs, GPUs or time than a node or the partition has, an unknown feature): it would wait for good."""


def pending_reasons(job_ids: Iterable[str]) -> dict[str, str]:
    """squeue's reason (``%r``) for each of ``job_ids`` that is pending; {} where squeue does not answer."""
    ids = set(job_ids)
    if not ids:
        return {}
    bases = sorted({j.split("_")[0] for j in ids})
    queue = _ask(["squeue", "-h", "-r", "-t", "PENDING", "-o", "%i|%r", "-j", ",".join(bases)])
    reasons = {}
    for line in queue.stdout.splitlines() if queue.returncode == 0 else []:
        jid, _, reason = line.strip().partition("|")
        if jid in ids:
            reasons[jid] = reason.strip()
    return reasons


def query_states(job_ids: Iterable[str], *, settled: bool = False) -> dict[str, str]:
    """Slurm state of each job id (``123`` or ``123_4``): squeue for live jobs, sacct for finished ones.

    ``settled`` (``famix sweep status``, not the wait loop, which acts on each state), where squeue
    answered: squeue lists every queued or running job, so one it does not list has ended. It keeps
    an ended state sacct gives it; a task that sacct does not list takes the ended state of its
    array's bare sacct line (an array cancelled before any of its tasks started is only that line,
    ``1358|CANCELLED``, for good; while sacct records an array's tasks it shows such a line for a
    moment too, ``1519|FAILED`` naming one task's end); any other reads ``ENDED`` (accounting is off,
    or sacct has not caught up). squeue refuses a lone job id that the controller has forgotten
    (``MinJobAge`` after its end): that answer lists nothing.

    Returns:
        ``{job_id: STATE}``; ``UNKNOWN`` where neither knows the id (yet).
    """
    ids = sorted({str(j) for j in job_ids if j})
    if not ids:
        return {}
    states: dict[str, str] = {}
    bases = sorted({j.split("_")[0] for j in ids})
    acct = _ask(["sacct", "-X", "--parsable2", "-o", "JobID,State", "-j", ",".join(bases)])
    info = sacct_states(acct.stdout) if acct.returncode == 0 else None
    if info is not None:
        states.update({jid: info[jid] for jid in ids if jid in info})
    queue = _ask(["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(bases)])
    if queue.returncode == 0 or FORGOTTEN_JOB in queue.stderr:
        listed = {}
        for line in queue.stdout.splitlines():
            jid, _, state = line.strip().partition("|")
            if jid in ids:
                listed[jid] = state.strip()
        states.update(listed)
        if settled:  # squeue lists every queued or running job: one it does not list has ended
            gone = {jid: "ENDED" for jid in ids if jid not in listed and states.get(jid) not in TERMINAL_STATES}
            if info is not None:
                gone.update(_tasks_of_bare_arrays(list(gone), states, info))
            states.update(gone)
    for jid in ids:
        states.setdefault(jid, "UNKNOWN")
    return states
