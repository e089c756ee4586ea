"""The slurm backend against a real one-node Slurm cluster (scripts/slurm/local_cluster.sh).

Without a reachable cluster these tests skip with the reason; with
FAMIX_REQUIRE_SLURM=1 (CI) they fail instead. FAMIX_START_SLURM=1 (as root)
starts the cluster for the session and stops it afterwards.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.stages import StageTask

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "slurm" / "local_cluster.sh"
NASTY = "my sweep;$(touch PWNED)'q\"`x`"


@pytest.fixture(scope="session")
def slurm_cluster():
    """A reachable Slurm controller; skips (or fails under FAMIX_REQUIRE_SLURM=1) when there is none."""
    from orchestrator.backends.slurm.cluster import slurm_available

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


def _sacct_times(job_ids: list[str], need: list[str] | None = None) -> dict[str, tuple[float, float]]:
    """``{job_id: (start, end)}`` in epoch seconds from sacct, once each of ``need`` (default: every
    id) has both: the backend saw the last one end in squeue, and accounting may lag behind it."""
    parse = lambda s: time.mktime(time.strptime(s, "%Y-%m-%dT%H:%M:%S"))  # noqa: E731
    deadline = time.time() + 30
    while True:
        out = subprocess.run(
            ["sacct", "-X", "-n", "-P", "-o", "JobID,Start,End", "-j", ",".join(sorted({j.split("_")[0] for j in job_ids}))],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        times = {}
        for line in out.splitlines():
            jid, start, end = line.split("|")
            if jid in job_ids and start not in ("Unknown", "None") and end not in ("Unknown", "None"):
                times[jid] = (parse(start), parse(end))
        if set(job_ids if need is None else need) <= set(times):
            return times
        assert time.time() < deadline, f"sacct has no start and end for {sorted(set(job_ids if need is None else need) - set(times))}: {out}"
        time.sleep(0.5)


def _squeue_ids(job_ids: list[str]) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True, check=True).stdout
    return [j for j in out.split() if j in set(job_ids)]


# ----------------------------------------------------------------------------- DAG, retries, failures


def test_dag_retry_failure_and_nasty_names(slurm_cluster, tmp_path):
    """mine -> train -> evaluate shaped DAG through execute_stage: retried, failed with job id + logs, deps skipped."""
    from orchestrator.backends.slurm.backend import SlurmBackend
    from orchestrator.backends.slurm.records import load_jobs

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


def test_a_full_disk_cancels_the_queued_jobs_and_is_not_retried(slurm_cluster, tmp_path):
    """A stage that fails on a full disk is not retried in its job, and the jobs still waiting in the
    queue are cancelled rather than started one by one to fail the same way; a running job finishes."""
    from orchestrator.backends.slurm.backend import SlurmBackend
    from orchestrator.backends.slurm.cluster import query_states

    store = tmp_path / "runs" / "store"
    tasks = [_synthetic("full", store, fail="disk_full")] + [_synthetic(f"w{i}", store, seconds=4.0) for i in range(4)]
    events = []
    backend = SlurmBackend(sweep_dir=tmp_path / "runs" / "disk", options={"slurm": {"time": 5}}, poll_s=0.5)
    out = backend.run(tasks, max_parallel=1, retries=2, on_event=lambda e, t, o: events.append((e, t.key)))

    assert out["full"].status == "failed" and out["full"].attempts == 1  # retries=2, none spent on a full disk
    assert "[Errno 28] No space left on device" in out["full"].error
    halted = [k for k, o in out.items() if o.status == "cancelled"]
    assert halted, out  # one array capped at 1: the ones behind the running one wait in the queue
    assert all(out[k].error == "not started: a stage failed on a full disk" for k in halted)
    assert {o.status for k, o in out.items() if k != "full" and k not in halted} <= {"done"}, {k: (o.status, o.error) for k, o in out.items()}
    for k in halted:
        assert ("start", k) not in events and not (store / "synthetic" / k).exists()
    states = query_states(out[k].job_id for k in halted)
    assert all(states.get(out[k].job_id) == "CANCELLED" for k in halted), states


def test_array_cap_and_max_array_size_split(slurm_cluster, tmp_path):
    """8 stages of one kind: one array capped at 1 running task; with MaxArraySize 3 they split into
    3 arrays that together keep to the cap."""
    from orchestrator.backends.slurm.backend import SlurmBackend
    from orchestrator.backends.slurm.records import load_jobs

    store = tmp_path / "runs" / "store"
    tasks = [_synthetic(f"s{i}", store, seconds=1.5) for i in range(8)]  # long enough for sacct's 1 s clock
    backend = SlurmBackend(sweep_dir=tmp_path / "runs" / "cap", options={"array_parallelism": 1}, poll_s=0.5)
    out = backend.run(tasks, max_parallel=8, retries=0, on_event=lambda *a: None)
    assert {o.status for o in out.values()} == {"done"}
    ids = [o.job_id for o in out.values()]
    assert len({i.split("_")[0] for i in ids}) == 1  # one array
    times = _sacct_times(ids)
    spans = sorted(times.values())
    assert all(end > start for start, end in spans), times  # each task visibly took time ...
    for (_, end), (start, _) in zip(spans, spans[1:]):  # ... so an overlap would show
        assert start >= end, f"more than 1 task of the array ran at once: {times}"

    # MaxArraySize 3: the 8 stages go out as 3 arrays, which share the cap of 1 running task
    # (the node has 2 CPUs, so a cap of 2 could not be exceeded here)
    split = SlurmBackend(
        sweep_dir=tmp_path / "runs" / "split", options={"array_parallelism": 1}, max_array_size=3, poll_s=0.5
    )
    tasks = [_synthetic(f"x{i}", store, seconds=1.5) for i in range(8)]
    out = split.run(tasks, max_parallel=8, retries=0, on_event=lambda *a: None)
    assert {o.status for o in out.values()} == {"done"}
    arrays = {r["array_job_id"] for r in load_jobs(split.sweep_dir)["stages"].values()}
    assert len(arrays) == 3
    stages = load_jobs(split.sweep_dir)["stages"]
    first, second, _ = sorted(arrays, key=int)
    assert {stages[f"x{i}"]["dependency"] for i in (3, 4, 5)} == {f"afterany:{first}"}  # each array waits its turn
    assert {stages[f"x{i}"]["dependency"] for i in (6, 7)} == {f"afterany:{first}:{second}"}  # all before it in line
    times = _sacct_times([o.job_id for o in out.values()])
    assert len(times) == 8
    for t, (start, end) in times.items():
        at_once = sum(1 for s, e in times.values() if s <= start < e)  # running when this one started
        assert at_once <= 1, f"more than 1 task of the split group ran at once: {times}"


def test_the_evaluations_of_a_fresh_sweep_keep_to_their_cap(slurm_cluster, tmp_path):
    """Each of 4 stages waits on its own task of the training array, as each training's evaluation pack
    does on a fresh sweep: 4 arrays of one, which the cap did not limit (2 ran at once at cap 1).
    The arrays of a kind now share its cap: each waits (afterany) for the one before it, and the one
    whose training failed is dropped alone, without holding up the next."""
    from orchestrator.backends.slurm.backend import SlurmBackend
    from orchestrator.backends.slurm.records import load_jobs

    store = tmp_path / "runs" / "store"
    tasks = [_synthetic(f"t{i}", store, fail="always" if i == 1 else None) for i in range(4)]
    tasks += [_synthetic(f"e{i}", store, seconds=3.0, deps={"synthetic": f"t{i}"}) for i in range(4)]
    # 1 CPU and 1 GB each: two fit on the 2-CPU node at once (without --mem a job holds all its memory)
    tasks = [dataclasses.replace(t, resources={"cpus": 1, "mem_gb": 1}) for t in tasks]
    backend = SlurmBackend(sweep_dir=tmp_path / "runs" / "cap", options={"array_parallelism": 1}, poll_s=0.5)
    out = backend.run(tasks, max_parallel=8, retries=0, on_event=lambda *a: None)

    assert {k: o.status for k, o in out.items()} == {**{k: "done" for k in ("t0", "t2", "t3", "e0", "e2", "e3")}, "t1": "failed", "e1": "failed"}
    assert out["e1"].error == "dependency t1 failed"
    jobs = load_jobs(backend.sweep_dir)["stages"]
    trainings = jobs["t0"]["array_job_id"]  # here the same kind as the evaluations: they wait for all of them too
    for i in (1, 2, 3):  # in line, each after all the ones before it ended, however they ended
        earlier = ":".join([trainings] + [jobs[f"e{j}"]["job_id"] for j in range(i)])
        assert jobs[f"e{i}"]["dependency"] == f"afterok:{jobs[f't{i}']['job_id']},afterany:{earlier}"
    times = _sacct_times([out[k].job_id for k in out], need=[out[f"e{i}"].job_id for i in (0, 2, 3)])
    ran = sorted(times[out[f"e{i}"].job_id] for i in (0, 2, 3))
    assert len(ran) == 3
    for (_, end), (start, _) in zip(ran, ran[1:]):
        assert start >= end, f"more than 1 evaluation ran at once: {times}"


# ----------------------------------------------------------------------------- cancel, detach, status


def test_a_job_sbatch_refuses_is_one_line_and_the_jobs_before_it_are_recorded(slurm_cluster, tmp_path, request):
    """A job sbatch refuses (a constraint, account or QOS the cluster lacks, which the plan does not check,
    or a partition removed since the plan; here a partition made unknown): the sweep ended in submitit's FailedJobError traceback, and the jobs submitted before it were
    never recorded in jobs.json (status said their jobs had ended, cancel found none, a rerun
    submitted them twice). One line now, and what was submitted is recorded."""
    from orchestrator.backends.slurm.backend import SlurmBackend
    from orchestrator.backends.slurm.records import cancel_jobs, load_jobs
    from orchestrator.errors import SweepError

    store = tmp_path / "runs" / "store"
    sweep_dir = tmp_path / "runs" / "refused"
    request.addfinalizer(lambda: cancel_jobs(sweep_dir))
    first = _synthetic("first", store, seconds=60)
    then = _synthetic("then", store, deps={"synthetic": "first"})
    backend = SlurmBackend(sweep_dir=sweep_dir, options={"slurm": {"time": 5}}, poll_s=0.5)
    real, made = backend._executor, []

    def second_wave_to_a_partition_there_is_not(folder):
        ex = real(folder)
        made.append(ex)
        if len(made) == 2:  # the first wave went out
            real_update = ex.update_parameters
            ex.update_parameters = lambda **p: real_update(**{**p, "partition": "nosuch"})
        return ex

    backend._executor = second_wave_to_a_partition_there_is_not
    with pytest.raises(SweepError) as e:
        backend.submit([first, then], max_parallel=1, retries=0)
    assert str(e.value).startswith("slurm backend: sbatch refused a job: ") and "nosuch" in str(e.value).lower(), str(e.value)
    assert "the 1 stage submitted before it runs on and is recorded" in str(e.value) and "\n" not in str(e.value)
    assert set(load_jobs(sweep_dir)["stages"]) == {"first"}


def test_a_job_its_partition_cannot_run_is_said_while_the_driver_waits(slurm_cluster, tmp_path, request):
    """`cpus_per_task: 64` on a smaller node: the job waits in the queue for good (PartitionConfig), and
    the attached driver waited with it in silence. The wait says it once, naming the reason."""
    import threading

    from orchestrator.backends.slurm.backend import SlurmBackend
    from orchestrator.backends.slurm.records import cancel_jobs

    store = tmp_path / "runs" / "store"
    sweep_dir = tmp_path / "runs" / "stuck"
    request.addfinalizer(lambda: cancel_jobs(sweep_dir))
    notes: list[str] = []
    backend = SlurmBackend(sweep_dir=sweep_dir, options={"slurm": {"time": 5, "cpus_per_task": 4096}}, poll_s=0.5,
                           notify=notes.append, stuck_after_s=0.0)  # fmt: skip
    out: dict = {}
    waiting = threading.Thread(target=lambda: out.update(backend.run([_synthetic("big", store)], max_parallel=1, retries=0)))
    waiting.start()
    deadline = time.time() + 60
    while time.time() < deadline and not any("waits in the queue" in n for n in notes):
        time.sleep(0.5)
    cancel_jobs(sweep_dir)
    waiting.join(timeout=60)
    said = [n for n in notes if "waits in the queue" in n]
    assert len(said) == 1, notes
    assert said[0].startswith("slurm job ") and " (big) waits in the queue with reason " in said[0], said
    assert "its partition cannot give what it asks" in said[0] and "will not start" not in said[0] and out["big"].status == "cancelled", (said, out)


@pytest.mark.parametrize(
    "block, why",
    [
        ("resources: {train: {cpus: 4096}}", "needs 4096 CPUs, the largest node of the default partition ({default}) has {cpus} "
                                             "(from backend.resources.train and backend.slurm)"),
        ("slurm: {partition: nosuch}", "partition 'nosuch' does not exist (partitions: {partitions}) "
                                       "(backend.slurm.partition or backend.slurm.train.partition)"),
    ],
)
def test_a_job_no_node_could_run_is_refused_before_anything_is_made_or_submitted(slurm_cluster, tmp_path, capsys, block, why):
    """`cpus: 4096` on a 2-CPU node: `sweep plan` passed it and `sweep run` submitted the mining and
    training jobs, the trainings then pending for good (PartitionConfig). A partition that does not
    exist: sbatch refused the first job of it, after the jobs before it were out. Both are refused now
    by `plan` and `run`, in one line, before the run dir is made or a job submitted."""
    from orchestrator.__main__ import main

    from orchestrator.backends.slurm.cluster import cluster_shape

    shape = cluster_shape()  # what this cluster has, as the check reads it
    (default,) = [name for name, p in shape.partitions.items() if p.default]
    cpus = max(n.cpus for n in shape.nodes.values() if default in n.partitions)
    expected = why.format(default=default, cpus=cpus, partitions=", ".join(sorted(shape.partitions)))
    sweep = tmp_path / "never.yaml"
    sweep.write_text(MINI_SWEEP.replace("name: mini-slurm", "name: never").replace("  slurm: {time: 15, array_parallelism: 2}", f"  {block}"))
    run_dir = tmp_path / "runs"
    before = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True).stdout.split()
    for command in ("plan", "run"):
        assert main(["sweep", command, str(sweep), "--backend", "slurm", "--run-dir", str(run_dir)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"famix: error: slurm backend: the train jobs could never run: {expected}; nothing was submitted"], err
    assert not run_dir.exists()
    # nothing new in the queue (a job an earlier test cancelled may still be leaving it: before, not after)
    assert not set(subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True).stdout.split()) - set(before)


def test_cancel_takes_the_queued_jobs_before_the_trainings_end_on_their_checkpoint(monkeypatch, tmp_path):
    """`famix sweep cancel` during a training: the training's job, asked to checkpoint, ended well, so
    the evaluations waiting on it (afterok) started before they were cancelled, and failed on a model
    that was not there. The queued jobs are cancelled first now."""
    import submitit

    from orchestrator.backends.slurm import records

    calls: list[tuple[str, str]] = []
    stages = {
        "t": {"job_id": "8_0", "kind": "train", "folder": str(tmp_path)},
        "e": {"job_id": "9", "kind": "evaluate", "folder": str(tmp_path)},
    }
    answers = iter([{"8_0": "RUNNING", "9": "PENDING"}])
    monkeypatch.setattr(records, "load_jobs", lambda sweep_dir: {"stages": stages})
    monkeypatch.setattr(records, "slurm_available", lambda: None)
    monkeypatch.setattr(records, "query_states", lambda ids: next(answers, {"8_0": "COMPLETED"}))
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(("signal", cmd[-1])))

    class Job:
        def __init__(self, folder, job_id):
            self.job_id = job_id

        def cancel(self, check=True):
            calls.append(("cancel", self.job_id))

    monkeypatch.setattr(submitit, "SlurmJob", Job)
    assert records.cancel_jobs(tmp_path) == 2
    assert calls[:2] == [("cancel", "9"), ("signal", "8_0")], calls


def test_detach_status_reattach_and_cancel(slurm_cluster, tmp_path, request):
    from orchestrator.backends.slurm.backend import SlurmBackend
    from orchestrator.backends.slurm.records import cancel_jobs, load_jobs

    store = tmp_path / "runs" / "store"
    sweep_dir = tmp_path / "runs" / "cancel me"
    first = SlurmBackend(sweep_dir=sweep_dir, poll_s=0.5)
    assert first.run([_synthetic("fin", store)], max_parallel=1, retries=0, on_event=lambda *a: None)["fin"].status == "done"

    request.addfinalizer(lambda: cancel_jobs(sweep_dir))  # never leave 2-minute jobs behind on failure
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
        "import json, sys; from orchestrator.backends.slurm.records import slurm_status; "
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


# ----------------------------------------------------------------------------- preemption (real engine)


def _tiny_train_task(tmp_path: Path, store: Path, iterations: int, every: int) -> StageTask:
    """A famix-tiny training stage on a tiny synthetic benchmark (CPU, about 0.5 s per iteration)."""
    from famix_core.config import FamixConfig

    cfg = FamixConfig.model_validate(
        {
            "model": {"backbone": "famix-tiny", "pretrained": "none", "freeze": "paper"},
            "style": {"strategy": "famix", "augment": False, "mix": True},  # MixStyle: no bank needed
            "data": {
                "root": str(tmp_path / "data"),
                "synthetic": {"seed": 0, "height": 64, "width": 128, "train_images": 8, "val_images": 2},
                "crop_size": 64,
            },
            "train": {"iterations": iterations, "batch_size": 2, "checkpoint_every": every, "log_every": 1, "device": "cpu"},
        }
    )
    return StageTask(
        kind="train", key="7a" * 32, config=cfg.to_dict(), store=str(store), name="train tiny",
        log_path=str(store.parent / "logs" / "train.log"), resources={"cpus": 1, "timeout_min": 15},
    )  # fmt: skip


def _logged_steps(log_path: Path) -> list[list[int]]:
    """Steps logged by each start of the stage (one list per ``start`` line of the stage log)."""
    runs: list[list[int]] = []
    for line in log_path.read_text().splitlines():
        if " start train " in line:
            runs.append([])
        elif " step=" in line and runs:
            runs[-1].append(int(line.split(" step=")[1].split()[0]))
    return runs


def _job_diagnostics(rec: dict, stage_log: str | None = None) -> str:
    """What Slurm, the job's own files and the stage log say about a job: for a failing assertion's message."""
    acct = subprocess.run(
        ["sacct", "-j", rec["job_id"], "-o", "JobID,State,ExitCode,Start,End,Reason", "-P"],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    ctl = subprocess.run(["scontrol", "show", "job", rec["job_id"]], capture_output=True, text=True, check=False)
    tails = []
    for key, where in (("stdout", rec.get("stdout")), ("stderr", rec.get("stderr")), ("stage log", stage_log)):
        path = Path(where or "")
        if path.is_file():
            tails.append(f"--- {key}:\n" + "\n".join(path.read_text(errors="replace").splitlines()[-25:]))
    log = Path(os.environ.get("FAMIX_SLURM_DIR", "/var/spool/famix-slurm")) / "log" / "slurmctld.log"
    if log.is_file():
        lines = [x for x in log.read_text(errors="replace").splitlines() if rec["job_id"] in x]
        tails.append("--- slurmctld.log:\n" + "\n".join(lines[-25:]))
    return f"\nsacct:\n{acct}\nscontrol:\n{ctl.stdout}{ctl.stderr}\n" + "\n".join(tails)


def _latest_ckpt_iteration(work: Path) -> int:
    from famix_core.checkpoint import latest_checkpoint, load_checkpoint

    try:
        path = latest_checkpoint(work) if work.is_dir() else None
        return load_checkpoint(path, "cpu").iteration if path is not None else 0
    except (OSError, ValueError, RuntimeError):  # rotated away while we looked: ask again later
        return 0


def test_preempted_and_requeued_training_resumes_to_the_same_weights(slurm_cluster, tmp_path):
    """A training job is preempted (USR2: checkpoint at the current iteration + requeue), later
    requeued from outside (``scontrol requeue``, no signal): it resumes from the preemption's
    checkpoint, then from its latest periodic one, and ends with the weights of an uninterrupted run."""
    import submitit
    import torch
    from safetensors.torch import load_file

    from orchestrator.backends.slurm.backend import SlurmBackend
    from orchestrator.execute import execute_stage

    # The job must still be training when it is preempted and when it is requeued, on a quiet
    # machine as on a busy one: size the run to about 30 s of this machine's iterations (the outside
    # requeue comes at about two thirds, and the job must outlast its 5 s KillWait after it). A probe
    # that reads slow (a cold process, a busy moment) would size the run too short and let the job
    # finish before the signal lands, so the run never has fewer than 300 iterations (~15 s here).
    probe_store = tmp_path / "probe" / "store"
    probe_task = _tiny_train_task(tmp_path, probe_store, 20, 20)
    probe = execute_stage(probe_task)  # also generates the data
    assert probe.status == "done", probe.error
    summary = json.loads((probe_store / "train" / probe_task.key / "summary.json").read_text())
    seconds_per_iteration = 2 / summary["images_per_s"]  # batch size 2
    iterations = min(2400, max(300, int(30 / seconds_per_iteration)))
    every = iterations // 10
    ref_store = tmp_path / "ref" / "store"
    ref = execute_stage(_tiny_train_task(tmp_path, ref_store, iterations, every))
    assert ref.status == "done", ref.error

    store = tmp_path / "runs" / "store"
    task = _tiny_train_task(tmp_path, store, iterations, every)
    backend = SlurmBackend(sweep_dir=tmp_path / "runs" / "preempt", options={"time": 15}, poll_s=0.5)
    rec = backend.submit([task], retries=0)[task.key]
    work = store.parent / "work" / "train" / task.key  # runs/work/train/<key>: the stage's periodic checkpoints

    def wait_ckpt(at_least: int) -> None:
        deadline = time.time() + 120
        while _latest_ckpt_iteration(work) < at_least:
            assert time.time() < deadline, f"no checkpoint at iteration >= {at_least}" + _job_diagnostics(rec, task.log_path)
            time.sleep(0.2)

    wait_ckpt(every)
    assert _latest_ckpt_iteration(work) < iterations // 2, "the job trains too fast for this test" + _job_diagnostics(rec, task.log_path)
    submitit.SlurmJob(folder=rec["folder"], job_id=rec["job_id"])._interrupt()  # preemption (timeout_min >= 10)
    deadline = time.time() + 120
    while len(_logged_steps(Path(task.log_path))) < 2:
        assert time.time() < deadline, "the preempted job did not start again" + _job_diagnostics(rec, task.log_path)
        time.sleep(0.2)
    wait_ckpt(_latest_ckpt_iteration(work) + every)
    subprocess.run(["scontrol", "requeue", rec["job_id"]], check=True)  # external requeue: no USR2

    out = backend.wait({task.key: task}, {task.key: rec}, lambda *a: None)[task.key]
    assert out.status == "done", f"{out.error}" + _job_diagnostics(rec, task.log_path)
    runs = _logged_steps(Path(task.log_path))
    assert len(runs) == 3, runs
    assert runs[0][0] == 1
    # preempted (USR2): the training checkpointed the iteration it was in, so nothing is redone
    assert runs[1][0] == runs[0][-1] + 1, runs
    # requeued from outside (no signal): it continues from its latest periodic checkpoint, not from scratch
    assert runs[2][0] > runs[1][0] and (runs[2][0] - 1) % every == 0 and runs[2][0] - 1 <= runs[1][-1], runs
    assert runs[-1][-1] == iterations
    stdout = Path(rec["stdout"]).read_text()
    assert "training stopped on request" in stdout and "requeueing" in stdout  # engine first, then checkpoint()

    got = load_file(str(store / "train" / task.key / "model.safetensors"))
    want = load_file(str(ref_store / "train" / task.key / "model.safetensors"))
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_cancel_checkpoints_a_running_training_and_a_rerun_resumes_there(slurm_cluster, tmp_path):
    """`famix sweep cancel` on Slurm (scancel --signal=USR1 to running trainings, then scancel): the
    running training checkpoints the iteration it is in, the job is not requeued, and the next run
    resumes from that iteration."""
    from orchestrator.backends.slurm.backend import SlurmBackend

    store = tmp_path / "runs" / "store"
    task = _tiny_train_task(tmp_path, store, 600, 100000)  # ~30 s of training here; no periodic checkpoint
    sweep_dir = tmp_path / "runs" / "cancel"
    backend = SlurmBackend(sweep_dir=sweep_dir, options={"time": 15}, poll_s=0.5)
    rec = backend.submit([task], retries=0)[task.key]
    log = Path(task.log_path)
    deadline = time.time() + 180
    while not (log.is_file() and " step=5 " in log.read_text()):
        assert time.time() < deadline, "the training never reached step 5" + _job_diagnostics(rec, task.log_path)
        time.sleep(0.2)
    assert SlurmBackend(sweep_dir=sweep_dir).cancel(str(sweep_dir)) == 1
    deadline = time.time() + 60
    while _squeue_ids([rec["job_id"]]) and time.time() < deadline:
        time.sleep(0.5)
    assert _squeue_ids([rec["job_id"]]) == [], "the cancelled job is still queued" + _job_diagnostics(rec, task.log_path)
    text = log.read_text()
    m = re.search(r"interrupted: training stopped on request at iteration (\d+)", text)
    assert m, "no checkpoint on cancel" + _job_diagnostics(rec, task.log_path)
    stopped = int(m.group(1))
    work = store.parent / "work" / "train" / task.key
    assert _latest_ckpt_iteration(work) == stopped >= 5
    assert len(_logged_steps(log)) == 1  # not requeued
    assert "requeueing" not in Path(rec["stdout"]).read_text()

    # the next run resumes at the next iteration and finishes
    out = SlurmBackend(sweep_dir=sweep_dir, options={"time": 15}, poll_s=0.5).run([task], max_parallel=1, retries=0, on_event=lambda *a: None)
    assert out[task.key].status == "done", out[task.key].error
    runs = _logged_steps(log)
    assert len(runs) == 2 and runs[1][0] == stopped + 1 and runs[1][-1] == 600, runs


# ----------------------------------------------------------------------------- a smoke sweep, local vs slurm

MINI_SWEEP = """\
name: mini-slurm
grid:
  model.freeze: [none, paper]
labels:
  model.freeze: {column: Freeze, values: {paper: "yes; $(touch PWNED)", none: "no 'x' \\"y\\""}}
base:
  style: {strategy: famix, augment: false, mix: true}
profiles:
  smoke:
    base:
      data: {synthetic: {seed: 0, height: 64, width: 128, train_images: 8, val_images: 2}}
      train: {iterations: 4, batch_size: 2, checkpoint_every: 2, log_every: 1}
      eval: {max_images: 2}
domains: [C, B]
backend:
  slurm: {time: 15, array_parallelism: 2}
"""


def _mlflow_contents(db: Path) -> dict[str, tuple]:
    """Per trial (by its Freeze label): metrics at step 0, the train/loss curve, the artifact files, and
    which of the training-cost metrics it has (their values are timings: they differ run to run)."""
    import sqlite3

    from reports.schema import TRAIN_COST_METRICS

    cost = set(TRAIN_COST_METRICS.values())

    with sqlite3.connect(db) as con:
        dups = con.execute("SELECT run_uuid, key, step, COUNT(*) FROM metrics GROUP BY run_uuid, key, step HAVING COUNT(*) > 1").fetchall()
        assert dups == [], f"metrics logged twice: {dups[:5]}"
        runs = con.execute(
            "SELECT r.run_uuid, t.value FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
            "JOIN tags role ON role.run_uuid = r.run_uuid AND role.key = 'famix.role' AND role.value = 'trial' "
            "WHERE t.key = 'famix.label.Freeze'"
        ).fetchall()
        out = {}
        for run, freeze in runs:
            rows = con.execute("SELECT key, step, value FROM metrics WHERE run_uuid = ?", (run,)).fetchall()
            art = con.execute("SELECT artifact_uri FROM runs WHERE run_uuid = ?", (run,)).fetchone()[0]
            files = sorted(str(p.relative_to(art[len("file://"):])) for p in Path(art[len("file://"):]).rglob("*") if p.is_file())
            out[freeze] = (
                {k: round(v, 6) for k, step, v in rows if k != "train/loss" and not k.startswith("system/") and k not in cost},
                sorted((step, round(v, 6)) for k, step, v in rows if k == "train/loss"),
                files,
                sorted(k for k, _, _ in rows if k in cost),
            )
    return out


def test_smoke_sweep_on_slurm_matches_local(slurm_cluster, tmp_path, monkeypatch):
    """The same sweep (2 trainings, 16 evaluations) through the driver on local and on slurm: same stage
    keys, numbers and MLflow contents. On Slurm the driver is MLflow's only writer (the stages never
    open the SQLite file on the shared filesystem): nothing lost, nothing logged twice, also when
    the sweep is collected again."""
    import io

    import pandas as pd
    from rich.console import Console

    from orchestrator.__main__ import main
    from orchestrator.backends.slurm.backend import SlurmBackend
    from orchestrator.driver import RunOptions, prepare, run_plan

    submitted: list[StageTask] = []
    real_submit = SlurmBackend.submit

    def spy_submit(self, tasks, **kw):
        submitted.extend(tasks)
        return real_submit(self, tasks, **kw)

    monkeypatch.setattr(SlurmBackend, "submit", spy_submit)
    Path("sweeps").mkdir(exist_ok=True)
    Path("sweeps/mini.yaml").write_text(MINI_SWEEP.replace("domains: [C, B]", "domains: [C, B, M, S, AN, AS, AR, AF]"))
    results = {}
    for backend in ("local", "slurm"):
        run_dir = tmp_path / f"runs {backend};$(touch PWNED)'"
        plan = prepare("mini", run_dir=run_dir)
        res = run_plan(plan, RunOptions(backend=backend), Console(file=io.StringIO(), width=200))
        assert res.exit_code == 0, (backend, res.failed, {k: o.error for k, o in res.outcomes.items()})
        results[backend] = (plan, res, pd.read_csv(res.results_csv))
    assert len(submitted) == 18 and all(t.tracking["uri"] is None for t in submitted)
    local_db, slurm_db = (results[b][0].run_dir / "mlflow.db" for b in ("local", "slurm"))
    expected = _mlflow_contents(local_db)
    assert _mlflow_contents(slurm_db) == expected
    assert all(len(m) > 16 * 3 and len(curve) == 4 and costs == ["train/images_per_s", "train/peak_mem_mb", "train/seconds"] for m, curve, _, costs in expected.values())
    # collected again (the full path, then status): nothing new, nothing twice
    sp = results["slurm"][0]
    (sp.sweep_dir / "finalized.json").unlink()
    assert run_plan(sp, RunOptions(backend="slurm"), Console(file=io.StringIO(), width=200)).exit_code == 0
    assert main(["sweep", "status", "mini", "--run-dir", str(sp.run_dir)]) == 0
    assert _mlflow_contents(slurm_db) == expected
    (_, lres, ldf), (sp, sres, sdf) = results["local"], results["slurm"]
    assert sorted(lres.outcomes) == sorted(sres.outcomes)  # same stage keys
    assert all(o.job_id for o in sres.outcomes.values())
    pd.testing.assert_frame_equal(ldf, sdf)
    assert sdf[["C", "B", "AF"]].notna().all().all()

    jobs = json.loads((sp.sweep_dir / "slurm" / "jobs.json").read_text())
    assert set(jobs["stages"]) == set(sres.outcomes)
    assert not list(tmp_path.rglob("PWNED")) and not Path("PWNED").exists()
    contents = _mlflow_contents(sp.run_dir / "mlflow.db")
    assert len(contents) == 2
    for _, row in sdf.iterrows():
        assert contents[row["Freeze"]][0]["miou/C"] == pytest.approx(row["C"], abs=1e-3)  # the CSV rounds


# ----------------------------------------------------------------------------- packs (backend.slurm.pack)

PACK_SWEEP = """\
name: pack-slurm
grid:
  model.freeze: [paper]
base:
  style: {strategy: famix, augment: false, mix: true}
profiles:
  smoke:
    base:
      data: {synthetic: {seed: 0, height: 64, width: 128, train_images: 8, val_images: 2}}
      train: {iterations: 4, batch_size: 2, checkpoint_every: 2, log_every: 1}
      eval: {max_images: 2}
domains: [C, B, M, S, AN, AS, AR, AF]
backend:
  slurm: {time: 15, array_parallelism: 2, pack: PACK}
"""


def test_packed_evaluations_run_as_one_job_with_the_results_of_unpacked_ones(slurm_cluster, tmp_path):
    """One trained model on the 8 domains: with pack [evaluate] its 8 evaluations are one Slurm job, with the
    same stage keys, artifacts and results.csv as with packing off (8 jobs); a rerun of the pack is all cached."""
    import io

    import pandas as pd
    from rich.console import Console

    from orchestrator.backends.slurm.backend import SlurmBackend
    from orchestrator.driver import RunOptions, prepare, run_plan, stage_tasks

    Path("sweeps").mkdir(exist_ok=True)
    runs = {}
    for pack in ("[evaluate]", "none"):
        Path("sweeps/pack.yaml").write_text(PACK_SWEEP.replace("PACK", pack))
        plan = prepare("pack", run_dir=tmp_path / f"runs-{pack.strip('[]')}")
        res = run_plan(plan, RunOptions(backend="slurm"), Console(file=io.StringIO(), width=200))
        assert res.exit_code == 0, (pack, {k: o.error for k, o in res.outcomes.items() if o.error})
        jobs = json.loads((plan.sweep_dir / "slurm" / "jobs.json").read_text())["stages"]
        runs[pack] = (plan, res, pd.read_csv(res.results_csv), jobs)
    (plan, res, df, jobs), (_, ures, udf, ujobs) = runs["[evaluate]"], runs["none"]

    evals = sorted(k for k, s in plan.stages.items() if s.kind == "evaluate")
    assert len(evals) == 8
    assert sorted(res.outcomes) == sorted(ures.outcomes)  # same stage keys
    assert len({jobs[k]["job_id"] for k in evals}) == 1  # packed: the 8 evaluations are one job ...
    assert jobs[evals[0]]["pack"] == [k for k, s in plan.stages.items() if s.kind == "evaluate"]
    (train,) = [k for k, s in plan.stages.items() if s.kind == "train"]
    assert jobs[train]["job_id"] not in {jobs[k]["job_id"] for k in evals}  # ... after the training's own job
    assert jobs[evals[0]]["dependency"] == f"afterok:{jobs[train]['job_id']}"
    assert len({ujobs[k]["job_id"] for k in evals}) == 8 and "pack" not in ujobs[evals[0]]  # unpacked: 8 jobs
    assert all(res.outcomes[k].status == "done" and res.outcomes[k].job_id == jobs[k]["job_id"] for k in evals)
    pd.testing.assert_frame_equal(df, udf)
    assert df[["C", "B", "M", "S", "AN", "AS", "AR", "AF"]].notna().all().all()
    stores = [runs[p][0].store.root for p in ("[evaluate]", "none")]
    for key in evals:  # the same artifacts: results, metrics and confusion matrices
        done = [json.loads((s / "evaluate" / key / "DONE.json").read_text())["result"] for s in stores]
        assert done[0] == done[1], key
        for name in ("confusion.json", "metrics.json"):
            a, b = (json.loads((s / "evaluate" / key / name).read_text()) for s in stores)
            if name == "metrics.json":
                a.pop("seconds"), b.pop("seconds")
            assert a == b, (key, name)
    stdout = Path(jobs[evals[0]]["stdout"]).read_text()
    assert stdout.count("attempt 1/2") == 8  # every stage ran in the one job

    # the pack again: one job, every stage cached
    tasks = [t for t in stage_tasks(plan, {k: "to run" for k in plan.stages}, {}, None, {}) if t.kind == "evaluate"]
    again = SlurmBackend(plan.sweep_dir, options=plan.sweep.backend.model_dump(), poll_s=0.5).run(tasks, retries=0, on_event=lambda *a: None)
    assert {o.status for o in again.values()} == {"cached"}
    assert len({o.job_id for o in again.values()}) == 1


def _fails_on_domain_b(task, stop):
    """A stand-in stage runner (pickled by value): the evaluation of domain B fails, every other one is done."""
    from orchestrator.stages import StageOutcome

    if task.domain == "B":
        raise RuntimeError("broken domain folder B")
    return StageOutcome(task.key, "done", 0.1, 1, result={"domain": task.domain})


def test_a_failed_stage_of_a_pack_fails_alone(slurm_cluster, cloudpickled_here, tmp_path):
    from orchestrator.backends.slurm.backend import SlurmBackend
    from orchestrator.backends.slurm.records import load_jobs

    store = tmp_path / "runs" / "store"
    tasks = [
        StageTask(kind="evaluate", key=f"{d.lower()}" * 32, config={}, deps={"train": "7" * 64}, domain=d, store=str(store),
                  name=f"evaluate/{d}", log_path=str(store.parent / "logs" / f"{d}.log"))
        for d in ("C", "B", "M", "S")
    ]  # fmt: skip
    events = []
    backend = SlurmBackend(sweep_dir=tmp_path / "runs" / "pack", options={"time": 5}, execute=_fails_on_domain_b, poll_s=0.5)
    out = backend.run(tasks, retries=1, on_event=lambda e, t, o: events.append((e, t.domain)))
    assert {t.domain: out[t.key].status for t in tasks} == {"C": "done", "B": "failed", "M": "done", "S": "done"}
    bad = out[tasks[1].key]
    assert bad.attempts == 2 and "broken domain folder B" in bad.error and f"slurm job {bad.job_id}" in bad.error
    assert [o.result for o in out.values() if o.status == "done"] == [{"domain": "C"}, {"domain": "M"}, {"domain": "S"}]
    stages = load_jobs(backend.sweep_dir)["stages"]
    assert len({stages[t.key]["job_id"] for t in tasks}) == 1  # one job ...
    deadline = time.time() + 60  # every stage is reported once its outcome is written, maybe before the job has ended
    while True:
        state = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "State", "-j", bad.job_id], capture_output=True, text=True).stdout
        if state.split() and state.split()[0] not in ("PENDING", "RUNNING", "COMPLETING") or time.time() > deadline:
            break
        time.sleep(0.5)
    assert state.split()[0] == "FAILED"  # ... that Slurm marks FAILED, so nothing could run afterok on it
    assert ("failed", "B") in events and {("done", d) for d in "CMS"} <= set(events)
    while "slurm jobs: 1 FAILED (4 stages)" not in (said := "\n".join(SlurmBackend.status(backend.sweep_dir))):
        assert time.time() < deadline + 30, said  # squeue may list the job RUNNING a moment after sacct's FAILED
        time.sleep(0.5)


def test_cli_detach_then_status_then_collect(slurm_cluster, tmp_path, capsys):
    """`famix sweep run --detach` submits and exits; `status` shows the jobs; a rerun collects the table."""
    from orchestrator.__main__ import main

    Path("sweeps").mkdir(exist_ok=True)
    Path("sweeps/mini.yaml").write_text(MINI_SWEEP)
    run_dir = str(tmp_path / "runs")
    assert main(["sweep", "run", "mini", "--backend", "slurm", "--detach", "--run-dir", run_dir]) == 0
    out = capsys.readouterr().out
    assert "detached:" in out and "submitted to slurm" in out
    # it prints the command that follows this plan; the loop below runs it as printed
    follow = [line.strip() for line in out.splitlines() if line.strip().startswith("famix sweep status ")]
    collect = [line.strip() for line in out.splitlines() if line.strip().startswith("famix sweep run ")]
    assert len(follow) == 1 and follow[0].endswith(" --profile smoke"), out
    assert collect == [follow[0].replace(" status ", " run ", 1) + " --backend slurm"], out
    status_args, run_args = shlex.split(follow[0])[1:], shlex.split(collect[0])[1:]
    jobs = json.loads((tmp_path / "runs" / "mini-slurm" / "slurm" / "jobs.json").read_text())
    assert len(jobs["stages"]) == 6  # 2 trainings + 2 x 2 evaluations (MixStyle needs no bank)
    deadline = time.time() + 240
    seen = ""
    while True:
        assert main(status_args) == 0
        out = capsys.readouterr().out
        seen += " ".join(out.split())
        assert "slurm jobs:" in out
        if not _squeue_ids([r["job_id"] for r in jobs["stages"].values()]):
            break
        assert time.time() < deadline, out
        time.sleep(2)
    # the jobs ended without a driver: `status` logged what they recorded into MLflow (the only writer now)
    assert "MLflow: logged the finished stages' metrics of" in seen
    assert main(["sweep", "status", "mini", "--run-dir", run_dir]) == 0
    contents = _mlflow_contents(tmp_path / "runs" / "mlflow.db")
    assert len(contents) == 2 and all({"miou/C", "miou/B", "miou/mean"} <= set(m) and len(c) == 4 for m, c, *_ in contents.values())
    assert main(run_args) == 0
    out = capsys.readouterr().out
    assert "| Freeze" in out and "0 failed" in out
    assert _mlflow_contents(tmp_path / "runs" / "mlflow.db") == contents  # collected: nothing twice


def test_cli_cancel_of_a_detached_sweep_ends_its_mlflow_runs(slurm_cluster, tmp_path, capsys):
    """`famix sweep cancel` of a detached sweep: the jobs are cancelled and no MLflow run is left
    RUNNING (they were, for good: no driver was there to end them). Slurm tells when the jobs have
    ended (`status` then ends the runs nothing runs any more)."""
    import sqlite3

    from orchestrator.__main__ import main
    from orchestrator.backends.slurm.backend import SlurmBackend
    from orchestrator.backends.slurm.records import slurm_status

    Path("sweeps").mkdir(exist_ok=True)
    Path("sweeps/mini.yaml").write_text(MINI_SWEEP)
    run_dir = str(tmp_path / "runs")
    args = ["mini", "--run-dir", run_dir, "train.iterations=400"]  # trainings still running when cancelled
    assert main(["sweep", "run", *args, "--backend", "slurm", "--detach"]) == 0
    capsys.readouterr()
    sweep_dir = tmp_path / "runs" / "mini-slurm"
    jobs = json.loads((sweep_dir / "slurm" / "jobs.json").read_text())
    assert not SlurmBackend.jobs_ended(sweep_dir)  # queued or running: `status` leaves their runs alone
    assert main(["sweep", "cancel", *args, "--backend", "slurm"]) == 0
    out = capsys.readouterr().out
    deadline = time.time() + 30
    while not SlurmBackend.jobs_ended(sweep_dir):  # a cancelled job may be COMPLETING a moment, and sacct learns of it later
        assert time.time() < deadline, [(r["job_id"], r["state"], r["status"]) for r in slurm_status(sweep_dir)]
        time.sleep(1)
    assert not _squeue_ids([r["job_id"] for r in jobs["stages"].values()]), out
    with sqlite3.connect(tmp_path / "runs" / "mlflow.db") as con:
        states = [s for (s,) in con.execute("SELECT status FROM runs")]
    assert len(states) == 3 and "RUNNING" not in states and "KILLED" in states, (states, out)
    assert "of the cancelled jobs KILLED" in out



def test_an_attached_driver_stopped_by_cancel_says_its_jobs_were_cancelled(slurm_cluster, tmp_path, request):
    """`famix sweep cancel` cancels the jobs, then sends the attached driver SIGTERM: its last line said
    the jobs "go on unless cancelled" and told to run the cancel just run."""
    from orchestrator.backends.slurm.records import cancel_jobs

    Path("sweeps").mkdir(exist_ok=True)
    Path("sweeps/mini.yaml").write_text(MINI_SWEEP)
    args = ["mini", "--run-dir", "runs", "train.iterations=400"]  # trainings still running when cancelled
    sweep_dir = tmp_path / "runs" / "mini-slurm"
    request.addfinalizer(lambda: cancel_jobs(sweep_dir))
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "sweep", "run", *args, "--backend", "slurm"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.time() + 120
        # a training job is in its loop (the log is opened before torch is imported and the training's
        # stop request armed: a cancel then would wait out its grace period rather than checkpoint)
        while not any(" step=" in p.read_text() for p in (sweep_dir / "logs").glob("train-*.log")):
            assert proc.poll() is None and time.time() < deadline, proc.communicate(timeout=30)
            time.sleep(0.5)
        cancel = subprocess.run([sys.executable, "-m", "orchestrator", "sweep", "cancel", *args, "--backend", "slurm"],
                                capture_output=True, text=True, timeout=180)  # fmt: skip
        assert cancel.returncode == 0 and "sent SIGTERM to driver pid" in cancel.stdout, cancel.stdout + cancel.stderr
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err[-3000:]
    last = err.splitlines()[-1]
    assert last.startswith("famix: interrupted; `famix sweep cancel` cancelled the jobs on slurm"), err[-3000:]
    assert "go on unless cancelled" not in err and not (sweep_dir / "cancelled.json").exists()


# ----------------------------------------------------------------------------- the local cluster script


def _gone(pid: int) -> bool:
    try:
        return "zombie" in Path(f"/proc/{pid}/status").read_text()
    except OSError:  # no such process
        return True


def test_a_controller_restart_under_a_waiting_driver_loses_no_stage(slurm_cluster, tmp_path, request):
    """The head node restarts while a job runs (slurmctld and slurmdbd stop, the compute node and its
    job go on): squeue and sacct failed, every job read UNKNOWN, and after ``lost_after_s`` the
    attached driver failed the stages as lost while their jobs ran on. It now says the controller does
    not answer, waits for it, and the stage ends as its job does."""
    import threading

    from orchestrator.backends.slurm.backend import SlurmBackend
    from orchestrator.backends.slurm.records import cancel_jobs, load_jobs

    run = Path(os.environ.get("FAMIX_SLURM_DIR", "/var/spool/famix-slurm")) / "run"
    if os.geteuid() != 0 or not (run / "started_by_us").is_file():
        pytest.skip(f"needs root and a cluster started by {SCRIPT.name} (the test stops and restarts its controller)")
    store = tmp_path / "runs" / "store"
    sweep_dir = tmp_path / "runs" / "restart"
    request.addfinalizer(lambda: cancel_jobs(sweep_dir))
    notes: list[str] = []
    # lost_after_s=10: a job neither squeue nor sacct knows for 10 s is lost (the default waits 120 s)
    backend = SlurmBackend(sweep_dir=sweep_dir, options={"slurm": {"time": 5}}, poll_s=0.5, notify=notes.append, lost_after_s=10.0)
    out: dict = {}
    waiting = threading.Thread(target=lambda: out.update(backend.run([_synthetic("long", store, seconds=10)], max_parallel=1, retries=0)))
    waiting.start()
    deadline = time.time() + 60
    jobs = sweep_dir / "slurm" / "jobs.json"
    # the stage runs: its srun step (``<job>.0``) started; srun needs the controller to create it, and
    # ``<job>.batch``, listed as soon as the job starts, comes before it (a restart then fails the job)
    while not jobs.is_file() or not any(step.rpartition(".")[2].isdigit() for step in subprocess.run(
        ["squeue", "-h", "-s", "-o", "%i", "-j", load_jobs(sweep_dir)["stages"]["long"]["job_id"]], capture_output=True, text=True
    ).stdout.split()):  # fmt: skip
        assert time.time() < deadline and waiting.is_alive(), (notes, out)
        time.sleep(0.5)

    try:
        for daemon in ("slurmctld", "slurmdbd"):  # the head node restarts: the controller, then accounting (sacct)
            pid = int((run / f"{daemon}.pid").read_text().strip())
            subprocess.run(["kill", "-TERM", str(pid)], check=True)  # each saves its state and stops; slurmd and the job go on
            deadline = time.time() + 30
            while not _gone(pid):
                assert time.time() < deadline, f"{daemon} did not stop"
                time.sleep(0.1)
        deadline = time.time() + 90  # squeue takes 18 s to give up on a controller that is down
        while not any("waiting for it" in n for n in notes):
            assert time.time() < deadline and waiting.is_alive(), (notes, out)
            time.sleep(0.5)
    finally:  # whatever happened, the cluster comes back for the next tests
        subprocess.run(["slurmdbd"], check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)  # daemons: no pipes held
        deadline = time.time() + 60
        while subprocess.run(["sacctmgr", "-n", "list", "cluster"], capture_output=True).returncode != 0:
            assert time.time() < deadline, "slurmdbd did not come back"
            time.sleep(0.5)
        subprocess.run(["slurmctld"], check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)  # recovers its saved queue
        while "UP" not in subprocess.run(["scontrol", "ping"], capture_output=True, text=True).stdout:
            assert time.time() < deadline, "slurmctld did not come back"
            time.sleep(0.5)
    waiting.join(timeout=120)
    assert not waiting.is_alive() and out["long"].status == "done", (out, notes)
    silent = [n for n in notes if "waiting for it" in n]
    assert len(silent) == 1 and silent[0].startswith("slurm: slurmctld does not answer 'scontrol ping'"), notes
    assert any(n.startswith("slurm: the controller answers again after ") for n in notes), notes


def test_a_start_after_the_daemons_died_mid_job_cancels_the_job_left_in_the_queue(slurm_cluster):
    """A machine stopped in the middle of a job leaves the queue in slurmctld's saved state: the next
    start recovered that job as running on processes that were gone, and waited for an idle node until
    it gave up (a CI run failed so). Now the start cancels such jobs, says which, and comes up."""
    run = Path(os.environ.get("FAMIX_SLURM_DIR", "/var/spool/famix-slurm")) / "run"
    if os.geteuid() != 0 or not (run / "started_by_us").is_file():
        pytest.skip(f"needs root and a cluster started by {SCRIPT.name} (the test kills and restarts its daemons)")
    jid = subprocess.run(
        ["sbatch", "--parsable", "-t", "5", "-J", "famix-leftover", "-o", "/dev/null", "--wrap", "sleep 297"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    deadline = time.time() + 30
    while subprocess.run(["squeue", "-h", "-j", jid, "-o", "%T"], capture_output=True, text=True).stdout.strip() != "RUNNING":
        assert time.time() < deadline, f"job {jid} did not start"
        time.sleep(0.5)

    # the machine goes down: the controller, then accounting, save their state and stop (in that order, or
    # the controller's last accounting messages wait for the next start), and the node dies with its job
    for daemon, sig in (("slurmctld", "TERM"), ("slurmdbd", "TERM"), ("slurmd", "KILL")):
        pid = (run / f"{daemon}.pid").read_text().strip()
        subprocess.run(["kill", f"-{sig}", pid], check=True)
        deadline = time.time() + 30
        while not _gone(int(pid)):
            assert time.time() < deadline, f"{daemon} did not stop"
            time.sleep(0.1)
    subprocess.run(["pkill", "-KILL", "-f", f"^slurmstepd: \\[{jid}\\."])  # the job's own steps and command
    subprocess.run(["pkill", "-KILL", "-f", "^sleep 297$"])
    deadline = time.time() + 30
    while subprocess.run(["pgrep", "-f", f"^slurmctld|^slurmdbd|^slurmd|^slurmstepd: \\[{jid}\\."], capture_output=True).returncode == 0:
        assert time.time() < deadline, "the slurm daemons did not stop"
        time.sleep(0.25)

    proc = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(rf"cancelling \d+ job\(s\) left in the queue by an earlier cluster: (\d+ )*{jid}\b", proc.stdout), proc.stdout
    assert not _squeue_ids([jid])
    state = subprocess.run(["scontrol", "show", "job", jid], capture_output=True, text=True).stdout
    assert "JobState=CANCELLED" in state, state
