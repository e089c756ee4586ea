"""Where the orchestrator's embedded MLflow store lives, and ``sqlite:///`` URIs that any path survives."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, unquote

__all__ = ["default_tracking_uri", "sqlite_path", "sqlite_uri"]


def default_tracking_uri(run_dir: str | Path) -> str:
    """The embedded store the orchestrator writes: ``sqlite:///<abs run_dir>/mlflow.db``."""
    return sqlite_uri(Path(run_dir).absolute() / "mlflow.db")


def sqlite_uri(db: str | Path) -> str:
    """``sqlite:///<absolute path>``, percent-encoded so that any path works (``?``, ``#``, ``%``, spaces)."""
    return "sqlite:///" + quote(str(Path(db).absolute()), safe="/")


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (percent-decoded), or None for another kind of store."""
    if uri.startswith("sqlite:///"):
        return Path(unquote(uri[len("sqlite:///") :].split("?", 1)[0]))
    return None
