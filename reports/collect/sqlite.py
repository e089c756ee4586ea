"""Trial runs read directly from an embedded MLflow SQLite store: read-only, tags and latest metrics, no params.

MLflow's ORM materializes every param of every run (about 50 per trial), which takes a minute for
10,000 runs; three SQL queries over MLflow's ``runs``/``tags``/``latest_metrics`` tables take a
fraction of a second. :func:`reports.collect.mlflow.collect_mlflow` falls back to MLflow's client
when the tables do not look as expected (:class:`SchemaMismatch`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from reports.collect.resultset import ReportInputError
from reports.collect.store import DAMAGED_STORE_FIX, sqlite_path, sqlite_uri
from reports.schema import METRIC_MIOU_PREFIX, ROLE_SUPERSEDED, ROLE_TRIAL, TAG_LABEL_PREFIX, TAG_ROLE, TAG_SWEEP, TRIAL_TAGS_READ

__all__ = ["SchemaMismatch", "read_trial_runs", "not_run_here"]


def not_run_here(uri: str) -> str:
    """What a missing experiment's message adds: where else to look (``--run-dir`` places an embedded
    SQLite store only, not a server's nor a database's)."""
    server = sqlite_path(uri) is None
    options = "--experiment and --tracking-uri" if server else "--experiment, --tracking-uri and --run-dir"
    return f" (no sweep has run with that experiment in this store: check {options})"


class SchemaMismatch(Exception):
    """The SQLite file lacks the MLflow tables/columns the direct reader needs."""


def read_trial_runs(db: Path, sweep: str, experiment: str | None) -> tuple[list[dict[str, Any]], str]:
    """Trial runs, the superseded ones too (``famix.role`` tells them apart), read directly from an
    embedded MLflow SQLite store (read-only; tags and latest metrics)."""
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
            raise SchemaMismatch()
        exp_name = experiment or sweep
        row = con.execute(
            "SELECT experiment_id FROM experiments WHERE name = ? AND lifecycle_stage = 'active'", (exp_name,)
        ).fetchone()
        if row is not None:
            exp_ids, where = [row[0]], f"experiment {exp_name!r}"
        elif experiment is not None:
            raise ReportInputError(f"no MLflow experiment {experiment!r} at sqlite:///{db}{not_run_here(sqlite_uri(db))}")
        else:
            exp_ids = [r[0] for r in con.execute("SELECT experiment_id FROM experiments WHERE lifecycle_stage = 'active'")]
            where = "any experiment"
        marks = ",".join("?" * len(exp_ids))
        con.execute("CREATE TEMP TABLE sel (run_uuid TEXT PRIMARY KEY, start_time INTEGER)")
        con.execute(
            f"""INSERT INTO sel SELECT r.run_uuid, r.start_time FROM runs r
                JOIN tags s ON s.run_uuid = r.run_uuid AND s.key = ? AND s.value = ?
                JOIN tags o ON o.run_uuid = r.run_uuid AND o.key = ? AND o.value IN (?, ?)
                WHERE r.lifecycle_stage = 'active' AND r.experiment_id IN ({marks})""",
            (TAG_SWEEP, sweep, TAG_ROLE, ROLE_TRIAL, ROLE_SUPERSEDED, *exp_ids),
        )
        records: dict[str, dict[str, Any]] = {
            rid: {"run_id": rid, "start_time": st or 0, "tags": {}, "metrics": {}}
            for rid, st in con.execute("SELECT run_uuid, start_time FROM sel")
        }
        keys = ",".join("?" * len(TRIAL_TAGS_READ))
        for rid, key, value in con.execute(
            "SELECT t.run_uuid, t.key, t.value FROM tags t JOIN sel USING (run_uuid) "
            f"WHERE t.key IN ({keys}) OR t.key LIKE ?",
            (*TRIAL_TAGS_READ, TAG_LABEL_PREFIX + "%"),
        ):
            records[rid]["tags"][key] = value
        for rid, key, value, is_nan in con.execute(
            "SELECT m.run_uuid, m.key, m.value, m.is_nan FROM latest_metrics m JOIN sel USING (run_uuid) "
            "WHERE m.key LIKE ?",
            (METRIC_MIOU_PREFIX + "%",),
        ):
            records[rid]["metrics"][key] = math.nan if is_nan else float(value)
    except sqlite3.Error as e:
        if "no such table" in str(e) or "no such column" in str(e):
            raise SchemaMismatch() from None
        if isinstance(e, sqlite3.DatabaseError) and not isinstance(e, sqlite3.OperationalError):  # SQLITE_CORRUPT, NOTADB
            raise ReportInputError(f"{db}: the MLflow database is damaged ({e}); {DAMAGED_STORE_FIX} (or give --csv its results.csv)") from None
        raise ReportInputError(f"{db}: reading the MLflow store failed ({e})") from None
    finally:
        con.close()
    return list(records.values()), where
