"""Where the orchestrator's embedded MLflow store lives, ``sqlite:///`` URIs that any path survives,
and a quick look at a tracking URI before MLflow's client retries at it for minutes."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, unquote

from reports.collect.resultset import ReportInputError

__all__ = [
    "check_tracking_uri", "default_tracking_uri", "http_health", "sqlite_damage", "sqlite_path", "sqlite_uri",
    "DamagedStoreError", "DAMAGED_STORE_FIX",
]  # fmt: skip

TRACKING_URI_PREFIXES: tuple[str, ...] = (
    "http://", "https://", "sqlite:///", "file:", "databricks", "postgresql", "mysql", "mssql",
)  # fmt: skip
"""How a tracking URI may begin: a server, the embedded SQLite store, a file store, Databricks, a
database MLflow's SQL store opens (``postgresql://``, ``postgresql+psycopg2://``, ``mysql://``, …)."""


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


DAMAGED_STORE_FIX = "`famix sweep run` of the sweep sets it aside and rebuilds its runs from the store"
"""What to do about a damaged embedded store (every number in it can be rebuilt from the artifact store)."""


class DamagedStoreError(ReportInputError):
    """MLflow cannot open the SQLite store ``db``: ``why`` (e.g. its tables' creation was cut short by a kill).

    Raised by :func:`reports.mlflow_client.mlflow_client`; the orchestrator's ``sweep run`` sets the
    file aside and rebuilds, ``status`` names it, ``report`` prints this one line.
    """

    def __init__(self, db: Path, why: str) -> None:
        self.db, self.why = db, why
        super().__init__(f"{db}: the MLflow database is damaged ({why}); {DAMAGED_STORE_FIX}")


def sqlite_damage(db: Path) -> str | None:
    """Why the SQLite file ``db`` is damaged (truncated, overwritten, not a database), or None.

    SQLite's ``quick_check`` reads every page once (milliseconds for a sweep's store). A file that
    does not exist, or one that cannot be read now (locked, no permission), is not called damaged.
    """
    import sqlite3

    if not db.is_file():
        return None
    try:
        con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error:
        return None
    try:
        rows = con.execute("PRAGMA quick_check(1)").fetchall()
    except sqlite3.DatabaseError as e:
        if isinstance(e, sqlite3.OperationalError):
            return None  # locked, busy, unreadable: not evidence of damage
        return str(e)
    finally:
        con.close()
    return None if rows == [("ok",)] else str(rows[0][0] if rows else "quick_check returned nothing")


def http_health(uri: str, timeout_s: float = 2.0) -> bool:
    """Whether a server answers at ``<uri>/health`` within ``timeout_s`` (MLflow's own client retries for minutes)."""
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s):
            return True
    except (OSError, ValueError):  # refused, timed out, an HTTP error; a malformed host or port
        return False


def check_tracking_uri(uri: str, where: str, fix: str | None = None, write: bool = False) -> None:
    """Refuse, in one line, a URI that MLflow cannot open here, making nothing: no MLflow store, a
    server that does not answer its ``/health``, a file store (MLflow refuses them unless
    ``MLFLOW_ALLOW_FILE_STORE`` is set), a database whose Python driver is missing or whose host does
    not answer; with ``write`` (a sweep logs there), a SQLite file whose folder cannot be made or
    written.

    Args:
        uri: the tracking URI.
        where: who gave it, for the message (``--tracking-uri``, ``<sweep file>: tracking.uri``).
        fix: what to do about a server that does not answer, appended to that line (``famix sweep``:
            start it, or drop ``tracking.uri``).
        write: the URI will be written to (``famix sweep``), not only read (``famix report``).

    Raises:
        ReportInputError: one line, ``<where> <uri>: <what is wrong>``.
    """
    import os

    if not uri.startswith(TRACKING_URI_PREFIXES):
        raise ReportInputError(
            f"{where} {uri}: not an MLflow tracking URI (expected http(s)://host:port, sqlite:///path, file:path, databricks or a postgresql/mysql/mssql database URI)"
        )
    problem = None
    if uri.startswith(("http://", "https://")):
        if not http_health(uri):
            problem = f"no MLflow server answered at {uri.rstrip('/')}/health within 2 s{'; ' + fix if fix else ''}"
    elif uri.startswith("file:"):
        if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() not in ("true", "1"):
            problem = ("this MLflow no longer opens file stores (`mlflow migrate-filestore` moves one into SQLite); "
                       "use sqlite:///<path>/mlflow.db, or set MLFLOW_ALLOW_FILE_STORE=true")  # fmt: skip
    elif uri.startswith("sqlite:///"):
        problem = _sqlite_folder_problem(sqlite_path(uri)) if write else None  # type: ignore[arg-type]
    elif not uri.startswith("databricks"):  # Databricks finds its credentials in many places: MLflow's to check
        problem = _database_problem(uri)
    if problem:
        raise ReportInputError(f"{where} {uri}: {problem}")


def _sqlite_folder_problem(db: Path) -> str | None:
    """Why the SQLite file ``db`` could not be made (its folder, or the nearest one above that exists)."""
    from famix_core.io import nearest_existing, what_blocks, write_denied

    folder = db.absolute().parent
    existing = nearest_existing(folder)
    if not existing.is_dir():
        return f"{existing} is {what_blocks(existing)}, so the database's folder {folder} cannot be made"
    reason = write_denied(existing)
    if reason is not None:
        return f"the database's folder {existing} is not writable ({reason})"
    return None


_DATABASE_PORTS = {"postgresql": 5432, "mysql": 3306}


def _database_problem(uri: str) -> str | None:
    """Why MLflow's SQL store could not open the database ``uri``: its Python driver is missing, or its
    host does not accept a connection within 2 s (the database itself is not logged into)."""
    import socket

    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        url = make_url(uri)
        url.get_dialect().import_dbapi()
    except (ArgumentError, NoSuchModuleError, ValueError) as e:
        return f"not a database URI SQLAlchemy reads ({str(e).splitlines()[0]})"
    except ImportError as e:
        return f"its Python driver is not installed ({e.name or e}); install it into this environment"
    backend = url.get_backend_name()
    local_socket = "host" in url.query or "unix_socket" in url.query or (backend == "mysql" and url.host == "localhost")
    if url.host and backend in _DATABASE_PORTS and not local_socket:  # mssql's host may be an ODBC DSN: not probed
        port = url.port or _DATABASE_PORTS[backend]
        try:
            socket.create_connection((url.host, port), timeout=2).close()
        except OSError as e:
            return f"nothing accepted a connection at {url.host}:{port} within 2 s ({e.strerror or e})"
    return None
