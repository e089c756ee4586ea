"""A results CSV, wide or long form, read into a :class:`~reports.collect.resultset.ResultSet` (percent)."""

from __future__ import annotations

import csv
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
    REPORT_COLUMNS,
    RESERVED_COLUMNS,
    is_report_column,
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
    Without a ``status`` column (or in an empty cell) a run's status is ``""``: not known.
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
        ReportInputError: missing file or a directory, a row whose field count differs from the header's,
            a run (labels, seed) that appears twice, missing domain column, non-numeric value,
            out-of-range value.
    """
    p = Path(path)
    where = str(path)
    if p.is_dir():
        raise ReportInputError(f"{where}: a directory, not a results CSV")
    if not p.is_file():
        raise ReportInputError(f"{where}: results CSV not found")
    raw = _read_rows(p, where)
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
                    _parse_number(v, f"{where}: column {c!r}, line {line}", unit_name) for line, v in raw[c].items()
                ]
        wide = pd.DataFrame(values, index=raw.index, dtype=float)
        for c in label_cols:
            wide[c] = raw[c].astype(str).str.strip()
        for r in (COL_SEED, COL_STATUS, COL_TRIAL):
            if r in lower:
                wide[r] = raw[lower[r]].astype(str).str.strip()

    for c in label_cols:  # summary.csv / source.csv would write their values over such a label column
        if is_report_column(c):
            raise ReportInputError(f"{where}: column {c!r}: a report's summary.csv or source.csv has a column of that name "
                                   f"({', '.join(REPORT_COLUMNS)}, as written); rename this label column")  # fmt: skip

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
            COL_SEED: _parse_seeds(wide[COL_SEED], where) if COL_SEED in wide else math.nan,
            COL_STATUS: wide[COL_STATUS].fillna("") if COL_STATUS in wide else "",  # none given: none made up
            COL_RUN_ID: None,
            COL_TRAIN_KEY: None,
        },
        index=wide.index,  # the file line of each run, for messages
    )
    for c in label_cols:
        runs[c] = wide[c].values
    for d in expected:
        runs[d] = wide[d].values.astype(float)
    _refuse_repeated_runs(runs, label_cols, where)
    return ResultSet(
        sweep=sweep or p.stem,
        source=where,
        label_columns=label_cols,
        domains=expected,
        runs=runs.reset_index(drop=True),
        notes=_cut_short(p, where, int(raw.index[-1])),
    )


def _cut_short(p: Path, where: str, last_line: int) -> list[str]:
    """A note when the file does not end with a line break: a copy or download cut off mid-line reads
    as whole (``13.5…`` cut to ``13.`` is 13.00); every CSV writer ends its last line."""
    with p.open("rb") as f:
        f.seek(0, 2)
        if f.tell() == 0:
            return []
        f.seek(-1, 2)
        if f.read(1) in (b"\n", b"\r"):
            return []
    return [f"{where} does not end with a line break: its last row (line {last_line}) may be cut short; check its values"]


def _read_rows(p: Path, where: str) -> pd.DataFrame:
    """The CSV's rows as strings, indexed by the file line each starts on (blank lines skipped).

    Refuses a row whose field count differs from the header's (pandas fills a short row with
    empty cells without a word).
    """
    header: list[str] = []
    header_line = 1
    rows, lines = [], []
    try:
        with p.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, skipinitialspace=True)
            start = 1
            for fields in reader:
                if len(fields) > 1 or (fields and fields[0].strip()):
                    if not header:
                        header, header_line = [c.strip() for c in fields], start
                    elif len(fields) != len(header):
                        raise ReportInputError(f"{where}: line {start}: {len(fields)} fields, but the header has {len(header)}")
                    else:
                        rows.append(fields)
                        lines.append(start)
                start = reader.line_num + 1
    except (csv.Error, UnicodeDecodeError) as e:
        raise ReportInputError(f"{where}: not a readable CSV ({e})") from None
    if not rows:
        raise ReportInputError(f"{where}: no rows")
    twice = [c for i, c in enumerate(header) if c in header[:i]]
    if twice:
        raise ReportInputError(f"{where}: line {header_line}: column {twice[0]!r} appears twice in the header")
    return pd.DataFrame(rows, columns=header, index=lines)


def _parse_seeds(cells: pd.Series, where: str) -> pd.Series:
    """The seed column as numbers (an empty cell: no seed); anything but an integer is refused, not read as no seed."""
    seeds = pd.to_numeric(cells.replace("", math.nan), errors="coerce")
    bad = [(line, v) for line, v, x in zip(cells.index, cells, seeds) if (str(v).strip() and pd.isna(x)) or (pd.notna(x) and x != int(x))]
    if bad:
        line, value = bad[0]
        raise ReportInputError(f"{where}: line {line}: seed {value!r}: expected an integer (or an empty cell for no seed)")
    return seeds


def _refuse_repeated_runs(runs: pd.DataFrame, label_cols: list[str], where: str) -> None:
    """Each (labels, seed) once: a repeated row would pass for a second run of its grid point (``runs`` indexed by file line)."""
    key = [*label_cols, COL_SEED]
    repeated = runs[runs.duplicated(key, keep=False)]
    if repeated.empty:
        return
    lines = list(next(iter(repeated.groupby(key, dropna=False, sort=False).groups.values())))
    first = runs.loc[lines[0]]
    labels = ", ".join(f"{c}={first[c]}" for c in label_cols) or "no labels"
    seed = "no seed" if pd.isna(first[COL_SEED]) else f"seed {first[COL_SEED]:g}"
    raise ReportInputError(
        f"{where}: lines {', '.join(map(str, lines))}: {labels}, {seed} appears {len(lines)} times "
        "(each labels and seed may appear once; runs of one grid point need distinct seeds)"
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
    first_line: dict[tuple, int] = {}
    found: list[str] = []
    for line, row in raw.iterrows():
        col = domain_column(str(row[dcol]).strip())
        if col is None:
            raise ReportInputError(f"{where}: line {line}: unknown domain {row[dcol]!r} (known: {', '.join(COLUMNS)})")
        if col not in found:
            found.append(col)
        key = tuple(str(row[k]).strip() for k in keys)
        rec = records.setdefault(key, {k: v for k, v in zip(keys, key)})
        first_line.setdefault(key, line)
        if col in rec:
            raise ReportInputError(f"{where}: line {line}: second value for domain {col} of the same trial {key}")
        rec[col] = _parse_number(str(row[mcol]), f"{where}: column {mcol!r}, line {line}", units)
        if COL_STATUS in lower and str(row[lower[COL_STATUS]]).strip():
            rec[COL_STATUS] = str(row[lower[COL_STATUS]]).strip()
    wide = pd.DataFrame(list(records.values()), index=list(first_line.values()))
    wide = wide.rename(columns={lower[r]: r for r in (COL_SEED, COL_TRIAL) if r in lower})
    for col in found:
        wide[col] = wide[col].astype(float)
    return wide, label_cols, found
