"""A sweep's trial runs read from MLflow into a :class:`~reports.collect.resultset.ResultSet`.

Row order, labels and domains come from the tags the orchestrator recorded (:mod:`reports.schema`):
``famix.trial_index`` (grid order), ``famix.labels`` (label columns in the sweep's order),
``famix.domains``. MLflow is imported inside the functions.
"""

from __future__ import annotations

import json
import math
import shlex
from collections import Counter
from typing import Any, Sequence

import pandas as pd

from famix_core.text import count
from reports.collect.resultset import ReportInputError, ResultSet, domain_column, order_domains
from reports.collect.sqlite import SchemaMismatch, not_run_here, read_trial_runs
from reports.collect.store import sqlite_path
from reports.schema import (
    COL_RUN_ID,
    COL_SEED,
    COL_STATUS,
    COL_TRAIN_KEY,
    COL_TRIAL,
    COL_TRIAL_INDEX,
    METRIC_MIOU_MEAN,
    METRIC_MIOU_PREFIX,
    RESERVED_COLUMNS,
    ROLE_SUPERSEDED,
    ROLE_SWEEP,
    ROLE_TRIAL,
    TAG_DOMAINS,
    TAG_GIT_COMMIT,
    TAG_LABEL_PREFIX,
    TAG_LABELS,
    TAG_OVERRIDES,
    TAG_PROFILE,
    TAG_ROLE,
    TAG_SEED,
    TAG_STAGE_TRAIN,
    TAG_STATUS,
    TAG_SWEEP,
    TAG_TRIAL,
    TAG_TRIAL_INDEX,
)

__all__ = ["collect_mlflow"]


def collect_mlflow(
    sweep: str,
    *,
    tracking_uri: str,
    experiment: str | None = None,
    reader: str = "auto",
    profile: str | None = None,
    make_it: str | None = None,
    trials: Sequence[str] | None = None,
) -> ResultSet:
    """Read every trial run of a sweep from MLflow in one query into a :class:`ResultSet`.

    Trial runs carry tags ``famix.sweep=<sweep>`` and ``famix.role=trial`` (docs/ARCHITECTURE.md,
    "MLflow schema"); ``miou/<column>`` metrics are percent. When a trial id appears in several
    runs (a sweep run twice), the latest run counts.

    Which runs: with ``trials`` (the ids of the plan a command's arguments make), the runs of those
    trials, also where a later run with other overrides superseded them (``famix.role=superseded``:
    a report of ``train.iterations=40`` after a run of ``=41`` shows the 40-iteration numbers); where
    none of them has a run, and without ``trials``, the trial runs of the sweep's last run.

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
        make_it: what to do about a missing SQLite store, for its message (default: run
            ``famix sweep run <sweep>`` or pass another store; ``famix report`` says it for its own arguments).
        trials: the trial ids to report (above); ``None``: the sweep's last run.

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
            f"no MLflow store at {db} ({make_it or f'run `famix sweep run {sweep}` first, or pass --run-dir, --tracking-uri or --csv'})"
        )
    if "'" in sweep:
        raise ReportInputError(f"sweep name {sweep!r}: quotes are not allowed")
    records = None
    if db is not None and reader in ("auto", "sqlite"):
        try:
            records, where = read_trial_runs(db, sweep, experiment)
        except SchemaMismatch:
            if reader == "sqlite":
                raise ReportInputError(f"{db}: not an MLflow store with runs/tags/latest_metrics tables") from None
    if records is None:
        records, where = _records_client(tracking_uri, sweep, experiment)
    records = _chosen_runs(records, trials)
    if not records:
        raise ReportInputError(
            f"no trial runs for sweep {sweep!r} in {where} at {tracking_uri} (tags {TAG_SWEEP}, {TAG_ROLE}={ROLE_TRIAL})"
        )
    if profile is not None:
        profiles = sorted({r["tags"].get(TAG_PROFILE, "?") for r in records})
        records = [r for r in records if r["tags"].get(TAG_PROFILE, profile) == profile]
        if not records:
            raise ReportInputError(
                f"no trial runs for sweep {sweep!r} with profile {profile!r} at {tracking_uri} "
                f"(profiles found: {', '.join(profiles)}; pass --profile)"
            )
    return _records_to_resultset(sweep, tracking_uri, records)


def _chosen_runs(records: list[dict[str, Any]], trials: Sequence[str] | None) -> list[dict[str, Any]]:
    """The runs of ``trials`` (either role) where any has one; otherwise the trial runs (the last run's)."""
    if trials is not None:
        wanted = set(trials)
        mine = [r for r in records if r["tags"].get(TAG_TRIAL) in wanted]
        if mine:
            return mine
    return [r for r in records if r["tags"].get(TAG_ROLE) == ROLE_TRIAL]


def _records_client(uri: str, sweep: str, experiment: str | None) -> tuple[list[dict[str, Any]], str]:
    """Trial runs through ``MlflowClient.search_runs`` (pages of 50,000; no round trip per run)."""
    from mlflow.entities import ViewType
    from mlflow.exceptions import MlflowException
    from reports.mlflow_client import mlflow_client

    exp_name = experiment or sweep
    try:
        client = mlflow_client(uri)  # a store MLflow refuses to open (a file store) fails here
        exp = client.get_experiment_by_name(exp_name)
        if exp is not None:
            exp_ids, where = [exp.experiment_id], f"experiment {exp_name!r}"
        elif experiment is not None:
            raise ReportInputError(f"no MLflow experiment {experiment!r} at {uri}{not_run_here(uri)}")
        else:
            exp_ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
            where = "any experiment"
        flt = f"tags.`{TAG_SWEEP}` = '{sweep}' AND tags.`{TAG_ROLE}` != '{ROLE_SWEEP}'"  # no IN for tags: trial and superseded
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
            "metrics": {k: v for k, v in r.data.metrics.items() if k.startswith(METRIC_MIOU_PREFIX)},
        }
        for r in runs
        if r.data.tags.get(TAG_ROLE) in (ROLE_TRIAL, ROLE_SUPERSEDED)
    ]
    return records, where


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
    made_with: dict[str, tuple[str, ...] | None] = {}  # trial -> the overrides of the run kept for it
    made_by: dict[str, tuple[str, ...]] = {}  # trial -> the code versions that computed it (empty: not recorded)
    for run in sorted(runs, key=lambda r: r["start_time"]):
        tags = run["tags"]
        rid = run["run_id"]
        labels = _json_tag(tags, TAG_LABELS, rid, None)
        if labels is None:
            labels = {k[len(TAG_LABEL_PREFIX) :]: v for k, v in tags.items() if k.startswith(TAG_LABEL_PREFIX)}
        if not isinstance(labels, dict):
            raise ReportInputError(f"MLflow run {rid}: tag {TAG_LABELS} must be a JSON object, got {type(labels).__name__}")
        for c in labels:
            if c not in label_cols:
                label_cols.append(c)
        try:
            index = int(tags.get(TAG_TRIAL_INDEX, len(records)))
        except ValueError:
            raise ReportInputError(f"MLflow run {rid}: tag {TAG_TRIAL_INDEX} is not an integer") from None
        doms_text = tags.get(TAG_DOMAINS)
        if doms_text is not None and index not in domains_by_index:
            if doms_text not in parsed_domains:  # usually one distinct list for the whole sweep
                doms = _json_tag(tags, TAG_DOMAINS, rid, [])
                parsed_domains[doms_text] = [domain_column(d) or d for d in doms]
            domains_by_index[index] = parsed_domains[doms_text]
        seed = tags.get(TAG_SEED)
        rec: dict[str, Any] = {
            COL_TRIAL: tags.get(TAG_TRIAL, rid),
            COL_TRIAL_INDEX: index,
            COL_SEED: float(seed) if seed not in (None, "") else math.nan,
            COL_STATUS: tags.get(TAG_STATUS, "unknown"),
            COL_RUN_ID: rid,
            COL_TRAIN_KEY: tags.get(TAG_STAGE_TRAIN),
        }
        rec.update({c: str(v) for c, v in labels.items()})
        for key, value in run["metrics"].items():
            if key.startswith(METRIC_MIOU_PREFIX) and key != METRIC_MIOU_MEAN:
                name = key[len(METRIC_MIOU_PREFIX) :]
                col = known_domain.get(name)
                if col is None:
                    col = known_domain[name] = domain_column(name) or name
                rec[col] = float(value)
                if col not in metric_domains:
                    metric_domains.append(col)
        records[rec[COL_TRIAL]] = rec  # later runs replace earlier ones of the same trial
        words = _json_tag(tags, TAG_OVERRIDES, rid, None)
        made_with[rec[COL_TRIAL]] = tuple(str(w) for w in words) if isinstance(words, list) else None
        made_by[rec[COL_TRIAL]] = tuple(tags.get(TAG_GIT_COMMIT, "").split())
    domains: list[str] = []
    for _, doms in sorted(domains_by_index.items()):
        domains += [d for d in doms if d not in domains]
    if not domains:
        domains = order_domains(metric_domains)
    frame = pd.DataFrame(list(records.values()))
    for c in [*label_cols, *domains]:
        if c not in frame:
            frame[c] = math.nan
    frame[domains] = frame[domains].astype(float)
    for c in label_cols:
        frame[c] = frame[c].where(frame[c].notna(), "?").astype(str)
    frame = frame.sort_values([COL_TRIAL_INDEX, COL_SEED], kind="stable").reset_index(drop=True)
    made = [n for n in [overrides_note(list(made_with.values())), code_note(list(made_by.values()))] if n]
    return ResultSet(
        sweep=sweep,
        source=f"mlflow {uri}",
        label_columns=label_cols,
        domains=domains,
        runs=frame[[*RESERVED_COLUMNS, *label_cols, *domains]],
        tracking_uri=uri,
        notes=list(made),
        provenance=list(made),
    )


def overrides_note(made_with: list[tuple[str, ...] | None]) -> str | None:
    """Name the command-line overrides (``famix.overrides``) that made the reported trials, or None.

    ``made_with`` holds one entry per trial: its override words, ``()`` for none, ``None`` where the
    run predates the tag. No note when no trial had overrides: the table is the sweep file's own.
    """
    counts = Counter(w for w in made_with if w is not None)
    if not any(counts):
        return None
    if len(counts) == 1 and None not in made_with:
        return f"made with the command-line overrides `{shlex.join(next(iter(counts)))}` (the sweep file's settings with these changes)"
    parts = [f"`{shlex.join(w)}` ({count(n, 'trial')})" if w else f"none ({count(n, 'trial')})" for w, n in counts.most_common()]
    unknown = sum(w is None for w in made_with)
    if unknown:
        parts.append(f"not recorded ({count(unknown, 'trial')})")
    return "the trials come from runs with different command-line overrides: " + ", ".join(parts)


def code_note(made_by: list[tuple[str, ...]]) -> str | None:
    """Say when the reported trials were not all computed by one committed code version, or None.

    ``made_by`` holds one entry per trial: the code versions (``famix.git_commit``: a commit, with
    ``-dirty`` for uncommitted changes, or ``unknown``) that computed its stages, ``()`` where none
    is recorded. A trial counts once under each version that computed one of its stages.
    """
    counts = Counter(v for versions in made_by for v in set(versions))
    if not counts or (len(counts) == 1 and not next(iter(counts)).endswith("-dirty")):
        return None

    def short(v: str) -> str:
        commit, dirty, _ = v.partition("-dirty")
        return f"`{commit[:12]}{dirty}`" if commit != "unknown" else "outside a git checkout"

    unknown = sum(not versions for versions in made_by)
    if len(counts) == 1:
        (v,) = counts
        return (f"computed by code with uncommitted changes ({short(v)}): that commit alone does not "
                "reproduce these numbers") + (f"; {count(unknown, 'trial')} not recorded" if unknown else "")
    parts = [f"{short(v)} ({count(n, 'trial')})" for v, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    if unknown:
        parts.append(f"not recorded ({count(unknown, 'trial')})")
    return f"the trials were computed by {len(counts)} code versions: " + ", ".join(parts)
