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
from pathlib import Path

import pandas as pd
import pytest

from orchestrator.__main__ import main
from orchestrator.backends import create_backend
from orchestrator.backends.ray_cluster import probe_cluster
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


def _plan_error(capsys, text: str, *args: str) -> tuple[str, float]:
    Path("s.yaml").write_text(text)
    t0 = time.perf_counter()
    rc = main(["sweep", *(args or ("plan",)), "s.yaml", "--run-dir", "out"])
    took = time.perf_counter() - t0
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert rc == 2 and len(lines) == 1, err
    return lines[0], took


def test_dead_address_fails_in_one_line_within_30s(capsys):
    port = _free_port()  # nothing listens there
    for command in ("plan", "run"):
        line, took = _plan_error(capsys, SWEEP.replace("ADDRESS", f"'127.0.0.1:{port}'"), command)
        assert took < 30
        assert f"backend.ray.address=127.0.0.1:{port}: no Ray cluster answered (Connection refused)" in line, line
        assert "ray start --head" in line
    assert not any(Path("out").rglob("DONE.json"))


def test_stale_auto_address_fails_in_one_line(capsys, monkeypatch):
    port = _free_port()
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")  # what a stale ray_current_cluster record amounts to
    line, took = _plan_error(capsys, SWEEP.replace("ADDRESS", "auto"))
    assert took < 30 and f"backend.ray.address=auto (= 127.0.0.1:{port}" in line and "no Ray cluster answered" in line


@pytest.mark.slow
def test_an_open_port_that_is_not_ray_fails_within_30s(capsys):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    port = srv.getsockname()[1]
    conns: list = []
    threading.Thread(target=lambda: [conns.append(srv.accept()) for _ in range(64)], daemon=True).start()
    try:
        line, took = _plan_error(capsys, SWEEP.replace("ADDRESS", f"'127.0.0.1:{port}'"))
    finally:
        srv.close()
    assert took < 30, took
    assert f"backend.ray.address=127.0.0.1:{port}: no Ray cluster answered within 20 s" in line


def test_stage_bigger_than_any_node_is_refused_at_plan_time(capsys):
    text = "name: big\ngrid: {style.mix: [false, true]}\ndomains: [C]\nbackend:\n  kind: ray\n  ray: {num_cpus: 1}\n  resources: {train: {cpus: 2}}\n"
    line, _ = _plan_error(capsys, text)
    assert line.endswith("backend.resources.train: cannot be scheduled: needs 2 CPUs, the largest node has 1 (in-process Ray (1 CPUs, 0 GPUs))"), line


@pytest.mark.ray
def test_time_limit_counts_running_time_only_and_parallelism_comes_from_the_cluster():
    backend = create_backend("ray", sweep_dir=str(Path("runs/sw").absolute()), options={"ray": {"num_cpus": 1}})
    try:
        # one CPU: the second 2 s stage waits ~2 s in Ray's queue; its 3 s limit counts only its own 2 s
        tasks = [dataclasses.replace(_task(f"q{i}", seconds=2.0), resources={"timeout_min": 0.05}) for i in range(2)]
        out = backend.run(tasks, max_parallel=2, retries=0, on_event=Recorder())
        assert [out[t.key].status for t in tasks] == ["done", "done"], {k: o.error for k, o in out.items()}
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


# ------------------------------------------------------------------------------------ a real cluster


@dataclasses.dataclass
class Cluster:
    address: str
    client: str
    temp_dir: str


def _ours(marker: str) -> list[int]:
    """PIDs of the processes whose command line names our cluster's temp dir (and only those)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                if marker in (d / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(d.name))
            except OSError:
                continue
    return pids


@pytest.fixture(scope="module")
def two_node_cluster():
    """Head + one worker node on 127.0.0.1, 1 CPU each, own ports and temp dir; a Ray Client server on the head."""
    temp_dir = tempfile.mkdtemp(prefix="fxr-", dir="/tmp")  # short: Ray's socket paths are limited
    ray_bin = str(Path(sys.executable).parent / "ray")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": os.pathsep.join(sys.path)}
    gcs, client = _free_port(), _free_port()
    common = ["--num-cpus=1", "--disable-usage-stats", f"--temp-dir={temp_dir}"]

    def ports() -> list[str]:
        lo = _free_port()
        return [f"--node-manager-port={_free_port()}", f"--object-manager-port={_free_port()}",
                f"--metrics-export-port={_free_port()}", f"--dashboard-agent-listen-port={_free_port()}",
                f"--dashboard-agent-grpc-port={_free_port()}", f"--runtime-env-agent-port={_free_port()}",
                f"--min-worker-port={lo + 100}", f"--max-worker-port={lo + 140}"]  # fmt: skip

    try:
        head = [ray_bin, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs}", "--include-dashboard=false",
                f"--ray-client-server-port={client}", *common, *ports()]  # fmt: skip
        subprocess.run(head, env=env, check=True, capture_output=True, timeout=120)
        worker = [ray_bin, "start", f"--address=127.0.0.1:{gcs}", "--node-ip-address=127.0.0.1", *common, *ports()]
        subprocess.run(worker, env=env, check=True, capture_output=True, timeout=120)
        deadline = time.time() + 60
        while len(probe_cluster(f"127.0.0.1:{gcs}")) < 2:
            assert time.time() < deadline, "the second node never joined"
            time.sleep(1)
        yield Cluster(f"127.0.0.1:{gcs}", f"ray://127.0.0.1:{client}", temp_dir)
    except subprocess.CalledProcessError as e:
        pytest.fail(f"ray start failed: {e.stderr.decode()[-2000:] if e.stderr else e}")
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):  # gcs_server ignores SIGTERM (ENV_NOTES)
            for pid in _ours(temp_dir):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.time() + 10
            while _ours(temp_dir) and time.time() < deadline:
                time.sleep(0.3)
        assert not _ours(temp_dir), "processes of the test cluster survived"
        shutil.rmtree(temp_dir, ignore_errors=True)


def _run_sweep(run_dir: str, *args: str) -> pd.DataFrame:
    rc = main(["sweep", "run", "tiny", "--run-dir", run_dir, *args])
    assert rc == 0
    return pd.read_csv(Path(run_dir) / "tiny" / "results.csv")


@pytest.mark.ray
@pytest.mark.slow
def test_two_node_cluster_runs_a_sweep_like_the_local_backend(two_node_cluster, monkeypatch):
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
    on_cluster = _run_sweep("cluster-runs")
    pd.testing.assert_frame_equal(on_cluster, local)  # same numbers: same threads, same seeds
    cluster_nodes = {n.id for n in probe_cluster(two_node_cluster.address)}
    assert len(cluster_nodes) == 2, "the cluster no longer runs both nodes after the sweep"
    assert nodes == cluster_nodes, f"stages ran on {nodes}, the cluster has {cluster_nodes}"

    # the same through Ray Client (ray://), against the head's client server
    nodes.clear()
    Path("sweeps/tiny.yaml").write_text(TINY.replace("iterations: 6", "iterations: 5") + f"  kind: ray\n  ray: {{address: '{two_node_cluster.client}'}}\n")
    via_client = _run_sweep("client-runs")
    assert list(via_client["status"]) == ["done", "done"] and via_client[["C", "B"]].notna().all().all()
    assert nodes and nodes <= cluster_nodes
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


@pytest.mark.ray
@pytest.mark.slow
def test_interrupting_a_ray_sweep_checkpoints_the_running_training(tmp_path):
    """Ctrl-C of ``famix sweep run`` on the Ray backend: ray.cancel without force reaches the training's
    SIGINT handler, which checkpoints the iteration it is in; the driver says so and exits 130.

    The driver is a real CLI process (what a user interrupts), so whatever Ray does to it shows up
    here as its exit status and output, never as the end of the test session."""
    import re

    sweep = tmp_path / "intr.yaml"
    sweep.write_text(INTERRUPTED)
    run_dir = tmp_path / "runs"
    cmd = [sys.executable, "-m", "orchestrator", "sweep", "run", str(sweep), "--run-dir", str(run_dir),
           f"data.root={tmp_path / 'data'}", "train.iterations=5000", "train.checkpoint_every=100000"]  # overrides beat the profile
    # A terminal's Ctrl-C: SIGINT at its default disposition in the driver, whatever the test runner
    # inherited (a shell's background job, `make test &`, starts with SIGINT ignored, and so would the driver).
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    try:
        deadline = time.time() + 300
        logs = run_dir / "intr" / "logs"
        while time.time() < deadline and proc.poll() is None:
            if any("step=5 " in f.read_text() for f in logs.glob("train-*.log")):
                break
            time.sleep(0.2)
        assert proc.poll() is None, f"the driver ended before step 5 (exit {proc.returncode}): {proc.stdout.read()[-3000:]}"
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        out, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
    assert proc.returncode == 130, f"exit {proc.returncode}: {out[-3000:]}"
    assert "famix: interrupted" in out, out[-3000:]
    text = next(logs.glob("train-*.log")).read_text()
    m = re.search(r"interrupted: training stopped on request at iteration (\d+)", text)
    assert m, text[-2000:]
    (latest,) = run_dir.glob("work/train/*/latest.json")
    assert json.loads(latest.read_text())["iteration"] == int(m.group(1)) >= 5
