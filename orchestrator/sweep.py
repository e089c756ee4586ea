"""Sweep files: YAML -> typed :class:`SweepSpec` -> resolved profile -> list of :class:`Trial`.

A sweep file (``sweeps/*.yaml``, read with ``yaml.safe_load`` only) names a base
engine config, the values to vary (``grid``: cartesian product in file order;
``zip``: keys that vary together), the seeds, how each value is shown in tables
(``labels``), the evaluation columns, named ``profiles`` (overlays; ``smoke``
and ``paper`` are built in), the backend and MLflow tracking. See docs/sweeps.md.

Every mistake raises :class:`orchestrator.errors.SweepError` with ONE line:
``<file>: <dotted.path>: <what was expected>[ (did you mean …?)]``.
No torch is imported here.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from famix_core.config import FamixConfig
from famix_core.domains import resolve_domain
from orchestrator.backends.slurm.options import DEFAULT_ARRAY_PARALLELISM
from orchestrator.errors import SweepError, suggest

__all__ = [
    "BUILTIN_PROFILES",
    "DEFAULT_PROFILE",
    "LabelSpec",
    "ZipGroup",
    "ResourceSpec",
    "RayOptions",
    "SlurmOptions",
    "BackendSpec",
    "TrackingSpec",
    "ProfileSpec",
    "SweepSpec",
    "ResolvedSweep",
    "Trial",
    "load_sweep",
    "resolve_sweep_path",
    "parse_overrides",
    "resolve_profile",
    "expand_trials",
    "config_paths",
    "canon_value",
]

DEFAULT_PROFILE = "smoke"

BUILTIN_PROFILES: dict[str, dict[str, Any]] = {
    # The embedded default: runs anywhere, no downloads. Synthetic benchmark (generated in the
    # run dir), famix-tiny CLIP with the packaged famix-synth weights (docs/pretraining.md;
    # model.pretrained=none: random init), a few hundred CPU iterations.
    "smoke": {
        "base": {
            "model": {"backbone": "famix-tiny", "pretrained": "famix-synth"},
            "data": {
                "synthetic": {"seed": 0, "height": 64, "width": 128, "train_images": 32, "val_images": 8},
                "crop_size": 64,
                "mapillary_size": 64,  # the official Mapillary crop (1536) scaled to the 64-high images
                "synthia_crop": 60,  # SYNTHIA as a source: 720 of 768 in the paper, scaled to crop_size 64
            },
            # The method's 100 mining steps. famix-synth's layer-1 statistics are ~0.7 (RN50's are
            # larger): lr 0.1 takes the prompts' mean 1 - cos from 1.13 to 0.32 (0.84 with lr 0.01);
            # the paper's lr 1.0 would overshoot to negative stds.
            "mining": {"steps": 100, "lr": 0.1, "batch_size": 8, "crop_size": 64, "max_batches": 2},
            "train": {
                "iterations": 200,
                "batch_size": 8,
                "checkpoint_every": 50,
                "log_every": 10,
                "device": "cpu",
                # source validation (paper: every 750 of 40k, centre crop 1046x1914 of 1052x1914 GTA5
                # images): 2 points of the curve, a crop of the 64x128 synthetic images
                "val_every": 100,
                "val_crop": [60, 120],
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
    model_config = ConfigDict(extra="forbid")


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
    num_cpus: int | None = Field(None, ge=1, description="CPUs of the in-process instance (default: all)")
    num_gpus: int | None = Field(None, ge=0)


class SlurmOptions(_Strict):
    """The ``backend.slurm`` block (used when the slurm backend offers no validator of its own)."""

    partition: str | None = None
    time: int | str | None = None
    gpus: int | None = Field(None, ge=0)
    cpus_per_task: int | None = Field(None, ge=1)
    mem: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    additional: dict[str, str] = Field(default_factory=dict)
    array_parallelism: int = Field(DEFAULT_ARRAY_PARALLELISM, ge=1)


class BackendSpec(_Strict):
    """Where stages run and with what."""

    kind: str = "local"
    max_parallel: int | None = Field(None, ge=1)
    retries: int = Field(1, ge=0)
    resources: dict[str, ResourceSpec] = Field(
        default_factory=lambda: {k: ResourceSpec() for k in ("mine", "train", "evaluate")}
    )
    ray: RayOptions = Field(default_factory=RayOptions)
    slurm: dict[str, Any] = Field(default_factory=dict)

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        from orchestrator.backends import BACKENDS

        if v not in BACKENDS:
            raise ValueError(f"unknown backend {v!r} (known: {', '.join(BACKENDS)}){suggest(v, BACKENDS)}")
        return v

    @field_validator("resources")
    @classmethod
    def _kinds(cls, v: dict[str, ResourceSpec]) -> dict[str, ResourceSpec]:
        kinds = ("mine", "train", "evaluate")
        for k in v:
            if k not in kinds:
                raise ValueError(f"unknown stage kind {k!r} (known: {', '.join(kinds)}){suggest(k, kinds)}")
        return {k: v.get(k, ResourceSpec()) for k in kinds}


class TrackingSpec(_Strict):
    """MLflow target: ``uri`` None = ``sqlite:///<run_dir>/mlflow.db``; ``experiment`` None = the sweep name.

    ``system_metrics``: MLflow's built-in system metrics (CPU, memory, disk, network; GPU with
    ``nvidia-ml-py``) in the trial runs while their training runs, sampled every
    ``system_metrics_interval`` seconds (needs ``psutil``: the ``system-metrics`` extra).
    """

    uri: str | None = None
    experiment: str | None = None
    system_metrics: bool = True
    system_metrics_interval: float = Field(10.0, gt=0)


class ProfileSpec(_Strict):
    """A named overlay: ``base`` is deep-merged, the other fields replace (grid: per key)."""

    base: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    seeds: list[int] | None = Field(None, min_length=1)
    domains: list[str] | None = Field(None, min_length=1)
    backend: dict[str, Any] = Field(default_factory=dict)
    tracking: dict[str, Any] = Field(default_factory=dict)


class SweepSpec(_Strict):
    """A sweep file, validated."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    base: dict[str, Any] | str = Field(default_factory=dict, description="config tree, or a path relative to the file")
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    zip: list[ZipGroup] = Field(default_factory=list)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    labels: dict[str, LabelSpec] = Field(default_factory=dict)
    domains: list[str] | None = Field(None, min_length=1)
    default_profile: str = DEFAULT_PROFILE
    profiles: dict[str, ProfileSpec] = Field(default_factory=dict)
    backend: BackendSpec = Field(default_factory=BackendSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)

    @field_validator("name")
    @classmethod
    def _one_folder(cls, v: str) -> str:
        if v in (".", ".."):
            raise ValueError(f"{v!r} is not a folder name of its own (the sweep writes to <run_dir>/<name>/)")
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
    overrides: dict[str, Any] = field(default_factory=dict)
    layers: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (name, base tree), general first


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


# ----------------------------------------------------------------------------------------------- loading


def resolve_sweep_path(name: str | Path, search: list[Path] | None = None) -> Path:
    """Find a sweep file: a path as given, else ``<dir>/sweeps/<name>[.yaml]`` in the current dir and the repo root.

    Raises:
        SweepError: naming the places searched.
    """
    p = Path(name)
    candidates = [p, p.with_suffix(".yaml")] if p.suffix not in (".yaml", ".yml") else [p]
    roots = search if search is not None else [Path.cwd() / "sweeps", Path(__file__).resolve().parent.parent / "sweeps"]
    for c in list(candidates):
        if not c.is_absolute():
            candidates += [r / c.name for r in roots]
    for c in candidates:
        if c.is_file():
            return c
    where = ", ".join(str(r) for r in roots)
    raise SweepError(f"{name}: sweep file not found (looked as given and in {where})")


MAX_YAML_BYTES = 1 << 20
"""Largest sweep (or base) file read: a sweep file is a few KB; this stops pathological input early."""
MAX_YAML_NODES = 100_000
"""Most YAML nodes after alias expansion (an "anchor bomb" of nested aliases grows exponentially)."""


class _SweepLoader(yaml.SafeLoader):
    """``SafeLoader`` that rejects duplicate mapping keys (PyYAML silently keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # ``<<: *anchor``: merged keys may be overridden by the mapping's own
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                continue  # the base class reports unhashable keys itself
            line = key_node.start_mark.line + 1
            if key in seen:
                raise _DuplicateKey(key, line, seen[key])
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int, first: int):
        super().__init__(key)
        self.key, self.line, self.first = key, line, first


def _expanded_nodes(root: yaml.Node, limit: int) -> int:
    """How many nodes ``root`` has once every alias is expanded (stops counting past ``limit``)."""
    memo: dict[int, int] = {}

    def count(node: yaml.Node, depth: int) -> int:
        if id(node) in memo:
            return memo[id(node)]
        if depth > 200:  # a self-referencing alias (recursive structure): treat as too large
            return limit + 1
        n = 1
        if isinstance(node, yaml.SequenceNode):
            for child in node.value:
                n += count(child, depth + 1)
                if n > limit:
                    break
        elif isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                n += count(k, depth + 1) + count(v, depth + 1)
                if n > limit:
                    break
        memo[id(node)] = n
        return n

    return count(root, 0)


def _read_yaml(path: Path, source: str) -> Any:
    """Plain data from a YAML file: size-capped, alias-expansion-capped, duplicate keys rejected.

    Raises:
        SweepError: one line (file, line, what) for an unreadable, too large, binary or non-UTF-8
            file, invalid YAML, a disallowed tag, a duplicate key or too many expanded nodes.
    """
    try:
        size = path.stat().st_size
        if size > MAX_YAML_BYTES:
            raise SweepError(
                f"{source}: file is {size / 1e6:.1f} MB; sweep files are limited to {MAX_YAML_BYTES // 1024} KB"
            )
        raw = path.read_bytes()
    except OSError as e:
        raise SweepError(f"{source}: cannot read ({e.strerror})") from None
    if b"\0" in raw:
        raise SweepError(f"{source}: binary file (NUL bytes); expected a YAML text file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise SweepError(f"{source}: not UTF-8 text (line {line}, byte {e.start}); save the file as UTF-8") from None
    loader = _SweepLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_nodes(node, MAX_YAML_NODES) > MAX_YAML_NODES:
            raise SweepError(
                f"{source}: more than {MAX_YAML_NODES} YAML nodes once aliases are expanded; "
                "sweep files are small (nested anchors/aliases multiply)"
            )
        return loader.construct_document(node)
    except _DuplicateKey as e:
        raise SweepError(f"{source}: line {e.line}: duplicate key {e.key!r} (first at line {e.first}); each key may appear once") from None
    except yaml.constructor.ConstructorError as e:
        mark = e.problem_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        tag = (e.problem or "").split("tag")[-1].strip(" '")
        raise SweepError(
            f"{source}: YAML tag {tag!r} is not allowed{where}: sweep files hold plain data only "
            "(mappings, lists, strings, numbers, booleans)"
        ) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SweepError(f"{source}: invalid YAML{where}: {problem}") from None
    finally:
        loader.dispose()


def _first_error(err: ValidationError, source: str, prefix: str = "", valid_keys: list[str] | None = None) -> SweepError:
    """One line for the first pydantic error (with the number of further problems)."""
    errors = err.errors()
    e = errors[0]
    loc = ".".join(str(p) for p in e["loc"])
    path = ".".join(x for x in (prefix, loc) if x) or "<root>"
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        bad = str(e["loc"][-1])
        choices = valid_keys if valid_keys is not None else []
        msg = "unknown key" + suggest(bad, choices)
    elif e["type"] == "too_short" and e.get("input") is not None and len(e["input"]) == 0:
        msg = "empty list (expected at least one value)"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return SweepError(f"{source}: {path}: {msg}{more}")


def config_paths() -> list[str]:
    """Every dotted leaf path of :class:`FamixConfig` (``model.freeze``, ``data.synthetic.seed`` …)."""
    out: list[str] = []

    def walk(prefix: str, model: type[BaseModel]) -> None:
        for name, f in model.model_fields.items():
            path = f"{prefix}.{name}" if prefix else name
            out.append(path)
            sub = _submodel(f.annotation)
            if sub is not None:
                walk(path, sub)

    walk("", FamixConfig)
    return out


def _submodel(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _check_config_key(key: str, source: str, where: str) -> None:
    paths = config_paths()
    if key in paths or key.startswith("data.roots."):
        return
    raise SweepError(f"{source}: {where}: unknown key{suggest(key, paths)}")


def load_sweep(path: str | Path) -> tuple[SweepSpec, str]:
    """Read and validate a sweep file (``base`` given as a path is read too).

    Returns:
        (spec, source) where source is the path as shown in messages.
    """
    p = Path(path)
    source = str(path)
    data = _read_yaml(p, source)
    if not isinstance(data, dict):
        raise SweepError(f"{source}: <root>: expected a mapping with 'name', 'grid', … at the top level")
    top_keys = list(SweepSpec.model_fields)
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        loc = first["loc"]
        keys = top_keys
        if len(loc) >= 2 and loc[0] in ("backend", "tracking", "labels", "profiles", "zip"):
            keys = _keys_for(loc)
        raise _first_error(e, source, valid_keys=keys) from None
    if isinstance(spec.base, str):
        base_path = (p.parent / spec.base).resolve()
        if not base_path.is_file():
            raise SweepError(f"{source}: base: file {spec.base} not found (relative to {p.parent})")
        base = _read_yaml(base_path, str(base_path))
        if not isinstance(base, dict):
            raise SweepError(f"{base_path}: <root>: expected a config mapping (model, style, mining, data, train, eval)")
        spec = spec.model_copy(update={"base": base})
    _validate_tree(spec.base, source, "base")  # the file's own base, before a profile could mask a mistake
    for name, prof in spec.profiles.items():
        if prof.base:
            _validate_tree(_deep_merge(spec.base, prof.base), source, f"profiles.{name}.base")
    return spec, source


def _keys_for(loc: tuple) -> list[str]:
    """Valid keys at the place an extra key was found (for 'did you mean')."""
    models: dict[str, type[BaseModel]] = {
        "backend": BackendSpec,
        "tracking": TrackingSpec,
        "labels": LabelSpec,
        "profiles": ProfileSpec,
        "zip": ZipGroup,
    }
    model = models[loc[0]]
    if loc[0] == "backend" and len(loc) > 2 and loc[1] == "ray":
        model = RayOptions
    if loc[0] == "backend" and len(loc) > 3 and loc[1] == "resources":
        model = ResourceSpec
    return list(model.model_fields)


# ----------------------------------------------------------------------------------------------- overrides


def parse_overrides(items: list[str], source: str = "command line") -> dict[str, Any]:
    """``["train.iterations=5", "model.freeze=none"]`` -> dotted dict; values parsed as YAML scalars.

    Raises:
        SweepError: for an item without ``=`` or with an unknown key.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SweepError(f"{source}: {item!r}: expected key=value (e.g. train.iterations=100)")
        _check_config_key(key, source, key)
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        out[key] = value
    return out


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    node = tree
    parts = key.split(".")
    if key.startswith("data.roots."):
        parts = ["data", "roots", key[len("data.roots.") :]]
    for part in parts[:-1]:
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
            node[part] = nxt
        node = nxt
    node[parts[-1]] = value


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """``b`` over ``a``; mappings merge, everything else (incl. None) replaces."""
    out = copy.deepcopy(a)
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


# ----------------------------------------------------------------------------------------------- profiles


def resolve_profile(
    spec: SweepSpec, source: str, profile: str | None = None, overrides: dict[str, Any] | None = None
) -> ResolvedSweep:
    """Apply a profile and the command-line overrides, from general to specific.

    Precedence (each layer beats the ones before it): engine defaults < the built-in profile
    (``smoke``/``paper``) < the file's top level (``base``, ``seeds``, ``domains``, ``backend``, …)
    < the file's ``profiles.<name>`` < grid/zip values (at expansion) < command-line overrides
    (which may not name a varied key). :attr:`ResolvedSweep.layers` keeps the base trees of the
    layers for ``famix sweep plan --explain``.

    Raises:
        SweepError: unknown profile, bad profile content, an override of a varied key.
    """
    profile = profile or spec.default_profile
    names = sorted(set(BUILTIN_PROFILES) | set(spec.profiles))
    if profile not in names:
        raise SweepError(f"{source}: profile {profile!r}: unknown profile (known: {', '.join(names)}){suggest(profile, names)}")
    try:
        builtin = ProfileSpec.model_validate(copy.deepcopy(BUILTIN_PROFILES.get(profile, {})))
    except ValidationError as e:  # a bug of the built-in table, reported like a file mistake
        raise _first_error(e, "built-in profiles", prefix=profile) from None
    own = spec.profiles.get(profile) or ProfileSpec()
    file_set = spec.model_fields_set

    file_base = spec.base if isinstance(spec.base, dict) else {}
    layers = [
        (f"built-in profile {profile}", builtin.base),
        (f"{source}: base", file_base),
        (f"{source}: profiles.{profile}.base", own.base),
    ]
    base: dict[str, Any] = {}
    for _, tree in layers:
        base = _deep_merge(base, tree)
    grid = {**builtin.grid, **spec.grid, **own.grid}
    seeds = own.seeds or (spec.seeds if "seeds" in file_set else None) or builtin.seeds or spec.seeds
    domains = own.domains or spec.domains or builtin.domains
    try:
        backend = BackendSpec.model_validate(
            _deep_merge(_deep_merge(builtin.backend, spec.backend.model_dump(exclude_unset=True)), own.backend)
        )
        tracking = TrackingSpec.model_validate(
            _deep_merge(_deep_merge(builtin.tracking, spec.tracking.model_dump(exclude_unset=True)), own.tracking)
        )
    except ValidationError as e:
        raise _first_error(e, source, prefix=f"profiles.{profile}") from None
    _validate_slurm(backend.slurm, source)
    varied = set(grid) | {k for g in spec.zip for k in g.values}
    overrides = dict(overrides or {})
    for key, value in overrides.items():
        if key in varied:
            raise SweepError(f"command line: {key}: this key is varied by the sweep's grid/zip; edit the grid instead")
        _set_dotted(base, key, value)
    if domains is None:
        domains = list(_validate_tree(base, source, "base").eval.domains)
    return ResolvedSweep(
        name=spec.name,
        source=source,
        profile=profile,
        base=base,
        grid=grid,
        zip=list(spec.zip),
        seeds=list(seeds),
        labels=dict(spec.labels),
        domains=list(domains),
        backend=backend,
        tracking=tracking,
        overrides=overrides,
        layers=layers,
    )


def _validate_slurm(block: dict[str, Any], source: str) -> None:
    """``backend.slurm``: checked by the slurm backend's own validator when present, else by :class:`SlurmOptions`."""
    if not block:
        return
    validator = None
    for mod_name in ("orchestrator.backends.slurm.options", "orchestrator.backends.slurm"):
        try:
            validator = getattr(__import__(mod_name, fromlist=["validate_slurm_options"]), "validate_slurm_options", None)
        except ImportError:
            continue
        if validator is not None:
            break
    if validator is not None:
        errors = validator(block, source)
        if errors:
            raise SweepError(errors[0])
        return
    try:
        SlurmOptions.model_validate(block)
    except ValidationError as e:
        raise _first_error(e, source, prefix="backend.slurm", valid_keys=list(SlurmOptions.model_fields)) from None


def _validate_tree(tree: dict[str, Any], source: str, prefix: str) -> FamixConfig:
    try:
        return FamixConfig.model_validate(tree)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        if first["type"] == "extra_forbidden":
            raise SweepError(f"{source}: {prefix}.{loc}: unknown key{suggest(loc, config_paths())}") from None
        raise _first_error(e, source, prefix=prefix) from None


# ----------------------------------------------------------------------------------------------- expansion


def _trial_id(cfg: FamixConfig) -> str:
    blob = json.dumps(cfg.to_dict(), sort_keys=True, separators=(",", ":"))
    return "t-" + hashlib.sha256(blob.encode()).hexdigest()[:12]


def expand_trials(rs: ResolvedSweep) -> list[Trial]:
    """Expand grid x zip groups x seeds into validated trials (grid keys in file order, seeds innermost).

    Raises:
        SweepError: unknown/invalid keys or values (naming ``grid.<key>`` or ``zip[i].values.<key>``),
            empty lists, duplicate values, unknown domains, duplicate trials.
    """
    src = rs.source
    _validate_tree(rs.base, src, "base")
    for i, d in enumerate(rs.domains):
        try:
            resolve_domain(d)
        except ValueError as e:
            raise SweepError(f"{src}: domains[{i}]: {e}") from None

    # Axes: each is a list of points; a point is (dotted values, labels).
    axes: list[list[tuple[dict[str, Any], dict[str, str]]]] = []
    for key, values in rs.grid.items():
        where = f"grid.{key}"
        _check_config_key(key, src, where)
        if not values:
            raise SweepError(f"{src}: {where}: empty list (expected at least one value)")
        seen: dict[str, int] = {}
        for i, v in enumerate(values):
            c = canon_value(v)
            if c in seen:
                raise SweepError(f"{src}: {where}[{i}]: duplicate grid point {c!r} (also at [{seen[c]}])")
            seen[c] = i
            _validate_point(rs.base, {key: v}, src, f"{where}[{i}]")
        lab = rs.labels.get(key, LabelSpec(column=key))
        axes.append([({key: v}, {lab.column: lab.values.get(canon_value(v), canon_value(v))}) for v in values])
    for gi, group in enumerate(rs.zip):
        for key in group.values:
            _check_config_key(key, src, f"zip[{gi}].values.{key}")
        points = []
        seen_pts: dict[str, int] = {}
        for i in range(group.size()):
            point = {k: vs[i] for k, vs in group.values.items()}
            c = canon_value(point)
            if c in seen_pts:
                raise SweepError(f"{src}: zip[{gi}]: duplicate grid point {i} (same values as point {seen_pts[c]})")
            seen_pts[c] = i
            _validate_point(rs.base, point, src, f"zip[{gi}] point {i}")
            labels: dict[str, str] = {}
            if group.column:
                shown = group.names[i] if group.names else ", ".join(canon_value(v) for v in point.values())
                labels[group.column] = shown
            for k, v in point.items():
                if k in rs.labels:
                    labels[rs.labels[k].column] = rs.labels[k].values.get(canon_value(v), canon_value(v))
                elif not group.column:
                    labels[k] = canon_value(v)
            points.append((point, labels))
        axes.append(points)
    varied = set(rs.grid) | {k for g in rs.zip for k in g.values}
    for key in rs.labels:
        if key not in varied:
            raise SweepError(f"{src}: labels.{key}: not a grid or zip key{suggest(key, sorted(varied))}")
    if len(set(rs.seeds)) != len(rs.seeds):
        raise SweepError(f"{src}: seeds: duplicate seeds in {rs.seeds}")

    trials: list[Trial] = []
    by_id: dict[str, int] = {}
    for combo in itertools.product(*axes) if axes else [()]:
        point: dict[str, Any] = {}
        labels: dict[str, str] = {}
        for values, labs in combo:
            point.update(values)
            labels.update(labs)
        for seed in rs.seeds:
            tree = copy.deepcopy(rs.base)
            for k, v in point.items():
                _set_dotted(tree, k, v)
            _set_dotted(tree, "train.seed", seed)
            _set_dotted(tree, "mining.seed", seed)
            _set_dotted(tree, "eval.domains", list(rs.domains))
            cfg = _validate_tree(tree, src, f"trial {len(trials)} ({_describe(point)})")
            tid = _trial_id(cfg)
            if tid in by_id:
                other = trials[by_id[tid]]
                raise SweepError(
                    f"{src}: grid: duplicate grid point: {_describe(point)} gives the same config as {_describe(other.point)}"
                )
            by_id[tid] = len(trials)
            trials.append(Trial(id=tid, index=len(trials), seed=seed, labels=dict(labels), point=point, config=cfg))
    return trials


def _describe(point: dict[str, Any]) -> str:
    return ", ".join(f"{k}={canon_value(v)}" for k, v in point.items()) or "base"


def _validate_point(base: dict[str, Any], point: dict[str, Any], source: str, where: str) -> None:
    tree = copy.deepcopy(base)
    for k, v in point.items():
        _set_dotted(tree, k, v)
    try:
        FamixConfig.model_validate(tree)
    except ValidationError as e:
        first = e.errors()[0]
        msg = first["msg"].removeprefix("Value error, ")
        loc = ".".join(str(p) for p in first["loc"])
        raise SweepError(f"{source}: {where}: {loc}: {msg}") from None
