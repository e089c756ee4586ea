"""A results CSV, wide or long form, read into a :class:`~reports.collect.resultset.ResultSet` (percent)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from famix_core.domains import COLUMNS, DEFAULT_TARGETS
from reports.collect.resultset import ReportInputError, ResultSet, domain_column
from reports.schema import (
    COL_RUN_ID,
    COL_SEED,
    COL_STATUS,
    COL_TRAIN_KEY,
    COL_TRIAL,
    COL_TRIAL_INDEX,
    IGNORED_CSV_COLUMNS,
    LONG_DOMAIN,
    LONG_MIOU,
    RESERVED_COLUMNS,
)

__all__ = ["UNITS", "collect_csv"]

UNITS: tuple[str, ...] = ("percent", "fraction")
"""Units a results CSV may hold: mIoU in percent (paper units) or as a fraction in [0, 1]."""


def _parse_number(raw: str, where: str, units: str) -> float:
    text = raw.strip()
    if text in ("", "-", "–", "nan", "NaN", "NA"):
        return math.nan
    if text.endswith("%"):
        text = text[:-1].strip()
    try:
        value = float(text)
    except ValueError:
        raise ReportInputError(f"{where}: non-numeric value {raw!r} (expected a number in {units})") from None
    if not math.isfinite(value):
        raise ReportInputError(f"{where}: non-finite value {raw!r} (expected a number in {units})")
    return value


def _check_units(values: pd.DataFrame, units: str | None, path: str) -> tuple[pd.DataFrame, str]:
    """Convert to percent; refuse values outside the declared unit's range and ambiguous input."""
    finite = values.stack().dropna()
    if finite.empty:
        return values, units or "percent"
    lo, hi = float(finite.min()), float(finite.max())
    if units is None:
        if hi <= 1.0:
            raise ReportInputError(
                f"{path}: every value lies in [0, 1] (max {hi:g}); say which units they are in: "
                "--units fraction (mIoU as a fraction) or --units percent"
            )
        units = "percent"
    if units not in UNITS:
        raise ReportInputError(f"{path}: unknown units {units!r} (known: {', '.join(UNITS)})")
    top = 1.0 if units == "fraction" else 100.0
    if lo < 0.0 or hi > top:
        bad = hi if hi > top else lo
        hint = " (values above 1: pass --units percent)" if units == "fraction" and hi <= 100 else ""
        raise ReportInputError(f"{path}: value {bad:g} outside [0, {top:g}] for --units {units}{hint}")
    return (values * 100.0 if units == "fraction" else values), units


def collect_csv(
    path: str | Path,
    *,
    units: str | None = None,
    domains: list[str] | None = None,
    sweep: str | None = None,
) -> ResultSet:
    """Read a results CSV, wide or long form, into a :class:`ResultSet` (percent).

    Wide: label columns, optional ``seed`` / ``status`` / ``trial``, one column per domain
    (column or registry name). Long: label columns, optional ``seed``, ``domain``, ``miou``.
    A ``Mean`` column is ignored (the tool computes the mean itself).

    Args:
        path: the CSV file.
        units: ``percent`` or ``fraction``; ``None`` = percent, but refuse a file whose values
            all lie in [0, 1] (it could be either: the user must say which).
        domains: expected domain columns in order (default: the paper's eight); each must be present.
        sweep: sweep name for titles (default: the file's stem).

    Returns:
        ResultSet with one row per CSV row (wide) or per (labels, seed) group (long).

    Raises:
        ReportInputError: missing file, missing domain column, non-numeric value, out-of-range value.
    """
    p = Path(path)
    where = str(path)
    if not p.is_file():
        raise ReportInputError(f"{where}: results CSV not found")
    try:
        raw = pd.read_csv(p, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ReportInputError(f"{where}: not a readable CSV ({str(e).splitlines()[0]})") from None
    raw.columns = [str(c).strip() for c in raw.columns]
    if raw.empty:
        raise ReportInputError(f"{where}: no rows")
    lower = {c.lower(): c for c in raw.columns}
    unit_name = units or "percent"

    if LONG_DOMAIN in lower and LONG_MIOU in lower:
        wide, label_cols, found = _long_to_wide(raw, lower, where, unit_name)
    else:
        label_cols, found = [], []
        for c in raw.columns:
            col = domain_column(c)
            if col is not None:
                if col in found:
                    raise ReportInputError(f"{where}: domain {col} appears in two columns")
                found.append(col)
            elif c.lower() not in RESERVED_COLUMNS and c.lower() not in IGNORED_CSV_COLUMNS:
                label_cols.append(c)
        values = {}
        for c in raw.columns:
            col = domain_column(c)
            if col is not None:
                values[col] = [
                    _parse_number(v, f"{where}: column {c!r}, row {i + 2}", unit_name) for i, v in enumerate(raw[c])
                ]
        wide = pd.DataFrame(values, index=raw.index, dtype=float)
        for c in label_cols:
            wide[c] = raw[c].astype(str).str.strip()
        for r in (COL_SEED, COL_STATUS, COL_TRIAL):
            if r in lower:
                wide[r] = raw[lower[r]].astype(str).str.strip()

    expected = list(domains) if domains else list(DEFAULT_TARGETS)
    expected = [domain_column(d) or d for d in expected]
    missing = [d for d in expected if d not in found]
    if missing:
        have = ", ".join(found) or "none"
        raise ReportInputError(
            f"{where}: missing domain column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"(found {have}; expected {', '.join(expected)}; pass --domains to report fewer)"
        )
    converted, _ = _check_units(wide[expected], units, where)
    wide[expected] = converted

    n = len(wide)
    runs = pd.DataFrame(
        {
            COL_TRIAL: wide[COL_TRIAL] if COL_TRIAL in wide else "",  # no trial ids: footnotes name the table row
            COL_TRIAL_INDEX: list(range(n)),
            COL_SEED: pd.to_numeric(wide[COL_SEED], errors="coerce") if COL_SEED in wide else math.nan,
            COL_STATUS: wide[COL_STATUS].replace("", "done") if COL_STATUS in wide else "done",
            COL_RUN_ID: None,
            COL_TRAIN_KEY: None,
        }
    )
    for c in label_cols:
        runs[c] = wide[c].values
    for d in expected:
        runs[d] = wide[d].values.astype(float)
    return ResultSet(
        sweep=sweep or p.stem,
        source=where,
        label_columns=label_cols,
        domains=expected,
        runs=runs.reset_index(drop=True),
    )


def _long_to_wide(
    raw: pd.DataFrame, lower: dict[str, str], where: str, units: str
) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Pivot the long form (labels, seed, domain, miou) to one row per (labels, seed)."""
    dcol, mcol = lower[LONG_DOMAIN], lower[LONG_MIOU]
    label_cols = [
        c
        for c in raw.columns
        if c not in (dcol, mcol) and c.lower() not in RESERVED_COLUMNS and c.lower() not in IGNORED_CSV_COLUMNS
    ]
    keys = label_cols + [lower[r] for r in (COL_SEED, COL_TRIAL) if r in lower]
    records: dict[tuple, dict[str, Any]] = {}
    found: list[str] = []
    for i, row in raw.iterrows():
        col = domain_column(str(row[dcol]).strip())
        if col is None:
            raise ReportInputError(f"{where}: row {i + 2}: unknown domain {row[dcol]!r} (known: {', '.join(COLUMNS)})")
        if col not in found:
            found.append(col)
        key = tuple(str(row[k]).strip() for k in keys)
        rec = records.setdefault(key, {k: v for k, v in zip(keys, key)})
        if col in rec:
            raise ReportInputError(f"{where}: row {i + 2}: second value for domain {col} of the same trial {key}")
        rec[col] = _parse_number(str(row[mcol]), f"{where}: column {mcol!r}, row {i + 2}", units)
        if COL_STATUS in lower and str(row[lower[COL_STATUS]]).strip():
            rec[COL_STATUS] = str(row[lower[COL_STATUS]]).strip()
    wide = pd.DataFrame(list(records.values()))
    wide = wide.rename(columns={lower[r]: r for r in (COL_SEED, COL_TRIAL) if r in lower})
    for col in found:
        wide[col] = wide[col].astype(float)
    return wide, label_cols, found
