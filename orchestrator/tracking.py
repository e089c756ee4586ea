"""MLflow tracking: one parent run per sweep, one nested run per trial, found again by tags on a rerun.

Tag and metric names come from :mod:`reports.schema` (written here, read by the reports).

Default store: ``sqlite:///<run_dir>/mlflow.db`` with artifacts in ``<run_dir>/mlartifacts``
(set per experiment; nothing to start). A ``tracking.uri`` like ``http://127.0.0.1:5000`` uses
a server. The driver creates/looks up runs before dispatch; workers log with an
:class:`MlflowClient` and explicit run ids (no global active run), retrying on SQLite's
"database is locked". Schema: docs/ARCHITECTURE.md "MLflow schema".
"""

from __future__ import annotations

import json
import math
import os
import random
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, TypeVar

if TYPE_CHECKING:
    from orchestrator.plan import Plan
    from orchestrator.sweep import ResolvedSweep, Trial

from famix_core.errors import FamixWarning
from orchestrator.stages import HISTORY_FILE
from orchestrator.store import code_version
from reports import schema

__all__ = [
    "default_uri",
    "with_retry",
    "trial_code",
    "Tracker",
    "RunLogger",
    "metrics_from_eval",
    "system_metrics",
    "PARAM_MAX",
    "check_tracking",
    "tracking_target",
    "open_tracker",
    "FINALIZED_MARKER",
    "embedded_store_exists",
    "finished_in_store",
    "damaged_store",
    "set_aside_damaged_store",
    "ensure_runs",
    "plan_trial_runs",
    "finalize_runs",
    "end_interrupted_runs",
    "sweep_run",
    "running_runs",
    "kill_runs",
    "record_finished",
    "record_stage_done",
    "ingest",
    "Ingested",
    "INGESTED_FILES",
    "read_history",
]

PARAM_MAX = 6000  # MLflow's limit on a param value
T = TypeVar("T")


def default_uri(run_dir: str | Path) -> str:
    """``sqlite:///<run_dir>/mlflow.db``, percent-encoded (a ``?`` or ``#`` in the path must not cut the URI)."""
    from reports.collect import default_tracking_uri

    return default_tracking_uri(run_dir)


def _transient(e: Exception) -> bool:
    text = str(e).lower()
    return any(s in text for s in ("database is locked", "database table is locked", "busy", "connection refused", "temporarily unavailable"))


def with_retry(fn: Callable[..., T], *args: Any, attempts: int = 12, **kwargs: Any) -> T:
    """Call ``fn``; on a transient error (SQLite lock, server hiccup) back off and retry."""
    delay = 0.05
    for i in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 — MLflow wraps sqlite errors in several types
            if i == attempts - 1 or not _transient(e):
                raise
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable")


def _client(uri: str):
    from reports.mlflow_client import mlflow_client

    raw = uri[len("sqlite:///") :] if uri.startswith("sqlite:///") else ""
    # MLflow makes the database's folder from the URI as written (undecoded: ".../a%3Fb/"), beside
    # the real one: open the store at once and remove that empty stray folder again.
    stray = Path(raw).parent if "%" in raw else None
    existed = stray is None or stray.exists()
    client = mlflow_client(uri)
    if not existed:
        with_retry(client.search_experiments, max_results=1)
        try:
            stray.rmdir()  # type: ignore[union-attr]
        except OSError:
            pass  # not empty or already gone: not ours to remove
    return client


def _q(v: str) -> str:
    return "'" + str(v).replace("'", "\\'") + "'"


FIND_PAGE = 1000
"""Runs per page of :meth:`Tracker.find` (MLflow's own limit on one search is 50 000; its default 1 000)."""


class Tracker:
    """Driver-side MLflow access: experiment, parent and trial runs (created once, then found by tags).

    Args:
        uri: tracking URI.
        experiment: experiment name.
        artifact_location: where a new experiment keeps artifacts (for the embedded SQLite store).
    """

    def __init__(self, uri: str, experiment: str, artifact_location: str | None = None):
        self.uri = uri
        self.client = _client(uri)
        exp = with_retry(self.client.get_experiment_by_name, experiment)
        if exp is None:
            try:
                self.experiment_id = with_retry(self.client.create_experiment, experiment, artifact_location=artifact_location)
            except Exception:  # noqa: BLE001 — created concurrently by another driver
                exp = with_retry(self.client.get_experiment_by_name, experiment)
                if exp is None:
                    raise
                self.experiment_id = exp.experiment_id
        else:
            self.experiment_id = exp.experiment_id

    def find(self, tags: dict[str, str]) -> list[Any]:
        """Runs of the experiment whose tags equal ``tags`` (oldest first), page after page
        (:data:`FIND_PAGE` runs at a time: a sweep, with its superseded trials, may hold more)."""
        flt = " and ".join(f"tags.`{k}` = {_q(v)}" for k, v in tags.items())
        runs: list[Any] = []
        token = None
        while True:
            page = with_retry(self.client.search_runs, [self.experiment_id], filter_string=flt, max_results=FIND_PAGE, page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                break
        return sorted(runs, key=lambda r: r.info.start_time or 0)

    def ensure_run(self, find_tags: dict[str, str], tags: dict[str, str], name: str, params: dict[str, Any] | None = None) -> tuple[str, bool]:
        """The run with ``find_tags``, created (with ``tags`` and ``params``) when missing.

        Returns:
            (run id, created)
        """
        found = self.find(find_tags)
        if found:
            run_id = found[0].info.run_id
            self.set_tags(run_id, tags)
            return run_id, False
        from mlflow.entities import Param

        run = with_retry(self.client.create_run, self.experiment_id, tags={**find_tags, **tags}, run_name=name)
        run_id = run.info.run_id
        if params:
            items = [Param(k, str(v)[:PARAM_MAX]) for k, v in params.items()]
            for i in range(0, len(items), 100):  # MLflow accepts at most 100 params per batch
                with_retry(self.client.log_batch, run_id, params=items[i : i + 100])
        return run_id, True

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items()]
        for i in range(0, len(items), 100):
            with_retry(self.client.log_batch, run_id, tags=items[i : i + 100])

    def metrics(self, run_id: str) -> dict[str, float]:
        return dict(with_retry(self.client.get_run, run_id).data.metrics)

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [Metric(k, float(v), ts, step) for k, v in metrics.items()]
        for i in range(0, len(items), 500):
            with_retry(self.client.log_batch, run_id, metrics=items[i : i + 500])

    def log_history(self, run_id: str, rows: list[tuple[int, int, dict[str, float]]]) -> None:
        """Log recorded ``(step, ts, metrics)`` rows with their own timestamps, in batches."""
        from mlflow.entities import Metric

        items = [Metric(k, float(v), ts, step) for step, ts, metrics in rows for k, v in metrics.items()]
        for i in range(0, len(items), 1000):
            with_retry(self.client.log_batch, run_id, metrics=items[i : i + 1000])

    def logged_steps(self, run_id: str, key: str) -> set[int]:
        """The steps at which the run has metric ``key``."""
        return {m.step for m in with_retry(self.client.get_metric_history, run_id, key)}

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        with_retry(self.client.log_text, run_id, text, artifact_file)

    def has_artifacts(self, run_id: str, path: str) -> bool:
        """Whether the run has artifacts under ``path`` (see :meth:`artifact_names`)."""
        return bool(self.artifact_names(run_id, path))

    def artifact_names(self, run_id: str, path: str) -> set[str]:
        """File names under the run's artifact folder ``path``; a store that says the path does not exist
        means none (any other error, e.g. an unreachable server, is raised)."""
        from mlflow.exceptions import MlflowException

        try:
            return {Path(f.path).name for f in with_retry(self.client.list_artifacts, run_id, path)}
        except MlflowException as e:
            if e.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            return set()

    def finish(self, run_id: str, ok: bool) -> None:
        with_retry(self.client.set_terminated, run_id, "FINISHED" if ok else "FAILED")


class RunLogger:
    """Worker-side logging into the trial runs of one stage (``task.tracking``: ``{"uri", "run_ids"}``).

    With ``background=True`` (how stages log) :meth:`log_metrics` only queues: a thread sends the
    batches in order, so a tracking server that is down never stalls a training. When a batch cannot
    be sent, ``notify`` gets one line saying tracking is unreachable, the batch is kept and retried,
    and another line when tracking is back; :meth:`flush` (at the end of the stage) waits for the
    queue and returns what could not be sent in time (the stage log keeps it). Nothing is dropped.
    """

    def __init__(self, tracking: dict[str, Any], background: bool = False, notify: Callable[[str], None] | None = None):
        self.uri = tracking.get("uri")
        self.run_ids: list[str] = list(tracking.get("run_ids") or [])
        self._client = None
        self._background = background
        self._notify = notify or (lambda line: None)
        self._queue: Any = None
        self._thread: Any = None
        self._give_up_at: float | None = None  # set by flush(): past it, unsendable batches are returned
        self.unsent: list[tuple[dict[str, float], int | None, list[str]]] = []
        self._skip_key: str | None = None  # a resumed stage: read this metric's last step before sending
        self._skip_through: int | None = None  # batches at steps up to this one are in MLflow already
        self._pairs_unless: tuple[str, str] | None = None  # once_per_step(): (tag, key) that keeps a run's pairs
        # once_per_step(): run id -> metric -> the steps that run has (None: not read yet); a run left out: not read yet
        self._logged: dict[str, dict[str, set[int] | None] | None] | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.uri and self.run_ids)

    @property
    def client(self):
        if self._client is None:
            self._client = _client(self.uri)
        return self._client

    def skip_logged_steps(self, key: str) -> None:
        """A resumed stage: batches at steps that metric ``key`` already has in MLflow are not sent twice.

        In background mode the sender reads that history once tracking answers, before its first
        batch, so a tracking server that is down does not hold the stage at its start; otherwise it
        is read now.
        """
        if not self.enabled:
            return
        if self._background:
            self._skip_key = key
            self._start_sender()
        else:
            self._skip_through = self.last_step(key)

    def once_per_step(self, tag: str, key: str) -> None:
        """Send no ``(metric, step)`` that a run already has: a stage run again (its artifact rebuilt
        by ``--rerun-failed``, or deleted) logged its whole curve and its results into the trial run a
        second time, as its first run's stage had left no checkpoint or history to resume from.

        What a run has is read lazily by whoever sends (the sender thread, in background mode), once per
        run: its metric names when it first gets a batch (one ``get_run``; a new run has none of the
        stage's, so a stage's first run reads nothing else), and a metric's steps the first time a batch
        holds one the run already has. The first value at a step stays, as for a resumed training.
        A run whose tag ``tag`` names another stage key than ``key`` (``famix.history.train`` of an
        earlier training, e.g. before a format change gave the trial new keys) holds another
        computation's metrics: the stage logs beside them, as a first run does.
        """
        if self.enabled:
            self._pairs_unless = (tag, key)
            self._logged = {}

    def log_metrics(self, metrics: dict[str, float], step: int | None = None, ts: int | None = None) -> None:
        """Log (or queue) one batch at ``step``; ``ts``: its timestamp in ms (default: now)."""
        if not self.enabled or not metrics:
            return
        ts = int(time.time() * 1000) if ts is None else int(ts)
        if not self._background:
            if step is not None and self._skip_through is not None and step <= self._skip_through:
                return
            self._send(metrics, step, ts, list(self.run_ids), retry=True)
            return
        self._start_sender()
        self._queue.put((dict(metrics), step, ts, list(self.run_ids)))

    def _start_sender(self) -> None:
        if self._thread is None:
            import queue
            import threading

            # Finish MLflow's imports here, in the caller's thread: a module that two threads import at
            # once can be seen half-initialized by one of them ("cannot import name 'Run' from partially
            # initialized module 'mlflow.entities'"), which would fail every batch of the sender.
            import mlflow.entities  # noqa: F401
            import mlflow.tracking  # noqa: F401

            import reports.mlflow_client  # noqa: F401

            self._queue = queue.Queue()
            self._thread = threading.Thread(target=self._drain, name="famix-mlflow-sender", daemon=True)
            self._thread.start()

    def _send(self, metrics: dict[str, float], step: int | None, ts: int, run_ids: list[str], retry: bool) -> None:
        """Log one batch to each run still in ``run_ids`` (removed from it once sent: no run gets it twice),
        without the metrics that run has at that step already (:meth:`once_per_step`)."""
        from mlflow.entities import Metric

        step = int(step or 0)
        call = with_retry if retry else (lambda fn, *a, **k: fn(*a, **k))  # the sender retries a failed batch itself
        while run_ids:
            logged = self._logged_steps(run_ids[0], list(metrics), call)
            items = [Metric(k, float(v), ts, step) for k, v in metrics.items() if step not in (logged.get(k) or ())]
            for i in range(0, len(items), 500):
                call(self.client.log_batch, run_ids[0], metrics=items[i : i + 500])
            for m in items:  # logged again later in this stage (a batch re-queued after a hiccup): not twice either
                logged.setdefault(m.key, set()).add(step)  # type: ignore[union-attr]
            run_ids.pop(0)

    def _logged_steps(self, run_id: str, keys: list[str], call: Callable[..., Any]) -> dict[str, set[int] | None]:
        """The steps at which run ``run_id`` has each of ``keys`` (:meth:`once_per_step`; an empty
        dict, never kept, when that is off or the run holds another computation's metrics)."""
        if self._logged is None:
            return {}
        if run_id not in self._logged:
            run = call(self.client.get_run, run_id)
            tag, key = self._pairs_unless or ("", "")
            other = run.data.tags.get(tag) not in (None, key)
            self._logged[run_id] = None if other else {k: None for k in run.data.metrics}
        have = self._logged[run_id]
        if have is None:
            return {}
        for k in keys:
            if k in have and have[k] is None:
                have[k] = {m.step for m in call(self.client.get_metric_history, run_id, k)}
        return have

    def _reachable(self) -> bool:
        """A quick look at an HTTP server's ``/health`` (MLflow's own client retries for about a minute)."""
        from reports.collect.store import http_health

        return not str(self.uri).startswith(("http://", "https://")) or http_health(str(self.uri))

    def _drain(self) -> None:
        down_since: float | None = None
        while True:
            item = self._queue.get()
            try:
                while True:
                    error = None
                    if self._reachable():
                        try:
                            if self._skip_key is not None:  # once, before the first batch of a resumed stage
                                history = self.client.get_metric_history(self.run_ids[0], self._skip_key)
                                self._skip_through = max((m.step for m in history), default=None)
                                self._skip_key = None
                            step = item[1]
                            if step is None or self._skip_through is None or step > self._skip_through:
                                self._send(*item, retry=False)
                        except Exception as e:  # noqa: BLE001 — any failure: keep the batch, retry
                            error = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
                    else:
                        error = "no answer from its /health"
                    if error is None:
                        if down_since is not None:
                            self._notify(f"MLflow tracking at {self.uri} is reachable again after {time.monotonic() - down_since:.0f} s; queued metrics sent")
                            down_since = None
                        break
                    if down_since is None:
                        down_since = time.monotonic()
                        self._notify(f"MLflow tracking at {self.uri} unreachable ({error}); the stage goes on, metrics are queued and sent when it is back")
                    if self._give_up_at is not None and time.monotonic() > self._give_up_at:
                        self.unsent.append((item[0], item[1], item[3]))
                        break
                    time.sleep(1.0)
            finally:
                self._queue.task_done()

    def flush(self, timeout_s: float = 300.0) -> list[tuple[dict[str, float], int | None, list[str]]]:
        """Wait until every queued batch is sent (at most ``timeout_s``); returns those that were not."""
        if self._queue is None:
            return []
        self._give_up_at = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks:
            time.sleep(0.05)
        self._give_up_at = None
        out, self.unsent = self.unsent, []
        return out

    def last_step(self, key: str) -> int | None:
        """The highest step of metric ``key`` already logged to this stage's first run (None when none)."""
        if not self.enabled:
            return None
        history = with_retry(self.client.get_metric_history, self.run_ids[0], key)
        return max((m.step for m in history), default=None)

    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        if not self.enabled:
            return
        for run_id in self.run_ids:
            with_retry(self.client.log_artifact, run_id, str(local_path), artifact_path)


def metrics_from_eval(column: str, result: dict[str, Any]) -> dict[str, float]:
    """Engine evaluation result (fractions) -> MLflow metrics in percent (``miou/<col>``, ``iou/<col>/<class>``, …)."""
    out = {schema.miou_metric(column): 100.0 * float(result["miou"])}
    for cls, v in (result.get("iou") or {}).items():
        if v is not None:
            out[schema.iou_metric(column, cls)] = 100.0 * float(v)
    if result.get("pixel_acc") is not None:
        out[schema.pixel_acc_metric(column)] = 100.0 * float(result["pixel_acc"])
    return out


def labels_tags(labels: dict[str, str]) -> dict[str, str]:
    """``famix.labels`` (JSON) and one ``famix.label.<column>`` tag per label."""
    tags = {schema.TAG_LABELS: json.dumps(labels, ensure_ascii=False)}
    tags.update({schema.label_tag(k): v for k, v in labels.items()})
    return tags


@contextmanager
def system_metrics(tracking: dict[str, Any], note: Callable[[str], None]) -> Iterator[int]:
    """MLflow's built-in system metrics (``system/cpu_utilization_percentage``, memory, disk, network;
    ``system/gpu_*`` when ``nvidia-ml-py`` finds a GPU) in a stage's trial runs while the block runs.

    Args:
        tracking: the stage's ``task.tracking``; ``system_metrics`` holds the sampling interval in
            seconds, or None / absent for off (the sweep's ``tracking.system_metrics``).
        note: where a one-line note goes when the optional ``psutil`` is missing (the stage log).

    Yields:
        How many runs are monitored (0 when off or unavailable).
    """
    interval = tracking.get("system_metrics")
    uri, run_ids = tracking.get("uri"), list(tracking.get("run_ids") or [])
    if not interval or not uri or not run_ids:
        yield 0
        return
    try:
        import psutil  # noqa: F401 — what MLflow's CPU/memory monitors read
    except ImportError:
        note("note: system metrics off: psutil is not installed (pip install 'famix-sweeps[system-metrics]')")
        yield 0
        return
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    from reports.mlflow_client import quiet_mlflow_logs

    quiet_mlflow_logs()
    monitors = [
        SystemMetricsMonitor(rid, sampling_interval=float(interval), samples_before_logging=1, resume_logging=True, tracking_uri=uri)
        for rid in run_ids
    ]
    for m in monitors:
        m.start()
    try:
        yield len(monitors)
    finally:
        for m in monitors:
            m.finish()


# ----------------------------------------------------------------------------------------------- a sweep's runs
# The driver's bookkeeping: the sweep's parent run and one run per trial, found again by tags on a
# rerun; at the end, every metric the store has and MLflow lacks, and each run's status.


def check_tracking(rs: ResolvedSweep, run_dir: str | Path) -> None:
    """The sweep's ``tracking.uri``, checked before anything is written (``sweep plan`` and ``run``): an
    MLflow URI, and for a server one that answers its ``/health`` within 2 s (MLflow's own client
    retries for minutes), as ``famix report`` checks it (:func:`reports.collect.check_tracking_uri`).

    Raises:
        ReportInputError: one line naming the sweep file, the URI and what to do.
    """
    if rs.tracking.uri is None:
        return  # the run dir's SQLite store: nothing to reach
    from reports.collect import check_tracking_uri

    fix = f"start that MLflow server, or remove tracking.uri to use the run dir's SQLite store ({Path(run_dir).absolute() / 'mlflow.db'})"
    check_tracking_uri(rs.tracking.uri, f"{rs.source}: tracking.uri", fix=fix, write=True)


def tracking_target(plan: Plan) -> tuple[str, str]:
    """(tracking URI, experiment name) of a plan."""
    rs = plan.sweep
    return rs.tracking.uri or default_uri(plan.run_dir), rs.tracking.experiment or rs.name


FINALIZED_MARKER = "finalized.json"
"""In a sweep folder: the driver completed MLflow for that plan (its fingerprint, the sweep's run); a
rerun with nothing to do then skips MLflow as long as the embedded store holds that run, finished
(:func:`finished_in_store`)."""


def open_tracker(plan: Plan) -> Tracker:
    """The plan's :class:`Tracker` (its MLflow target; embedded artifacts under ``<run_dir>/mlartifacts``).

    An embedded store that is not there yet (a new run dir, or a lost or set-aside ``mlflow.db``) is
    created by this open; before that, every sweep folder of the run dir loses its
    :data:`FINALIZED_MARKER`: whatever those sweeps completed was in the old store, and the runs that
    ``sweep status`` or ``report`` rebuild in the new one lack what only a driver writes (the sweep's
    run: description, table, report), so each sweep's next ``sweep run`` finalizes it again.
    """
    from mlflow.exceptions import MlflowException

    from orchestrator.errors import SweepError
    from reports.collect import DamagedStoreError, sqlite_path

    uri, experiment = tracking_target(plan)
    artifacts = (plan.run_dir / "mlartifacts").absolute().as_uri() if plan.sweep.tracking.uri is None else None
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    db = sqlite_path(uri)
    if db is not None and not db.exists():  # voided first: a kill between the two must not leave a marker
        for marker in plan.run_dir.glob(f"*/{FINALIZED_MARKER}"):
            marker.unlink(missing_ok=True)
    if artifacts is not None and db is not None and db.is_file():
        moved_from = relocate_artifacts(db, artifacts)
        if moved_from:
            warnings.warn(f"MLflow: the run dir was moved (from {moved_from.removesuffix('/mlartifacts')}); "
                          f"its runs' artifacts are now looked for in {artifacts}", FamixWarning, stacklevel=2)  # fmt: skip
    try:
        return Tracker(uri, experiment, artifact_location=artifacts)
    except DamagedStoreError:
        raise
    except (OSError, ImportError, MlflowException) as e:  # checked at plan time; the machine may differ since
        raise SweepError(f"tracking.uri {uri}: MLflow cannot open it ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


ARTIFACT_COLUMNS = (("experiments", "artifact_location"), ("runs", "artifact_uri"), ("logged_models", "artifact_location"))
"""Where MLflow's SQL store keeps absolute artifact locations (its schema, MLflow 3)."""


def relocate_artifacts(db: Path, artifacts: str) -> str | None:
    """Point the embedded store ``db`` at its run dir's ``mlartifacts`` folder ``artifacts`` (a
    ``file://`` URI) after the run dir was moved or copied: MLflow keeps each experiment's and run's
    artifact location as an absolute path, so a moved run dir's ``status``, ``report`` or rerun wrote
    artifacts into the old path (making that folder again) and read none of the moved ones.

    Returns:
        The old location, where one was rewritten; None when the store already points here (or is not
        the orchestrator's: no ``…/mlartifacts`` location).
    """
    import sqlite3
    from urllib.parse import unquote, urlparse

    con = sqlite3.connect(db, timeout=30)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "experiments" not in tables:  # an empty or new file: MLflow makes its tables
            return None
        rows = con.execute("SELECT DISTINCT artifact_location FROM experiments WHERE artifact_location LIKE '%/mlartifacts'").fetchall()
        old = next((r[0] for r in rows if r[0] != artifacts), None)
        if old is None or _same_folder(unquote(urlparse(old).path), unquote(urlparse(artifacts).path)):
            return None  # the same folder by another name (a symlink): nothing moved
        with con:  # one transaction: all of it or none
            for table, column in ARTIFACT_COLUMNS:
                if table in tables:
                    con.execute(f"UPDATE {table} SET {column} = ? || substr({column}, ?) WHERE substr({column}, 1, ?) = ?",
                                (artifacts, len(old) + 1, len(old), old))  # fmt: skip
    except sqlite3.DatabaseError:  # damaged or locked: MLflow's own open says so
        return None
    finally:
        con.close()
    try:  # MLflow keeps each run's artifact store, by run id, for the life of the process (a Python caller)
        from mlflow.tracking._tracking_service import utils as tracking_utils

        tracking_utils._artifact_repos_cache.clear()
    except (ImportError, AttributeError):
        pass
    return old


def _same_folder(a: str, b: str) -> bool:
    """Whether the paths ``a`` and ``b`` name one existing folder."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def damaged_store(plan: Plan) -> tuple[Path, str] | None:
    """The plan's SQLite tracking database and why it is damaged (truncated, overwritten), or None."""
    from reports.collect import sqlite_damage, sqlite_path

    db = sqlite_path(tracking_target(plan)[0])
    why = sqlite_damage(db) if db is not None else None
    return (db, why) if db is not None and why else None


def set_aside_damaged_store(plan: Plan, why: str | None = None) -> str | None:
    """A damaged embedded store (``<run_dir>/mlflow.db``) is renamed ``mlflow.db.damaged-<time>`` (kept to
    inspect), so that the run rebuilds the sweep's runs from the artifact store; returns the line that says so.

    Args:
        why: the damage MLflow met opening the store (:class:`~reports.collect.store.DamagedStoreError`);
            by default SQLite's own check of the file decides (:func:`damaged_store`).

    Raises:
        SweepError: a damaged SQLite store that ``tracking.uri`` names: not the run dir's to move.
    """
    import os

    from orchestrator.errors import SweepError
    from reports.collect import sqlite_path
    from reports.mlflow_client import forget_store

    uri = tracking_target(plan)[0]
    found = sqlite_path(uri)
    damage = damaged_store(plan) if why is None or found is None else (found, why)
    if damage is None:
        return None
    db, why = damage
    if plan.sweep.tracking.uri is not None:
        raise SweepError(f"tracking.uri {plan.sweep.tracking.uri}: the MLflow database {db} is damaged ({why}); move it aside "
                         "and run again: its runs are rebuilt from the store")  # fmt: skip
    dest = db.with_name(f"{db.name}.damaged-{int(time.time())}")
    for suffix in ("-journal", "-wal", "-shm"):  # SQLite's companions go with it
        companion = db.with_name(db.name + suffix)
        if companion.exists():
            os.rename(companion, dest.with_name(dest.name + suffix))
    os.rename(db, dest)
    forget_store(uri)
    return (f"MLflow database {db} is damaged ({why}): set aside as {dest}; this sweep's runs are rebuilt from the store "
            "(another sweep of this run dir gets its own back with its `famix sweep status` or a rerun)")  # fmt: skip


def embedded_store_exists(uri: str) -> bool:
    """Whether ``uri`` is an embedded SQLite store whose file is there."""
    from reports.collect import sqlite_path

    db = sqlite_path(uri)
    return db is not None and db.is_file()


def finished_in_store(uri: str, run_id: Any) -> bool:
    """Whether the embedded SQLite store at ``uri`` holds the active run ``run_id``, ``FINISHED``: read
    with one SQL query (no MLflow import; under a millisecond). What :data:`FINALIZED_MARKER`'s fast
    path asks of the sweep's run it completed, so that a store that is not the one it completed (made
    anew by ``mlflow ui`` or a restored copy, the run deleted in the UI) is completed again. Any doubt
    (no file, other tables, a damaged file) answers False: the driver then completes it the slow way."""
    import sqlite3

    from reports.collect import sqlite_path

    db = sqlite_path(uri)
    if not isinstance(run_id, str) or db is None or not db.is_file():
        return False
    try:
        con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            row = con.execute("SELECT status FROM runs WHERE run_uuid = ? AND lifecycle_stage = 'active'", (run_id,)).fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return False
    return row is not None and row[0] == "FINISHED"


def _trial_tags(plan: Plan, trial: Trial, backend: str) -> dict[str, str]:
    ts = plan.trial_stages[trial.id]
    tags = {
        schema.TAG_TRIAL_INDEX: str(trial.index),
        schema.TAG_SEED: str(trial.seed),
        schema.TAG_STAGE_TRAIN: ts.train,
        schema.TAG_BACKEND: backend,
        schema.TAG_PROFILE: plan.sweep.profile,
        schema.TAG_OVERRIDES: json.dumps(plan.sweep.override_words()),  # the report names them
        schema.TAG_DOMAINS: json.dumps(list(ts.evaluate)),
        schema.TAG_RUN_DIR: str(Path(plan.run_dir).absolute()),  # where its stages' models and logs are
        **labels_tags(trial.labels),
    }
    if ts.mine:
        tags[schema.TAG_STAGE_MINE] = ts.mine
    tags.update({schema.evaluate_stage_tag(c): k for c, k in ts.evaluate.items()})
    return tags


def context_tags() -> dict[str, str]:
    """What MLflow's own columns User and Source show (a run made through the client leaves them empty
    or ``unknown``) and the driver's host, set when a run is made. Version: :func:`set_source_commit`."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for the uid (some containers)
        user = "unknown"
    return {schema.TAG_USER: user, schema.TAG_SOURCE_NAME: "famix sweep", schema.TAG_HOST: socket.gethostname()}


def delete_tag(tracker: Any, run_id: str, key: str) -> None:
    """Remove tag ``key`` of the run; one already gone (removed since the caller read the tags) is no error."""
    try:
        with_retry(tracker.client.delete_tag, run_id, key)
    except Exception:  # noqa: BLE001 — MLflow raises RESOURCE_DOES_NOT_EXIST for a missing tag
        if key in with_retry(tracker.client.get_run, run_id).data.tags:
            raise


def set_source_commit(tracker: Any, run_id: str, code: str, tags: dict[str, str]) -> bool:
    """MLflow's Version column (``mlflow.source.git.commit``) for ``code``, a :attr:`schema.TAG_GIT_COMMIT`
    value: set when it is one clean commit, removed otherwise (``-dirty``, several, ``unknown``), so
    the column never names a commit that did not compute the run's numbers (it held the driver's,
    while the stages, found cached, had run on other code). ``tags``: the run's; returns whether it changed."""
    import re

    want = code if re.fullmatch(r"[0-9a-f]{40}", code) else None
    have = tags.get(schema.TAG_SOURCE_COMMIT)
    if want == have:
        return False
    if want is None:
        delete_tag(tracker, run_id, schema.TAG_SOURCE_COMMIT)
    else:
        tracker.set_tags(run_id, {schema.TAG_SOURCE_COMMIT: want})
    return True


SUPERSEDED_PREFIX = "[superseded] "
"""Put before the name of a trial run that the sweep's plan no longer holds (``famix.role=superseded``)."""


def trial_run_name(trial: Trial) -> str:
    """``04 Freeze=✓,Augment=✓ seed=0``: numbered from 01 in grid order, as the plan table's ``#`` (and, one
    seed per row, as the table's rows, ``row/NN`` metrics and ``famix.best_row_index``), then labels, seed."""
    return " ".join(w for w in (f"{trial.index + 1:02d}", schema.labels_text(trial.labels), f"seed={trial.seed}") if w)


def ensure_runs(plan: Plan, tracker: Any, backend: str) -> tuple[str, dict[str, str]]:
    """Create (or find by tags) the sweep's parent run and one nested run per trial; returns (parent, trial id -> run id)."""
    import yaml

    name = plan.sweep.name
    context = context_tags()
    parent, _ = tracker.ensure_run(
        {schema.TAG_SWEEP: name, schema.TAG_ROLE: schema.ROLE_SWEEP, schema.TAG_PROFILE: plan.sweep.profile},
        {schema.TAG_GIT_COMMIT: code_version(), schema.TAG_BACKEND: backend, schema.TAG_DOMAINS: json.dumps(plan.sweep.domains),
         schema.TAG_RUN_DIR: str(Path(plan.run_dir).absolute()), **context},  # fmt: skip
        name=f"{name}-{plan.sweep.profile}",
    )
    set_source_commit(tracker, parent, code_version(), with_retry(tracker.client.get_run, parent).data.tags)  # the table's code
    all_runs = tracker.find({schema.TAG_SWEEP: name})
    existing = {r.data.tags.get(schema.TAG_TRIAL): r for r in all_runs if r.data.tags.get(schema.TAG_ROLE) in (schema.ROLE_TRIAL, schema.ROLE_SUPERSEDED)}
    wanted = {t.id for t in plan.trials}
    for r in all_runs:  # trials of this profile that the sweep no longer has: hidden from reports, kept in MLflow
        tags = r.data.tags
        if tags.get(schema.TAG_PROFILE) != plan.sweep.profile or tags.get(schema.TAG_TRIAL) in wanted:
            continue
        if tags.get(schema.TAG_ROLE) == schema.ROLE_TRIAL:
            tracker.set_tags(r.info.run_id, {schema.TAG_ROLE: schema.ROLE_SUPERSEDED})
        if tags.get(schema.TAG_ROLE) in (schema.ROLE_TRIAL, schema.ROLE_SUPERSEDED) and r.info.run_name and not r.info.run_name.startswith(SUPERSEDED_PREFIX):
            # four runs named `01 … seed=0` (also those superseded before the prefix)
            with_retry(tracker.client.update_run, r.info.run_id, name=SUPERSEDED_PREFIX + r.info.run_name)
    runs: dict[str, str] = {}
    for trial in plan.trials:
        tags = {**_trial_tags(plan, trial, backend), schema.TAG_ROLE: schema.ROLE_TRIAL}
        run = existing.get(trial.id)
        if run is not None:
            runs[trial.id] = run.info.run_id
            changed = {k: v for k, v in tags.items() if run.data.tags.get(k) != v}
            if changed:
                tracker.set_tags(run.info.run_id, changed)
            if run.info.run_name != trial_run_name(trial):  # restored from superseded, or numbered by older code
                with_retry(tracker.client.update_run, run.info.run_id, name=trial_run_name(trial))
            continue
        find = {schema.TAG_SWEEP: name, schema.TAG_ROLE: schema.ROLE_TRIAL, schema.TAG_TRIAL: trial.id}
        run_id, created = tracker.ensure_run(
            find,
            {**tags, **context, schema.TAG_PARENT_RUN: parent, schema.TAG_STATUS: "partial"},
            name=trial_run_name(trial),
            params=trial.config.flat(),
        )
        if created:
            tracker.log_text(run_id, yaml.safe_dump(trial.config.to_dict(), sort_keys=False), "config.yaml")
        runs[trial.id] = run_id
    return parent, runs


def plan_trial_runs(plan: Plan, tracker: Any) -> tuple[dict[str, str], int]:
    """The sweep's active trial runs (this profile) as (trial id -> run id for the plan's trials, how many belong to no trial of the plan).

    Reads only. Runs of other trials are those a driver made for another plan of the sweep: the same
    file with other overrides (``ARGS=…``), or before an edit of the file.
    """
    wanted = {t.id for t in plan.trials}
    mine: dict[str, str] = {}
    others = 0
    for r in _trial_runs(plan, tracker).values():
        tags = r.data.tags
        if tags.get(schema.TAG_PROFILE) != plan.sweep.profile:
            continue
        if tags.get(schema.TAG_TRIAL) in wanted:
            mine.setdefault(tags[schema.TAG_TRIAL], r.info.run_id)  # oldest first
        else:
            others += 1
    return mine, others


def _trial_runs(plan: Plan, tracker: Any) -> dict[str, Any]:
    """The sweep's trial runs in MLflow, by run id."""
    return {r.info.run_id: r for r in tracker.find({schema.TAG_SWEEP: plan.name, schema.TAG_ROLE: schema.ROLE_TRIAL})}


def read_history(path: Path) -> list[tuple[int, int, dict[str, float]]]:
    """A stage's :data:`~orchestrator.stages.HISTORY_FILE` as ``(step, ts, metrics)`` rows; a metric's
    first value at a step wins (a resumed training logs again the steps after its checkpoint, and its
    live logging skipped those already in MLflow). A torn last line is ignored."""
    seen: set[tuple[str, int]] = set()
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            rec = json.loads(line)
            step, ts, metrics = int(rec["step"]), int(rec["ts"]), dict(rec["metrics"])
        except (ValueError, KeyError, TypeError):
            continue
        fresh = {k: float(v) for k, v in metrics.items() if (k, step) not in seen}
        seen.update((k, step) for k in fresh)
        if fresh:
            rows.append((step, ts, fresh))
    return rows


INGESTED_FILES = {"mine": (HISTORY_FILE, "summary.json"), "train": (HISTORY_FILE,), "evaluate": ("metrics.json", "confusion.json")}
"""The files of a done stage that :func:`ingest` puts into MLflow (besides ``DONE.json``'s result): small
records, verified against ``DONE.json`` before they are read."""


def _verifier(plan: Plan) -> Callable[[str, str], bool]:
    """``sound(kind, key)``: whether the :data:`INGESTED_FILES` of a done stage match its ``DONE.json``
    (sizes and sha256, :meth:`~orchestrator.store.Store.problem`).

    A truncated ``history.jsonl`` still parses (a torn last line is skipped), so without this a cut-short
    curve would reach MLflow, be tagged ingested and never be repaired. A damaged stage is left out
    instead, and one warning line names the file and the command that rebuilds it. Answers are kept for
    the verifier's life (one ingestion): a bank shared by every trial is hashed, and named, once.
    """
    checked: dict[tuple[str, str], bool] = {}

    def sound(kind: str, key: str) -> bool:
        if (kind, key) not in checked:
            bad = plan.store.problem(kind, key, deep=True, names=INGESTED_FILES[kind])
            if bad:
                warnings.warn(f"damaged {kind} artifact {bad}: left out of MLflow; "
                              f"`famix sweep run {plan.arguments()} --rerun-failed` rebuilds it", FamixWarning)  # fmt: skip
            checked[(kind, key)] = bad is None
        return checked[(kind, key)]

    return sound


def _unlogged(want: dict[str, float], have: dict[str, float]) -> dict[str, float]:
    """The metrics of ``want`` that ``have`` (a run's) lacks or holds with another value."""
    return {k: v for k, v in want.items() if k not in have or not math.isclose(have[k], v, rel_tol=1e-9, abs_tol=1e-9)}


@dataclass
class Ingested:
    """What one :func:`ingest` did."""

    touched: int  # trial runs that got something
    damaged: set[str]  # trials of which a damaged stage record was left out (MLflow lacks it until it is rebuilt)


def ingest(plan: Plan, tracker: Any, runs: dict[str, str], trials: list[str] | None = None, existing: dict[str, Any] | None = None) -> Ingested:
    """Log into the trial runs what the store has and MLflow lacks; returns how many runs got something
    and which trials MLflow lacks a damaged stage's record of.

    Idempotent: evaluation metrics are compared with the run's (a value that differs is the store's
    newer result, logged so that MLflow shows it; an equal one is not logged again); a training's cost
    is logged once per training key (a rebuilt training's wall time differs, and is not a new result);
    a stage's history is logged once
    (then tagged ``famix.history.<kind>``), without the steps that live logging already sent, and
    with its recorded timestamps (a batch sent twice is the same row, which MLflow's SQL store does
    not add again); artifacts are listed first. This is how metrics reach MLflow when the driver is the only writer
    (``tracking.writer: driver``), and what repairs a run whose live logging lost batches.
    A stage's files are verified before they are read (:func:`_verifier`): a damaged stage is left
    out, with one warning line, until ``--rerun-failed`` rebuilds it.

    Args:
        trials: ids of the trials to look at (default: all of the plan's).
        existing: the sweep's trial runs by run id, when the caller has just read them (default: read here).
    """
    store = plan.store
    wanted = set(trials) if trials is not None else None
    if existing is None:
        existing = _trial_runs(plan, tracker)
    verify = _verifier(plan)
    touched = 0
    damaged: set[str] = set()
    for trial in plan.trials:
        if wanted is not None and trial.id not in wanted:
            continue

        def sound(kind: str, key: str, trial_id: str = trial.id) -> bool:
            ok = verify(kind, key)
            if not ok:
                damaged.add(trial_id)
            return ok

        ts = plan.trial_stages[trial.id]
        run_id = runs[trial.id]
        run = existing.get(run_id)
        have = dict(run.data.metrics) if run is not None else {}
        tags = dict(run.data.tags) if run is not None else {}
        n = 0
        want: dict[str, float] = {}
        mious = []
        for col, key in ts.evaluate.items():
            info = store.done_info("evaluate", key)
            if info is None:
                continue
            m = metrics_from_eval(col, info["result"])
            if _unlogged(m, have) and not sound("evaluate", key):
                continue  # its metrics wait for the rebuilt stage
            want.update(m)
            mious.append(m[schema.miou_metric(col)])
        if len(mious) == len(ts.evaluate):
            want[schema.METRIC_MIOU_MEAN] = sum(mious) / len(mious)
        info = store.done_info("train", ts.train)
        result = info.get("result") if info is not None else None
        if isinstance(result, dict):  # what the training cost: wall seconds, throughput, peak memory
            cost = {name: float(result[k]) for k, name in schema.TRAIN_COST_METRICS.items()
                    if isinstance(result.get(k), (int, float)) and not isinstance(result.get(k), bool)}  # fmt: skip
            if tags.get(schema.history_tag("train")) == ts.train:  # this training's cost is in the run (logged with its history)
                cost = {k: v for k, v in cost.items() if k not in have}  # a rebuild's own wall time logged it at step 0 twice
            if cost and (not _unlogged(cost, have) or sound("train", ts.train)):
                want.update(cost)
        missing = _unlogged(want, have)
        if missing:
            tracker.log_metrics(run_id, missing, step=0)
            n += 1
        for kind, key in (("mine", ts.mine), ("train", ts.train)):
            if key and tags.get(schema.history_tag(kind)) != key and store.is_done(kind, key) and sound(kind, key):
                rows = read_history(store.path(kind, key) / HISTORY_FILE)
                logged = {k: tracker.logged_steps(run_id, k) for k in {k for _, _, m in rows for k in m} if k in have}
                rows = [(step, t, {k: v for k, v in m.items() if step not in logged.get(k, ())}) for step, t, m in rows]
                rows = [r for r in rows if r[2]]
                if rows:  # the steps that live logging did not send (all of them when the driver is the writer)
                    tracker.log_history(run_id, rows)
                tracker.set_tags(run_id, {schema.history_tag(kind): key})
                n += 1
        code = trial_code(plan, trial.id)
        if code and tags.get(schema.TAG_GIT_COMMIT) != code:
            tracker.set_tags(run_id, {schema.TAG_GIT_COMMIT: code})
            n += 1
        if code and set_source_commit(tracker, run_id, code, tags):  # the stages' code, not the driver's
            n += 1
        n += _ingest_artifacts(plan, tracker, run_id, ts, sound)
        touched += n > 0
    return Ingested(touched, damaged)


def trial_code(plan: Plan, trial_id: str) -> str:
    """The code versions (:func:`~orchestrator.store.code_version`) that computed the trial's finished
    stages, as their ``DONE.json`` records them, sorted and space-separated (one when they agree);
    ``""`` when none records one (stages stored before the store recorded it). What the trial run's
    ``famix.git_commit`` holds: a rerun that finds the stages cached leaves it as it was."""
    store = plan.store
    found = set()
    for key in plan.trial_stages[trial_id].keys():
        info = store.done_info(plan.stages[key].kind, key)
        if info is not None and isinstance(info.get("code"), str) and info["code"]:
            found.add(info["code"])
    return " ".join(sorted(found))


def _ingest_artifacts(plan: Plan, tracker: Any, run_id: str, ts: Any, sound: Callable[[str, str], bool]) -> int:
    """The bank's ``summary.json`` (``styles/``) and each evaluation's confusion matrix
    (``confusion/<column>.json``) that the run lacks, from stages that ``sound`` (:func:`_verifier`)
    finds undamaged; returns how many were logged."""
    import shutil
    import tempfile

    store = plan.store
    n = 0
    if ts.mine and store.is_done("mine", ts.mine):
        summary = store.path("mine", ts.mine) / "summary.json"
        if summary.is_file() and not tracker.has_artifacts(run_id, "styles") and sound("mine", ts.mine):
            with_retry(tracker.client.log_artifact, run_id, str(summary), "styles")
            n += 1
    done = {col: store.path("evaluate", key) / "confusion.json" for col, key in ts.evaluate.items() if store.is_done("evaluate", key)}
    done = {col: p for col, p in done.items() if p.is_file()}
    if not done:
        return n
    logged = tracker.artifact_names(run_id, "confusion")
    todo = {col: p for col, p in done.items() if f"{col}.json" not in logged and sound("evaluate", ts.evaluate[col])}
    if todo:
        with tempfile.TemporaryDirectory() as tmp:
            for col, p in todo.items():
                named = Path(tmp) / f"{col}.json"
                shutil.copyfile(p, named)
                with_retry(tracker.client.log_artifact, run_id, str(named), "confusion")
        n += len(todo)
    return n


def record_finished(plan: Plan, tracker: Any, runs: dict[str, str], parent: str | None = None, existing: dict[str, Any] | None = None) -> int:
    """What ``status`` and ``report`` do where no driver finalizes (after ``--detach``): :func:`ingest`
    the finished stages into ``runs`` (trial id -> run id), and mark each of those trial runs whose
    every stage is done ``famix.status=done`` and end it (``damaged`` when MLflow lacks a damaged stage
    record, :func:`ingest`); the others are left as they are. With ``parent`` (the sweep's run, given
    when this plan owns the sweep's trial runs), that run is marked done too once every trial of the
    plan is. ``existing``: those runs by run id, when the caller has just read them. Returns how many
    trial runs got something."""
    if existing is None:  # ingesting changes no run's status: read once
        existing = _trial_runs(plan, tracker)
    done = ingest(plan, tracker, runs, trials=list(runs), existing=existing)
    for trial_id, run_id in runs.items():
        if _trial_done(plan, trial_id):
            _set_status(tracker, existing.get(run_id), run_id, "damaged" if trial_id in done.damaged else "done")
    if parent is not None and all(_trial_done(plan, t.id) for t in plan.trials) and not done.damaged:
        _set_status(tracker, with_retry(tracker.client.get_run, parent), parent, "done")
    return done.touched


def record_stage_done(plan: Plan, tracker: Any, runs: dict[str, str], key: str, ingest_all: bool) -> None:
    """What the driver does as stage ``key`` finishes: each trial of it whose stages are now all done is
    ingested, marked and ended (:func:`record_finished`), so MLflow shows it finished, at its own end
    time, while the rest of the sweep runs; with ``ingest_all`` (the driver is the writer) the stage's
    other trials are ingested too."""
    trials = [t for t in plan.stages[key].trials if t in runs]
    finished = {t: runs[t] for t in trials if _trial_done(plan, t)}
    look = trials if ingest_all else list(finished)
    if not look:
        return
    # these runs only (a search of the sweep's runs, per stage, would grow with the square of the trials)
    existing = {runs[t]: with_retry(tracker.client.get_run, runs[t]) for t in look}
    rest = [t for t in trials if t not in finished]
    if ingest_all and rest:
        ingest(plan, tracker, runs, rest, existing=existing)
    if finished:
        record_finished(plan, tracker, finished, existing=existing)


def _trial_done(plan: Plan, trial_id: str) -> bool:
    return all(plan.store.is_done(plan.stages[k].kind, k) for k in plan.trial_stages[trial_id].keys())


def _set_status(tracker: Any, run: Any, run_id: str, status: str) -> bool:
    """Tag ``famix.status`` and end the run unless it already has that status and has ended; a done (or
    damaged) run loses an earlier failure's ``famix.error``. True if it changed."""
    cleared = status in ("done", "damaged") and run is not None and schema.TAG_ERROR in run.data.tags
    if cleared:
        delete_tag(tracker, run_id, schema.TAG_ERROR)
    if run is not None and run.data.tags.get(schema.TAG_STATUS) == status and run.info.status != "RUNNING":
        return cleared
    tracker.set_tags(run_id, {schema.TAG_STATUS: status})
    tracker.finish(run_id, status == "done")
    return True


def end_interrupted_runs(tracker: Any, parent: str | None, runs: dict[str, str]) -> int:
    """An interrupted sweep (Ctrl-C, SIGTERM, ``famix sweep cancel``): its runs still ``RUNNING`` end
    ``KILLED`` (MLflow showed them running for good); ``famix.status`` is kept, and the next run ends
    them as :func:`finalize_runs` does. Returns how many were ended."""
    return kill_runs(tracker, running_runs(tracker, parent, runs))


def kill_runs(tracker: Any, run_ids: list[str]) -> int:
    """End the runs ``run_ids`` ``KILLED`` (from :func:`running_runs`); returns how many."""
    for run_id in run_ids:
        with_retry(tracker.client.set_terminated, run_id, "KILLED")
    return len(run_ids)


def resume_runs(tracker: Any, parent: str, runs: dict[str, str], trial_ids: list[str]) -> int:
    """A sweep run again after an interrupt: the sweep's run and the trial runs of ``trial_ids`` (those
    with stages to run), which the interrupt ended ``KILLED``, read ``RUNNING`` again while they run
    (MLflow showed them dead, their curves still growing); the driver ends them as it ends any. The
    sweep's run reads ``famix.status=partial`` until then. Returns how many were set running."""
    got = {run_id: with_retry(tracker.client.get_run, run_id) for run_id in [parent, *(runs[t] for t in trial_ids if t in runs)]}
    ended = [run_id for run_id, run in got.items() if run.info.status != "RUNNING"]
    for run_id in ended:
        with_retry(tracker.client.update_run, run_id, status="RUNNING")
    # the sweep's run has stages to run: not `done` (an earlier plan's) while they run, nor once interrupted
    if got[parent].data.tags.get(schema.TAG_STATUS) != "partial":
        tracker.set_tags(parent, {schema.TAG_STATUS: "partial"})
    return len(ended)


def running_runs(tracker: Any, parent: str | None, runs: dict[str, str]) -> list[str]:
    """The ids among ``runs`` (trial id -> run id) and ``parent`` of the runs MLflow shows ``RUNNING``."""
    ids = [*runs.values(), *([parent] if parent else [])]
    return [run_id for run_id in ids if with_retry(tracker.client.get_run, run_id).info.status == "RUNNING"]


def sweep_run(plan: Plan, tracker: Any) -> str | None:
    """The id of the sweep's own run for this profile (:func:`ensure_runs` makes it), if there is one; reads only."""
    found = tracker.find({schema.TAG_SWEEP: plan.sweep.name, schema.TAG_ROLE: schema.ROLE_SWEEP, schema.TAG_PROFILE: plan.sweep.profile})
    return found[0].info.run_id if found else None


ERROR_LOG_TAIL = 200_000
"""Bytes of a failed stage's log attached to its trial run (the end, where the error is)."""


def _record_error(tracker: Any, plan: Plan, run_id: str, key: str, outcome: Any, tags: dict[str, str]) -> None:
    """A failed trial run says why, where the MLflow UI shows it: tag ``famix.error`` (``train 1a2b3c4d:
    <the error's first line>``) and the end of the stage's log as ``logs/<log name>`` (a failed run
    had only its ``config.yaml``; the cause was in the run dir's logs alone)."""
    first = (((outcome.error if outcome is not None else None) or "").strip().splitlines() or ["failed"])[0]
    text = f"{plan.stages[key].kind} {key[:8]}: {first}"[:500]
    if tags.get(schema.TAG_ERROR) != text:
        tracker.set_tags(run_id, {schema.TAG_ERROR: text})
    log = Path(outcome.log_path) if outcome is not None and outcome.log_path else None
    if log is not None and log.is_file():
        with log.open("rb") as f:
            f.seek(max(0, log.stat().st_size - ERROR_LOG_TAIL))
            tail = f.read().decode("utf-8", errors="replace")
        tracker.log_text(run_id, tail, f"logs/{log.name}")


def finalize_runs(
    plan: Plan, tracker: Any, parent: str, runs: dict[str, str], failed: set[str], outcomes: dict[str, Any] | None = None
) -> dict[str, str]:
    """:func:`ingest` what MLflow lacks, set ``famix.status`` and end the runs; returns trial -> status:
    ``done``, ``failed``, ``partial`` (stages not run), or ``damaged`` (every stage done, but a damaged
    stage record was left out of MLflow; ``--rerun-failed`` rebuilds it). A failed trial's run gets its
    first failed stage's error and log (``outcomes``: stage key -> its outcome); a done one loses an
    earlier run's ``famix.error`` (:func:`_set_status`)."""
    existing = _trial_runs(plan, tracker)  # ingesting changes no run's status: read once
    damaged = ingest(plan, tracker, runs, existing=existing).damaged
    statuses: dict[str, str] = {}
    for trial in plan.trials:
        keys = plan.trial_stages[trial.id].keys()
        run = existing.get(runs[trial.id])
        tags = run.data.tags if run is not None else {}
        if _trial_done(plan, trial.id):
            status = "damaged" if trial.id in damaged else "done"
        else:
            status = "failed" if any(k in failed for k in keys) else "partial"
            if status == "failed":
                outcomes = outcomes or {}
                # the stage that failed itself, not one skipped because a stage it needs failed
                key = next((k for k in keys if k in failed and getattr(outcomes.get(k), "status", None) == "failed"),
                           next(k for k in keys if k in failed))  # fmt: skip
                try:  # an extra: the sweep's results must not wait on it
                    _record_error(tracker, plan, runs[trial.id], key, outcomes.get(key), tags)
                except Exception as e:  # noqa: BLE001
                    warnings.warn(f"MLflow: the error of trial {trial.id} not recorded ({type(e).__name__}: {e})", FamixWarning, stacklevel=1)
        statuses[trial.id] = status
        _set_status(tracker, run, runs[trial.id], status)
    overall = "done" if all(s == "done" for s in statuses.values()) else ("failed" if failed else "partial")
    tracker.set_tags(parent, {schema.TAG_STATUS: overall})
    tracker.finish(parent, overall == "done")
    return statuses
