"""Sweep file schema: the typed :class:`SweepSpec`, the built-in profiles, and what a plan is made of.

See docs/sweeps.md for the file format. No torch is imported here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from famix_core.config import FamixConfig, Seed, no_boolean_for_a_number
from famix_core.config_io import Override
from famix_core.errors import unknown
from orchestrator.stages import STAGE_KINDS

__all__ = [
    "BUILTIN_PROFILES",
    "DEFAULT_PROFILE",
    "LabelSpec",
    "ZipGroup",
    "ResourceSpec",
    "LocalOptions",
    "RayOptions",
    "BackendSpec",
    "TrackingSpec",
    "ProfileSpec",
    "SweepSpec",
    "ResolvedSweep",
    "Trial",
    "canon_value",
]

DEFAULT_PROFILE = "smoke"

RUN_DIR_ENTRIES = ("store", "data", "work", "mlartifacts")
"""What a run dir holds besides its sweeps' folders (and ``mlflow.db*``): the stages, the synthetic
benchmark, the stages' scratch, MLflow's artifacts."""
MAX_NAME_LENGTH = 100
"""Longest sweep name: a folder name (most filesystems allow 255 bytes) with room for what is written beside it."""

BUILTIN_PROFILES: dict[str, dict[str, Any]] = {
    # The embedded default: runs anywhere, no downloads. Synthetic benchmark (generated in the
    # run dir), famix-tiny CLIP with the packaged famix-synth weights (docs/pretraining.md;
    # model.pretrained=none: random init), a few hundred CPU iterations.
    "smoke": {
        "base": {
            "model": {"backbone": "famix-tiny", "pretrained": "famix-synth"},
            # 128x256 images, crop 128: a mined patch is ~11x11 layer-1 positions, 43 pixels a side, two
            # thirds of famix-tiny's 64-pixel input (the paper: 64x64 positions, 256 pixels, about one
            # RN50 input); 64x128 images gave ~5x5 (21 pixels), the statistics of one object
            # (docs/miniature.md). It fits the 10-minute bound because the shipped sweeps run two
            # 1-CPU stages at once (backend.local.workers: auto).
            "data": {
                "synthetic": {"seed": 0, "height": 128, "width": 256, "train_images": 32, "val_images": 8},
                "crop_size": 128,
                "mapillary_size": 128,  # the official Mapillary crop (1536) scaled to the 128-high images
                "synthia_crop": 120,  # SYNTHIA as a source: 720 of 768 in the paper, scaled to crop_size 128
            },
            # (Mining and learning-rate numbers in this block were measured on the 64x128 images.)
            # The method's 100 mining steps over one epoch of the source, as the official code. A bank
            # keeps one style per distinct dominant class of a batch, so the source's 32 images at batch
            # 2 (16 batches) give 74 styles at 128x256 (73 at 64x128), 1 to 16 per class (batch 8 would give ~28; the paper mines
            # ~7,700 from GTA5's 773 batches, about 400 per class). mining.epochs=2 / 4 took the first
            # command to 9.3 / 10.0 min at 64x128 and 9.1 / 9.5 min at 128x256 (154 / 301 styles), over
            # the 9 minutes its rules allowed; not adopted. At 128x256, 4 epochs cut frozen FAMix's seed
            # std from 0.49 to 0.07 on 128 images per domain (docs/miniature.md).
            # famix-synth's layer-1 statistics are ~0.7 (RN50's are larger): lr 0.1 takes the prompts'
            # mean 1 - cos from 1.08 to 0.36 (0.84 with lr 0.01); the paper's lr 1.0 would overshoot to
            # negative stds.
            "mining": {"steps": 100, "lr": 0.1, "batch_size": 2, "crop_size": 128},
            # 400 iterations keep the 8-row ablation within 10 minutes on 2 CPU cores (64x128 images, one
            # 2-CPU stage at a time: 5.5 to 8.7 min; 500 took 9.6 to 10.6 min, at the edge of the budget.
            # 128x256, two 1-CPU stages at once: 8 min 23 s for the whole `make sweep`, 2026-12-04; with the
            # CPU shortcuts of deeplab.AtrousConv2d and the decoded-split cache, 7 min 39 s, the same table)
            # lr_backbone stays the paper's 0.01: picked over 0.03 and 0.1 by the 8 ablation rows' mean
            # source-val mIoU (17.04, 17.01, 15.66; docs/miniature.md)
            "train": {
                "iterations": 400,
                "batch_size": 8,
                "checkpoint_every": 50,
                "log_every": 10,
                "device": "cpu",
                # source validation (paper: every 750 of 40k, centre crop 1046x1914 of 1052x1914 GTA5
                # images): 5 points of the curve, a crop of the 128x256 synthetic images
                "val_every": 100,
                "val_crop": [120, 240],
            },
            "eval": {"max_images": 8},
        },
        "seeds": [0],
    },
    # Paper scale: real dataset roots (data.root=… / data.roots.<domain>=…), open_clip's OpenAI RN50
    # weights, 40k iterations, three seeds. Fails at plan time when data or weights are missing.
    "paper": {
        "base": {
            "model": {"backbone": "RN50", "pretrained": "openai"},
            "data": {"synthetic": None},
            # a stage given no GPU refuses instead of training 40k iterations on the CPU unnoticed
            # (train.device=cpu, given explicitly, still runs there)
            "train": {"iterations": 40000, "cpu_fallback": False, "val_every": 750},  # official --val_interval 750
        },
        "seeds": [0, 1, 2],
    },
}


def canon_value(v: Any) -> str:
    """How a grid value is spelled in label maps and trial names: YAML-like scalars (``true``, ``0.5``, ``paper``)."""
    if isinstance(v, str):
        return v
    return json.dumps(v, sort_keys=True, ensure_ascii=False)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    _no_boolean_for_a_number = field_validator("*", mode="before")(no_boolean_for_a_number)  # `retries: true` read as 1


class LabelSpec(_Strict):
    """How one varied key appears in tables: its column and how each value is shown."""

    column: str = Field(min_length=1)
    values: dict[str, str] = Field(default_factory=dict, description="canonical value -> shown text")

    @field_validator("values", mode="before")
    @classmethod
    def _canon_keys(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {canon_value(k): (canon_value(x) if not isinstance(x, str) else x) for k, x in v.items()}
        return v


class ZipGroup(_Strict):
    """Keys that vary together (the i-th values form one point), optionally named in one label column."""

    column: str | None = Field(None, description="label column for the whole group, e.g. 'Method'")
    names: list[str] | None = Field(None, description="shown value of each point, e.g. ['MixStyle', 'FAMix']")
    values: dict[str, list[Any]] = Field(min_length=1)

    @model_validator(mode="after")
    def _lengths(self) -> "ZipGroup":
        lengths = {k: len(v) for k, v in self.values.items()}
        for k, n in lengths.items():
            if n == 0:
                raise ValueError(f"values.{k}: empty list (expected at least one value)")
        if len(set(lengths.values())) > 1:
            detail = ", ".join(f"{k}={n}" for k, n in lengths.items())
            raise ValueError(f"lists of unequal length ({detail}); zip needs equal lengths")
        n = next(iter(lengths.values()))
        if self.names is not None and len(self.names) != n:
            raise ValueError(f"names: {len(self.names)} names for {n} points")
        if self.names is not None and self.column is None:
            raise ValueError("names: needs a 'column' to show them in")
        for i, name in enumerate(self.names or []):
            if name in self.names[:i]:  # two rows of the table would read the same
                first = self.names.index(name)
                raise ValueError(f"names[{i}]: {name!r} again (also names[{first}]); each point needs its own name, or its rows could not be told apart")
        return self

    def size(self) -> int:
        return len(next(iter(self.values.values())))


class ResourceSpec(_Strict):
    """What one stage of a kind asks for."""

    cpus: int = Field(1, ge=1)
    gpus: float = Field(0, ge=0)
    mem_gb: float = Field(4, gt=0)
    timeout_min: int = Field(60, ge=1)


class RayOptions(_Strict):
    """Ray backend: in-process by default, or an existing cluster by ``address`` (``auto``, ``ray://host:port``)."""

    address: str | None = None
    num_cpus: int | None = Field(None, ge=1, description="CPUs of the in-process instance (default: those this process may use: its affinity mask, or SLURM_CPUS_PER_TASK in a job)")
    num_gpus: int | None = Field(None, ge=0)

    @field_validator("address")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():  # read as "no address": in-process Ray, where a cluster was meant
            raise ValueError("expected a cluster address (auto, host:port or ray://host:port), got an empty string; "
                             "leave address out (or null) for in-process Ray")  # fmt: skip
        return v


class LocalOptions(_Strict):
    """Local backend: ``workers`` stages at once on this machine.

    1 (default): one after another in the driver's own process (debuggers, monkeypatched tests).
    N or ``auto`` (this machine's CPUs): up to N worker processes, packed so that the running stages'
    ``resources.<kind>.cpus`` fit the machine's CPUs; stages asking for GPUs run one at a time.
    """

    workers: int | Literal["auto"] = 1

    @field_validator("workers", mode="before")
    @classmethod
    def _workers(cls, v: Any) -> Any:
        if v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            return v
        raise ValueError(f"expected an integer >= 1 or 'auto', got {v!r}")


class BackendSpec(_Strict):
    """Where stages run and with what."""

    kind: str = "local"
    max_parallel: int | None = Field(None, ge=1)
    retries: int = Field(1, ge=0)
    resources: dict[str, ResourceSpec] = Field(
        default_factory=lambda: {k: ResourceSpec() for k in STAGE_KINDS}
    )
    local: LocalOptions = Field(default_factory=LocalOptions)
    ray: RayOptions = Field(default_factory=RayOptions)
    slurm: dict[str, Any] = Field(default_factory=dict)

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        from orchestrator.backends import BACKENDS

        if v not in BACKENDS:
            raise ValueError(unknown("backend", v, BACKENDS))
        return v

    @field_validator("resources")
    @classmethod
    def _kinds(cls, v: dict[str, ResourceSpec]) -> dict[str, ResourceSpec]:
        for k in v:
            if k not in STAGE_KINDS:
                raise ValueError(unknown("stage kind", k, STAGE_KINDS))
        return {k: v.get(k, ResourceSpec()) for k in STAGE_KINDS}


class TrackingSpec(_Strict):
    """MLflow target: ``uri`` None = ``sqlite:///<run_dir>/mlflow.db``; ``experiment`` None = the sweep name.

    ``system_metrics``: MLflow's built-in system metrics (CPU, memory, disk, network; GPU with
    ``nvidia-ml-py``) in the trial runs while their training runs, sampled every
    ``system_metrics_interval`` seconds (needs ``psutil``: the ``system-metrics`` extra).

    ``writer``: who writes to MLflow. ``stages``: each stage logs its own metrics as it runs (live
    curves, system metrics). ``driver``: stages only record their metrics in their artifacts and the
    driver (also ``sweep status`` and ``famix report`` after ``--detach``) logs them; the one safe way
    for the SQLite store when stages run on other machines, since SQLite's locking is unreliable on
    network filesystems. ``auto`` (default): ``driver`` for the SQLite store when the backend runs
    stages on other machines (Slurm, a Ray cluster address), else ``stages``.
    """

    uri: str | None = None
    experiment: str | None = None
    system_metrics: bool = True
    system_metrics_interval: float = Field(10.0, gt=0)
    writer: Literal["auto", "stages", "driver"] = "auto"


def _dotted_keys(grid: Any) -> Any:
    """``grid: {style: {mix: [...]}}`` read "grid.style: Input should be a valid list"."""
    if isinstance(grid, dict):
        for key, value in grid.items():
            if isinstance(value, dict) and value:
                inner = next(iter(value))
                raise ValueError(f"{key}: a mapping; a grid key is a dotted path with its list of values ({key}.{inner}: [...])")
    return grid


def _distinct(seeds: list[int] | None) -> list[int] | None:
    if seeds is not None and len(set(seeds)) != len(seeds):
        raise ValueError(f"duplicate seeds in {seeds}")
    return seeds


class ProfileSpec(_Strict):
    """A named overlay: ``base`` is deep-merged, the other fields replace (grid: per key)."""

    base: dict[str, Any] = Field(default_factory=dict)
    grid: Annotated[dict[str, list[Any]], BeforeValidator(_dotted_keys)] = Field(default_factory=dict)
    seeds: Annotated[list[Seed] | None, AfterValidator(_distinct)] = Field(None, min_length=1)
    domains: list[str] | None = Field(None, min_length=1)
    backend: dict[str, Any] = Field(default_factory=dict)
    tracking: dict[str, Any] = Field(default_factory=dict)


class SweepSpec(_Strict):
    """A sweep file, validated."""

    name: str = Field(min_length=1, description="a folder, <run_dir>/<name>/, and the MLflow experiment")
    description: str = ""
    base: dict[str, Any] | str = Field(default_factory=dict, description="config tree, or a path relative to the file")
    grid: Annotated[dict[str, list[Any]], BeforeValidator(_dotted_keys)] = Field(default_factory=dict)
    zip: list[ZipGroup] = Field(default_factory=list)
    seeds: Annotated[list[Seed], AfterValidator(_distinct)] = Field(default_factory=lambda: [0], min_length=1)
    labels: dict[str, LabelSpec] = Field(default_factory=dict)
    domains: list[str] | None = Field(None, min_length=1)
    default_profile: str = DEFAULT_PROFILE
    profiles: dict[str, ProfileSpec] = Field(default_factory=dict)
    _base_file: str | None = PrivateAttr(default=None)  # where ``base`` was read from, when given as a path
    backend: BackendSpec = Field(default_factory=BackendSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)

    @field_validator("name")
    @classmethod
    def _one_folder(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", v):  # was "String should match pattern '^[A-Za-z0-9_.-]+$'"
            raise ValueError(
                f"{v!r}: expected ASCII letters, digits, '_', '.' and '-' only (the name is a folder, <run_dir>/<name>/, and an"
                " MLflow experiment)"
            )
        if v in (".", ".."):
            raise ValueError(f"{v!r} is not a folder name of its own (the sweep writes to <run_dir>/<name>/)")
        low = v.casefold()  # `Store` is `store` where case is ignored (macOS, Windows)
        if low in RUN_DIR_ENTRIES or low.startswith("mlflow.db"):  # `run` crashed on the file, or wrote beside the stages
            what = "MLflow database" if low.startswith("mlflow.db") else "folder"
            where = "" if v == low else ", where case is ignored (macOS, Windows)"
            raise ValueError(
                f"{v!r} is the name of the run dir's own {what} (<run_dir>/{low}){where}, not free for a sweep's;"
                " choose another name"
            )
        if len(v) > MAX_NAME_LENGTH:  # a filesystem refuses a longer folder name only once the run has begun
            raise ValueError(f"{len(v)} characters; at most {MAX_NAME_LENGTH} (the name is a folder, <run_dir>/<name>/, and an MLflow experiment)")
        return v


@dataclass
class ResolvedSweep:
    """A sweep with one profile and the command-line overrides applied (still unexpanded)."""

    name: str
    source: str  # the file, for error messages
    profile: str
    base: dict[str, Any]
    grid: dict[str, list[Any]]
    zip: list[ZipGroup]
    seeds: list[int]
    labels: dict[str, LabelSpec]
    domains: list[str]
    backend: BackendSpec
    tracking: TrackingSpec
    overrides: list[Override] = field(default_factory=list)  # command line, in order
    layers: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (name, base tree), general first
    grid_from: dict[str, str] = field(default_factory=dict)  # grid key -> where the file lists its values (grid, profiles.<p>.grid)
    domains_from: str = "domains"  # where the file lists the domains (domains, profiles.<p>.domains)

    def override_words(self) -> list[str]:
        """The command-line overrides as typed (``train.iterations=20``, ``~style.noise``), in order."""
        return [o.text or (o.spelled if o.op == "delete" else f"{o.spelled}={json.dumps(o.value)}") for o in self.overrides]


@dataclass
class Trial:
    """One grid point x one seed, fully resolved.

    Attributes:
        id: ``t-`` + 12 hex of the canonical resolved config (stable across reruns).
        index: position in grid order (seeds innermost).
        seed: the repeat's seed (in ``train.seed`` and ``mining.seed``).
        labels: label column -> shown value, in column order.
        point: dotted key -> value of this grid point.
        config: the validated engine config.
    """

    id: str
    index: int
    seed: int
    labels: dict[str, str]
    point: dict[str, Any]
    config: FamixConfig


