"""Collect a sweep's results into one pandas frame: from MLflow trial runs or from a results CSV.

Both sources end in a :class:`ResultSet`: one row per trial (trial × seed) with
its label columns (as shown in tables), its status and one float column per
domain column (mIoU in percent, NaN where missing). Tables and plots read only
that frame, so they never touch MLflow.

This module imports pandas only; MLflow is imported inside :func:`collect_mlflow`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from famix_core.domains import COLUMNS, DEFAULT_TARGETS, UnknownDomainError, resolve_domain
from famix_core.errors import FamixError

__all__ = [
    "ReportInputError",
    "ResultSet",
    "UNITS",
    "RESERVED_COLUMNS",
    "collect_csv",
    "collect_mlflow",
    "default_tracking_uri",
    "sqlite_path",
    "sqlite_uri",
    "domain_column",
]

UNITS: tuple[str, ...] = ("percent", "fraction")
"""Units a results CSV may hold: mIoU in percent (paper units) or as a fraction in [0, 1]."""

RESERVED_COLUMNS: tuple[str, ...] = ("trial", "trial_index", "seed", "status", "run_id", "train_key")
"""Bookkeeping columns of :attr:`ResultSet.runs` (never label or domain columns)."""

# Columns a results CSV may carry that are neither labels nor domains; the tool recomputes the mean.
_IGNORED_CSV_COLUMNS = ("mean", "n")


class ReportInputError(FamixError, ValueError):
    """Report input is missing or malformed: one line naming the file / sweep / column and what was expected."""


@dataclass
class ResultSet:
    """A sweep's results, one row per trial (trial × seed).

    Attributes:
        sweep: sweep name (titles, default output folder).
        source: where the numbers came from (``mlflow <uri>`` or the CSV path), for messages.
        label_columns: label column names, in the sweep's order (e.g. ``freeze, augment, mix``).
        domains: domain columns (``C``, ``B`` …), in the sweep's order.
        runs: DataFrame with :data:`RESERVED_COLUMNS`, the label columns (str) and the
            domain columns (float, percent, NaN = missing); rows in grid order.
        tracking_uri: the MLflow URI when read from MLflow (loss curves, qualitative), else ``None``.
    """

    sweep: str
    source: str
    label_columns: list[str]
    domains: list[str]
    runs: pd.DataFrame
    tracking_uri: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_results_csv(self) -> pd.DataFrame:
        """The Results CSV (wide, percent): label columns, ``seed``, ``status``, one column per domain."""
        cols = [*self.label_columns, "seed", "status", *self.domains]
        out = self.runs[cols].copy()
        seeds = pd.to_numeric(out["seed"], errors="coerce")
        if (seeds.dropna() % 1 == 0).all():
            out["seed"] = seeds.astype("Int64")  # 0, not 0.0; missing stays empty
        return out


def domain_column(name: str) -> str | None:
    """Table column of a domain given by column (``C``) or registry name (``cityscapes``); ``None`` if not a domain."""
    try:
        d = resolve_domain(name)
    except UnknownDomainError:
        return None
    return d.column


def default_tracking_uri(run_dir: str | Path) -> str:
    """The embedded store the orchestrator writes: ``sqlite:///<abs run_dir>/mlflow.db``."""
    return sqlite_uri(Path(run_dir).absolute() / "mlflow.db")


def sqlite_uri(db: str | Path) -> str:
    """``sqlite:///<absolute path>``, percent-encoded so that any path works (``?``, ``#``, ``%``, spaces)."""
    from urllib.parse import quote

    return "sqlite:///" + quote(str(Path(db).absolute()), safe="/")


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (percent-decoded), or None for another kind of store."""
    from urllib.parse import unquote

    if uri.startswith("sqlite:///"):
        return Path(unquote(uri[len("sqlite:///") :].split("?", 1)[0]))
    return None


def _order_domains(found: list[str]) -> list[str]:
    """Known domains in the paper's order, then any others in the order found."""
    paper = [c for c in DEFAULT_TARGETS if c in found]
    return paper + [c for c in found if c not in paper]


# ----------------------------------------------------------------------------- CSV


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

    if "domain" in lower and "miou" in lower:
        wide, label_cols, found = _long_to_wide(raw, lower, where, unit_name)
    else:
        label_cols, found = [], []
        for c in raw.columns:
            col = domain_column(c)
            if col is not None:
                if col in found:
                    raise ReportInputError(f"{where}: domain {col} appears in two columns")
                found.append(col)
            elif c.lower() not in RESERVED_COLUMNS and c.lower() not in _IGNORED_CSV_COLUMNS:
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
        for r in ("seed", "status", "trial"):
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
            "trial": wide["trial"] if "trial" in wide else "",  # no trial ids: footnotes name the table row
            "trial_index": list(range(n)),
            "seed": pd.to_numeric(wide["seed"], errors="coerce") if "seed" in wide else math.nan,
            "status": wide["status"].replace("", "done") if "status" in wide else "done",
            "run_id": None,
            "train_key": None,
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
    dcol, mcol = lower["domain"], lower["miou"]
    label_cols = [
        c
        for c in raw.columns
        if c not in (dcol, mcol) and c.lower() not in RESERVED_COLUMNS and c.lower() not in _IGNORED_CSV_COLUMNS
    ]
    keys = label_cols + [lower[r] for r in ("seed", "trial") if r in lower]
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
        if "status" in lower and str(row[lower["status"]]).strip():
            rec["status"] = str(row[lower["status"]]).strip()
    wide = pd.DataFrame(list(records.values()))
    wide = wide.rename(columns={lower[r]: r for r in ("seed", "trial") if r in lower})
    for col in found:
        wide[col] = wide[col].astype(float)
    return wide, label_cols, found


# ----------------------------------------------------------------------------- MLflow


def collect_mlflow(
    sweep: str,
    *,
    tracking_uri: str,
    experiment: str | None = None,
    reader: str = "auto",
    profile: str | None = None,
) -> ResultSet:
    """Read every trial run of a sweep from MLflow in one query into a :class:`ResultSet`.

    Trial runs carry tags ``famix.sweep=<sweep>`` and ``famix.role=trial`` (docs/ARCHITECTURE.md,
    "MLflow schema"); ``miou/<column>`` metrics are percent. When a trial id appears in several
    runs (a sweep run twice), the latest run counts.

    Two readers give the same records: ``client`` pages through ``MlflowClient.search_runs``
    (any store: SQLite, a tracking server, …); ``sqlite`` reads an embedded ``sqlite:///`` store
    directly, read-only, with three SQL queries over MLflow's ``runs``/``tags``/``latest_metrics``
    tables and no params — MLflow's ORM materializes every param of every run (about 50 per trial),
    which takes a minute for 10,000 runs. ``auto`` uses ``sqlite`` for SQLite URIs and falls back
    to ``client`` when the store's tables do not look as expected.

    Args:
        sweep: sweep name (``famix.sweep`` tag).
        tracking_uri: ``sqlite:///…/mlflow.db`` or ``http://host:port``.
        experiment: experiment name (default: the sweep name; when absent, all experiments are searched).
        reader: ``auto`` | ``client`` | ``sqlite``.
        profile: keep only trials run under this sweep profile (``famix.profile`` tag), so a
            smoke run and a paper run in one run directory never share a table; ``None``: all.

    Returns:
        ResultSet in grid order (``famix.trial_index``), domains from ``famix.domains``.

    Raises:
        ReportInputError: no store at a sqlite path, an unknown experiment, or no trial runs for the sweep.
    """
    if reader not in ("auto", "client", "sqlite"):
        raise ReportInputError(f"unknown MLflow reader {reader!r} (known: auto, client, sqlite)")
    db = sqlite_path(tracking_uri)
    if db is not None and not db.is_file():
        raise ReportInputError(
            f"no MLflow store at {db} (run `famix sweep run {sweep}` first, or pass --run-dir, --tracking-uri or --csv)"
        )
    if "'" in sweep:
        raise ReportInputError(f"sweep name {sweep!r}: quotes are not allowed")
    records = None
    if db is not None and reader in ("auto", "sqlite"):
        try:
            records, where = _records_sqlite(db, sweep, experiment)
        except _SchemaMismatch:
            if reader == "sqlite":
                raise ReportInputError(f"{db}: not an MLflow store with runs/tags/latest_metrics tables") from None
    if records is None:
        records, where = _records_client(tracking_uri, sweep, experiment)
    if not records:
        raise ReportInputError(
            f"no trial runs for sweep {sweep!r} in {where} at {tracking_uri} (tags famix.sweep, famix.role=trial)"
        )
    if profile is not None:
        profiles = sorted({r["tags"].get("famix.profile", "?") for r in records})
        records = [r for r in records if r["tags"].get("famix.profile", profile) == profile]
        if not records:
            raise ReportInputError(
                f"no trial runs for sweep {sweep!r} with profile {profile!r} at {tracking_uri} "
                f"(profiles found: {', '.join(profiles)}; pass --profile)"
            )
    return _records_to_resultset(sweep, tracking_uri, records)


_TAGS_READ: tuple[str, ...] = (
    "famix.trial",
    "famix.trial_index",
    "famix.seed",
    "famix.labels",
    "famix.status",
    "famix.domains",
    "famix.stage.train",
    "famix.profile",
)
"""The trial tags a report reads (plus ``famix.label.<column>``, the fallback for ``famix.labels``)."""


class _SchemaMismatch(Exception):
    """The SQLite file lacks the MLflow tables/columns the direct reader needs."""


def _records_client(uri: str, sweep: str, experiment: str | None) -> tuple[list[dict[str, Any]], str]:
    """Trial runs through ``MlflowClient.search_runs`` (pages of 50,000; no round trip per run)."""
    from mlflow.entities import ViewType
    from mlflow.exceptions import MlflowException
    from reports.mlflow_client import mlflow_client

    client = mlflow_client(uri)
    exp_name = experiment or sweep
    try:
        exp = client.get_experiment_by_name(exp_name)
        if exp is not None:
            exp_ids, where = [exp.experiment_id], f"experiment {exp_name!r}"
        elif experiment is not None:
            raise ReportInputError(f"no MLflow experiment {experiment!r} at {uri}")
        else:
            exp_ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
            where = "any experiment"
        flt = f"tags.`famix.sweep` = '{sweep}' AND tags.`famix.role` = 'trial'"
        runs: list = []
        token = None
        while True:
            page = client.search_runs(
                exp_ids, filter_string=flt, run_view_type=ViewType.ACTIVE_ONLY, max_results=50_000, page_token=token
            )
            runs.extend(page)
            token = page.token
            if not token:
                break
    except MlflowException as e:
        raise ReportInputError(f"MLflow at {uri}: {str(e).splitlines()[0]}") from None
    records = [
        {
            "run_id": r.info.run_id,
            "start_time": r.info.start_time or 0,
            "tags": dict(r.data.tags),
            "metrics": {k: v for k, v in r.data.metrics.items() if k.startswith("miou/")},
        }
        for r in runs
    ]
    return records, where


def _records_sqlite(db: Path, sweep: str, experiment: str | None) -> tuple[list[dict[str, Any]], str]:
    """Trial runs read directly from an embedded MLflow SQLite store (read-only; tags and latest metrics)."""
    import sqlite3

    try:
        con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as e:
        raise ReportInputError(f"{db}: cannot open the MLflow store ({e})") from None
    try:
        have = {
            t: {c[1] for c in con.execute(f"PRAGMA table_info({t})")} for t in ("runs", "tags", "latest_metrics", "experiments")
        }
        need = {
            "runs": {"run_uuid", "start_time", "lifecycle_stage", "experiment_id"},
            "tags": {"key", "value", "run_uuid"},
            "latest_metrics": {"key", "value", "is_nan", "run_uuid"},
            "experiments": {"experiment_id", "name", "lifecycle_stage"},
        }
        if any(not need[t] <= have[t] for t in need):
            raise _SchemaMismatch()
        exp_name = experiment or sweep
        row = con.execute(
            "SELECT experiment_id FROM experiments WHERE name = ? AND lifecycle_stage = 'active'", (exp_name,)
        ).fetchone()
        if row is not None:
            exp_ids, where = [row[0]], f"experiment {exp_name!r}"
        elif experiment is not None:
            raise ReportInputError(f"no MLflow experiment {experiment!r} at sqlite:///{db}")
        else:
            exp_ids = [r[0] for r in con.execute("SELECT experiment_id FROM experiments WHERE lifecycle_stage = 'active'")]
            where = "any experiment"
        marks = ",".join("?" * len(exp_ids))
        con.execute("CREATE TEMP TABLE sel (run_uuid TEXT PRIMARY KEY, start_time INTEGER)")
        con.execute(
            f"""INSERT INTO sel SELECT r.run_uuid, r.start_time FROM runs r
                JOIN tags s ON s.run_uuid = r.run_uuid AND s.key = 'famix.sweep' AND s.value = ?
                JOIN tags o ON o.run_uuid = r.run_uuid AND o.key = 'famix.role' AND o.value = 'trial'
                WHERE r.lifecycle_stage = 'active' AND r.experiment_id IN ({marks})""",
            (sweep, *exp_ids),
        )
        records: dict[str, dict[str, Any]] = {
            rid: {"run_id": rid, "start_time": st or 0, "tags": {}, "metrics": {}}
            for rid, st in con.execute("SELECT run_uuid, start_time FROM sel")
        }
        keys = ",".join("?" * len(_TAGS_READ))
        for rid, key, value in con.execute(
            "SELECT t.run_uuid, t.key, t.value FROM tags t JOIN sel USING (run_uuid) "
            f"WHERE t.key IN ({keys}) OR t.key LIKE 'famix.label.%'",
            _TAGS_READ,
        ):
            records[rid]["tags"][key] = value
        for rid, key, value, is_nan in con.execute(
            "SELECT m.run_uuid, m.key, m.value, m.is_nan FROM latest_metrics m JOIN sel USING (run_uuid) "
            "WHERE m.key LIKE 'miou/%'"
        ):
            records[rid]["metrics"][key] = math.nan if is_nan else float(value)
    except sqlite3.Error as e:
        if "no such table" in str(e) or "no such column" in str(e):
            raise _SchemaMismatch() from None
        raise ReportInputError(f"{db}: reading the MLflow store failed ({e})") from None
    finally:
        con.close()
    return list(records.values()), where


def _json_tag(tags: dict[str, str], key: str, run_id: str, default: Any) -> Any:
    text = tags.get(key)
    if text is None:
        return default
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise ReportInputError(f"MLflow run {run_id}: tag {key} is not JSON: {text[:60]!r}") from None


def _records_to_resultset(sweep: str, uri: str, runs: list[dict[str, Any]]) -> ResultSet:
    """Turn run records (run_id, start_time, tags, miou metrics) into the ResultSet frame (latest run per trial)."""
    records: dict[str, dict[str, Any]] = {}
    label_cols: list[str] = []
    domains_by_index: dict[int, list[str]] = {}
    metric_domains: list[str] = []
    known_domain: dict[str, str] = {}
    parsed_domains: dict[str, list[str]] = {}
    for run in sorted(runs, key=lambda r: r["start_time"]):
        tags = run["tags"]
        rid = run["run_id"]
        labels = _json_tag(tags, "famix.labels", rid, None)
        if labels is None:
            labels = {k[len("famix.label.") :]: v for k, v in tags.items() if k.startswith("famix.label.")}
        if not isinstance(labels, dict):
            raise ReportInputError(f"MLflow run {rid}: tag famix.labels must be a JSON object, got {type(labels).__name__}")
        for c in labels:
            if c not in label_cols:
                label_cols.append(c)
        try:
            index = int(tags.get("famix.trial_index", len(records)))
        except ValueError:
            raise ReportInputError(f"MLflow run {rid}: tag famix.trial_index is not an integer") from None
        doms_text = tags.get("famix.domains")
        if doms_text is not None and index not in domains_by_index:
            if doms_text not in parsed_domains:  # usually one distinct list for the whole sweep
                doms = _json_tag(tags, "famix.domains", rid, [])
                parsed_domains[doms_text] = [domain_column(d) or d for d in doms]
            domains_by_index[index] = parsed_domains[doms_text]
        seed = tags.get("famix.seed")
        rec: dict[str, Any] = {
            "trial": tags.get("famix.trial", rid),
            "trial_index": index,
            "seed": float(seed) if seed not in (None, "") else math.nan,
            "status": tags.get("famix.status", "unknown"),
            "run_id": rid,
            "train_key": tags.get("famix.stage.train"),
        }
        rec.update({c: str(v) for c, v in labels.items()})
        for key, value in run["metrics"].items():
            if key.startswith("miou/") and key != "miou/mean":
                name = key[5:]
                col = known_domain.get(name)
                if col is None:
                    col = known_domain[name] = domain_column(name) or name
                rec[col] = float(value)
                if col not in metric_domains:
                    metric_domains.append(col)
        records[rec["trial"]] = rec  # later runs replace earlier ones of the same trial
    domains: list[str] = []
    for _, doms in sorted(domains_by_index.items()):
        domains += [d for d in doms if d not in domains]
    if not domains:
        domains = _order_domains(metric_domains)
    frame = pd.DataFrame(list(records.values()))
    for c in [*label_cols, *domains]:
        if c not in frame:
            frame[c] = math.nan
    frame[domains] = frame[domains].astype(float)
    for c in label_cols:
        frame[c] = frame[c].where(frame[c].notna(), "?").astype(str)
    frame = frame.sort_values(["trial_index", "seed"], kind="stable").reset_index(drop=True)
    return ResultSet(
        sweep=sweep,
        source=f"mlflow {uri}",
        label_columns=label_cols,
        domains=domains,
        runs=frame[[*RESERVED_COLUMNS, *label_cols, *domains]],
        tracking_uri=uri,
    )
