"""Finding and reading a sweep file into a validated :class:`~orchestrator.sweep.schema.SweepSpec`.

Every mistake raises a one-line error ``<file>: <dotted.path>: <what was expected>[ (did you mean …?)]``
(:mod:`famix_core.config_io` reads the YAML and formats pydantic's errors).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from famix_core.config import FamixConfig, config_paths, sweep_file_keys
from famix_core.config_io import also_in_its_section, format_error, merge, read_yaml, validate
from famix_core.errors import closest, suggest
from orchestrator.errors import SweepError
from orchestrator.sweep.schema import (
    BackendSpec,
    LabelSpec,
    ProfileSpec,
    RayOptions,
    ResourceSpec,
    SweepSpec,
    TrackingSpec,
    ZipGroup,
)

__all__ = ["resolve_sweep_path", "load_sweep", "validate_tree", "validate_block", "check_config_key", "BACKEND_SECTIONS"]

M = TypeVar("M", bound=BaseModel)

BACKEND_SECTIONS = ("resources", "local", "ray", "slurm")
"""Sections of the sweep file's ``backend`` block, which a key typed without ``backend.`` may name."""

_REPO_SWEEPS = Path(__file__).resolve().parent.parent.parent / "sweeps"


def resolve_sweep_path(name: str | Path, search: list[Path] | None = None) -> Path:
    """Find a sweep file: a path as given, else ``<dir>/sweeps/<name>[.yaml]`` in the current dir and the repo root.

    Raises:
        SweepError: naming the places searched.
    """
    if not str(name).strip():
        raise SweepError(f"{str(name)!r}: an empty sweep argument; expected a sweep file or a name in sweeps/ (e.g. sweeps/ablation.yaml or ablation)")
    p = Path(name)
    # '.' and '/' have no name to put .yaml on: they can only be folders
    candidates = [p, p.with_suffix(".yaml")] if p.name and p.suffix not in (".yaml", ".yml") else [p]
    roots = search if search is not None else [Path.cwd() / "sweeps", _REPO_SWEEPS]
    for c in list(candidates):
        if not c.is_absolute() and c.name:
            candidates += [r / c.name for r in roots]
    for c in candidates:
        try:
            if c.is_file():
                return c
        except OSError as e:  # pathlib lets ENAMETOOLONG and the like through
            if c is p:  # the argument itself cannot name a file; a place it was only looked for in can go
                shown = str(name) if len(str(name)) <= 80 else f"{str(name)[:40]}… ({len(str(name))} characters)"
                raise SweepError(f"{shown}: not a sweep file: {e.strerror or e}") from None
    if p.is_dir():
        raise SweepError(f"{name}: a folder; expected a sweep YAML file (e.g. sweeps/ablation.yaml)")
    if p.exists():  # a FIFO, a device (/dev/null): "not found, did you mean <itself>?" said otherwise
        raise SweepError(f"{name}: not a regular file; expected a sweep YAML file (e.g. sweeps/ablation.yaml)")
    if "=" in str(name) and not str(name).endswith((".yaml", ".yml")):  # `sweep plan train.iterations=5 sweeps/x.yaml`
        raise SweepError(f"{name}: an override where the sweep file was expected; the sweep file comes first, then key=value items"
                         f" (e.g. sweeps/ablation.yaml {name})")
    # a misspelt name gets the closest sweep file: of the folder it names, as named there, or, for a bare
    # name, of the sweeps/ folders (the current folder holds other YAML files too)
    stem = p.stem if p.suffix in (".yaml", ".yml") else p.name
    if str(p.parent) != ".":
        files = {f.stem: str(p.parent / f.name) for f in _listing(p.parent) if f.suffix in (".yaml", ".yml")}
    else:
        files = {f.stem: f.name for d in reversed(roots) for f in _listing(d) if f.suffix in (".yaml", ".yml")}
    close = [stem] if stem in files else closest(stem, sorted(files))  # by name: all end in .yaml (ablation.yml: .yaml)
    hint = f" (did you mean {' or '.join(files[c] for c in close)}?)" if close else ""
    if p.is_absolute():
        raise SweepError(f"{name}: sweep file not found{hint}")
    where = ", ".join(dict.fromkeys(str(r.resolve()) for r in roots))  # in the project root both are its sweeps/
    raise SweepError(f"{name}: sweep file not found (looked as given and in {where}){hint}")


def _listing(folder: Path) -> list[Path]:
    """The entries of ``folder``, sorted; none where it is not a folder this user may read."""
    try:
        return sorted(folder.iterdir())
    except OSError:
        return []


SET_BY_EXPANSION = {
    "train.seed": "seeds: list; list the seeds there (every trial runs with each)",
    "mining.seed": "seeds: list; list the seeds there (every trial runs with each)",
    "eval.domains": "domains: list; list the columns there (every trial is evaluated on each)",
}
"""Keys that every trial gets from the sweep's ``seeds`` / ``domains``: a grid or zip may not vary them."""


def check_config_key(key: str, source: str, where: str) -> None:
    """``key`` is a dotted path of the engine config (or a ``data.roots.<domain>``).

    Raises:
        SweepError: ``<source>: <where>: unknown key (did you mean …?)``.
    """
    paths = config_paths()
    if key in paths or key.startswith("data.roots."):
        return
    if source == "command line":
        hint = _sweep_setting_hint(key)
        if hint:
            raise SweepError(f"{source}: {where}: {hint}")
    renamed = also_in_its_section(FamixConfig).get(key)
    if renamed:  # `train.amp`, read from a file but not typed here: its key now
        raise SweepError(f"{source}: {where}: unknown key (did you mean {renamed}?)")
    near = closest(key, paths)
    if near and near[0] in SET_BY_EXPANSION:  # `train.seeds`: the key is one no override or grid may set; say why
        raise SweepError(f"{source}: {where}: unknown key (did you mean {near[0]}? it is set in every trial by the sweep's "
                         f"{SET_BY_EXPANSION[near[0]]})")
    raise SweepError(f"{source}: {where}: unknown key{suggest(key, paths)}")


_FLAGS = {  # sweep-file settings with a command-line option of their own
    "backend.kind": "--backend (of famix sweep plan, run and cancel)",
    "backend.max_parallel": "famix sweep run --max-parallel",
    "backend.local.workers": "famix sweep run --max-parallel",
    "backend.retries": "famix sweep run --retries",
    "default_profile": "--profile",
}


def _sweep_setting_hint(key: str) -> str | None:
    """Where a setting of the sweep file itself (``backend.ray.address``, ``tracking.uri``, ``domains``)
    typed as a command-line override goes instead: key=value items set engine config keys only.
    None where ``key`` is no such setting either (the caller says ``unknown key``)."""
    top, _, rest = key.partition(".")
    if top == "base" and rest:  # the overrides apply to the base already
        inner = f"; did you mean {rest}=…?" if rest in config_paths() or rest.startswith("data.roots.") else ""
        return f"key=value items set keys of the sweep's base: drop 'base.'{inner}"
    if top in BACKEND_SECTIONS:
        top, key = "backend", f"backend.{key}"
    if key in _FLAGS:
        return f"a setting of the sweep file, not an engine config key; on the command line it is {_FLAGS[key]}"
    if top not in SweepSpec.model_fields or top in ("seeds", "domains"):
        return None
    misspelt = _schema_problem(SweepSpec, key.split("."))
    if misspelt:
        return misspelt
    per_profile = f", or in its profiles.<name>.{top} for one profile" if top in ProfileSpec.model_fields else ""
    return f"a setting of the sweep file, not an engine config key (key=value sets those); set {key} in the sweep file{per_profile}"


def _schema_problem(model: type[BaseModel], parts: list[str], done: int = 0) -> str | None:
    """``unknown key`` for a dotted path that no sweep-file setting has (``tracking.urii``), walking the
    schema's models and the mappings of them (``backend.resources.<kind>``, ``labels.<dotted key>``);
    below free-form data (``backend.slurm``) any key may be meant. ``done``: the parts already walked."""
    import typing

    fields = model.model_fields
    if done == len(parts):
        return None
    if parts[done] not in fields:
        return f"unknown key, in the engine config and in a sweep file's {'.'.join(parts[:done])}{suggest(parts[done], list(fields))}"
    annotation = fields[parts[done]].annotation
    keyed = typing.get_origin(annotation) is dict  # a free key (a stage kind; a varied key, dotted), then its value
    if keyed:
        annotation = typing.get_args(annotation)[1]
    inner = next((a for a in (annotation, *typing.get_args(annotation)) if isinstance(a, type) and issubclass(a, BaseModel)), None)
    if inner is None:
        return None
    if not keyed:
        return _schema_problem(inner, parts, done + 1)
    rest = parts[done + 1 :]
    paths = config_paths()
    size = next((n for n in range(len(rest), 1, -1) if ".".join(rest[:n]) in paths), 1)  # labels.<style.mix>.column
    return _schema_problem(inner, parts, done + 1 + size)


def validate_tree(tree: dict[str, Any], source: str, prefix: str, allow_missing: bool = False) -> FamixConfig | None:
    """The engine config of a base tree; a mistake names ``<prefix>.<dotted.key>``. ``allow_missing``: a
    ``???`` is left for the command line or the grid to give, and the result is ``None`` where only
    that value could make the tree valid (:func:`famix_core.config_io.validate`); else never ``None``."""
    return validate(FamixConfig, tree, source, prefix=prefix, valid_keys=config_paths(), overridable=True, allow_missing=allow_missing)


def load_sweep(path: str | Path) -> tuple[SweepSpec, str]:
    """Read and validate a sweep file (``base`` given as a path is read too).

    Returns:
        (spec, source) where source is the path as shown in messages.
    """
    p = Path(path)
    source = str(path)
    if p.suffix.lower() in (".csv", ".tsv"):  # `famix report results.csv`: read as YAML, it was "expected a mapping"
        raise SweepError(f"{source}: a table, not a sweep file; `famix report SWEEP --csv {source}` reads results from it")
    data = read_yaml(p, source, kind="sweep")
    if not isinstance(data, dict):
        raise SweepError(f"{source}: <root>: expected a mapping with 'name', 'grid', … at the top level")
    if "base" in data and not isinstance(data["base"], (dict, str)):  # not pydantic's union wording
        got = "an empty value" if data["base"] is None else f"a {type(data['base']).__name__}"
        raise SweepError(f"{source}: base: expected a config mapping or the path of a YAML config file, got {got}")
    spec = validate_block(SweepSpec, data, source)
    base_source, base_prefix = source, "base"  # where a mistake in the base is (this file, or its base file)
    if isinstance(spec.base, str):
        if not spec.base.strip():
            raise SweepError(f"{source}: base: an empty path; expected a YAML config file (relative to this file) or a mapping")
        base_path = (p.parent / spec.base).resolve()
        if base_path.is_dir():
            raise SweepError(f"{source}: base: {spec.base} is a folder (relative to {p.parent}); expected a YAML config file or a mapping")
        if not base_path.is_file():
            raise SweepError(f"{source}: base: file {spec.base} not found (relative to {p.parent})")
        base_source, base_prefix = os.path.normpath(p.parent / spec.base), ""  # as the user opens it from here
        base = read_yaml(base_path, base_source)
        if not isinstance(base, dict):
            raise SweepError(f"{base_source}: <root>: expected a config mapping (model, style, mining, data, train, eval)")
        if keys := sweep_file_keys(base):  # was "<base file>: name: unknown key (+3 more)", naming neither this file nor base
            raise SweepError(
                f"{source}: base: {spec.base} is a sweep file (it has {keys}), not a config; expected a YAML config file"
                " (model, style, mining, data, train, eval) or a mapping"
            )
        spec = spec.model_copy(update={"base": base})
        spec._base_file = base_source
    validate_tree(spec.base, base_source, base_prefix, allow_missing=True)  # the file's own base, before a profile could mask a mistake
    for name, prof in spec.profiles.items():
        if prof.base:
            validate_tree(merge(spec.base, prof.base, source=source), source, f"profiles.{name}.base", allow_missing=True)
    return spec, source


def validate_block(schema: type[M], tree: Any, source: str, block: str = "", prefix: str = "") -> M:
    """``schema`` from ``tree``: the whole sweep file, or its top-level ``block`` (``backend``,
    ``tracking``) named ``prefix`` in messages (``profiles.paper.backend``). A mistake is one line,
    with the closest valid key at its place.

    Raises:
        SweepError: ``<source>: <prefix.key>: <what> (did you mean …?)``.
    """
    try:
        return schema.model_validate(tree)
    except ValidationError as e:
        loc = (block, *e.errors()[0]["loc"]) if block else tuple(e.errors()[0]["loc"])
        raise SweepError(format_error(e, source, prefix, valid_keys=_keys_for(loc))) from None


def _keys_for(loc: tuple) -> list[str]:
    """Valid keys at the place in a sweep file where an extra key was found (for 'did you mean')."""
    if len(loc) < 2 or loc[0] not in ("backend", "tracking", "labels", "profiles", "zip"):
        return list(SweepSpec.model_fields)
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
