"""The slurm backend against a real one-node Slurm cluster (scripts/slurm/local_cluster.sh).

Without a reachable cluster these tests skip with the reason; with
FAMIX_REQUIRE_SLURM=1 (CI) they fail instead. FAMIX_START_SLURM=1 (as root)
starts the cluster for the session and stops it afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.backends.base import StageOutcome, StageTask

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "slurm" / "local_cluster.sh"
NASTY = "my sweep;$(touch PWNED)'q\"`x`"


@pytest.fixture(scope="session")
def slurm_cluster():
    """A reachable Slurm controller; skips (or fails under FAMIX_REQUIRE_SLURM=1) when there is none."""
    from orchestrator.backends.slurm import slurm_available

    started = False
    reason = slurm_available()
    if reason and os.environ.get("FAMIX_START_SLURM") == "1" and os.geteuid() == 0:
        proc = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.fail(f"{SCRIPT} start failed:\n{proc.stdout}\n{proc.stderr}")
        started = True
        reason = slurm_available()
    if reason:
        msg = f"Slurm cluster not reachable: {reason} (start one with: bash scripts/slurm/local_cluster.sh start)"
        if os.environ.get("FAMIX_REQUIRE_SLURM") == "1":
            pytest.fail("FAMIX_REQUIRE_SLURM=1 but " + msg)
        pytest.skip(msg)
    yield
    if started:
        subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, text=True)


@pytest.fixture
def cloudpickled_here():
    """Let submitit pickle this module's functions by value (the nodes cannot import the test module)."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def _synthetic(key: str, store: Path, *, seconds: float = 0.0, fail: str | None = None, deps=None, name=""):
    cfg = {"seconds": seconds, "value": key}
    if fail:
        cfg["fail"] = fail
    return StageTask(
        kind="synthetic", key=key, config=cfg, deps=deps or {}, store=str(store), name=name or key,
        log_path=str(store.parent / "logs" / f"{key}.log"),
    )  # fmt: skip


def _sacct_times(job_ids: list[str]) -> dict[str, tuple[float, float]]:
    """``{job_id: (start, end)}`` in epoch seconds from sacct."""
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-o", "JobID,Start,End", "-j", ",".join(sorted({j.split("_")[0] for j in job_ids}))],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    times = {}
    for line in out.splitlines():
        jid, start, end = line.split("|")
        if jid in job_ids and start not in ("Unknown", "None") and end not in ("Unknown", "None"):
            parse = lambda s: time.mktime(time.strptime(s, "%Y-%m-%dT%H:%M:%S"))  # noqa: E731
            times[jid] = (parse(start), parse(end))
    return times


def _squeue_ids(job_ids: list[str]) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True, check=True).stdout
    return [j for j in out.split() if j in set(job_ids)]


# ----------------------------------------------------------------------------- DAG, retries, failures


def test_dag_retry_failure_and_nasty_names(slurm_cluster, tmp_path):
    """mine -> train -> evaluate shaped DAG through execute_stage: retried, failed with job id + logs, deps skipped."""
    from orchestrator.backends.slurm import SlurmBackend, load_jobs

    store = tmp_path / "runs" / "store"
    tasks = [
        _synthetic("a", store, name=NASTY),
        _synthetic("b", store, fail="once", deps={"synthetic": "a"}),
        _synthetic("c", store, fail="always", deps={"synthetic": "a"}),
        _synthetic("d", store, deps={"synthetic": "c"}),
    ]
    events = []
    backend = SlurmBackend(sweep_dir=tmp_path / "runs" / NASTY, options={"slurm": {"time": 5}}, poll_s=0.5)
    out = backend.run(tasks, max_parallel=2, retries=1, on_event=lambda e, t, o: events.append((e, t.key)))

    assert out["a"].status == "done" and out["a"].attempts == 1
    assert out["b"].status == "done" and out["b"].attempts == 2  # failed once, retried in its job
    assert out["c"].status == "failed" and out["c"].attempts == 2
    assert f"slurm job {out['c'].job_id}" in out["c"].error and "synthetic failure of c" in out["c"].error
    rec = load_jobs(backend.sweep_dir)["stages"]["c"]
    assert rec["stdout"] in out["c"].error and rec["stderr"] in out["c"].error
    assert Path(rec["stdout"]).is_file()
    assert out["d"].status == "failed" and out["d"].error == "dependency c failed"
    assert ("failed", "c") in events and ("done", "a") in events
    assert (store / "synthetic" / "b" / "DONE.json").is_file()
    assert not (store / "synthetic" / "d").exists()
    # b and c went out as one array with afterok on a's job
    stages = load_jobs(backend.sweep_dir)["stages"]
    assert stages["b"]["array_job_id"] == stages["c"]["array_job_id"]
    assert stages["b"]["dependency"] == f"afterok:{out['a'].job_id}"
    # nothing from the names reached a shell: no PWNED file anywhere near, and the job name is sanitized
    assert not list(tmp_path.rglob("PWNED")) and not Path("PWNED").exists()
    name = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobName", "-j", out["a"].job_id], capture_output=True, text=True).stdout
    assert name.strip() == "famix-my_sweep_touch_PWNED_q_x-synthetic"


def test_array_cap_and_max_array_size_split(slurm_cluster, tmp_path):
    """8 stages of one kind: one array capped at 1 running task; with MaxArraySize 3 they split into 3 arrays."""
    from orchestrator.backends.slurm import SlurmBackend, load_jobs

    store = tmp_path / "runs" / "store"
    tasks = [_synthetic(f"s{i}", store) for i in range(8)]
    backend = SlurmBackend(sweep_dir=tmp_path / "runs" / "cap", options={"array_parallelism": 1}, poll_s=0.5)
    out = backend.run(tasks, max_parallel=8, retries=0, on_event=lambda *a: None)
    assert {o.status for o in out.values()} == {"done"}
    ids = [o.job_id for o in out.values()]
    assert len({i.split("_")[0] for i in ids}) == 1  # one array
    times = _sacct_times(ids)
    assert len(times) == 8
    events = sorted([(s, 1) for s, _ in times.values()] + [(e, -1) for _, e in times.values()], key=lambda x: (x[0], x[1]))
    running = peak = 0
    for _, delta in events:  # an end at second t comes before a start at t
        running += delta
        peak = max(peak, running)
    assert peak == 1, f"more than 1 task of the array ran at once: {times}"

    split = SlurmBackend(sweep_dir=tmp_path / "runs" / "split", max_array_size=3, poll_s=0.5)
    out = split.run([_synthetic(f"x{i}", store) for i in range(8)], max_parallel=8, retries=0, on_event=lambda *a: None)
    assert {o.status for o in out.values()} == {"done"}
    arrays = {r["array_job_id"] for r in load_jobs(split.sweep_dir)["stages"].values()}
    assert len(arrays) == 3


# ----------------------------------------------------------------------------- cancel, detach, status


def test_detach_status_reattach_and_cancel(slurm_cluster, tmp_path, request):
    from orchestrator.backends.slurm import SlurmBackend, cancel_sweep, load_jobs

    store = tmp_path / "runs" / "store"
    sweep_dir = tmp_path / "runs" / "cancel me"
    first = SlurmBackend(sweep_dir=sweep_dir, poll_s=0.5)
    assert first.run([_synthetic("fin", store)], max_parallel=1, retries=0, on_event=lambda *a: None)["fin"].status == "done"

    request.addfinalizer(lambda: cancel_sweep(sweep_dir))  # never leave 2-minute jobs behind on failure
    long = [_synthetic(f"long{i}", store, seconds=120) for i in range(3)]
    long.append(_synthetic("after", store, deps={"synthetic": "long0"}))
    detached = SlurmBackend(sweep_dir=sweep_dir, detach=True)
    out = detached.run(long, max_parallel=1, retries=0, on_event=lambda *a: None)
    assert {o.status for o in out.values()} == {"submitted"}
    ids = [o.job_id for o in out.values()]
    assert all(ids)
    by_key = {k: o.job_id for k, o in out.items()}

    # a new process reads the state from jobs.json + Slurm
    code = (
        "import json, sys; from orchestrator.backends.slurm import slurm_status; "
        "print(json.dumps({r['key']: r['state'] for r in slurm_status(sys.argv[1])}))"
    )
    deadline = time.time() + 30
    while True:
        proc = subprocess.run([sys.executable, "-c", code, str(sweep_dir)], capture_output=True, text=True, check=True)
        states = json.loads(proc.stdout)
        if "RUNNING" in states.values() or time.time() > deadline:
            break
        time.sleep(0.5)
    assert states["fin"] == "COMPLETED"
    assert "RUNNING" in states.values() and states["after"] == "PENDING"

    # running the same stages again adopts the live jobs instead of submitting them twice
    again = SlurmBackend(sweep_dir=sweep_dir, detach=True).run(long, max_parallel=1, retries=0, on_event=lambda *a: None)
    assert {k: o.job_id for k, o in again.items()} == by_key

    n = SlurmBackend(sweep_dir=sweep_dir).cancel(str(sweep_dir))
    assert n == 4
    deadline = time.time() + 30
    while _squeue_ids(ids) and time.time() < deadline:
        time.sleep(0.5)
    assert _squeue_ids(ids) == []
    assert (store / "synthetic" / "fin" / "DONE.json").is_file()  # finished artifacts stay
    assert len(load_jobs(sweep_dir)["submissions"]) == 3


# ----------------------------------------------------------------------------- preemption


def _counting_train(task: StageTask) -> StageOutcome:
    """A resumable stand-in training: periodic atomic checkpoints in ``config['work']``, resume on start."""
    cfg = task.config
    work = Path(cfg["work"])
    work.mkdir(parents=True, exist_ok=True)
    ckpt = work / "ckpt.json"
    state = json.loads(ckpt.read_text()) if ckpt.is_file() else {"it": 0, "w": 1.0}
    with open(work / "starts.log", "a") as f:
        f.write(f"{state['it']}\n")
    while state["it"] < cfg["iterations"]:
        state["w"] = (state["w"] * 1.000123 + 0.5 * state["it"]) % 997.0
        state["it"] += 1
        time.sleep(cfg["sleep"])
        if state["it"] % cfg["every"] == 0:
            tmp = work / "ckpt.json.tmp"
            tmp.write_text(json.dumps(state))
            os.replace(tmp, ckpt)
    return StageOutcome(key=task.key, status="done", result={"w": state["w"], "it": state["it"]})


def _expected_weight(iterations: int) -> float:
    w = 1.0
    for it in range(iterations):
        w = (w * 1.000123 + 0.5 * it) % 997.0
    return w


@pytest.mark.parametrize("how", ["interrupt", "scontrol_requeue"])
def test_preempted_training_resumes_from_checkpoint(slurm_cluster, cloudpickled_here, tmp_path, how):
    """USR2 preemption (checkpoint + requeue) and an external requeue both resume from the last checkpoint."""
    import submitit

    from orchestrator.backends.slurm import SlurmBackend

    iterations, every = 40, 5
    task = StageTask(
        kind="train", key="t", name="train t",
        config={"work": str(tmp_path / "work"), "iterations": iterations, "every": every, "sleep": 0.15},
    )  # fmt: skip
    # timeout >= 10 min, or submitit counts every USR2 as a timeout (ENV notes, pitfall 6)
    backend = SlurmBackend(sweep_dir=tmp_path / "runs" / "pre", options={"time": 15}, stage_fn=_counting_train, poll_s=0.5)
    records = backend.submit([task], retries=0)
    rec = records["t"]
    ckpt = tmp_path / "work" / "ckpt.json"
    deadline = time.time() + 60
    while not (ckpt.is_file() and json.loads(ckpt.read_text())["it"] >= 2 * every):
        assert time.time() < deadline, "training did not reach its second checkpoint"
        time.sleep(0.1)
    if how == "interrupt":
        submitit.SlurmJob(folder=rec["folder"], job_id=rec["job_id"])._interrupt()
    else:
        subprocess.run(["scontrol", "requeue", rec["job_id"]], check=True)
    out = backend.wait({"t": task}, records, lambda *a: None)["t"]
    assert out.status == "done", out.error
    starts = [int(x) for x in (tmp_path / "work" / "starts.log").read_text().split()]
    assert starts[0] == 0 and len(starts) == 2
    assert starts[1] >= 2 * every and starts[1] % every == 0  # resumed from a checkpoint, not from scratch
    assert out.result == {"w": _expected_weight(iterations), "it": iterations}
    log = Path(rec["stdout"]).read_text() + Path(rec["stderr"]).read_text()
    if how == "interrupt":
        assert "requeueing" in log
