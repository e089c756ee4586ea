"""Grid x zip groups x seeds -> validated :class:`~orchestrator.sweep.schema.Trial` list (ids from the canonical hash)."""

from __future__ import annotations

import copy
import itertools
import json
import re
from typing import Any

from famix_core.config import FamixConfig
from famix_core.config_io import MISSING, canonical_hash, missing_keys, set_dotted, validate
from famix_core.domains import repeated_domain, resolve_domain
from famix_core.errors import FamixError, suggest
from orchestrator.errors import SweepError
from orchestrator.sweep.load import SET_BY_EXPANSION, check_config_key, validate_tree
from orchestrator.sweep.schema import LabelSpec, ResolvedSweep, Trial, canon_value
from reports.schema import IGNORED_CSV_COLUMNS, LONG_DOMAIN, LONG_MIOU, REPORT_COLUMNS, RESERVED_COLUMNS, is_report_column

__all__ = ["trial_id", "expand_trials"]


def trial_id(cfg: FamixConfig) -> str:
    """``t-`` + the first 12 hex of the canonical hash of the resolved config (stable across reruns;
    :meth:`~famix_core.config.FamixConfig.identity_dict`)."""
    return "t-" + canonical_hash(cfg.identity_dict())[:12]


def expand_trials(rs: ResolvedSweep) -> list[Trial]:
    """Expand grid x zip groups x seeds into validated trials (grid keys in file order, seeds innermost).

    Raises:
        SweepError: unknown/invalid keys or values (naming ``grid.<key>`` or ``zip[i].values.<key>``),
            empty lists, duplicate values, unknown domains, duplicate trials.
    """
    src = rs.source
    validate_tree(rs.base, src, "base", allow_missing=True)  # a ??? the grid gives is checked per trial
    for i, d in enumerate(rs.domains):
        try:
            resolve_domain(d)
        except ValueError as e:
            raise SweepError(f"{src}: {rs.domains_from}[{i}]: {e}") from None
    if (twice := repeated_domain(rs.domains)) is not None:  # said of the list, not of trial 0's eval.domains
        column, (first, again, *_) = twice
        raise SweepError(f"{src}: {rs.domains_from}[{again}]: domain {column} appears twice (first at [{first}])")

    # Axes: each is a list of points; a point is (dotted values, labels).
    axes: list[list[tuple[dict[str, Any], dict[str, str]]]] = []
    varied_at: dict[str, str] = {}  # varied key -> the place that varies it
    for key, values in rs.grid.items():
        where = f"{rs.grid_from.get(key, 'grid')}.{key}"
        _check_varied_key(key, src, where)
        varied_at[key] = where
        if not values:
            raise SweepError(f"{src}: {where}: empty list (expected at least one value)")
        seen: dict[str, int] = {}
        for i, v in enumerate(values):
            c = canon_value(v)
            if c in seen:
                raise SweepError(f"{src}: {where}[{i}]: duplicate grid point {c!r} (also at [{seen[c]}])")
            seen[c] = i
            try:
                _validate_point(rs.base, {key: v}, src, f"{where}[{i}]")
            except FamixError as e:
                if any(isinstance(x, list) for x in values) or not re.search(r"Input should be a valid (list|tuple)", str(e)):
                    raise
                one, each = json.dumps([list(values)]), json.dumps([[x] for x in values])
                raise SweepError(f"{e}; {key} takes a list, so each of its grid values is one: {key}: {one} is one grid"
                                 f" point, {key}: {each} is {len(values)}") from None
        lab = rs.labels.get(key, LabelSpec(column=key))
        axes.append([({key: v}, {lab.column: lab.values.get(canon_value(v), canon_value(v))}) for v in values])
    for gi, group in enumerate(rs.zip):
        for key in group.values:
            where = f"zip[{gi}].values.{key}"
            _check_varied_key(key, src, where)
            if key in varied_at:  # the other place's values would be dropped, silently
                raise SweepError(
                    f"{src}: {where}: {key} is already varied by {varied_at[key]}; a key varies in the grid or in one zip group, never both"
                )
            varied_at[key] = where
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
    varied = set(varied_at)
    for key, label in rs.labels.items():
        if key not in varied:
            raise SweepError(f"{src}: labels.{key}: not a grid or zip key{suggest(key, sorted(varied))}")
        taken = [canon_value(v) for v in rs.grid.get(key, [])] + [canon_value(v) for g in rs.zip for v in g.values.get(key, [])]
        for value in label.values:
            if value not in taken:  # a misspelt value would be shown raw, silently
                raise SweepError(f"{src}: labels.{key}.values.{value}: not a value {key} takes (it takes {', '.join(taken)})")
        shown_by: dict[str, str] = {}
        for value in dict.fromkeys(taken):  # a zip key may take one value at several points
            shown = label.values.get(value, value)
            if shown in shown_by:  # two rows of the table would read the same
                raise SweepError(
                    f"{src}: labels.{key}.values.{value}: shown as {shown!r}, as {shown_by[shown]} is; "
                    f"each value needs its own text, or its rows could not be told apart"
                )
            shown_by[shown] = value
    _check_label_columns(rs, varied_at)

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
                set_dotted(tree, k, v)
            set_dotted(tree, "train.seed", seed)
            set_dotted(tree, "mining.seed", seed)
            set_dotted(tree, "eval.domains", list(rs.domains))
            left = missing_keys(tree)
            if left:  # the base's ??? that some grid values give and this trial's do not
                raise SweepError(
                    f"{src}: trial {len(trials) + 1} ({_describe(point)}): {', '.join(left)}: {MISSING} (a value still to give) "
                    f"was not given: this trial's grid/zip values leave it; set it in base, or in each of those values"
                )
            cfg = validate_tree(tree, src, f"trial {len(trials) + 1} ({_describe(point)})")  # the plan table's #
            tid = trial_id(cfg)
            if tid in by_id:
                other = trials[by_id[tid]]
                raise SweepError(
                    f"{src}: grid: duplicate grid point: {_describe(point)} gives the same config as {_describe(other.point)}"
                )
            by_id[tid] = len(trials)
            trials.append(Trial(id=tid, index=len(trials), seed=seed, labels=dict(labels), point=point, config=cfg))
    return trials



def _check_varied_key(key: str, src: str, where: str) -> None:
    check_config_key(key, src, where)
    if key in SET_BY_EXPANSION:
        raise SweepError(f"{src}: {where}: set in every trial by the sweep's {SET_BY_EXPANSION[key]}")


RESULT_COLUMNS: tuple[str, ...] = (
    *RESERVED_COLUMNS,  # a results CSV's and a result set's bookkeeping (reports/schema.py)
    *IGNORED_CSV_COLUMNS,  # n, mean: the CSV reader drops them
    LONG_DOMAIN,
    LONG_MIOU,  # both at once make a CSV the long form
)
"""Column names the results write or read themselves (in any case, also with ``_std`` / ``_mark`` /
``_partial``): a label column of the same name is overwritten or read as something else, after the training."""

_SUFFIXES = ("_std", "_mark", "_partial")  # a report summary's columns per value column (C_std, Mean_mark)


def _reserved(column: str) -> str | None:
    """Why ``column`` cannot be a label column, or None."""
    stem = column
    for suffix in _SUFFIXES:
        if column.lower().endswith(suffix) and len(column) > len(suffix):
            stem = column[: -len(suffix)]
    if is_report_column(column):
        return (f"a report's summary.csv or source.csv has a column {column!r} of its own (reserved as written: "
                f"{', '.join(REPORT_COLUMNS)}; also with _std)")  # fmt: skip
    for name in dict.fromkeys((column, stem)):
        if name.lower() in RESULT_COLUMNS:
            return f"the results have a column {column!r} of their own (reserved, in any case: {', '.join(RESULT_COLUMNS)}; also with _std, _mark, _partial)"
        try:
            domain = resolve_domain(name)
        except ValueError:
            continue
        also = f" ({domain.column})" if domain.column and domain.column != name else ""
        return f"the results have a column {column!r} for the domain {domain.name}{also}"
    return None


def _check_label_columns(rs: ResolvedSweep, varied_at: dict[str, str]) -> None:
    """Each varied key and zip group shows in a column of its own, named unlike the results' own columns.

    A shared column keeps the last value written to it, so rows read alike or wrong; a reserved name
    (``seed``, ``n``, ``Mean``, a domain) breaks results.csv and ``famix report`` once everything has run.
    """
    src = rs.source
    zipped = {k for g in rs.zip for k in g.values}
    owners: list[tuple[str, str]] = []  # (column, where its name is written); raw key columns first: a label is blamed
    for key, where in varied_at.items():
        if key not in rs.labels and (key not in zipped or not next(g for g in rs.zip if key in g.values).column):
            owners.append((key, where))
    owners += [(g.column, f"zip[{gi}].column") for gi, g in enumerate(rs.zip) if g.column]
    owners += [(label.column, f"labels.{key}.column") for key, label in rs.labels.items()]
    first: dict[str, str] = {}
    for column, where in owners:
        why = _reserved(column)
        if why:
            raise SweepError(f"{src}: {where}: {why}; choose another name")
        if column in first:
            raise SweepError(
                f"{src}: {where}: column {column!r} is already used by {first[column]}; each varied key or zip group needs its own column"
            )
        first[column] = where


def _describe(point: dict[str, Any]) -> str:
    return ", ".join(f"{k}={canon_value(v)}" for k, v in point.items()) or "base"


def _validate_point(base: dict[str, Any], point: dict[str, Any], source: str, where: str) -> None:
    for k, v in point.items():
        if v == MISSING or missing_keys(v):  # a value still to give has no place among the values tried
            raise SweepError(f"{source}: {where}: {MISSING} is not a value to try; list the values the sweep varies {k} over")
    tree = copy.deepcopy(base)
    for k, v in point.items():
        set_dotted(tree, k, v)
    validate(FamixConfig, tree, f"{source}: {where}", allow_missing=True)
