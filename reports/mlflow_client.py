"""One way to get an ``MlflowClient``: with MLflow's own INFO lines kept off the user's terminal.

MLflow configures its ``mlflow`` logger at INFO on import, so a first touch of a SQLite store
prints "Creating initial MLflow database tables…" and the system-metrics monitor announces
itself. Those lines say nothing to a sweep's user; warnings and errors still show. A user who
sets ``MLFLOW_LOGGING_LEVEL`` gets MLflow's own behaviour.
"""

from __future__ import annotations

import logging
import os
from typing import Any

__all__ = ["mlflow_client", "quiet_mlflow_logs"]


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
    return MlflowClient(tracking_uri=uri)
