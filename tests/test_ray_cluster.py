"""Ray beyond one process: dead addresses fail fast, what cannot fit is said at plan time, time limits
count running time only, parallelism comes from the cluster, and a real 2-node cluster (plus a Ray
Client server) on 127.0.0.1 runs a sweep with the local backend's results.

The cluster fixture starts two ``ray start`` processes with their own ports and temp dir and stops
exactly the processes that carry that temp dir, by PID (never ``ray stop``: it stops everyone's Ray).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Iterator

import pandas as pd
import pytest

from orchestrator.__main__ import main
from orchestrator.backends import create_backend
from orchestrator.backends.ray_cluster import probe_cluster
from orchestrator.errors import SweepError
from test_backends import Recorder, _task

SWEEP = """\
name: rc
grid:
  style.mix: [false, true]
domains: [C]
backend:
  kind: ray
  ray: {address: ADDRESS}
"""

TINY = """\
name: tiny
base:
  style: {strategy: famix, augment: false}
  data: {synthetic: {height: 64, width: 96, train_images: 2, val_images: 1}, crop_size: 48}
  train: {iterations: 6, batch_size: 2, checkpoint_every: 3, log_every: 1}
  eval: {max_images: 1}
grid:
  style.mix: [false, true]
domains: [C, B]
backend:
  resources:
    train: {cpus: 1, timeout_min: 20}
    evaluate: {cpus: 1, timeout_min: 20}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _plan_error(capsys, text: str, *args: str) -> str:
    Path("s.yaml").write_text(text)
    rc = main(["sweep", *(args or ("plan",)), "s.yaml", "--run-dir", "out"])
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert rc == 2 and len(lines) == 1, err
    return lines[0]


@pytest.fixture
def no_ray_probe(monkeypatch):
    """Fails the test if the probe's ``ray.init`` subprocess (the step that can wait for minutes) starts."""
    from orchestrator.backends import ray_cluster

    run = subprocess.run

    def guarded(cmd, *args, **kwargs):
        if isinstance(cmd, list) and ray_cluster._PROBE in cmd:
            pytest.fail("the ray.init probe ran: the dead address was not refused at the TCP connect")
        return run(cmd, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", guarded)


def test_dead_address_fails_in_one_line_before_any_ray_init(capsys, no_ray_probe):
    port = _free_port()  # nothing listens there: the TCP connect is refused, Ray is never asked
    for command in ("plan", "run"):
        line = _plan_error(capsys, SWEEP.replace("ADDRESS", f"'127.0.0.1:{port}'"), command)
        assert f"backend.ray.address=127.0.0.1:{port}: no Ray cluster answered (Connection refused)" in line, line
        assert "ray start --head" in line
    assert not any(Path("out").rglob("DONE.json"))


def test_stale_auto_address_fails_in_one_line(capsys, monkeypatch, no_ray_probe):
    port = _free_port()
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")  # what a stale ray_current_cluster record amounts to
    line = _plan_error(capsys, SWEEP.replace("ADDRESS", "auto"))
    assert f"backend.ray.address=auto (= 127.0.0.1:{port}" in line and "no Ray cluster answered" in line


@pytest.mark.parametrize("command", ["plan", "run"])
def test_ray_address_in_the_environment_without_an_address_in_the_sweep_is_one_line(capsys, monkeypatch, command):
    """In-process Ray with $RAY_ADDRESS set: Ray would connect there and refuse num_cpus, after the MLflow
    runs were made. Refused at preflight, where ``address: auto`` is how a sweep uses $RAY_ADDRESS."""
    monkeypatch.setenv("RAY_ADDRESS", "bogus:1")
    line = _plan_error(capsys, TINY + "  kind: ray\n", command)
    assert line == (
        "famix: error: RAY_ADDRESS=bogus:1 is set but backend.ray.address is not: set backend.ray.address: auto "
        "in the sweep file to use that cluster, or unset RAY_ADDRESS to start Ray in-process"
    )
    written = [p.name for p in Path("out").rglob("*")]
    assert not {"plan.json", "driver.json", "mlflow.db", "ray"} & set(written), written
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()


@pytest.mark.slow
def test_an_open_port_that_is_not_ray_fails_at_the_probe_bound(capsys):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    port = srv.getsockname()[1]
    conns: list = []
    threading.Thread(target=lambda: [conns.append(srv.accept()) for _ in range(64)], daemon=True).start()
    try:
        line = _plan_error(capsys, SWEEP.replace("ADDRESS", f"'127.0.0.1:{port}'"))
    finally:
        srv.close()
    # said only when the probe's subprocess timeout (PROBE_TIMEOUT_S) fired: the wait is bounded
    assert f"backend.ray.address=127.0.0.1:{port}: no Ray cluster answered within 20 s" in line


def test_stage_bigger_than_any_node_is_refused_at_plan_time(capsys):
    text = "name: big\ngrid: {style.mix: [false, true]}\ndomains: [C]\nbackend:\n  kind: ray\n  ray: {num_cpus: 1}\n  resources: {train: {cpus: 2}}\n"
    line = _plan_error(capsys, text)
    assert line.endswith("backend.resources.train: cannot be scheduled: needs 2 CPUs, the largest node has 1 (in-process Ray (1 CPU, 0 GPUs)); "
                         "in-process Ray has the CPUs this process may use (its affinity, or SLURM_CPUS_PER_TASK in a job): "
                         "lower backend.resources.train.cpus, or set backend.ray.num_cpus"), line  # fmt: skip


class _ChildRuns:
    """Stands in for the probe's child process: the given (stdout, stderr) answers, in order."""

    def __init__(self, *answers: tuple[str, str]):
        self.answers = list(answers)
        self.calls = 0

    def __call__(self, cmd, **kw):
        out, err = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        return subprocess.CompletedProcess(cmd, 0 if out else 1, out, err)


_ZOMBIE = "Traceback (most recent call last):\n  File ...\npsutil.ZombieProcess: PID still exists but it's a zombie (pid=6486)\n"
_NODES = 'FAMIX-NODES [{"id": "n1", "cpus": 1.0, "gpus": 0.0}]\n'


@pytest.fixture()
def listening_port():
    """A port that accepts TCP connections (the probe's first check), closed afterwards."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(16)
        yield srv.getsockname()[1]


@pytest.mark.parametrize("scheme, tries", [("ray://", 2), ("", 1)])
def test_a_ray_client_connection_that_fails_fast_is_tried_again(monkeypatch, listening_port, scheme, tries):
    """Ray Client's per-connection server can die while it starts (a CI run saw psutil.ZombieProcess);
    the probe of a ray:// address tries again, a GCS address is tried once."""
    from orchestrator.backends import ray_cluster

    child = _ChildRuns(("", _ZOMBIE), (_NODES, ""))
    monkeypatch.setattr(ray_cluster.subprocess, "run", child)
    monkeypatch.setattr(ray_cluster, "_CLIENT_RETRY_DELAY_S", 0.0)
    address = f"{scheme}127.0.0.1:{listening_port}"
    if tries == 1:
        with pytest.raises(SweepError, match=r"could not connect \(psutil.ZombieProcess: PID still exists"):
            probe_cluster(address)
    else:
        assert probe_cluster(address) == [ray_cluster.NodeInfo("n1", 1.0, 0.0)]
    assert child.calls == tries


def test_a_ray_client_connection_that_keeps_failing_says_how_often_it_tried(monkeypatch, listening_port):
    from orchestrator.backends import ray_cluster

    child = _ChildRuns(("", _ZOMBIE))
    monkeypatch.setattr(ray_cluster.subprocess, "run", child)
    monkeypatch.setattr(ray_cluster, "_CLIENT_RETRY_DELAY_S", 0.0)
    with pytest.raises(SweepError) as e:
        probe_cluster(f"ray://127.0.0.1:{listening_port}")
    assert child.calls == ray_cluster.CLIENT_CONNECT_ATTEMPTS == 3
    assert f"ray://127.0.0.1:{listening_port}: could not connect after 3 tries (psutil.ZombieProcess" in str(e.value)
    assert "\n" not in str(e.value)


def test_a_ray_client_connection_that_times_out_is_tried_once_and_names_the_client_port(monkeypatch, listening_port):
    """`ray://<head>:<GCS port>` (the client server's port mixed up with the head's): each try waited
    Ray Client's own 30 s connection timeout, three times, in silence. A timeout is tried once, and
    the message says which port ray:// names."""
    from orchestrator.backends import ray_cluster

    child = _ChildRuns(("", "Traceback (most recent call last):\n  File ...\nConnectionError: ray client connection timeout\n"))
    monkeypatch.setattr(ray_cluster.subprocess, "run", child)
    monkeypatch.setattr(ray_cluster, "_CLIENT_RETRY_DELAY_S", 0.0)
    with pytest.raises(SweepError) as e:
        probe_cluster(f"ray://127.0.0.1:{listening_port}")
    assert child.calls == 1
    assert str(e.value).startswith(
        f"backend.ray.address=ray://127.0.0.1:{listening_port}: could not connect (ConnectionError: ray client connection timeout); "
        "ray:// names the Ray Client server's port (10001 unless"
    ), str(e.value)


def test_a_missing_ray_client_is_said_at_once(monkeypatch, listening_port):
    from orchestrator.backends import ray_cluster

    child = _ChildRuns(("", "ModuleNotFoundError: No module named 'grpc'\n"))
    monkeypatch.setattr(ray_cluster.subprocess, "run", child)
    with pytest.raises(SweepError, match=r"could not connect \(the ray:// form needs Ray Client"):
        probe_cluster(f"ray://127.0.0.1:{listening_port}")
    assert child.calls == 1


@pytest.mark.parametrize("address, failures, inits, retries_said", [
    ("ray://127.0.0.1:10001", 1, 2, 1),   # a fast failure, then connected
    ("ray://127.0.0.1:10001", 5, 3, 2),   # keeps failing: three tries, the last error propagates
    ("127.0.0.1:6379", 1, 1, 0),          # a GCS address: Ray's own init already waits; tried once
])  # fmt: skip
def test_the_drivers_ray_client_connection_is_tried_again(monkeypatch, address, failures, inits, retries_said):
    from orchestrator.backends import ray_cluster

    monkeypatch.setattr(ray_cluster, "_CLIENT_RETRY_DELAY_S", 0.0)
    calls = {"init": 0, "reset": 0}

    def init():
        calls["init"] += 1
        if calls["init"] <= failures:
            raise ConnectionError(f"server process died ({calls['init']})")

    def reset():  # ray.shutdown(): after every failed try
        calls["reset"] += 1

    said: list[str] = []
    if failures >= inits:
        with pytest.raises(ConnectionError, match=rf"\({inits}\)"):
            ray_cluster.connect_client(init, reset, address, said.append)
    else:
        ray_cluster.connect_client(init, reset, address, said.append)
    assert calls == {"init": inits, "reset": min(failures, inits)}
    assert said == [
        f"ray: could not connect to {address} (ConnectionError: server process died ({n})); try {n + 1} of 3 in 0 s"
        for n in range(1, retries_said + 1)
    ]


@pytest.mark.parametrize("ray_address, inits", [("ray://127.0.0.1:10001", 2), ("127.0.0.1:6379", 1), (None, 1)])
def test_auto_is_tried_again_when_ray_address_is_a_ray_client_one(monkeypatch, ray_address, inits):
    """``address: auto`` connects to $RAY_ADDRESS when set: a ray:// one gets the client's retries."""
    from orchestrator.backends import ray_cluster

    monkeypatch.setattr(ray_cluster, "_CLIENT_RETRY_DELAY_S", 0.0)
    if ray_address is None:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    else:
        monkeypatch.setenv("RAY_ADDRESS", ray_address)
    calls = []

    def init():
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("server process died")

    if inits == 1:
        with pytest.raises(ConnectionError):
            ray_cluster.connect_client(init, lambda: None, "auto")
    else:
        ray_cluster.connect_client(init, lambda: None, "auto")
    assert len(calls) == inits


@pytest.mark.ray
def test_an_interrupt_stays_an_interrupt_when_stopping_the_stages_fails():
    """A Ctrl-C whose stopping of the stages failed (Ray itself gone) came out as that failure's
    traceback, without the interrupt's line, resume command or exit 130."""
    lines: list[str] = []
    backend = create_backend("ray", sweep_dir=str(Path("runs/sw").absolute()), options={"ray": {"num_cpus": 1}}, log=lines.append)

    def ray_gone(ray, refs, grace_s=60.0):
        raise RuntimeError("ray gone")

    def ctrl_c_at_the_start(event, task, outcome):
        if event == "start":
            raise KeyboardInterrupt

    backend._stop = ray_gone
    try:
        with pytest.raises(KeyboardInterrupt):
            backend.run([_task("k", seconds=5.0)], max_parallel=1, retries=0, on_event=ctrl_c_at_the_start)
        assert "ray: could not stop the running stages (RuntimeError: ray gone)" in lines, lines
    finally:
        backend.close()


def test_the_head_asked_after_a_lost_stage_is_the_one_this_driver_reaches(monkeypatch):
    """After a lost stage the driver asks the head whether the cluster is gone. Through Ray Client
    (``ray://``, or ``auto`` with ``$RAY_ADDRESS`` one) it asks the client server it connected to: the
    GCS address the head knows itself by may be out of reach from the driver (a laptop through a
    forwarded port), and asking it would end a sweep whose cluster is fine. Otherwise it asks the GCS
    it talks to. The cluster is gone only when no try of the head answers."""
    from types import SimpleNamespace

    from orchestrator.backends import ray_backend
    from orchestrator.errors import BackendLost

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # _init_ray sets it when unset: restored after the test
    monkeypatch.setattr(ray_backend, "HEAD_PROBE_GAP_S", 0.0)
    fake_ray = SimpleNamespace(init=lambda **kw: None, shutdown=lambda: None,
                               get_runtime_context=lambda: SimpleNamespace(gcs_address="10.255.0.9:6379"))  # fmt: skip
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(16)
        port = srv.getsockname()[1]
        client = f"ray://127.0.0.1:{port}"
        for address, env, asked in ((client, None, client), ("auto", client, client), ("head:6379", None, "10.255.0.9:6379"),
                                    ("auto", "head:6379", "10.255.0.9:6379")):  # fmt: skip
            if env:
                monkeypatch.setenv("RAY_ADDRESS", env)
            backend = create_backend("ray", sweep_dir="runs/sw", options={"ray": {"address": address}}, log=lambda s: None)
            backend._init_ray(fake_ray)
            assert backend._gcs == asked, (address, env)
        backend._gcs = f"127.0.0.1:{port}"
        backend._check_cluster("train [] k was lost (NodeDiedError)")  # it answers: the stage is retried
    tries: list[str] = []
    real = ray_backend.unreachable
    monkeypatch.setattr(ray_backend, "unreachable", lambda address, timeout_s: tries.append(address) or real(address, timeout_s))
    with pytest.raises(BackendLost) as e:  # the port closed: the head is gone
        backend._check_cluster("train [] k was lost (NodeDiedError)")
    assert len(tries) == ray_backend.HEAD_PROBES == 3
    assert str(e.value) == (f"the Ray cluster at auto is gone: train [] k was lost (NodeDiedError), "
                            f"and its head (127.0.0.1:{port}) does not answer (Connection refused)")  # fmt: skip


def test_in_process_ray_takes_the_cpus_this_process_may_use(monkeypatch):
    """In-process Ray took os.cpu_count(): in a Slurm job of 1 CPU (or under taskset) on a bigger
    machine it ran as many stages at once as the machine has cores. It takes the allocation, as the
    local backend does; the plan's check of what fits reads the same number."""
    from orchestrator.backends.ray_cluster import local_nodes

    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    monkeypatch.delenv("RAY_COLOR_PREFIX", raising=False)
    assert local_nodes(None, None)[0].cpus == 1.0 and local_nodes(3, None)[0].cpus == 3.0
    lines: list[str] = []
    backend = create_backend("ray", sweep_dir=str(Path("runs/sw").absolute()), options={}, log=lines.append)
    try:
        ray = backend._ensure_ray()
        assert ray.cluster_resources()["CPU"] == 1.0
        assert any(line.startswith("ray: started in-process with 1 CPU ") for line in lines), lines
        assert os.environ["RAY_COLOR_PREFIX"] == "0"  # output not on a terminal: Ray's `(raylet)` lines without colour codes
    finally:
        backend.close()


def test_time_limit_counts_running_time_only_and_parallelism_comes_from_the_cluster():
    backend = create_backend("ray", sweep_dir=str(Path("runs/sw").absolute()), options={"ray": {"num_cpus": 1}})
    try:
        # one CPU: the second 4 s stage waits ~4 s in Ray's queue; its 6 s limit counts only its own 4 s
        tasks = [dataclasses.replace(_task(f"q{i}", seconds=4.0), resources={"timeout_min": 0.1}) for i in range(2)]
        rec = Recorder()
        out = backend.run(tasks, max_parallel=2, retries=0, on_event=rec)
        assert [out[t.key].status for t in tasks] == ["done", "done"], {k: o.error for k, o in out.items()}
        # the one waiting in Ray's queue is not shown running: its start comes once it runs, after the other
        assert rec.max_running == 1 and [e for e, _ in rec.events] == ["start", "done", "start", "done"], rec.events
        assert rec.events[0][1] == rec.events[1][1] != rec.events[2][1] == rec.events[3][1], rec.events
        # a stage that can never fit fails at once, once, saying why
        big = dataclasses.replace(_task("big", seconds=0.1), resources={"cpus": 2})
        out = backend.run([big], max_parallel=2, retries=2, on_event=Recorder())
        assert out["big"].status == "failed" and out["big"].attempts == 1
        assert out["big"].error == "synthetic: cannot be scheduled: needs 2 CPUs, the largest node has 1"
        # no --max-parallel: as many as the cluster holds (1 CPU -> 1 at a time), not the driver's CPU count
        rec = Recorder()
        backend.run([_task(f"p{i}", seconds=0.3) for i in range(3)], max_parallel=0, retries=0, on_event=rec)
        assert backend.parallelism == 1 and rec.max_running == 1
    finally:
        backend.close()


def _kill_when_it_runs(name: str, found: list[int], timeout_s: float = 60.0) -> threading.Thread:
    """A thread that SIGKILLs the first process of this test's Ray (its descendants) whose command
    line holds ``name`` (``ray::StartBoard``, ``ray::synthetic_w0``), once it runs; its PID goes to ``found``."""
    import psutil

    def watch() -> None:
        deadline = time.time() + timeout_s
        while time.time() < deadline and not found:
            for p in psutil.Process().children(recursive=True):
                try:
                    if name in " ".join(p.cmdline()):
                        p.kill()
                        found.append(p.pid)
                        return
                except psutil.Error:
                    continue
            time.sleep(0.1)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_killed_stage_timer_lets_the_stages_go_on_and_a_killed_worker_fails_its_stage_with_its_log():
    """The actor that times stages for timeout_min (killed, or its node lost) took the driver down with
    a traceback: its stages killed without a checkpoint, the MLflow runs left RUNNING. The stages now go
    on, unlimited, and the driver says so. A stage whose Ray worker was killed failed with no log path
    and nothing in its log; it now fails as the local backend's does, its log saying why."""
    lines: list[str] = []
    backend = create_backend("ray", sweep_dir=str(Path("runs/sw").absolute()), options={"ray": {"num_cpus": 2}}, log=lines.append)
    try:
        killed: list[int] = []
        watcher = _kill_when_it_runs("ray::StartBoard", killed)
        tasks = [dataclasses.replace(_task(f"q{i}", seconds=3.0), resources={"timeout_min": 5}) for i in range(2)]
        out = backend.run(tasks, max_parallel=2, retries=0, on_event=Recorder())
        watcher.join()
        assert killed, "the timer actor never ran"
        assert [out[t.key].status for t in tasks] == ["done", "done"], {k: o.error for k, o in out.items()}
        assert "ray: the stages' timer is gone (" in "\n".join(lines) and "the time limits of 2 running stages are not enforced" in "\n".join(lines), lines
        killed = []
        watcher = _kill_when_it_runs("ray::synthetic_w0", killed)
        task = _task("w0", seconds=30.0)
        out = backend.run([task], max_parallel=1, retries=0, on_event=Recorder())["w0"]
        watcher.join()
        assert killed and out.status == "failed" and out.log_path == task.log_path, out
        assert f"failed: {out.error}" in Path(task.log_path).read_text()
    finally:
        backend.close()


# ------------------------------------------------------------------------------------ a real cluster


@dataclasses.dataclass
class Cluster:
    address: str
    client: str
    temp_dir: str
    gcs_port: int


def _ours(temp_dir: str, gcs_port: int) -> list[int]:
    """PIDs of our cluster's processes (and only those): their command line names our temp dir, or they
    are its Ray Client servers (proxy and per-connection ones: no temp dir, ``--address=<ip>:<gcs_port>``),
    which would otherwise outlive the cluster and hold ports of Ray's shared specific-server range."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                cmd = (d / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if temp_dir in cmd or ("ray.util.client.server" in cmd and f":{gcs_port}\0" in cmd):
                pids.append(int(d.name))
    return _with_descendants(pids)


def _with_descendants(pids: list[int]) -> list[int]:
    """``pids`` and their processes' descendants: Ray's workers and agents (``ray::DashboardAgent``, a
    running stage) retitle themselves, so their command lines no longer name the temp dir, and they
    outlived a killed raylet by a minute or more."""
    import psutil

    found = set(pids)
    for pid in pids:
        try:
            found.update(c.pid for c in psutil.Process(pid).children(recursive=True))
        except psutil.Error:
            continue
    return sorted(found)


def _kill_ours(temp_dir: str, gcs_port: int) -> None:
    """SIGTERM, then SIGKILL, every process of the test cluster (:func:`_ours`), and wait until none is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):  # gcs_server ignores SIGTERM (ENV_NOTES)
        for pid in _ours(temp_dir, gcs_port):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + 10
        while _ours(temp_dir, gcs_port) and time.time() < deadline:
            time.sleep(0.3)
    assert not _ours(temp_dir, gcs_port), "processes of the test cluster survived"


@contextmanager
def _ray_cluster(nodes: int) -> Iterator[Cluster]:
    """A head (+ ``nodes - 1`` workers) on 127.0.0.1, 1 CPU each, own ports and temp dir; a Ray Client server on the head."""
    temp_dir = tempfile.mkdtemp(prefix="fxr-", dir="/tmp")  # short: Ray's socket paths are limited
    ray_bin = str(Path(sys.executable).parent / "ray")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": os.pathsep.join(sys.path)}
    gcs, client = _free_port(), _free_port()
    common = ["--num-cpus=1", "--disable-usage-stats", f"--temp-dir={temp_dir}"]

    taken = {gcs, client}  # every port given to either node, worker ranges included: Ray refuses a repeat

    def ports() -> list[str]:
        def fresh() -> int:
            while (p := _free_port()) in taken:
                pass
            taken.add(p)
            return p

        while True:  # a worker range that holds no port given out before, nor one in use now
            lo = _free_port() + 100
            workers = set(range(lo, lo + 41))
            if not workers & taken and all(_bindable(p) for p in workers):
                break
        taken.update(workers)
        return [f"--node-manager-port={fresh()}", f"--object-manager-port={fresh()}",
                f"--metrics-export-port={fresh()}", f"--dashboard-agent-listen-port={fresh()}",
                f"--dashboard-agent-grpc-port={fresh()}", f"--runtime-env-agent-port={fresh()}",
                f"--min-worker-port={lo}", f"--max-worker-port={lo + 40}"]  # fmt: skip

    try:
        try:
            head = [ray_bin, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs}", "--include-dashboard=false",
                    f"--ray-client-server-port={client}", *common, *ports()]  # fmt: skip
            subprocess.run(head, env=env, check=True, capture_output=True, timeout=120)
            for _ in range(nodes - 1):
                worker = [ray_bin, "start", f"--address=127.0.0.1:{gcs}", "--node-ip-address=127.0.0.1", *common, *ports()]
                subprocess.run(worker, env=env, check=True, capture_output=True, timeout=120)
        except subprocess.CalledProcessError as e:
            pytest.fail(f"ray start failed: {e.stderr.decode()[-2000:] if e.stderr else e}")
        deadline = time.time() + 60
        while len(probe_cluster(f"127.0.0.1:{gcs}")) < nodes:
            assert time.time() < deadline, "a worker node never joined"
            time.sleep(1)
        yield Cluster(f"127.0.0.1:{gcs}", f"ray://127.0.0.1:{client}", temp_dir, gcs)
    finally:
        _kill_ours(temp_dir, gcs)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def two_node_cluster():
    """Head + one worker node (see :func:`_ray_cluster`), shared by the module's tests."""
    with _ray_cluster(2) as cluster:
        yield cluster


def _client_server_logs(temp_dir: str) -> str:
    """The last lines of the cluster's Ray Client server logs (what a failed ray:// connection left there)."""
    tails = [f"--- {f.name}\n" + "\n".join(f.read_text(errors="replace").splitlines()[-15:])
             for f in sorted(Path(temp_dir).glob("session_latest/logs/ray_client_server*.err"))]  # fmt: skip
    return "\n".join(tails) or f"(no Ray Client server logs under {temp_dir})"


def _run_sweep(run_dir: str, *args: str, temp_dir: str | None = None) -> pd.DataFrame:
    rc = main(["sweep", "run", "tiny", "--run-dir", run_dir, *args])
    assert rc == 0, _client_server_logs(temp_dir) if temp_dir else f"exit status {rc}"
    return pd.read_csv(Path(run_dir) / "tiny" / "results.csv")


@pytest.mark.ray
@pytest.mark.slow
def test_two_node_cluster_runs_a_sweep_like_the_local_backend(two_node_cluster, monkeypatch, capsys):
    from orchestrator.backends import ray_backend

    Path("sweeps").mkdir()
    Path("sweeps/tiny.yaml").write_text(TINY)
    local = _run_sweep("local-runs", "--backend", "local")
    nodes: set[str] = set()
    real_run = ray_backend.RayBackend.run

    def run_and_record(self, tasks, **kw):
        out = real_run(self, tasks, **kw)
        nodes.update(o.node for o in out.values() if o.node)
        return out

    monkeypatch.setattr(ray_backend.RayBackend, "run", run_and_record)
    Path("sweeps/tiny.yaml").write_text(TINY + f"  kind: ray\n  ray: {{address: '{two_node_cluster.address}'}}\n")
    capsys.readouterr()
    on_cluster = _run_sweep("cluster-runs")
    out, err = capsys.readouterr()
    assert f"ray: connected to {two_node_cluster.address}" in out + err
    assert "Connecting to existing Ray cluster" not in out + err  # Ray's own INFO line, on a sweep's output
    pd.testing.assert_frame_equal(on_cluster, local)  # same numbers: same threads, same seeds
    cluster_nodes = {n.id for n in probe_cluster(two_node_cluster.address)}
    assert len(cluster_nodes) == 2, "the cluster no longer runs both nodes after the sweep"
    assert nodes == cluster_nodes, f"stages ran on {nodes}, the cluster has {cluster_nodes}"

    # the same through Ray Client (ray://), against the head's client server
    nodes.clear()
    Path("sweeps/tiny.yaml").write_text(TINY.replace("iterations: 6", "iterations: 5") + f"  kind: ray\n  ray: {{address: '{two_node_cluster.client}'}}\n")
    via_client = _run_sweep("client-runs", temp_dir=two_node_cluster.temp_dir)
    assert list(via_client["status"]) == ["done", "done"] and via_client[["C", "B"]].notna().all().all()
    assert nodes and nodes <= cluster_nodes, _client_server_logs(two_node_cluster.temp_dir)
    assert len(probe_cluster(two_node_cluster.address)) == 2
    import ray

    assert not ray.is_initialized()  # the driver disconnected (it would die with the cluster otherwise)


INTERRUPTED = """\
name: intr
base:
  model: {backbone: famix-tiny, pretrained: none}
  style: {strategy: none, augment: false, mix: false}
  data: {synthetic: {height: 64, width: 96, train_images: 2, val_images: 1}, crop_size: 48}
  train: {iterations: 5000, batch_size: 2, checkpoint_every: 100000, log_every: 1}
  eval: {max_images: 1}
domains: [C]
backend:
  kind: ray
  ray: {num_cpus: 1}
  resources:
    train: {cpus: 1}
"""


def _default_sigint_and_sighup() -> None:
    """In a child before it runs: SIGINT and SIGHUP as a terminal's process finds them, not as the test
    runner may have them (SIGINT ignored in a background job, SIGHUP under ``nohup``)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


@contextmanager
def _driver_training(sweep: Path, run_dir: Path) -> Iterator[subprocess.Popen]:
    """`famix sweep run` of an :data:`INTERRUPTED`-like sweep (training 5000 iterations) as a CLI process
    in its own session, given once its training has logged step 5; killed, with its group, if still
    running after. Its SIGINT and SIGHUP are at the default disposition, as a terminal's process finds
    them, whatever the test runner inherited (a shell's background job, `make test &`, starts with
    SIGINT ignored; `nohup` ignores SIGHUP)."""
    cmd = [sys.executable, "-m", "orchestrator", "sweep", "run", str(sweep), "--run-dir", str(run_dir),
           "train.iterations=5000", "train.checkpoint_every=100000"]  # overrides beat the profile
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=_default_sigint_and_sighup)  # fmt: skip
    try:
        deadline = time.time() + 300
        logs = run_dir / "intr" / "logs"
        while time.time() < deadline and proc.poll() is None:
            if any("step=5 " in f.read_text() for f in logs.glob("train-*.log")):
                break
            time.sleep(0.2)
        assert proc.poll() is None, f"the driver ended before step 5 (exit {proc.returncode}): {proc.stdout.read()[-3000:]}"
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm", "hangup"])
def test_interrupting_a_ray_sweep_checkpoints_the_running_training(tmp_path, how):
    """Ctrl-C of ``famix sweep run`` on the Ray backend: ray.cancel without force reaches the training's
    SIGINT handler, which checkpoints the iteration it is in; the driver says so and exits 130.
    SIGTERM to the driver alone (``kill``, ``famix sweep cancel``) does the same: ``ray.init`` had
    replaced the driver's handler with ``sys.exit``, so the driver exited 15 and nothing checkpointed.
    A hangup (a closed terminal: SIGHUP to the whole process group) too: it killed Ray's GCS and
    raylet, which share the driver's group, and the driver and its stages with them.

    The driver is a real CLI process (what a user interrupts), so whatever Ray does to it shows up
    here as its exit status and output, never as the end of the test session."""
    import re

    sweep = tmp_path / "intr.yaml"
    sweep.write_text(INTERRUPTED)
    run_dir = tmp_path / "runs"
    with _driver_training(sweep, run_dir) as proc:
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        elif how == "hangup":
            os.killpg(proc.pid, signal.SIGHUP)  # what a closed terminal does to its foreground group
        else:
            proc.terminate()  # the driver only
        out, _ = proc.communicate(timeout=180)
    logs = run_dir / "intr" / "logs"
    assert proc.returncode == 130, f"exit {proc.returncode}: {out[-3000:]}"
    assert "famix: interrupted; the finished stages are kept" in out, out[-3000:]
    text = next(logs.glob("train-*.log")).read_text()
    m = re.search(r"interrupted: training stopped on request at iteration (\d+)", text)
    assert m, text[-2000:]
    (latest,) = run_dir.glob("work/train/*/latest.json")
    assert json.loads(latest.read_text())["iteration"] == int(m.group(1)) >= 5


@pytest.mark.ray
@pytest.mark.slow
def test_a_ray_cluster_lost_mid_sweep_stops_the_sweep_in_one_line(tmp_path):
    """A cluster whose head died under a running sweep: each lost stage was retried on a cluster that
    was gone, the driver printed a RETRY line per stage with Ray's paragraph-long NodeDiedError, then
    hung in Ray until Ray ended its process 60 s later ("Failed to connect to GCS within 60 seconds",
    exit 1), leaving the sweep's MLflow runs RUNNING. Now the driver asks the head after a lost stage
    and, finding it gone, stops the sweep in one line that says what is kept and how to go on."""
    import re
    import sqlite3

    with _ray_cluster(1) as cluster:
        sweep = tmp_path / "intr.yaml"
        sweep.write_text(INTERRUPTED.replace("ray: {num_cpus: 1}", f"ray: {{address: '{cluster.address}'}}"))
        run_dir = tmp_path / "runs"
        with _driver_training(sweep, run_dir) as proc:
            for pid in _ours(cluster.temp_dir, cluster.gcs_port):  # the head's GCS first: every loss is seen after it
                if "gcs_server" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                    os.kill(pid, signal.SIGKILL)
            _kill_ours(cluster.temp_dir, cluster.gcs_port)  # then the rest of the cluster, its workers included
            out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 1, f"exit {proc.returncode}: {out[-3000:]}"
    last = out.strip().splitlines()[-1]
    # what the driver hears of first: the running training, or the stages' timer (an actor on the head)
    gone = rf"famix: error: the Ray cluster at {re.escape(cluster.address)} is gone: (train \[\] \w+|the stages' timer) was lost \("
    assert re.match(gone, last) and "does not answer (Connection refused)" in last, out[-3000:]
    rerun = "famix sweep run intr --profile smoke train.iterations=5000 train.checkpoint_every=100000"  # from the test's folder
    assert last.endswith(f"the finished stages are kept (a training resumes from its last checkpoint): `{rerun}` runs the rest"), last
    assert "RETRY" not in out and "Traceback" not in out and "Failed to connect to GCS" not in out, out[-3000:]
    with closing(sqlite3.connect(run_dir / "mlflow.db")) as db:
        statuses = [s for (s,) in db.execute("SELECT status FROM runs")]
    assert statuses and "RUNNING" not in statuses, statuses
