"""The sweep file's ``backend.slurm`` block: validation and per-stage sbatch parameters.

Pure Python (no submitit, no torch): the planner validates the block at plan
time, before anything is submitted, and the golden-file tests render sbatch
scripts from what :func:`stage_parameters` returns.

The block::

    backend:
      slurm:
        partition: gpu            # common to every stage kind
        time: 120                 # minutes, or "[D-]HH:MM[:SS]"
        gpus: 1                   # GPUs per node (one task per job)
        cpus_per_task: 8
        mem: 32G                  # number = GB, or "<n>M|G|T"
        account: my-project
        qos: normal
        constraint: a100          # Slurm names: letters, digits, _ . - (checked at plan time)
        reservation: maint        # also qos, account; partition and reservation may list several: a,b
        additional: {exclude: "node[01-02]"}   # any other sbatch --option
        array_parallelism: 8      # at most this many stages of a kind run at once
        pack: [evaluate]          # the default: a trained model's evaluations run as one job ([] / none: off)
        train: {time: "12:00:00"} # per stage kind overrides (mine | train | evaluate)
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from famix_core.errors import FamixError, closest
from orchestrator.stages import STAGE_KINDS

__all__ = [
    "SLURM_OPTIONS",
    "DEFAULT_ARRAY_PARALLELISM",
    "PACKABLE_KINDS",
    "DEFAULT_PACK",
    "RESERVED_SBATCH_OPTIONS",
    "SlurmOptionError",
    "validate_slurm_options",
    "parse_time_min",
    "parse_mem_gb",
    "stage_parameters",
    "array_parallelism",
    "pack_kinds",
    "pack_parameters",
    "sanitize_job_name",
]

SLURM_OPTIONS: tuple[str, ...] = (
    "partition",
    "time",
    "gpus",
    "cpus_per_task",
    "mem",
    "account",
    "qos",
    "constraint",
    "reservation",
    "additional",
    "array_parallelism",
    "pack",
)
"""Keys of ``backend.slurm`` (and, all but ``pack``, of its per stage kind overrides)."""

DEFAULT_ARRAY_PARALLELISM = 32
"""Stages of one kind running at once when neither ``--max-parallel``, ``backend.max_parallel`` nor
``backend.slurm.array_parallelism`` says (docs/slurm.md)."""

PACKABLE_KINDS: tuple[str, ...] = ("evaluate",)
"""Stage kinds ``backend.slurm.pack`` may name. A pack is one job, so a stage that depends on one stage
of a pack waits for all of them and is dropped when any of them fails: only stages nothing depends on
(evaluations) can be packed without changing which stages run."""

DEFAULT_PACK: tuple[str, ...] = ("evaluate",)
"""``backend.slurm.pack`` when the block does not say: the evaluations of one trained model run as one
job that loads the weights once, instead of one job each paying Python, torch and the model build."""

RESERVED_SBATCH_OPTIONS: tuple[str, ...] = (
    "array",
    "dependency",
    "error",
    "job-name",
    "kill-on-invalid-dep",
    "open-mode",
    "output",
    "signal",
    "wrap",
)
"""sbatch options the backend sets itself; ``additional`` may not override them."""

OWN_KEY_OF_SBATCH_OPTION: dict[str, str] = {
    "time": "time",
    "partition": "partition",
    "gpus": "gpus",
    "gpus-per-node": "gpus",
    "gpus-per-task": "gpus",
    "cpus-per-task": "cpus_per_task",
    "mem": "mem",
    "mem-per-cpu": "mem",
    "mem-per-gpu": "mem",
    "account": "account",
    "qos": "qos",
    "constraint": "constraint",
    "reservation": "reservation",
}
"""sbatch options that ``backend.slurm`` has a key of its own for: in ``additional`` they were passed
beside that key's (``time`` twice, sbatch taking the last) while the plan showed the key's value."""

_OPTION_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
_TIME = re.compile(r"^(?:(?P<d>\d+)-)?(?P<a>\d+)(?::(?P<b>\d+))?(?::(?P<c>\d+))?$")
_SLURM_NAME = r"[A-Za-z0-9_.-]+"
_NAME_LIST = re.compile(rf"^{_SLURM_NAME}(?:,{_SLURM_NAME})*$")
_NAME = re.compile(rf"^{_SLURM_NAME}$")
_CONSTRAINT = re.compile(r"^[A-Za-z0-9_.\-&|,*\[\]()!]+$")  # features joined by & | , with [ ] ( ) and *count
_MEM = re.compile(r"^(?P<n>\d+(?:\.\d+)?)\s*(?P<u>[KMGT]?)B?$", re.IGNORECASE)


class SlurmOptionError(FamixError, ValueError):
    """A mistake in the sweep file's ``backend.slurm`` block (one line: file, dotted key, expectation)."""


def _close(word: str, choices: tuple[str, ...]) -> str:
    match = closest(word, choices)  # `cpus`: cpus_per_task, not the closer spelling gpus
    return f"did you mean {' or '.join(match)}? " if match else ""


def parse_time_min(value: Any) -> int:
    """Minutes from an int or a Slurm time string.

    Args:
        value: minutes (int > 0) or ``"MM"``, ``"MM:SS"``, ``"HH:MM:SS"``, ``"D-HH"``, ``"D-HH:MM[:SS]"``.

    Returns:
        Whole minutes, rounded up, at least 1.

    Raises:
        ValueError: the value is none of these.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected minutes or a Slurm time like '12:00:00', got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise ValueError(f"expected at least 1 minute, got {value}")
        return value
    m = _TIME.match(str(value).strip()) if isinstance(value, str) else None
    if not m:
        raise ValueError(f"expected minutes or a Slurm time like '12:00:00', got {value!r}")
    d = int(m["d"] or 0)
    parts = [int(p) for p in (m["a"], m["b"], m["c"]) if p is not None]
    if m["d"] is not None:  # D-HH[:MM[:SS]]
        parts += [0] * (3 - len(parts))
        h, mi, s = parts
    elif len(parts) == 1:  # MM
        h, mi, s = 0, parts[0], 0
    elif len(parts) == 2:  # MM:SS
        h, mi, s = 0, parts[0], parts[1]
    else:  # HH:MM:SS
        h, mi, s = parts
    seconds = ((d * 24 + h) * 60 + mi) * 60 + s
    if seconds <= 0:
        raise ValueError(f"expected a positive time, got {value!r}")
    return max(1, -(-seconds // 60))


def parse_mem_gb(value: Any) -> float:
    """GB from a number (GB) or a Slurm memory string (``"4000M"``, ``"16G"``, ``"1T"``; no unit = MB)."""
    if isinstance(value, bool):
        raise ValueError(f"expected GB or a size like '16G', got {value!r}")
    if isinstance(value, (int, float)):
        if value <= 0:
            raise ValueError(f"expected a positive size, got {value}")
        return float(value)
    m = _MEM.match(value.strip()) if isinstance(value, str) else None
    if not m:
        raise ValueError(f"expected GB or a size like '16G' / '4000M', got {value!r}")
    scale = {"K": 1 / 1024**2, "": 1 / 1024, "M": 1 / 1024, "G": 1.0, "T": 1024.0}[m["u"].upper()]
    gb = float(m["n"]) * scale
    if gb <= 0:
        raise ValueError(f"expected a positive size, got {value!r}")
    return gb


def _mem_text(gb: float) -> str:
    """sbatch ``--mem`` text for a size in GB: whole GB as ``<n>GB``, else ``<n>MB``."""
    if gb == int(gb):
        return f"{int(gb)}GB"
    return f"{max(1, int(gb * 1024))}MB"


def _positive_int(value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"expected an integer >= {minimum}, got {value!r}")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or "\n" in value:
        raise ValueError(f"expected a non-empty one-line string, got {value!r}")
    return value


def _slurm_name(pattern: re.Pattern[str], allowed: str, what: str) -> Any:
    """A check for a Slurm name (partition, account, qos, reservation) or constraint expression.

    Slurm's own names use letters, digits, ``_ . -``; a value outside that set (``gpu; touch /tmp/x``,
    spaces, quotes) can never match anything on the cluster, so it is refused before any submission.
    """

    def check(value: Any) -> str:
        text = _text(value)
        if not pattern.match(text):
            bad = sorted({c for c in text if not re.match(allowed, c)})
            found = f"; found {' '.join(repr(c) for c in bad)}" if bad else ""
            raise ValueError(f"{text!r} is not a valid Slurm {what}{found}")
        return text

    return check


def _additional(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"expected a mapping of sbatch option -> value, got {type(value).__name__}")
    out: dict[str, Any] = {}
    for name, v in value.items():
        if not isinstance(name, str) or not _OPTION_NAME.match(name):
            raise ValueError(f"{name!r} is not an sbatch option name (letters, digits, '-', '_')")
        flag = name.replace("_", "-")
        if flag in RESERVED_SBATCH_OPTIONS:
            raise ValueError(f"{name!r} is set by the backend (reserved: {', '.join(RESERVED_SBATCH_OPTIONS)})")
        own = OWN_KEY_OF_SBATCH_OPTION.get(flag)
        if own is None and flag == "gres" and isinstance(v, str) and any(g.split(":")[0] == "gpu" for g in v.split(",")):
            own = "gpus"  # a GPU gres beside the GPUs the plan shows (0 for a CPU stage)
        if own is not None:
            raise ValueError(
                f"{name!r} has a key of its own: write backend.slurm.{own} (or backend.slurm.<kind>.{own}), which the plan"
                " shows and checks"
            )
        if isinstance(v, bool) or isinstance(v, (int, float)):
            out[name] = v
        elif isinstance(v, str) and "\n" not in v:
            out[name] = v
        else:
            raise ValueError(f"{name}: expected a one-line string, number or true, got {v!r}")
    return out


def _pack(value: Any) -> tuple[str, ...]:
    """The stage kinds to pack: a list of them, one as a string, or ``[]`` / ``none`` / ``false`` / null (off)."""
    if value is None or value is False or (isinstance(value, str) and value.strip().lower() == "none"):
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(k, str) and k in PACKABLE_KINDS for k in items):
        raise ValueError(
            f"expected a list of stage kinds to pack ({', '.join(PACKABLE_KINDS)}; only a stage nothing depends on "
            f"can be packed), or none / [] / false to turn packing off, got {value!r}"
        )
    return tuple(dict.fromkeys(items))


WARNING_S = 90
"""Seconds before its time limit that Slurm sends a job SIGUSR2 (submitit's ``signal_delay_s``): a
training checkpoints, and the job is requeued."""

MIN_TRAIN_TIME_MIN = 2
"""The shortest ``time`` a training job is given: under :data:`WARNING_S` the warning comes at once,
and the job is requeued until it fails, having trained nothing."""

_CHECKS = {
    "partition": _slurm_name(_NAME_LIST, r"[A-Za-z0-9_.,-]", "partition (letters, digits, '_', '.', '-'; several joined by ',')"),
    "time": parse_time_min,
    "gpus": lambda v: _positive_int(v, 0),
    "cpus_per_task": lambda v: _positive_int(v, 1),
    "mem": parse_mem_gb,
    "account": _slurm_name(_NAME, r"[A-Za-z0-9_.-]", "account (letters, digits, '_', '.', '-')"),
    "qos": _slurm_name(_NAME, r"[A-Za-z0-9_.-]", "qos (letters, digits, '_', '.', '-')"),
    "constraint": _slurm_name(_CONSTRAINT, r"[A-Za-z0-9_.\-&|,*\[\]()!]", "constraint (features joined by & | , with [ ] ( ) *)"),
    "reservation": _slurm_name(_NAME_LIST, r"[A-Za-z0-9_.,-]", "reservation (letters, digits, '_', '.', '-'; several joined by ',')"),
    "additional": _additional,
    "array_parallelism": lambda v: _positive_int(v, 1),
    "pack": _pack,
}


def _check_block(block: Any, prefix: str, source: str, allow_kinds: bool) -> dict[str, Any]:
    if block is None:
        return {}
    if not isinstance(block, Mapping):
        raise SlurmOptionError(f"{source}: {prefix}: expected a mapping, got {type(block).__name__}")
    valid = SLURM_OPTIONS + (STAGE_KINDS if allow_kinds else ())
    out: dict[str, Any] = {}
    for key, value in block.items():
        where = f"{source}: {prefix}.{key}"
        if key in STAGE_KINDS and allow_kinds:
            out[key] = _check_block(value, f"{prefix}.{key}", source, allow_kinds=False)
            continue
        if key not in _CHECKS:
            raise SlurmOptionError(f"{where}: unknown option ({_close(str(key), valid)}valid: {', '.join(valid)})")
        if key == "pack" and not allow_kinds:
            kinds = ", ".join(PACKABLE_KINDS)
            raise SlurmOptionError(f"{where}: not a per stage kind option; set backend.slurm.pack (a list of stage kinds: {kinds})")
        try:
            out[key] = _CHECKS[key](value)
        except ValueError as e:
            raise SlurmOptionError(f"{where}: {e}") from None
    return out


def validate_slurm_options(options: Mapping[str, Any] | None, source: str = "sweep") -> list[str]:
    """Check a ``backend.slurm`` block; raise on the first mistake.

    Imports neither submitit nor torch, so the planner calls it at plan time.

    Args:
        options: the block as read from YAML (``None`` or ``{}``: nothing to check).
        source: the sweep file, named in the message.

    Returns:
        An empty list (for callers that collect error lines); mistakes raise.

    Raises:
        SlurmOptionError: one line, ``<source>: backend.slurm.<key>: unknown option (valid: ...)``
            or ``<source>: backend.slurm.<key>: <what was expected>``.
    """
    checked = _check_block(options, "backend.slurm", source, allow_kinds=True)
    own = "time" in checked.get("train", {})
    minutes = checked["train"]["time"] if own else checked.get("time")
    if minutes is not None and minutes < MIN_TRAIN_TIME_MIN:  # the warning would come at once: requeued until it fails
        key = "backend.slurm.train.time" if own else "backend.slurm.time"
        raise SlurmOptionError(
            f"{source}: {key}: {minutes} min is shorter than a training job needs: Slurm warns it {WARNING_S} s before "
            f"its limit to checkpoint and requeue; give at least {MIN_TRAIN_TIME_MIN} min"
            + ("" if own else " (or set backend.slurm.train.time)")
        )
    return []


def stage_parameters(kind: str, resources: Mapping[str, Any] | None, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """submitit ``SlurmExecutor`` parameters for one stage kind.

    Precedence, lowest first: defaults (1 CPU, 60 min), the stage's generic
    ``resources`` (``cpus``, ``gpus``, ``mem_gb``, ``timeout_min``), the
    ``backend.slurm`` block, its ``<kind>`` override.

    Args:
        kind: ``mine`` | ``train`` | ``evaluate``.
        resources: ``StageTask.resources``.
        options: the ``backend.slurm`` block (validated here again).

    Returns:
        Keyword arguments for ``SlurmExecutor.update_parameters`` (``time``,
        ``cpus_per_task``, ``mem``, optional ``gpus_per_node``, ``partition``,
        ``account``, ``qos``, ``constraint``, ``additional_parameters``).
    """
    checked = _check_block(options or {}, "backend.slurm", "sweep", allow_kinds=True)
    res = dict(resources or {})
    merged: dict[str, Any] = {"time": 60, "cpus_per_task": 1}
    if "timeout_min" in res:
        merged["time"] = parse_time_min(int(res["timeout_min"]))
    if "cpus" in res:
        merged["cpus_per_task"] = max(1, int(res["cpus"]))
    if res.get("gpus"):
        merged["gpus"] = int(-(-float(res["gpus"]) // 1))  # fractional GPUs round up to whole ones
    if res.get("mem_gb"):
        merged["mem"] = float(res["mem_gb"])
    additional: dict[str, Any] = {}
    for layer in (checked, checked.get(kind, {})):
        for key, value in layer.items():
            if key in STAGE_KINDS or key in ("array_parallelism", "pack"):
                continue
            if key == "additional":
                additional.update(value)
            else:
                merged[key] = value
    params: dict[str, Any] = {"time": merged["time"], "cpus_per_task": merged["cpus_per_task"]}
    if merged.get("gpus"):
        params["gpus_per_node"] = merged["gpus"]
    if "mem" in merged:
        params["mem"] = _mem_text(merged["mem"])
    for key in ("partition", "account", "qos", "constraint"):
        if key in merged:
            params[key] = merged[key]
    if "reservation" in merged:
        additional["reservation"] = merged["reservation"]
    if additional:
        params["additional_parameters"] = dict(sorted(additional.items()))
    return params


def array_parallelism(kind: str, options: Mapping[str, Any] | None, default: int) -> int:
    """The array cap for a stage kind: ``<kind>.array_parallelism``, else the block's, else ``default``."""
    checked = _check_block(options or {}, "backend.slurm", "sweep", allow_kinds=True)
    value = checked.get(kind, {}).get("array_parallelism", checked.get("array_parallelism", default))
    return max(1, int(value))


def pack_kinds(options: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The stage kinds whose stages that read the same input run as one job (``backend.slurm.pack``).

    Args:
        options: the ``backend.slurm`` block (validated here again).

    Returns:
        :data:`DEFAULT_PACK` when the block does not set ``pack``; ``()`` when packing is off.
    """
    checked = _check_block(options or {}, "backend.slurm", "sweep", allow_kinds=True)
    return checked["pack"] if "pack" in checked else DEFAULT_PACK


def pack_parameters(params: Mapping[str, Any], size: int, limit: int | None = None) -> dict[str, Any]:
    """:func:`stage_parameters` of a job that runs ``size`` stages one after another.

    The time limit is the per-stage ``time`` times ``size`` (each stage keeps its own budget), but no more
    than ``limit`` (the partition's ``MaxTime``, minutes), where it is longer than one stage's: a pack
    that runs out of time is requeued and runs the stages it has not finished. CPUs, memory and GPUs
    stay those of one stage, since the stages do not run at once.
    """
    p = dict(params)
    per_stage = int(p["time"])
    p["time"] = per_stage * max(1, int(size))
    if limit is not None and p["time"] > limit:
        p["time"] = max(per_stage, int(limit))
    return p


def sanitize_job_name(*parts: str, limit: int = 64) -> str:
    """A Slurm job name made of ``[A-Za-z0-9._-]`` only (sweep names may hold spaces, quotes, ``$(...)``)."""
    clean = (re.sub(r"[^A-Za-z0-9._-]+", "_", p).strip("_.-") for p in parts)
    name = "-".join(c for c in clean if c)
    return (name or "famix")[:limit]
