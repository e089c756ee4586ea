"""Backends run stage DAGs: dependencies, retries, failed dependencies, cached stages; local and Ray agree."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from orchestrator.backends import BACKENDS, create_backend, detachable, get_backend_class
from orchestrator.backends.local import LocalBackend
from orchestrator.errors import SweepError
from orchestrator.stages import StageTask


def _task(key: str, deps: dict | None = None, **config) -> StageTask:
    store = Path("runs/store").absolute()
    return StageTask(
        kind="synthetic",  # type: ignore[arg-type]
        key=key,
        config={"seconds": 0.0, **config},
        deps=deps or {},
        store=str(store),
        log_path=str(store.parent / "logs" / f"{key}.log"),
        name=f"synthetic {key}",
    )


def _dag() -> list[StageTask]:
    return [
        _task("a", value=1),
        _task("b", value=2, fail="once"),  # retried, then done
        _task("c", value=3, fail="always"),  # fails for good
        _task("d", {"synthetic": "a"}, value=4),
        _task("e", {"synthetic": "c"}, value=5),  # its dependency fails: never runs
        _task("f", {"synthetic": "e"}, value=6),  # transitively
        _task("g", {"synthetic": "zz-done-before"}, value=7),  # dep not in the run = already done
    ]


class Recorder:
    def __init__(self):
        self.events: list[tuple[str, str]] = []
        self.running = 0
        self.max_running = 0

    def __call__(self, event, task, outcome):
        self.events.append((event, task.key))
        if event == "start":
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        elif event in ("retry", "done") or (event == "failed" and outcome.attempts > 0):
            self.running -= 1


def _seed_done_dep():
    from orchestrator.store import Store

    store = Store(Path("runs/store"))
    store.commit(store.begin(), "synthetic", "zz-done-before", {}, 0.0)


def _check(outcomes, rec):
    st = {k: o.status for k, o in outcomes.items()}
    assert st == {"a": "done", "b": "done", "c": "failed", "d": "done", "e": "failed", "f": "failed", "g": "done"}
    assert outcomes["b"].attempts == 2 and outcomes["c"].attempts == 2 and outcomes["a"].attempts == 1
    assert outcomes["e"].error == "dependency c failed" and outcomes["f"].error == "dependency e failed"
    assert "synthetic failure of synthetic c" in outcomes["c"].error
    assert ("retry", "b") in rec.events and ("retry", "c") in rec.events
    assert ("start", "e") not in rec.events and ("start", "f") not in rec.events
    # failures are reported when they happen, before later stages finish
    assert rec.events.index(("failed", "c")) < len(rec.events) - 1
    assert {k: o.result["value"] for k, o in outcomes.items() if o.status == "done"} == {"a": 1, "b": 2, "d": 4, "g": 7}
    log = Path(outcomes["c"].log_path).read_text()
    assert log.count("start synthetic c") == 2 and "failed: RuntimeError" in log


def test_local_backend_dag_retries_and_failed_dependencies():
    _seed_done_dep()
    rec = Recorder()
    outcomes = LocalBackend().run(_dag(), max_parallel=1, retries=1, on_event=rec)
    _check(outcomes, rec)
    # rerun: finished stages are cached, never run again
    rec2 = Recorder()
    again = LocalBackend().run(_dag()[:1] + _dag()[3:4], max_parallel=1, retries=1, on_event=rec2)
    assert {k: o.status for k, o in again.items()} == {"a": "cached", "d": "cached"}


def _spans(tasks):
    """(start, end) of each finished synthetic stage, from its DONE.json (the stage's own clock)."""
    spans = []
    for t in tasks:
        info = json.loads((Path(t.store) / "synthetic" / t.key / "DONE.json").read_text())
        spans.append((info["finished"] - info["seconds"], info["finished"]))
    return spans


def _most_at_once(spans):
    return max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)


def test_local_workers_run_the_dag_in_processes_and_pack_by_cpus():
    _seed_done_dep()
    rec = Recorder()
    backend = LocalBackend(cpus=2)
    outcomes = backend.run(_dag(), max_parallel=2, retries=1, on_event=rec)
    _check(outcomes, rec)
    assert rec.max_running <= 2 and backend.parallelism_used == 2
    # 1-CPU stages on 2 CPUs: two at a time, never more (read from the stages' own clocks)
    ones = [_task(f"p{i}", seconds=1.0, value=i) for i in range(4)]
    out = LocalBackend(cpus=2).run(ones, max_parallel=3, retries=0, on_event=Recorder())
    assert all(o.status == "done" for o in out.values())
    assert _most_at_once(_spans(ones)) == 2
    # 2-CPU stages on 2 CPUs: one at a time, though two workers are free
    twos = [dataclasses.replace(_task(f"q{i}", seconds=0.5, value=i), resources={"cpus": 2}) for i in range(3)]
    out = LocalBackend(cpus=2).run(twos, max_parallel=2, retries=0, on_event=Recorder())
    assert all(o.status == "done" for o in out.values())
    assert _most_at_once(_spans(twos)) == 1


def test_local_worker_that_dies_fails_its_stage_and_is_replaced():
    out = LocalBackend(execute=_die_on_x, cpus=2).run(
        [_task("x"), _task("y", value=2), _task("z", {"synthetic": "y"}, value=3)], max_parallel=2, retries=0, on_event=Recorder()
    )
    assert out["x"].status == "failed" and out["x"].retryable
    assert out["x"].error.startswith("worker process died (exit code 3) while running synthetic x"), out["x"].error
    assert out["y"].status == "done" and out["z"].status == "done"


def test_a_local_worker_sent_sigterm_from_outside_retries_its_stage_and_the_sweep_goes_on():
    """A `kill PID` of one worker stopped the whole sweep (exit 130, `famix: interrupted`, every MLflow
    run KILLED) as if the user had pressed Ctrl-C; `kill -9` of the same worker was retried."""
    seen = []
    tasks = [_task("x"), _task("y", value=2), _task("z", {"synthetic": "y"}, value=3)]
    out = LocalBackend(execute=_sigterm_self_once_on_x, cpus=2).run(
        tasks, max_parallel=2, retries=1, on_event=lambda e, t, o: seen.append((e, t.key, o)))
    assert {k: o.status for k, o in out.items()} == {"x": "done", "y": "done", "z": "done"}
    retried = [o for e, key, o in seen if e == "retry"]
    assert len(retried) == 1 and retried[0].error.startswith("worker process ") and retried[0].error.endswith(
        "was sent SIGTERM by another process while running synthetic x (a training checkpoints its iteration first)")


def test_a_stage_in_a_local_worker_may_start_processes_of_its_own():
    """A DataLoader with workers (the paper profile's stages ask for 8 CPUs, so data loading gets
    workers) failed every training and evaluation in the pool: 'daemonic processes are not allowed
    to have children'."""
    out = LocalBackend(execute=_with_a_child, cpus=2).run([_task("x"), _task("y")], max_parallel=2, retries=0, on_event=Recorder())
    assert {k: (o.status, o.error) for k, o in out.items()} == {"x": ("done", None), "y": ("done", None)}


def test_a_ctrl_c_while_the_workers_close_kills_the_rest():
    """The workers are not daemonic: a second Ctrl-C that cut their closing short would leave the
    interpreter's exit waiting for them."""
    from orchestrator.backends.local import _Pool
    from orchestrator.execute import execute_stage
    from orchestrator.backends.dag import DagScheduler

    pool = _Pool(execute_stage, 2, 2, 5.0)
    first, second = pool._idle(), pool._idle()
    first.task = second.task = _task("busy")  # busy: close() waits for them

    def interrupted(timeout_s=10.0):
        raise KeyboardInterrupt

    first.close = interrupted
    try:
        with pytest.raises(KeyboardInterrupt):
            pool.run(DagScheduler([], 0, Recorder()))
        for w in (first, second):
            w.proc.join(10)
            assert not w.proc.is_alive()
        assert pool.workers == []
    finally:  # a failure here must not leave pytest's own exit waiting for them
        for w in (first, second):
            w.proc.kill()


def _with_a_child(task, stop):
    import multiprocessing

    from orchestrator.execute import execute_stage

    child = multiprocessing.get_context("spawn").Process(target=abs, args=(-1,))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    return execute_stage(task, stop)


def _die_on_x(task, stop):
    import os

    from orchestrator.execute import execute_stage

    if task.key == "x":
        os._exit(3)
    return execute_stage(task, stop)


def _sigterm_self_once_on_x(task, stop):
    import os
    import signal
    import time

    from orchestrator.execute import execute_stage

    first = Path(task.store) / "sigterm-x"
    if task.key == "x" and not first.exists():
        first.parent.mkdir(parents=True, exist_ok=True)
        first.touch()
        os.kill(os.getpid(), signal.SIGTERM)  # `kill PID` of this worker, from outside the sweep
        time.sleep(30)  # the worker's handler raises here
    return execute_stage(task, stop)


def _workers() -> set[int]:
    """This process's children, but multiprocessing's resource tracker: started by the first spawn, it stays."""
    import psutil

    return {c.pid for c in psutil.Process().children(recursive=True) if "resource_tracker" not in " ".join(c.cmdline())}


def test_local_workers_interrupted_cancel_the_rest_and_leave_no_process():
    import os
    import signal
    import threading
    import time

    tasks = [_task("long1", seconds=60.0), _task("long2", seconds=60.0), _task("after", {"synthetic": "long1"})]
    rec = Recorder()
    before = _workers()
    gone = threading.Event()

    def ctrl_c_once_both_run() -> None:  # Ctrl-C in the driver, once both stages began (temp folders made)
        logs = [Path(t.log_path) for t in tasks[:2]]
        deadline = time.monotonic() + 60
        while not all(p.is_file() and "start synthetic" in p.read_text() for p in logs):
            if gone.wait(0.1) or time.monotonic() > deadline:
                return
        os.kill(os.getpid(), signal.SIGINT)

    ctrl_c = threading.Thread(target=ctrl_c_once_both_run, daemon=True)
    ctrl_c.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            LocalBackend(cpus=2, grace_s=20.0).run(tasks, max_parallel=2, retries=0, on_event=rec)
    finally:
        gone.set()
    assert ("start", "long1") in rec.events and ("start", "long2") in rec.events
    assert ("cancelled", "after") in rec.events and ("cancelled", "long1") in rec.events
    assert _workers() <= before  # the workers are gone
    assert not any(Path("runs/store/.tmp").iterdir())  # the abandoned stages removed their temp folders
    assert not (Path("runs/store/synthetic") / "long1").exists()


def test_local_worker_past_its_time_limit_is_stopped_retried_and_reported():
    # a stage past its resources.timeout_min is stopped, retried, then reported; the others finish
    slow = dataclasses.replace(_task("slow", seconds=600.0), resources={"timeout_min": 0.05})  # 3 s
    quick = dataclasses.replace(_task("quick", seconds=0.1), resources={"timeout_min": 0.05})
    after = _task("after", {"synthetic": "quick"}, value=2)
    rec = Recorder()
    before = _workers()
    out = LocalBackend(cpus=2, grace_s=20.0).run([slow, quick, after], max_parallel=2, retries=1, on_event=rec)
    assert out["quick"].status == "done" and out["after"].status == "done"
    assert out["slow"].status == "failed" and out["slow"].attempts == 2 and out["slow"].retryable, out["slow"]
    assert out["slow"].error == "timed out after 0.05 min of running (resources.timeout_min); stopped by the local backend"
    assert Path(slow.log_path).read_text().count("failed: timed out") == 2
    assert ("retry", "slow") in rec.events
    assert _workers() <= before  # the stopped workers are gone, and the others
    assert not any(Path("runs/store/.tmp").iterdir())  # the stopped stage removed its temp folder
    assert not (Path("runs/store/synthetic") / "slow").exists()


def test_local_stage_that_finishes_as_it_is_stopped_is_kept_and_its_worker_replaced():
    # the stage does not act on the SIGTERM of its time limit and finishes before the SIGKILL: its
    # result counts, and the next stages run on a fresh worker, not on one that got a signal meant
    # for a stage it no longer runs
    # 3 s, counted from the hand-over: the worker's start (a new interpreter) comes out of it
    late = dataclasses.replace(_task("late", value=1), resources={"timeout_min": 0.05})  # it runs 6 s
    tasks = [late, _task("next", {"synthetic": "late"}, value=2), _task("other", value=3)]
    out = LocalBackend(execute=_deaf_to_sigterm, cpus=2, grace_s=20.0).run(tasks, max_parallel=2, retries=0, on_event=Recorder())
    assert {k: o.status for k, o in out.items()} == {"late": "done", "next": "done", "other": "done"}, {k: o.error for k, o in out.items()}
    assert out["late"].result["value"] == 1 and out["late"].attempts == 1
    assert Path(late.log_path).with_suffix(".sigterm").is_file()  # its time limit did send the signal


_SIGTERMS: list[int] = []  # in a worker: the SIGTERMs the stand-in below caught


def _deaf_to_sigterm(task, stop):
    import os
    import signal
    import time

    from orchestrator.execute import execute_stage

    if _SIGTERMS:
        os._exit(9)  # a signal meant for an earlier stage, landing in this one, would stop it
    if task.key == "late":

        def caught(signum, frame):  # not acted on; left where the test sees it (this is the worker's process)
            _SIGTERMS.append(signum)
            Path(task.log_path).with_suffix(".sigterm").touch()

        signal.signal(signal.SIGTERM, caught)
        time.sleep(6.0)
    return execute_stage(task, stop)


def test_no_retry_for_deterministic_failures():
    from famix_core.errors import TrainingDiverged

    def diverge(task, stop):
        from orchestrator.stages import StageOutcome

        return StageOutcome(task.key, "failed", error=str(TrainingDiverged("loss is nan at iteration 3")), retryable=False)

    rec = Recorder()
    outcomes = LocalBackend(execute=diverge).run([_task("x")], max_parallel=1, retries=3, on_event=rec)
    assert outcomes["x"].attempts == 1 and ("retry", "x") not in rec.events


def test_registry_is_lazy_and_lists_known():
    import sys

    assert set(BACKENDS) == {"local", "ray", "slurm"}
    assert get_backend_class("local") is LocalBackend
    assert isinstance(create_backend("local", sweep_dir="x", options={}), LocalBackend)
    with pytest.raises(SweepError, match=r"unknown backend 'rayy' \(known: local, ray, slurm\) \(did you mean ray\?\)"):
        get_backend_class("rayy")
    import subprocess

    code = "import sys, orchestrator.backends, orchestrator.driver, orchestrator.cli; print('ray' in sys.modules, 'submitit' in sys.modules, 'torch' in sys.modules, 'mlflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False", "False", "False"]


def test_every_backend_answers_what_the_driver_asks(tmp_path):
    """The driver names no backend: parallelism, detaching, status and cancel come from the class."""
    from orchestrator.backends.base import Backend

    assert {name: get_backend_class(name).default_parallelism for name in BACKENDS} == {"local": 1, "ray": 0, "slurm": 0}
    assert get_backend_class("local").parallelism({"local": {"workers": 3}}) == 3
    assert detachable() == ["slurm"]
    for name in BACKENDS:
        cls = get_backend_class(name)
        assert issubclass(cls, Backend) and cls.name == name
        assert cls.status(tmp_path) == []  # a sweep folder the backend never ran in: nothing to report
    assert create_backend("local", sweep_dir=str(tmp_path), options={}).cancel(str(tmp_path)) == 0


def test_slurm_array_cap_default_is_one_value_and_documented():
    from orchestrator.backends.slurm.options import DEFAULT_ARRAY_PARALLELISM, array_parallelism

    cap = DEFAULT_ARRAY_PARALLELISM
    assert array_parallelism("train", {}, cap) == cap and array_parallelism("train", {"array_parallelism": 3}, cap) == 3
    docs = (Path(__file__).resolve().parents[1] / "docs" / "slurm.md").read_text()
    assert f"without those, **{cap}**" in docs


def test_ray_temp_dir_falls_back_for_long_paths():
    from orchestrator.backends.ray_backend import ray_temp_dir

    short, fell = ray_temp_dir("/r/s")
    assert short == "/r/s/ray" and not fell
    long_dir, fell = ray_temp_dir("/" + "x" * 120)
    assert fell and long_dir.startswith("/tmp/famix-ray-") and len(long_dir) < 30


@pytest.mark.ray
def test_ray_backend_matches_local_and_respects_max_parallel():
    _seed_done_dep()
    rec = Recorder()
    backend = create_backend("ray", sweep_dir=str(Path("runs/sw").absolute()), options={"ray": {"num_cpus": 2}})
    try:
        outcomes = backend.run(_dag(), max_parallel=2, retries=1, on_event=rec)
        _check(outcomes, rec)
        assert rec.max_running <= 2
        # parallel: 4 independent 1 s stages on 2 slots run two at a time (read from the stages' own
        # start and end, DONE.json's `finished - seconds` and `finished`: no wall-clock bound to flake)
        tasks = [_task(f"p{i}", seconds=1.0, value=i) for i in range(4)]
        par = backend.run(tasks, max_parallel=2, retries=0, on_event=Recorder())
        assert all(o.status == "done" for o in par.values())
        spans = _spans(tasks)
        assert _most_at_once(spans) == 2, spans  # two ran together, never more

        # a stage past its resources.timeout_min is stopped, retried, then reported; the others finish
        slow = dataclasses.replace(_task("slow", seconds=600.0), resources={"timeout_min": 0.05})  # 3 s
        quick = dataclasses.replace(_task("quick", seconds=0.1), resources={"timeout_min": 0.05})
        rec = Recorder()
        out = backend.run([slow, quick], max_parallel=2, retries=1, on_event=rec)
        assert out["quick"].status == "done"
        assert out["slow"].status == "failed" and out["slow"].attempts == 2, out["slow"]
        assert out["slow"].error.startswith("timed out after 0.05 min"), out["slow"].error
        assert Path(slow.log_path).read_text().count("failed: timed out") == 2
    finally:
        backend.close()
    import ray

    assert not ray.is_initialized()


def test_a_full_disk_is_not_retried_and_starts_nothing_more():
    """The DAG after a stage failed on a full disk (its error crosses processes and Slurm as text):
    no retry; every waiting stage is cancelled with one reason; a running stage still finishes."""
    import errno

    from orchestrator.backends.dag import DagScheduler
    from orchestrator.execute import retryable
    from orchestrator.stages import StageOutcome, disk_full

    assert not retryable(OSError(errno.ENOSPC, "No space left on device", "x")) and not retryable(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert retryable(OSError(errno.EIO, "Input/output error")) and retryable(ConnectionError("reset"))
    assert disk_full("OSError: [Errno 28] No space left on device: '/runs/x'") and disk_full("RuntimeError: write failed: Disk quota exceeded")
    assert not disk_full("OSError: [Errno 5] Input/output error") and not disk_full(None)

    tasks = [_task("a"), _task("b"), _task("c"), _task("d", {"synthetic": "a"})]
    rec = Recorder()
    dag = DagScheduler(tasks, retries=3, on_event=rec)
    assert [t.key for t in dag.ready(limit=2)] == ["a", "b"]
    retried = dag.complete("b", StageOutcome("b", "failed", error="OSError: [Errno 28] No space left on device: 'w/b'", retryable=True))
    assert not retried and dag.outcomes["b"].status == "failed"
    assert {k: o.error for k, o in dag.outcomes.items() if o.status == "cancelled"} == {
        "c": "not started: a stage failed on a full disk", "d": "not started: a stage failed on a full disk"}
    assert dag.ready() == [] and not dag.finished()  # "a" still runs
    dag.complete("a", StageOutcome("a", "done"))
    assert dag.finished() and ("start", "c") not in rec.events and ("retry", "b") not in rec.events


def test_a_stage_asking_for_more_cpus_than_the_machine_has_gets_one_thread_per_cpu():
    """The local backend runs such a stage alone; `resources.train.cpus: 1000` set 1000 torch threads
    on a 2-core machine (torch does not cap them)."""
    import torch

    from famix_core.loaders import allocated_cpus
    from orchestrator.execute import _stage_cpus

    task = StageTask(kind="train", key="k", config={}, deps={}, store="s", log_path="l", name="t", resources={"cpus": 1000})
    before, machine = torch.get_num_threads(), allocated_cpus()
    try:
        with _stage_cpus(task):
            assert torch.get_num_threads() == machine < 1000
        # a 1-CPU stage run in this process left it on one thread for whatever came next
        torch.set_num_threads(machine)
        with _stage_cpus(dataclasses.replace(task, resources={"cpus": 1})):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == machine
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(("have", "note"), [(0, "the CPU where train.device allows it (cpu, or auto with train.cpu_fallback)"), (1, "its 1 GPU or the CPU, as train.device picks"), (2, None)])
def test_the_local_backend_says_when_stages_ask_for_more_gpus_than_the_machine_has(monkeypatch, capsys, have, note):
    """`resources.train.gpus: 2` on a machine without a GPU planned and ran without a word (on the CPU, one
    stage at a time), where Ray refuses the sweep at plan time."""
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: have)
    LocalBackend.preflight({"resources": {"mine": {"gpus": 0}, "train": {"gpus": 2}, "evaluate": {"gpus": 1}}})
    err = capsys.readouterr().err
    if note is None:
        assert err == ""
        return
    over = "train.gpus 2" if have else "train.gpus 2, evaluate.gpus 1"
    assert err == (f"note: backend.resources asks for more GPUs than this machine has ({have}): {over}; "
                   f"the local backend runs those stages here, one at a time, on {note}\n")  # fmt: skip
    LocalBackend.preflight({"resources": {"train": {"gpus": 0}}})
    assert capsys.readouterr().err == ""
