"""One way to get an ``MlflowClient``: with MLflow's own INFO lines kept off the user's terminal.

MLflow configures its ``mlflow`` logger at INFO on import, so a first touch of a SQLite store
prints "Creating initial MLflow database tables…" and the system-metrics monitor announces
itself. Those lines say nothing to a sweep's user; warnings and errors still show. A user who
sets ``MLFLOW_LOGGING_LEVEL`` gets MLflow's own behaviour.

MLflow creates (and migrates) a SQLite store's tables when a client first opens it. Two processes
doing that at once (two sweeps started together into a new run dir) broke the database for good:
``table _alembic_tmp_metrics already exists``, then the same error at every later open. Clients of
a SQLite store are therefore made one process at a time (a ``flock`` on ``<db>.lock``).
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Any, Iterator

__all__ = ["mlflow_client", "quiet_mlflow_logs", "forget_store"]


def quiet_mlflow_logs() -> None:
    """Raise the ``mlflow`` and ``alembic`` loggers to WARNING (unless ``MLFLOW_LOGGING_LEVEL`` is set)."""
    if os.environ.get("MLFLOW_LOGGING_LEVEL"):
        return
    import mlflow  # noqa: F401 — its import configures the logger we then adjust

    for name in ("mlflow", "alembic"):
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.WARNING:
            logger.setLevel(logging.WARNING)


def mlflow_client(uri: str | None) -> Any:
    """``MlflowClient(tracking_uri=uri)`` after :func:`quiet_mlflow_logs`."""
    from mlflow.tracking import MlflowClient

    quiet_mlflow_logs()
    with _one_opener(uri):
        return MlflowClient(tracking_uri=uri)  # opens the store: creates or migrates a SQLite store's tables


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
def _one_opener(uri: str | None) -> Iterator[None]:
    """For a ``sqlite:///`` store, hold an exclusive ``flock`` on ``<db>.lock`` for the block.

    Where no lock file can be made (a read-only run dir: nothing can be created there either) or
    the filesystem has no locks, the block runs unguarded.
    """
    import fcntl

    from reports.collect.store import sqlite_path

    db = sqlite_path(uri) if uri else None
    try:
        fd = os.open(f"{db}.lock", os.O_RDWR | os.O_CREAT, 0o666) if db is not None else None
    except OSError:
        fd = None
    if fd is None:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass  # no locks here (ENOLCK): as before
        yield
    finally:
        os.close(fd)
