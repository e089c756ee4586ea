"""A sweep file + a profile + command-line overrides -> :class:`~orchestrator.sweep.schema.ResolvedSweep`."""

from __future__ import annotations

import difflib
import warnings
from typing import Any, Sequence

from famix_core.config import FamixConfig, check_seed, config_paths
from famix_core.config_io import MISSING, Override, apply_overrides, check_overrides, mapping_sets, merge, missing_keys, validate
from famix_core.domains import resolve_domain
from famix_core.errors import FamixWarning, suggest
from orchestrator.backends.slurm.options import validate_slurm_options
from orchestrator.errors import SweepError
from orchestrator.sweep.load import check_config_key, validate_block, validate_tree
from orchestrator.sweep.schema import BUILTIN_PROFILES, BackendSpec, ProfileSpec, ResolvedSweep, SweepSpec, TrackingSpec

__all__ = ["resolve_profile", "command_line_seeds", "command_line_domains"]


def resolve_profile(
    spec: SweepSpec, source: str, profile: str | None = None, overrides: Sequence[Override] = ()
) -> ResolvedSweep:
    """Apply a profile and the command-line overrides, from general to specific.

    Precedence (each layer beats the ones before it): engine defaults < the built-in profile
    (``smoke``/``paper``) < the file's top level (``base``, ``seeds``, ``domains``, ``backend``, …)
    < the file's ``profiles.<name>`` < grid/zip values (at expansion) < command-line overrides
    (``key=value``, ``+key=value``, ``~key``; they may not name a varied key). ``seeds=[0,1,2]`` on
    the command line replaces the sweep's seeds (it is not a key of the engine config).
    :attr:`ResolvedSweep.layers` keeps the base trees of the layers for ``famix sweep plan --explain``.

    Raises:
        SweepError / ConfigError: unknown profile, bad profile content, an unknown override key,
            an override of a varied key, ``+key`` of a key already set, ``~key`` of one not set.
    """
    profile = profile or spec.default_profile
    names = sorted(set(BUILTIN_PROFILES) | set(spec.profiles))
    if profile not in names:
        raise SweepError(f"{source}: profile {profile!r}: unknown profile (known: {', '.join(names)}){suggest(profile, names)}")
    builtin = _builtin(profile)
    own = spec.profiles.get(profile) or ProfileSpec()
    if profile not in spec.profiles and (near := _misspelt(profile, list(spec.profiles))):
        warnings.warn(FamixWarning(
            f"{source}: no profiles.{profile}: the built-in {profile} profile runs without the file's own settings for it "
            f"(the file has profiles.{near[0]}: a misspelling? --profile {near[0]} runs that one)"), stacklevel=2)  # fmt: skip
    file_set = spec.model_fields_set

    file_base = spec.base if isinstance(spec.base, dict) else {}
    base_file = spec._base_file
    layers = [
        (f"built-in profile {profile}", builtin.base),
        (f"{base_file} (the base of {source})" if base_file else f"{source}: base", file_base),
        (f"{source}: profiles.{profile}.base", own.base),
    ]
    places = [("built-in profiles", profile), (base_file, "") if base_file else (source, "base"), (source, f"profiles.{profile}.base")]
    base = merge(*(tree for _, tree in layers), source=source)
    grid = {**builtin.grid, **spec.grid, **own.grid}
    where = f"profiles.{profile}"
    grid_from = {k: f"{where}.grid" if k in own.grid else "grid" for k in grid}  # messages name the place in the file
    seeds = own.seeds or (spec.seeds if "seeds" in file_set else None) or builtin.seeds or spec.seeds
    domains = own.domains or spec.domains or builtin.domains
    domains_from = f"{where}.domains" if own.domains else "domains"
    backend, tracking = _backend_and_tracking(spec, source, profile, builtin, own)
    for other, prof in spec.profiles.items():  # a mistake in another profile is found now, not when it is run
        if other != profile:
            _check_other_profile(spec, source, other, prof)
    config_overrides = [o for o in overrides if o.key not in ("seeds", "domains")]
    for o in overrides:
        if o.key == "seeds":
            seeds = command_line_seeds(o)
        elif o.key == "domains":
            domains, domains_from = command_line_domains(o), "command line domains"
    values_of = {**grid, **{k: v for g in spec.zip for k, v in g.values.items()}}
    varied = set(values_of)
    for o in config_overrides:
        check_config_key(o.key, "command line", o.key)
        if o.key in varied:
            raise SweepError(f"command line: {o.key}: this key is varied by the sweep's grid/zip; edit the grid instead")
        section = next((k for k in sorted(varied) if o.key != k and any(mapping_sets(k, v, o.key) for v in values_of[k])), None)
        if section:  # a grid value {freeze: paper} of model merges into the section after the overrides, silently
            raise SweepError(f"command line: {o.key}: set by the values of {section}, which the sweep's grid/zip varies; edit the grid instead")
        named = sorted(k for k in varied if k.startswith(o.key + ".") and _names(o, k))
        if named:  # a mapping merges into the section: the grid's value would beat the one it gives, silently
            raise SweepError(f"command line: {o.key}: sets {', '.join(named)}, which the sweep's grid/zip varies; edit the grid instead")
        for key in ("train.seed", "mining.seed"):  # expansion sets them in every trial
            if _names(o, key):
                raise SweepError(f"command line: {o.key}: {_via(o, key)}set in every trial by the sweep's seeds; give seeds=[...] instead (e.g. seeds=[0,1,2])")
        if _names(o, "eval.domains") and domains is not None:
            given = any(x.key == "domains" for x in overrides)
            where_set = ("the command line" if given else f"{source}: {where}.domains" if own.domains
                         else f"{source}: domains" if spec.domains else f"built-in profile {profile}")  # fmt: skip
            raise SweepError(
                f"command line: {o.key}: {_via(o, 'eval.domains')}set in every trial by the sweep's domains ({', '.join(domains)}, from {where_set}); "
                f"give domains=[...] instead (e.g. domains=[C,B])"
            )
    overridden = apply_overrides(base, config_overrides, tree_source=source)
    if config_overrides:
        check_overrides(FamixConfig, base, overridden, config_paths())
    base = overridden
    data = base.get("data") or {}
    if data.get("synthetic") is not None and "data.synthetic" not in varied and data.get("root") == MISSING:
        base = {**base, "data": {k: v for k, v in data.items() if k != "root"}}  # the plan puts the synthetic benchmark there
    _check_given(base, [tree for _, tree in layers], places, values_of)
    _check_roots_are_read(base, config_overrides, varied, profile)
    if domains is None:
        cfg = validate_tree(base, source, "base", allow_missing=True)
        # None: a ??? that a grid gives leaves a rule across keys to each trial; the domains are as written
        domains = list(cfg.eval.domains if cfg is not None else (base.get("eval") or {}).get("domains") or FamixConfig().eval.domains)
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
        overrides=list(overrides),
        layers=layers,
        grid_from=grid_from,
        domains_from=domains_from,
    )


def _misspelt(profile: str, names: list[str]) -> list[str]:
    """The file's profile names that look like a misspelling of ``profile`` (``papr``, ``Paper`` for
    ``paper``), not one that extends it (``paper_rn101``)."""
    near = difflib.get_close_matches(profile.lower(), [n.lower() for n in names], n=1, cutoff=0.8)
    return [n for n in names if near and n.lower() == near[0] and not n.startswith(profile)]


def _builtin(profile: str) -> ProfileSpec:
    """The built-in profile of that name (an empty one for a name only the file has); a mistake in the
    built-in table is a bug, reported like a file mistake."""
    return validate(ProfileSpec, BUILTIN_PROFILES.get(profile, {}), "built-in profiles", prefix=profile)


def _backend_and_tracking(
    spec: SweepSpec, source: str, profile: str, builtin: ProfileSpec, own: ProfileSpec
) -> tuple[BackendSpec, TrackingSpec]:
    """A profile's ``backend`` and ``tracking``: the built-in profile's, the file's, the file's profile's, merged
    and validated (a mistake is named where it is: the file's top level is valid on its own, so one found
    in the merge is the profile's)."""
    where = f"profiles.{profile}"
    file_backend = merge(builtin.backend, spec.backend.model_dump(exclude_unset=True), source=source)
    backend_tree = merge(file_backend, own.backend, source=source)
    tracking_tree = merge(builtin.tracking, spec.tracking.model_dump(exclude_unset=True), own.tracking, source=source)
    backend = validate_block(BackendSpec, backend_tree, source, "backend", f"{where}.backend" if own.backend else "backend")
    tracking = validate_block(TrackingSpec, tracking_tree, source, "tracking", f"{where}.tracking" if own.tracking else "tracking")
    if backend.slurm:
        validate_slurm_options(file_backend.get("slurm"), source)
        if own.backend.get("slurm"):  # the merged block: a mistake now is the profile's
            validate_slurm_options(backend.slurm, f"{source}: {where}")
    return backend, tracking


def _check_other_profile(spec: SweepSpec, source: str, name: str, prof: ProfileSpec) -> None:
    """What a profile that is not run now sets, checked as far as it goes without running it: its
    ``backend`` and ``tracking`` blocks, its grid's keys and its domains (its ``base`` is checked at load)."""
    if prof.backend or prof.tracking:
        _backend_and_tracking(spec, source, name, _builtin(name), prof)
    for key in prof.grid:
        check_config_key(key, source, f"profiles.{name}.grid.{key}")
    for i, d in enumerate(prof.domains or []):
        try:
            resolve_domain(d)
        except ValueError as e:
            raise SweepError(f"{source}: profiles.{name}.domains[{i}]: {e}") from None


def _check_given(base: dict[str, Any], trees: list[dict[str, Any]], places: list[tuple[str, str]], values_of: dict[str, list[Any]]) -> None:
    """A ``???`` (a value still to give) that neither the command line nor any value of the grid/zip
    gives is refused here, naming the layer that holds it: ``places`` are the (file, prefix) of the
    layers' ``trees``. One that a grid value gives is checked in each trial
    (:func:`~orchestrator.sweep.expand.expand_trials`)."""

    def given_by_grid(key: str) -> bool:
        return any(
            mapping_sets(k, v, key) or (key.startswith(k + ".") and not isinstance(v, dict))
            for k, values in values_of.items()
            for v in values
        )

    left = [key for key in missing_keys(base) if not given_by_grid(key)]
    if not left:
        return
    by_layer = [set(missing_keys(tree)) for tree in trees]
    by_file: dict[str, list[str]] = {}
    for key in left:  # the layer that holds it last (the built-in profiles hold none; the command line may)
        held = [i for i, keys in enumerate(by_layer) if key in keys]
        file, prefix = places[held[-1]] if held else ("command line", "")
        by_file.setdefault(file, []).append(".".join(x for x in (prefix, key) if x))
    where = "; ".join(f"{file}: {', '.join(keys)}" for file, keys in by_file.items())
    it = "it" if len(left) == 1 else "them"
    raise SweepError(f"{where}: {MISSING} (a value still to give) was not given; give {it} on the command line: {' '.join(k + '=…' for k in left)}")


def _via(o: Override, key: str) -> str:
    """How a message about ``key`` begins when the override ``o`` names it inside a section's mapping."""
    return "" if o.key == key else f"sets {key}, which is "


def _names(o: Override, key: str) -> bool:
    """Whether the override ``o`` names ``key``: as its key, or in the mapping it merges into a section
    above it (``style={mix: true}`` names ``style.mix``). Deleting a section, or a value that is not a
    mapping, does not: expansion sets the key in every trial after the overrides."""
    return o.key == key or (o.op != "delete" and mapping_sets(o.key, o.value, key))


def command_line_seeds(o: Override) -> list[int]:
    """The seeds of a ``seeds=[0,1,2]`` command-line item.

    Raises:
        SweepError: ``+seeds``/``~seeds``, or a value that is not a non-empty list of distinct integers.
    """
    example = "e.g. seeds=[0,1,2]"
    if o.op != "set":
        raise SweepError(f"command line: {o.spelled}: the sweep's seeds are replaced with seeds=[...] ({example})")
    v = o.value
    if not isinstance(v, list) or not v or any(isinstance(x, bool) or not isinstance(x, int) for x in v):
        raise SweepError(f"command line: seeds={v!r}: expected a list of integers ({example})")
    if len(set(v)) != len(v):
        raise SweepError(f"command line: seeds={v!r}: duplicate seeds")
    for x in v:
        try:
            check_seed(x)  # the wording of a seed in a file
        except ValueError as e:
            raise SweepError(f"command line: seeds={v!r}: {e}") from None
    return list(v)


def command_line_domains(o: Override) -> list[str]:
    """The domains of a ``domains=[C,B]`` command-line item: they replace the sweep's, in that order
    (the trainings are the same; each trial is evaluated on these).

    Raises:
        SweepError: ``+domains``/``~domains``, or a value that is not a non-empty list of distinct known domains.
    """
    from famix_core.domains import repeated_domain

    example = "e.g. domains=[C,B]"
    if o.op != "set":
        raise SweepError(f"command line: {o.spelled}: the sweep's domains are replaced with domains=[...] ({example})")
    v = o.value
    if not isinstance(v, list) or not v or any(not isinstance(x, str) for x in v):
        raise SweepError(f"command line: domains={v!r}: expected a list of domains ({example})")
    try:
        twice = repeated_domain(v)
    except ValueError as e:
        raise SweepError(f"command line: domains={v!r}: {e}") from None
    if twice is not None:
        raise SweepError(f"command line: domains={v!r}: domain {twice[0]} appears twice")
    return list(v)


def _check_roots_are_read(base: dict[str, Any], overrides: list[Any], varied: set[str], profile: str) -> None:
    """A command-line ``data.root`` where every trial reads the built-in synthetic benchmark
    (``data.synthetic`` set: the plan puts it in the run dir) would be ignored (``data.roots.<domain>``
    is read even then).

    Raises:
        SweepError: one line naming the override and the way to real data.
    """
    if (base.get("data") or {}).get("synthetic") is None or "data.synthetic" in varied:
        return
    for o in overrides:
        if o.op != "delete" and _names(o, "data.root"):
            raise SweepError(
                f"command line: {o.key}: {_via(o, 'data.root')}ignored: every trial of profile {profile} reads the built-in synthetic benchmark "
                f"(data.synthetic is set); for real data use --profile paper, or add data.synthetic=null"
            )
