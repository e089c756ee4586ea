"""What the Ray backend knows about its cluster before it submits: is it there, and what fits on it.

Ray's own ``ray.init(address=…)`` retries a dead address for minutes (a warning every ~41 s) and,
with a bounded reconnect timeout, terminates the whole process. So a cluster given by
``backend.ray.address`` is probed first, in a subprocess bounded to :data:`PROBE_TIMEOUT_S`: a
TCP connect to its port (a refused port fails in milliseconds), then a real ``ray.init`` that
lists the alive nodes and their resources. A stage that asks for more CPUs/GPUs than the largest
node has can never be scheduled: that is said at plan time, not after a time limit runs out.
No Ray import here (the probe runs in a child process).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from famix_core.text import count
from orchestrator.errors import SweepError

__all__ = [
    "PROBE_TIMEOUT_S",
    "CLIENT_PROBE_TIMEOUT_S",
    "CLIENT_CONNECT_ATTEMPTS",
    "NodeInfo",
    "probe_cluster",
    "check_no_env_address",
    "connect_client",
    "unreachable",
    "local_nodes",
    "unschedulable",
    "slots",
]

PROBE_TIMEOUT_S = 20.0
"""Longest wait for a cluster to answer (the driver's whole check stays under 30 s)."""

CLIENT_PROBE_TIMEOUT_S = 90.0
"""Longest wait for a ``ray://`` address: its Ray Client server starts a Python process per connection
(measured 10-25 s on a busy 2-core machine) before the first answer."""

CLIENT_CONNECT_ATTEMPTS = 3
"""Tries of a ``ray://`` connection that fails fast: the Ray Client server's per-connection process can
die while it starts (seen on a loaded CI machine as ``psutil.ZombieProcess`` from Ray's proxier); the
next connection gets a fresh one. A connection that times out is not tried again."""

_CLIENT_RETRY_DELAY_S = 2.0

_START_HINT = "start one with `ray start --head --port=6379` (then backend.ray.address: <head ip>:6379), or leave backend.ray.address unset to start Ray in-process"

_PROBE = r"""
import json, sys
import ray
ray.init(address=sys.argv[1], log_to_driver=False, logging_level="ERROR", configure_logging=False)
nodes = [{"id": n["NodeID"], "cpus": n["Resources"].get("CPU", 0.0), "gpus": n["Resources"].get("GPU", 0.0)}
         for n in ray.nodes() if n.get("Alive")]
print("FAMIX-NODES " + json.dumps(nodes), flush=True)
"""


@dataclass(frozen=True)
class NodeInfo:
    """One alive Ray node: its id and total CPUs / GPUs."""

    id: str
    cpus: float
    gpus: float


def _host_port(address: str) -> tuple[str, int] | None:
    text = address.removeprefix("ray://")
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]") or "127.0.0.1", int(port)


def _auto_address() -> str:
    """What ``address: auto`` means: ``$RAY_ADDRESS``, else the cluster recorded in ``/tmp/ray/ray_current_cluster``."""
    env = os.environ.get("RAY_ADDRESS")
    if env:
        return env
    record = Path("/tmp/ray/ray_current_cluster")
    try:
        text = record.read_text().strip()
    except OSError:
        raise SweepError(f"backend.ray.address=auto: no Ray cluster runs on this machine ({record} missing); {_START_HINT}") from None
    if not text:
        raise SweepError(f"backend.ray.address=auto: {record} is empty; {_START_HINT}")
    return text


def check_no_env_address() -> None:
    """In-process Ray (no ``backend.ray.address``) refuses a set ``$RAY_ADDRESS``.

    Ray's ``init`` would connect to that cluster instead of starting one (and refuse the in-process
    ``num_cpus``), after the sweep's MLflow runs were made. A sweep says to use ``$RAY_ADDRESS`` with
    ``address: auto`` (:func:`probe_cluster`), so neither choice is made for the user.

    Raises:
        SweepError: one line naming the variable and both fixes.
    """
    env = os.environ.get("RAY_ADDRESS")
    if env:
        raise SweepError(
            f"RAY_ADDRESS={env} is set but backend.ray.address is not: set backend.ray.address: auto in the sweep file "
            "to use that cluster, or unset RAY_ADDRESS to start Ray in-process"
        )


def _attempts(address: str) -> int:
    """How often a connection to ``address`` is tried: :data:`CLIENT_CONNECT_ATTEMPTS` for ``ray://``, else once.

    ``auto`` counts as ``$RAY_ADDRESS`` when that is set (Ray's ``init`` resolves it so too); the
    cluster record of ``/tmp/ray`` holds GCS addresses only.
    """
    if address == "auto":
        address = os.environ.get("RAY_ADDRESS", "")
    return CLIENT_CONNECT_ATTEMPTS if address.startswith("ray://") else 1


def probe_cluster(address: str, timeout_s: float | None = None) -> list[NodeInfo]:
    """The alive nodes of the cluster at ``address`` (``host:port``, ``auto``, ``ray://host:port``).

    ``timeout_s`` defaults to :data:`PROBE_TIMEOUT_S`, or :data:`CLIENT_PROBE_TIMEOUT_S` for ``ray://``.

    Raises:
        SweepError: one line naming the address, that no cluster answered (refused, timed out, or
            Ray's own first error line), and how to start one.
    """
    shown = address
    target = _auto_address() if address == "auto" else address
    if address == "auto":
        shown = f"auto (= {target}, from RAY_ADDRESS or /tmp/ray/ray_current_cluster)"
    if timeout_s is None:
        timeout_s = CLIENT_PROBE_TIMEOUT_S if target.startswith("ray://") else PROBE_TIMEOUT_S
    hp = _host_port(target)
    if hp is None:
        raise SweepError(f"backend.ray.address={address}: expected host:port, ray://host:port or auto")
    try:
        with socket.create_connection(hp, timeout=min(5.0, timeout_s)):
            pass
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise SweepError(f"backend.ray.address={shown}: no Ray cluster answered ({reason}); {_START_HINT}") from None
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    attempts = _attempts(target)
    for attempt in range(1, attempts + 1):
        try:
            out = subprocess.run(
                [sys.executable, "-c", _PROBE, target], capture_output=True, text=True, timeout=timeout_s, env=env
            )
        except subprocess.TimeoutExpired:
            raise SweepError(
                f"backend.ray.address={shown}: no Ray cluster answered within {timeout_s:.0f} s (the port is open, "
                f"but it is not a Ray head, or the cluster is stuck); {_START_HINT}"
            ) from None
        for line in out.stdout.splitlines():
            if line.startswith("FAMIX-NODES "):
                nodes = json.loads(line[len("FAMIX-NODES ") :])
                return [NodeInfo(n["id"], float(n["cpus"]), float(n["gpus"])) for n in nodes]
        err = [ln for ln in out.stderr.splitlines() if ln.strip() and not ln.startswith((" ", "Traceback"))]
        first = err[-1].strip() if err else f"exit status {out.returncode}"
        if "ray[client]" in out.stderr or "No module named 'grpc'" in out.stderr:
            first = "the ray:// form needs Ray Client: pip install 'ray[client]' (the project depends on it)"
            break
        if "timeout" in first.lower():  # Ray Client's own connection timeout (~30 s): a try again would wait as long
            break
        if attempt < attempts:
            time.sleep(_CLIENT_RETRY_DELAY_S)
    tries = f" after {attempts} tries" if attempts > 1 and attempt == attempts else ""
    port = ""
    if target.startswith("ray://") and "timeout" in first.lower():
        port = ("; ray:// names the Ray Client server's port (10001 unless `ray start --ray-client-server-port` "
                "says otherwise), not the head's GCS port")  # fmt: skip
    raise SweepError(f"backend.ray.address={shown}: could not connect{tries} ({first[:300]}){port}; {_START_HINT}")


def connect_client(
    init: Callable[[], Any], reset: Callable[[], Any], address: str, log: Callable[[str], None] | None = None
) -> None:
    """``init()`` a ``ray://`` connection, up to :data:`CLIENT_CONNECT_ATTEMPTS` times (``reset()`` after each failure).

    Other addresses are tried once. Each failed try but the last is said through ``log``; the last
    error propagates.
    """
    attempts = _attempts(address)
    for attempt in range(1, attempts + 1):
        try:
            init()
            return
        except Exception as e:  # noqa: BLE001 — Ray Client re-raises the server's error, of any type
            try:
                reset()  # no half-made connection stays behind
            except Exception:  # noqa: BLE001, S110 — the init's error is the one to report
                pass
            if attempt == attempts:
                raise
            if log:
                why = (str(e).strip().splitlines() or [""])[0][:200]
                again = f"try {attempt + 1} of {attempts} in {_CLIENT_RETRY_DELAY_S:g} s"
                log(f"ray: could not connect to {address} ({type(e).__name__}: {why}); {again}")
            time.sleep(_CLIENT_RETRY_DELAY_S)


def unreachable(address: str, timeout_s: float = 5.0) -> str | None:
    """Why nothing takes a connection at ``address`` (``host:port``, ``ray://host:port``) any more, or None.

    The driver asks after a stage or the stages' timer was lost: a head whose GCS is gone refuses at
    once, a head machine that is gone times out. Ray itself would hang in ``ray.nodes()`` and, after
    ``gcs_rpc_server_reconnect_timeout_s`` (60 s), end the driver's process.
    """
    hp = _host_port(address)
    if hp is None:
        return None
    try:
        with socket.create_connection(hp, timeout=timeout_s):
            return None
    except OSError as e:
        return e.strerror or str(e) or type(e).__name__


def local_nodes(num_cpus: int | None, num_gpus: int | None) -> list[NodeInfo]:
    """The one node of an in-process Ray instance (``backend.ray.num_cpus`` or the CPUs this process
    may use: :func:`famix_core.loaders.allocated_cpus`, as Ray is started with)."""
    from famix_core.loaders import allocated_cpus

    return [NodeInfo("local", float(num_cpus or allocated_cpus()), float(num_gpus or 0))]


def unschedulable(kind: str, request: dict[str, Any], nodes: list[NodeInfo]) -> str | None:
    """Why a stage of ``kind`` asking ``request`` (``cpus``, ``gpus``) fits on no node, or None."""
    if not nodes:
        return f"{kind}: cannot be scheduled: the Ray cluster has no alive node"
    cpus, gpus = float(request.get("cpus", 1) or 0), float(request.get("gpus", 0) or 0)
    if any(n.cpus >= cpus and n.gpus >= gpus for n in nodes):
        return None
    if not any(n.cpus >= cpus for n in nodes):
        have = max(n.cpus for n in nodes)
        return f"{kind}: cannot be scheduled: needs {count(cpus, 'CPU')}, the largest node has {have:g}"
    have = max(n.gpus for n in nodes)
    return f"{kind}: cannot be scheduled: needs {count(gpus, 'GPU')}, the largest node has {have:g}"


def slots(request: dict[str, Any], nodes: list[NodeInfo]) -> int:
    """How many stages asking ``request`` the cluster runs at once (summed over nodes; at least 1)."""
    cpus, gpus = float(request.get("cpus", 1) or 0), float(request.get("gpus", 0) or 0)
    total = 0
    for n in nodes:
        by_cpu = int(n.cpus // cpus) if cpus > 0 else 10**6
        by_gpu = int(n.gpus // gpus) if gpus > 0 else 10**6
        total += min(by_cpu, by_gpu)
    return max(1, min(total, 10**6))
