"""One way to get an ``MlflowClient``: with MLflow's own INFO lines kept off the user's terminal.

MLflow configures its ``mlflow`` logger at INFO on import, so a first touch of a SQLite store
prints "Creating initial MLflow database tables…" and the system-metrics monitor announces
itself. Those lines say nothing to a sweep's user; warnings and errors still show. A user who
sets ``MLFLOW_LOGGING_LEVEL`` gets MLflow's own behaviour.

MLflow creates (and migrates) a SQLite store's tables when a client first opens it. Two processes
doing that at once (two sweeps started together into a new run dir) broke the database for good:
``table _alembic_tmp_metrics already exists``, then the same error at every later open. Clients of
a SQLite store are therefore made one process at a time (a ``flock`` on ``<db>.lock``).

Creating the tables takes MLflow a few seconds (some 400 statements of schema migrations, not one
transaction), and a process killed meanwhile (Ctrl-C in a new sweep's first seconds) left a file
that every later open failed on (``table _alembic_tmp_params already exists``). A new store is
therefore created under another name and moved into place complete. A store MLflow cannot open
for such a reason raises :class:`~reports.collect.store.DamagedStoreError`, one line naming the file.
"""

from __future__ import annotations

import glob
import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from famix_core.io import exclusive_lock

__all__ = ["mlflow_client", "quiet_mlflow_logs", "forget_store"]


def quiet_mlflow_logs() -> None:
    """Raise the ``mlflow`` and ``alembic`` loggers to WARNING (unless ``MLFLOW_LOGGING_LEVEL`` is set), and
    keep the two lines MLflow prints for every run ended on a tracking server (``🏃 View run … at: …``;
    a sweep ends each trial's) off stdout unless ``MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT`` is set."""
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    if os.environ.get("MLFLOW_LOGGING_LEVEL"):
        return
    import mlflow  # noqa: F401 — its import configures the logger we then adjust

    for name in ("mlflow", "alembic"):
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.WARNING:
            logger.setLevel(logging.WARNING)


def mlflow_client(uri: str | None) -> Any:
    """``MlflowClient(tracking_uri=uri)`` after :func:`quiet_mlflow_logs`; a new SQLite store is made whole first.

    Raises:
        DamagedStoreError: a SQLite store whose schema MLflow cannot open or complete.
    """
    from mlflow.tracking import MlflowClient

    from reports.collect.store import DamagedStoreError, sqlite_path

    quiet_mlflow_logs()
    db = sqlite_path(uri) if uri else None
    with _one_opener(db) as locked:
        if db is not None and not db.exists():
            _create_store(uri, db, others_are_dead=locked)  # type: ignore[arg-type]
        try:
            return MlflowClient(tracking_uri=uri)  # opens the store (migrates the tables of an older one)
        except Exception as e:
            why = _open_damage(e) if db is not None else None
            if why is None:
                raise
            raise DamagedStoreError(db, why) from None  # type: ignore[arg-type]


CREATING = ".creating-"
"""A SQLite store being created is ``<db>.creating-<pid>`` until its tables are complete."""


def _create_store(uri: str, db: Path, *, others_are_dead: bool) -> None:
    """Create the SQLite store of ``uri`` beside ``db`` and link it into place once MLflow has made its tables.

    ``others_are_dead``: the caller holds the opener lock, so a ``<db>.creating-*`` left beside it
    is a killed creator's, removed here (without locks here, another may be creating one now).
    """
    from mlflow.tracking import MlflowClient

    if others_are_dead:
        for stale in db.parent.glob(glob.escape(db.name + CREATING) + "*"):
            stale.unlink(missing_ok=True)
    suffix = f"{CREATING}{os.getpid()}"
    head, sep, query = uri.partition("?")
    tmp_uri, tmp = head + suffix, db.with_name(db.name + suffix)  # the URI's path is percent-encoded; a suffix stays as is
    try:
        MlflowClient(tracking_uri=tmp_uri + sep + query)  # creates and migrates every table
        forget_store(tmp_uri + sep + query)  # its pooled connections are closed before the file moves
        try:
            os.link(tmp, db)  # never over a store another process made meanwhile (only without locks)
        except FileExistsError:
            pass
        except OSError:  # no hard links on this filesystem
            os.replace(tmp, db)
    finally:
        for p in (tmp, tmp.with_name(tmp.name + "-journal")):
            p.unlink(missing_ok=True)


def _open_damage(e: BaseException) -> str | None:
    """Why an exception from opening a SQLite store means the file is damaged, or None (a lock, a busy disk, …)."""
    try:
        from sqlalchemy.exc import DatabaseError, OperationalError
    except ImportError:
        return None
    if not isinstance(e, DatabaseError):
        return None
    msg = str(e.orig if e.orig is not None else e).splitlines()[0]
    if not isinstance(e, OperationalError):  # SQLITE_CORRUPT, SQLITE_NOTADB
        return msg
    if any(w in msg for w in ("already exists", "no such table", "no such column", "duplicate column")):
        return f"its tables are half made, as when a process is killed while creating them: {msg}"
    return None


def forget_store(uri: str) -> None:
    """Close what this process holds open of the database at ``uri`` (after the file was moved aside).

    MLflow keeps, for the life of the process, one store object per URI and one SQLAlchemy engine
    per database, whose pooled connections keep reading the old file (and a new store would find its
    tables "created"); after this the next client opens, and initializes, the file now at that path.
    Both caches are MLflow's internals (3.x): where they are not found, nothing is held to forget.
    """
    try:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
        from mlflow.tracking._tracking_service import utils

        utils._tracking_store_registry._get_store_with_resolved_uri.cache_clear()
        engine = SqlAlchemyStore._engine_map.pop(uri, None)
    except (ImportError, AttributeError):
        return
    if engine is not None:
        engine.dispose()


@contextmanager
def _one_opener(db: Path | None) -> Iterator[bool]:
    """For a SQLite store's file ``db``, hold an exclusive ``flock`` on ``<db>.lock`` for the block;
    yields whether it is held.

    Where no lock file can be made (a read-only run dir: nothing can be created there either) or
    the filesystem has no locks, the block runs unguarded.
    """
    if db is None:
        yield False
        return
    try:
        db.parent.mkdir(parents=True, exist_ok=True)  # a new run dir: the lock file goes beside the store
    except OSError:
        pass  # the lock file cannot be made either: unguarded
    with exclusive_lock(f"{db}.lock") as locked:
        yield locked
