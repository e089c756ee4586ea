"""Is a sweep's driver really running? (``driver.lock`` held + ``driver.json``'s pid and start time match).

A driver holds an exclusive ``flock`` on ``<sweep>/driver.lock`` for its whole run (the OS
releases it even on SIGKILL) and records ``{"pid", "start", "host"}`` in ``driver.json``, where
``start`` is the process's start time in clock ticks since boot (``/proc/<pid>/stat`` field 22).
``driver.json`` stays behind after a run, and its pid may later belong to an unrelated process:
``famix sweep status`` and ``cancel`` trust it only when the lock is held *and* that pid still has
that start time on this host.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

from famix_core.io import process_start

__all__ = ["process_start", "driver_identity", "running_driver", "lock_is_held"]


def driver_identity() -> dict[str, Any]:
    """What a driver writes about itself into ``driver.json``."""
    pid = os.getpid()
    return {"pid": pid, "start": process_start(pid), "host": socket.gethostname()}


def recorded_process_alive(info: dict[str, Any]) -> bool | None:
    """Whether the process a record names (``pid``, ``start``, ``host``: :func:`driver_identity`) still runs:
    on this host, its pid has the recorded start time (a recycled pid has another); None where that cannot
    be told (another host's process, or no start time recorded)."""
    if info.get("host", socket.gethostname()) != socket.gethostname() or info.get("start") is None:
        return None
    return process_start(int(info.get("pid") or 0)) == info["start"]


def lock_is_held(lock_path: Path) -> bool:
    """Whether some process holds the ``flock`` on ``lock_path`` (probed with a non-blocking shared lock)."""
    import fcntl

    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except OSError:
        return False  # no lock file: no driver ever ran here
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:  # no locks on this filesystem (ENOLCK): cannot be told
        return False
    finally:
        os.close(fd)  # also drops the probe's lock
    return False


def running_driver(sweep_dir: Path) -> dict[str, Any] | None:
    """``driver.json`` of the driver running ``sweep_dir`` now, or None (no driver, or a stale file).

    The file is trusted only when the lock is held and, on this host, its pid still has the
    recorded start time (a recycled pid fails that): then ``verified`` is True. Held by a driver
    of another host (or one that recorded no start time): returned with ``verified`` False.
    """
    try:
        info = json.loads((sweep_dir / "driver.json").read_text())
    except (OSError, ValueError):
        info = {}
    if not lock_is_held(sweep_dir / "driver.lock"):
        return None
    alive = recorded_process_alive(info)
    if alive is None:
        return {**info, "verified": False}  # held, but by a process this host cannot check: never signal it
    if not alive:
        return None  # the recorded driver is gone; the lock is held by a process that wrote no driver.json yet
    return {**info, "verified": True}
