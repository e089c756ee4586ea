"""Where each config value of a trial comes from (``famix sweep plan --explain KEY``).

The layers, general to specific: engine default < built-in profile < the file's ``base`` <
the file's ``profiles.<name>.base`` < grid / zip / seeds / domains < command-line overrides.
The value shown is the trial's resolved one (paths made absolute by the plan).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from famix_core.config import config_paths
from famix_core.errors import suggest
from orchestrator.errors import SweepError
from orchestrator.sweep import ResolvedSweep, Trial, canon_value
from orchestrator.sweep.load import BACKEND_SECTIONS
from orchestrator.sweep.schema import ProfileSpec, SweepSpec

__all__ = ["Provenance", "explain_key", "explain_rows"]


@dataclass(frozen=True)
class Provenance:
    """One key of one trial: its resolved value and the layer that set it."""

    key: str
    value: Any
    layer: str


def _lookup(tree: dict[str, Any], key: str) -> tuple[bool, Any]:
    """(whether ``tree`` sets ``key`` — itself or a non-mapping ancestor —, the value there)."""
    node: Any = tree
    parts = key.split(".")
    if key.startswith("data.roots."):
        parts = ["data", "roots", key[len("data.roots.") :]]
    for i, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
        if i < len(parts) - 1 and not isinstance(node, dict):
            return True, node  # an ancestor replaced as a whole (e.g. ``data: {synthetic: null}``)
    return True, node


def _varied_by(point: dict[str, Any], key: str) -> str | None:
    """The grid/zip key of ``point`` that sets ``key``: ``key`` itself, or a section whose mapping value holds it."""
    for k, v in point.items():
        if k == key or (key.startswith(k + ".") and isinstance(v, dict) and _lookup(v, key[len(k) + 1 :])[0]):
            return k
    return None


def _spellings(key: str) -> list[str]:
    """``key``, and the former names the engine still reads for it (``train.amp`` of ``train.precision``:
    a file's ``amp`` had been explained as the engine default); for ``data.roots.<domain>`` the domain's
    name and column too (the config keeps the name), and the dataset folder it shares with other
    domains (``data.roots.acdc``)."""
    if not key.startswith("data.roots."):
        from famix_core.config import FamixConfig
        from famix_core.config_io import also_in_its_section

        return [key, *(old for old, new in also_in_its_section(FamixConfig).items() if new == key)]
    from famix_core.domains import SHARED_FOLDERS, UnknownDomainError, resolve_domain

    given = key[len("data.roots.") :]
    try:
        d = resolve_domain(given)
    except UnknownDomainError:
        return [key]
    shared = d.folder if d.folder in SHARED_FOLDERS else None
    return [f"data.roots.{s}" for s in dict.fromkeys((d.name, given, d.column, shared)) if s]


def _override_layer(overrides: list[Any], keys: list[str]) -> str | None:
    """The layer the command line gives ``keys`` (one key's spellings), taking the overrides in order:
    naming the key, replacing a section above it, or merging a mapping that holds it sets it; deleting
    it or a section above it sends it back to the engine default; None where no override touches it."""
    layer = None
    for o in overrides:
        for key in keys:
            if key != o.key and not key.startswith(o.key + "."):
                continue
            if o.op == "delete":
                layer = f"command line (~{o.key}: engine default)"
            elif key == o.key or not isinstance(o.value, dict) or _lookup(o.value, key[len(o.key) + 1 :])[0]:
                layer = "command line"
            break
    return layer


def explain_key(rs: ResolvedSweep, trial: Trial, key: str) -> Provenance:
    """The resolved value of ``key`` in ``trial`` and the most specific layer that set it."""
    keys = _spellings(key)
    value = trial.config.to_dict()
    for part in (["data", "roots", keys[0][len("data.roots.") :]] if key.startswith("data.roots.") else key.split(".")):
        value = value.get(part) if isinstance(value, dict) else None
    layer = "engine default"
    if key in ("train.seed", "mining.seed"):
        layer = "seeds" + (" (command line)" if any(o.key == "seeds" for o in rs.overrides) else "")
    elif key == "eval.domains":
        layer = "domains" + (" (command line)" if any(o.key == "domains" for o in rs.overrides) else "")
    elif varied := next(filter(None, (_varied_by(trial.point, k) for k in keys)), None):
        layer = "zip" if any(varied in g.values for g in rs.zip) else "grid"
    elif given := _override_layer(rs.overrides, keys):
        layer = given
    else:
        for name, tree in reversed(rs.layers):
            if any(_lookup(tree, k)[0] for k in keys):
                layer = name
                break
    if key == "data.root" and trial.config.data.synthetic is not None:
        layer = "plan: the synthetic benchmark's folder in the run dir (data.synthetic is set)"
    return Provenance(key, value, layer)


def explain_rows(rs: ResolvedSweep, trials: list[Trial], key: str) -> list[tuple[str, str, str, str]]:
    """Rows ``(key, trials, value, layer)`` for ``key`` (a leaf, or a section such as ``train``).

    Trials that agree on a leaf's value and layer share one row (``all`` when every trial does).

    Raises:
        SweepError: an unknown key (with the closest one).
    """
    paths = config_paths()
    leaves = [p for p in paths if p == key or p.startswith(key + ".")]
    leaves = [p for p in leaves if not any(q.startswith(p + ".") for q in paths)] or leaves
    if not leaves and key.startswith("data.roots."):
        from famix_core.domains import SHARED_FOLDERS

        given = key[len("data.roots.") :]
        leaves = [f"data.roots.{n}" for n in SHARED_FOLDERS[given]] if given in SHARED_FOLDERS else [key]
    if not leaves:
        top = key.partition(".")[0]
        top = "backend" if top in BACKEND_SECTIONS else top
        if top in SweepSpec.model_fields:
            per_profile = f" or its profiles.<name>.{top}" if top in ProfileSpec.model_fields else ""
            raise SweepError(f"command line: --explain {key}: a setting of the sweep file, not an engine config key; --explain "
                             f"traces the trials' config keys only (read it in the file's {top}{per_profile})")  # fmt: skip
        raise SweepError(f"command line: --explain {key}: unknown key{suggest(key, paths)}")
    rows: list[tuple[str, str, str, str]] = []
    for leaf in leaves:
        groups: dict[tuple[str, str], list[Trial]] = {}
        for t in trials:
            p = explain_key(rs, t, leaf)
            groups.setdefault((canon_value(p.value), p.layer), []).append(t)
        for (value, layer), ts in groups.items():
            who = "all" if len(ts) == len(trials) else ",".join(str(t.index + 1) for t in ts)  # the plan table's #
            rows.append((leaf, who, value, layer))
    return rows
