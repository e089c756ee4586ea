"""Faults and hostile input: stale driver files, path escapes, odd run-dir names, unwritable run dirs.

Each test reproduces a defect found by hostile use and checks the one-line answer or the repair.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from rich.console import Console

from orchestrator.__main__ import main
from orchestrator.driver import cancel_sweep, prepare, sweep_status
from orchestrator.liveness import process_start, running_driver
from test_orch_driver import fake_engine  # noqa: F401 — the engine stand-ins (fixture)

SWEEP = """\
name: mini
grid:
  style.mix: [false, true]
domains: [C]
"""


def _plan(text: str = SWEEP, run_dir: str = "runs", name: str = "mini"):
    Path("sweeps").mkdir(exist_ok=True)
    Path(f"sweeps/{name}.yaml").write_text(text)
    return prepare(name, run_dir=run_dir, check_data=lambda c: None, check_weights=lambda c: None)


def _holder(lock: Path) -> subprocess.Popen:
    """A process that holds the flock on ``lock`` until killed (as a driver would)."""
    code = f"import fcntl, os, sys, time\nfd = os.open({str(lock)!r}, os.O_RDWR | os.O_CREAT)\nfcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(120)\n"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.parametrize("lock_held", [False, True])
def test_cancel_and_status_ignore_a_stale_driver_pid(lock_held):
    """driver.json stays after a run; its pid now belongs to a `sleep`: it must not be signalled."""
    plan = _plan()
    plan.sweep_dir.mkdir(parents=True)
    sleeper = subprocess.Popen(["sleep", "120"])
    holder = _holder(plan.sweep_dir / "driver.lock") if lock_held else None
    try:
        # lock free: the file is stale whatever it says; lock held by another process: the pid's start time differs
        start = process_start(sleeper.pid) + (0 if not lock_held else 1)
        (plan.sweep_dir / "driver.json").write_text(json.dumps({"pid": sleeper.pid, "start": start, "host": os.uname().nodename, "backend": "local"}))
        if not lock_held:
            (plan.sweep_dir / "driver.lock").touch()
        assert running_driver(plan.sweep_dir) is None
        buf = io.StringIO()
        sweep_status(plan, Console(file=buf, width=200))
        assert "driver: not running" in buf.getvalue() and "running\n" not in buf.getvalue().replace("not running\n", "")
        cancel_sweep(plan, console=Console(file=io.StringIO()))
        time.sleep(0.3)
        assert sleeper.poll() is None, "a stale driver.json made `sweep cancel` signal an unrelated process"
    finally:
        sleeper.kill()
        sleeper.wait()
        if holder is not None:
            holder.kill()
            holder.wait()


def test_a_second_driver_is_told_the_cancel_command_of_this_run_dir(fake_engine):
    """The refusal suggested `famix sweep cancel NAME` without the run dir, which cancels nothing
    when the sweep runs elsewhere than ./runs; it now names the same run dir and profile."""
    from orchestrator.driver import RunOptions, run_plan
    from orchestrator.errors import SweepError

    plan = _plan(run_dir="elsewhere")
    plan.sweep_dir.mkdir(parents=True)
    holder = _holder(plan.sweep_dir / "driver.lock")
    try:
        (plan.sweep_dir / "driver.json").write_text(json.dumps({"pid": holder.pid}))
        with pytest.raises(SweepError) as e:
            run_plan(plan, RunOptions(backend="local"), Console(file=io.StringIO()))
    finally:
        holder.kill()
        holder.wait()
    assert str(e.value).endswith(f"another driver (pid {holder.pid}) is running this sweep; "
                                 f"wait for it or `famix sweep cancel mini --profile smoke --run-dir {plan.run_dir}`")  # fmt: skip


def test_a_run_dir_without_file_locks_runs_the_sweep_with_a_warning(fake_engine, monkeypatch, capsys):
    """On a filesystem without file locks (an NFS mount without lockd: flock fails with ENOLCK) the
    driver's lock ended `sweep run` and `sweep status` in a traceback. Now they run unguarded, as the
    stages' locks already did, with one warning."""
    import errno
    import fcntl

    real = fcntl.flock

    def no_locks(fd, op):
        if op & fcntl.LOCK_UN:
            return real(fd, op)
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    _plan()
    monkeypatch.setattr(fcntl, "flock", no_locks)
    assert main(["sweep", "run", "mini", "--backend", "local"]) == 0
    out, err = capsys.readouterr()
    assert "finished in" in out and "0 failed" in out, out
    assert f"famix: warning: {Path('runs/mini/driver.lock').absolute()}: this filesystem has no file locks" in err, err
    assert main(["sweep", "status", "mini"]) == 0
    assert "driver: not running" in capsys.readouterr().out


def test_running_driver_is_verified_by_lock_pid_and_start_time():
    plan = _plan()
    plan.sweep_dir.mkdir(parents=True)
    holder = _holder(plan.sweep_dir / "driver.lock")
    try:
        ident = {"pid": holder.pid, "start": process_start(holder.pid), "host": os.uname().nodename}
        (plan.sweep_dir / "driver.json").write_text(json.dumps({**ident, "backend": "local"}))
        info = running_driver(plan.sweep_dir)
        assert info is not None and info["verified"] and info["pid"] == holder.pid
        buf = io.StringIO()
        sweep_status(plan, Console(file=buf, width=200))
        assert f"driver pid {holder.pid} on {ident['host']} (local): running" in buf.getvalue()
        cancel_sweep(plan, console=Console(file=io.StringIO()))
        assert holder.wait(timeout=10) == -15  # SIGTERM reached the verified driver
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


@pytest.mark.parametrize("name", [".", ".."])
def test_sweep_name_dot_or_dotdot_is_refused(capsys, name):
    Path("sweeps").mkdir(exist_ok=True)
    Path("sweeps/dots.yaml").write_text(SWEEP.replace("name: mini", f"name: '{name}'"))
    Path("inner").mkdir()
    rc = main(["sweep", "run", "sweeps/dots.yaml", "--run-dir", "inner/runs"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert f"sweeps/dots.yaml: name: Value error, '{name}'" not in err and f"sweeps/dots.yaml: name: '{name}' is not a folder name of its own" in err
    assert sorted(p.name for p in Path(".").iterdir()) == ["inner", "sweeps"] and not any(Path("inner").iterdir())


def test_every_driver_path_stays_inside_the_run_dir():
    """Even a plan whose name was never validated (built in code) cannot point outside the run dir."""
    import dataclasses

    from orchestrator.errors import SweepError

    plan = _plan()
    bad = dataclasses.replace(plan, sweep=dataclasses.replace(plan.sweep, name=".."))
    with pytest.raises(SweepError, match=r"outside the run dir"):
        bad.sweep_dir
    with pytest.raises(SweepError, match=r"outside the run dir"):
        bad.log_path(next(iter(plan.stages.values())))


def test_sqlite_store_works_in_a_run_dir_with_query_fragment_percent_and_space(fake_engine):
    """`?` and `#` used to cut the sqlite URI: MLflow created the database at a truncated path outside the run dir."""
    from urllib.parse import unquote

    from orchestrator.driver import RunOptions, run_plan
    from orchestrator.tracking import Tracker, default_uri
    from reports.collect import collect_mlflow, sqlite_path

    run_dir = Path("odd dir?x=1#frag%41")
    uri = default_uri(run_dir)
    assert sqlite_path(uri) == run_dir.absolute() / "mlflow.db" and unquote(uri) == f"sqlite:///{run_dir.absolute()}/mlflow.db"
    plan = _plan(run_dir=str(run_dir))
    result = run_plan(plan, RunOptions(backend="local"), Console(file=io.StringIO(), width=200))
    assert result.exit_code == 0
    assert (run_dir / "mlflow.db").is_file()
    assert sorted(p.name for p in Path(".").iterdir()) == ["odd dir?x=1#frag%41", "sweeps"]  # nothing outside it
    runs = Tracker(uri, "mini").find({"famix.sweep": "mini", "famix.role": "trial"})
    assert len(runs) == 2 and all("miou/C" in r.data.metrics for r in runs)
    rs = collect_mlflow("mini", tracking_uri=uri)
    assert len(rs.runs) == 2
    # the rerun fast path finds the store (it used to look for the undecoded path)
    buf = io.StringIO()
    run_plan(plan, RunOptions(backend="local"), Console(file=buf, width=200))
    assert "all done; MLflow complete" in buf.getvalue()


def test_damaged_store_artifact_is_named_and_rebuilt_with_rerun_failed(fake_engine):
    """A truncated model.safetensors: a one-line error naming the file and the fix, no retry; the printed
    table agrees with results.csv (no stale MLflow value); `--rerun-failed` rebuilds it."""
    import pandas as pd

    from orchestrator.driver import RunOptions, run_plan

    plan = _plan(SWEEP.replace("domains: [C]", "domains: [C, B]"))
    first = run_plan(plan, RunOptions(backend="local"), Console(file=io.StringIO(), width=200))
    assert first.exit_code == 0
    before = pd.read_csv(plan.sweep_dir / "results.csv")
    trial = plan.trials[1]
    ts = plan.trial_stages[trial.id]
    model = plan.store.path("train", ts.train) / "model.safetensors"
    model.write_bytes(model.read_bytes()[:3])  # truncated
    evaluated = plan.store.path("evaluate", ts.evaluate["B"])
    old_b = f"{before.loc[1, 'B']:.2f}"
    import shutil

    shutil.rmtree(evaluated)  # that evaluation has to run again, on the damaged weights
    calls_before = len(fake_engine)
    buf = io.StringIO()
    second = run_plan(plan, RunOptions(backend="local", retries=2), Console(file=buf, width=200))
    assert second.exit_code == 1 and len(second.failed) == 1
    outcome = second.outcomes[second.failed[0]]
    assert outcome.attempts == 1  # not retried: a rebuild is needed
    first_line = outcome.error.splitlines()[0]
    assert f"damaged train artifact {model}: 3 bytes, expected 7" in first_line
    assert f"`famix sweep run {plan.arguments()} --rerun-failed`" in first_line and str(model.parent) in first_line  # runnable as shown
    assert len(fake_engine) == calls_before  # the evaluation never ran on the damaged weights
    after = pd.read_csv(plan.sweep_dir / "results.csv")
    assert pd.isna(after.loc[1, "B"]) and after.loc[1, "C"] == before.loc[1, "C"]
    table = second.table
    assert old_b not in table, table  # MLflow still has the old miou/B; the table shows what results.csv has
    assert f"{before.loc[1, 'C']:.2f}" in table
    # the fix
    buf = io.StringIO()
    third = run_plan(plan, RunOptions(backend="local", rerun_failed=True), Console(file=buf, width=200, soft_wrap=True))
    assert third.exit_code == 0
    assert f"damaged train artifact {model}: 3 bytes, expected 7: set aside as" in buf.getvalue()
    assert ("train", ts.train) in fake_engine[calls_before:]
    pd.testing.assert_frame_equal(pd.read_csv(plan.sweep_dir / "results.csv"), before)
    assert len(list((plan.store.root / ".corrupt").iterdir())) == 1


@pytest.fixture
def unwritable_dir(tmp_path):
    """A folder nobody can write into: immutable (``chattr +i``) as root, mode 0555 otherwise."""
    d = tmp_path / "locked"
    d.mkdir()
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(d)], capture_output=True).returncode != 0:
            pytest.skip("chattr +i is not supported on this filesystem (root ignores mode bits)")
        yield d
        subprocess.run(["chattr", "-i", str(d)], check=True)
    else:
        d.chmod(0o555)
        yield d
        d.chmod(0o755)


@pytest.mark.parametrize("command", ["plan", "run"])
@pytest.mark.parametrize("inside", [False, True])
def test_unwritable_run_dir_is_one_line_exit_2(capsys, unwritable_dir, command, inside):
    Path("sweeps").mkdir(exist_ok=True)
    Path("sweeps/mini.yaml").write_text(SWEEP)
    run_dir = unwritable_dir / "runs" if inside else unwritable_dir
    rc = main(["sweep", command, "mini", "--run-dir", str(run_dir)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    # the run dir itself (it used to be the name of `run`'s probe file in it: <dir>/tmpab12cd34)
    # the OS's reason, for `plan` too (it said "permission denied" of an immutable folder, or a read-only mount)
    reason = "Operation not permitted" if os.geteuid() == 0 else "Permission denied"
    assert err.startswith(f"famix: error: {run_dir if inside else unwritable_dir}: the run dir is not writable ({reason}"), err
    assert "choose another with --run-dir" in err


def test_an_unwritable_folder_of_the_mlflow_database_gives_the_os_reason(unwritable_dir):
    from reports.collect import ReportInputError, check_tracking_uri

    reason = "Operation not permitted" if os.geteuid() == 0 else "Permission denied"
    uri = f"sqlite:///{unwritable_dir}/db/mlflow.db"
    with pytest.raises(ReportInputError) as e:
        check_tracking_uri(uri, "tracking.uri", write=True)
    assert str(e.value) == f"tracking.uri {uri}: the database's folder {unwritable_dir} is not writable ({reason})"


TRAIN_SWEEP = """\
name: sig
base:
  style: {strategy: none, augment: false, mix: false}
  data: {synthetic: {height: 64, width: 96, train_images: 2, val_images: 1}, crop_size: 48}
  train: {iterations: 2000, batch_size: 2, checkpoint_every: 100000, log_every: 1}
  eval: {max_images: 1}
domains: [C]
backend: {resources: {train: {cpus: 1}}, local: {workers: WORKERS}}
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "workers, how", [(1, "cancel"), (2, "cancel"), (1, "ctrl-c"), (2, "ctrl-c")],
    ids=["in-process", "worker-processes", "in-process-ctrl-c", "worker-processes-ctrl-c"],
)
def test_sweep_cancel_checkpoints_a_running_training_and_the_rerun_resumes_there(tmp_path, workers, how):
    """SIGTERM (sweep cancel) reaches a local training like SIGUSR2 on Slurm: checkpoint now, then stop.

    With ``local.workers: 2`` the training runs in a worker process: the driver passes SIGTERM on.
    Ctrl-C (SIGINT) of a training in the driver's own process checkpoints too: it used to stop at
    once and lose the iterations since the last periodic checkpoint. The driver says how to resume."""
    import re

    Path("sweeps").mkdir()
    import psutil

    Path("sweeps/sig.yaml").write_text(TRAIN_SWEEP.replace("WORKERS", str(workers)))
    workers_count = workers
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "orchestrator", "sweep", "run", "sig", "--run-dir", "runs"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        log = None
        while time.time() < deadline and proc.poll() is None:
            logs = list(Path("runs/sig/logs").glob("train-*.log"))
            if logs and "step=5 " in logs[0].read_text():
                log = logs[0]
                break
            time.sleep(0.3)
        assert log is not None, proc.communicate(timeout=30)[1][-3000:]
        if how == "cancel":
            assert main(["sweep", "cancel", "sig", "--run-dir", "runs"]) == 0
        else:
            proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err[-3000:]
    said = "`famix sweep cancel` stopped the sweep; " if how == "cancel" else ""  # not read as a Ctrl-C
    assert err.splitlines()[-1] == (
        f"famix: interrupted; {said}the finished stages are kept (a training resumes from its last checkpoint): "
        "`famix sweep run sig --profile smoke` runs the rest"
    ), err[-3000:]
    assert not Path("runs/sig/cancelled.json").exists()
    if workers == 1:
        assert "famix: stopping after this iteration's checkpoint (Ctrl-C again stops at once)" in err, err[-3000:]
    text = log.read_text()
    m = re.search(r"interrupted: training stopped on request at iteration (\d+) \(checkpoint: (\S+)\)", text)
    assert m, text[-2000:]
    assert "failed:" not in text, text[-2000:]  # the sweep's own stop of a worker is no failure of its stage
    stopped = int(m.group(1))
    assert stopped >= 5
    key = log.stem.split("-", 1)[1]
    latest = json.loads((Path("runs/work/train") / key / "latest.json").read_text())
    assert latest["iteration"] == stopped  # no periodic checkpoint (every 100000): this one came from the SIGTERM
    assert not any(Path("runs/store/.tmp").iterdir())  # the interrupted stage's temp folder is gone
    # the rerun resumes at that iteration (its first logged step is the next one)
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    workers: list = []
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None and f"step={stopped + 2} " not in log.read_text()[len(text) :]:
            time.sleep(0.3)
        workers = psutil.Process(proc.pid).children()
    finally:
        proc.kill()  # SIGKILL: no chance to stop its workers
        proc.wait()
    assert bool(workers) == (workers_count > 1), workers  # a worker (and multiprocessing's resource tracker)
    _gone, alive = psutil.wait_procs(workers, timeout=15)
    assert not alive, "a worker outlived its killed driver"
    resumed = log.read_text()[len(text):]
    steps = [int(s) for s in re.findall(r"step=(\d+) ", resumed)]
    assert steps and steps[0] == stopped + 1, resumed[:2000]


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2], ids=["in-process", "worker-processes"])
def test_a_closed_terminal_checkpoints_the_running_training_and_ends_the_runs(tmp_path, workers):
    """Closing the terminal (or losing the ssh connection) of `famix sweep run` sent SIGHUP to the
    driver and its workers, which died at once: the training lost its iterations since the last
    periodic checkpoint, and the MLflow runs stayed RUNNING. A hangup is now an interrupt like Ctrl-C,
    its output moved off the terminal that is gone (every write to it fails with EIO): the training
    checkpoints its iteration, the runs end KILLED, driver.json says the driver ended."""
    import fcntl
    import re
    import select
    import termios

    from orchestrator.tracking import Tracker, default_uri

    Path("sweeps").mkdir()
    Path("sweeps/sig.yaml").write_text(TRAIN_SWEEP.replace("WORKERS", str(workers)))
    master, slave = os.openpty()

    def own_terminal() -> None:  # a login shell's child: the pty is its controlling terminal
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        for sig in (signal.SIGINT, signal.SIGHUP):  # as a terminal's process finds them, not as the runner may (nohup)
            signal.signal(sig, signal.SIG_DFL)

    cmd = [sys.executable, "-m", "orchestrator", "sweep", "run", "sig", "--run-dir", "runs"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdin=slave, stdout=slave,
                            stderr=slave, start_new_session=True, preexec_fn=own_terminal)  # fmt: skip
    os.close(slave)
    screen = b""
    try:
        deadline, log = time.time() + 240, None
        while time.time() < deadline and proc.poll() is None and log is None:
            if select.select([master], [], [], 0.3)[0]:
                screen += os.read(master, 65536)  # read what it shows, or its writes would block
            logs = list(Path("runs/sig/logs").glob("train-*.log"))
            if logs and "step=5 " in logs[0].read_text():
                log = logs[0]
        assert log is not None, screen[-3000:]
        os.close(master)  # the terminal goes: the kernel sends SIGHUP to its session
        master = -1
        proc.wait(timeout=90)
    finally:
        if master >= 0:
            os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, (proc.returncode, screen[-3000:])
    text = log.read_text()
    m = re.search(r"interrupted: training stopped on request at iteration (\d+)", text)
    assert m, text[-2000:]
    key = log.stem.split("-", 1)[1]
    latest = json.loads((Path("runs/work/train") / key / "latest.json").read_text())
    assert latest["iteration"] == int(m.group(1)) >= 5  # no periodic checkpoint (every 100000): the hangup's
    assert "ended" in json.loads(Path("runs/sig/driver.json").read_text())
    runs = Tracker(default_uri(Path("runs").absolute()), "sig").find({"famix.sweep": "sig"})
    assert runs and {r.info.status for r in runs} == {"KILLED"}, [(r.info.run_name, r.info.status) for r in runs]


@pytest.mark.slow
def test_a_pipe_whose_reader_went_away_interrupts_the_sweep_as_ctrl_c_does(tmp_path):
    """`famix sweep run … | head -1` (or a pager quit early): the driver's next progress line raised
    BrokenPipeError, which ended it with exit 1 and no word: its stages killed without a checkpoint,
    its MLflow runs left RUNNING. The reader going away is now an interrupt: the runs end KILLED, the
    resume command goes to what output is left, and the same command runs the rest."""
    from orchestrator.tracking import Tracker, default_uri

    Path("sweeps").mkdir()
    Path("sweeps/sig.yaml").write_text(TRAIN_SWEEP.replace("WORKERS", "1").replace("iterations: 2000", "iterations: 3"))
    cmd = [sys.executable, "-m", "orchestrator", "sweep", "run", "sig", "--run-dir", "runs"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open("err.txt", "w") as err:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
        try:
            first = proc.stdout.readline()
            proc.stdout.close()  # what `| head -1` does once it has its line
            proc.wait(timeout=180)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    err_text = Path("err.txt").read_text()
    assert first.startswith("sweep sig (smoke)"), first
    assert proc.returncode == 130, err_text[-3000:]
    assert "BrokenPipeError" not in err_text and "Traceback" not in err_text, err_text[-3000:]
    assert err_text.splitlines()[-1].startswith("famix: interrupted; the finished stages are kept"), err_text[-3000:]
    runs = Tracker(default_uri(Path("runs").absolute()), "sig").find({"famix.sweep": "sig"})
    assert runs and "RUNNING" not in {r.info.status for r in runs}, [(r.info.run_name, r.info.status) for r in runs]
    rerun = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0 and "| C | Mean |" in rerun.stdout.replace("|:-:|", ""), rerun.stdout[-2000:] + rerun.stderr[-2000:]


@pytest.mark.slow
def test_ctrl_c_under_tee_checkpoints_the_running_training_once(tmp_path):
    """`famix sweep run … 2>&1 | tee log` and Ctrl-C: the terminal's SIGINT stops tee too, so the
    driver's notice (`stopping after this iteration's checkpoint`) raised BrokenPipeError inside its
    signal handler, in the middle of the training: it died unsaved, exit 1. The notice goes to
    /dev/null and, the interrupt being under way, nothing more is sent: the training checkpoints."""
    import re
    import signal

    from orchestrator.tracking import Tracker, default_uri

    Path("sweeps").mkdir()
    Path("sweeps/sig.yaml").write_text(TRAIN_SWEEP.replace("WORKERS", "1"))
    cmd = [sys.executable, "-m", "orchestrator", "sweep", "run", "sig", "--run-dir", "runs"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline, log = time.time() + 240, None
        while time.time() < deadline and proc.poll() is None and log is None:
            logs = list(Path("runs/sig/logs").glob("train-*.log"))
            if logs and "step=5 " in logs[0].read_text():
                log = logs[0]
            time.sleep(0.2)
        assert log is not None, proc.poll()
        proc.stdout.close()  # tee is gone …
        proc.send_signal(signal.SIGINT)  # … with the Ctrl-C that reaches the driver
        proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    text = log.read_text()
    m = re.search(r"interrupted: training stopped on request at iteration (\d+)", text)
    assert m, text[-2000:]
    key = log.stem.split("-", 1)[1]
    assert json.loads((Path("runs/work/train") / key / "latest.json").read_text())["iteration"] == int(m.group(1)) >= 5
    runs = Tracker(default_uri(Path("runs").absolute()), "sig").find({"famix.sweep": "sig"})
    assert runs and {r.info.status for r in runs} == {"KILLED"}, [(r.info.run_name, r.info.status) for r in runs]


def test_next_start_removes_temp_folders_of_killed_writers(fake_engine):
    import socket

    from orchestrator.driver import RunOptions, run_plan

    plan = _plan()
    tmp = plan.store.root / ".tmp"
    dead = subprocess.Popen(["true"])
    dead.wait()
    host = socket.gethostname()
    stale = tmp / f"{host}+{dead.pid}+{12345}+{'a' * 32}"  # its writer was kill -9'd
    old = tmp / ("b" * 32)  # an older layout, no owner in the name, hours old
    live = tmp / f"{host}+{os.getpid()}+{process_start(os.getpid())}+{'c' * 32}"  # a stage being written now
    other = tmp / f"node07+{os.getpid()}+1+{'d' * 32}"  # another host's, recent: maybe running
    for d in (stale, old, live, other):
        (d / "part").mkdir(parents=True)
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    buf = io.StringIO()
    assert run_plan(plan, RunOptions(backend="local"), Console(file=buf, width=200, soft_wrap=True)).exit_code == 0
    assert sorted(p.name for p in tmp.iterdir()) == sorted([live.name, other.name])
    assert "removed 2 half-written stage folders" in buf.getvalue()

    # all done and MLflow complete: the rerun's fast path cleans up too (it left them for good)
    (stale / "part").mkdir(parents=True)
    buf = io.StringIO()
    assert run_plan(plan, RunOptions(backend="local"), Console(file=buf, width=200, soft_wrap=True)).exit_code == 0
    assert "all done; MLflow complete" in buf.getvalue() and "removed 1 half-written stage folder left in" in buf.getvalue()
    assert not stale.exists()


def _proxy(port: int, target_port: int) -> tuple[socket.socket, threading.Event]:
    """A TCP forwarder 127.0.0.1:port -> 127.0.0.1:target_port (the tracking server 'coming back')."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(32)
    stop = threading.Event()

    def pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def accept() -> None:
        while not stop.is_set():
            try:
                client, _ = srv.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", target_port))
            threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return srv, stop


def _tracking_calls_by_thread(monkeypatch) -> list[str]:
    """The names of the threads that call tracking (the health probe, a batch send, the client).

    A training "does not wait for tracking" when none of these runs on its own thread.
    """
    from orchestrator.tracking import RunLogger

    threads: list[str] = []
    for name in ("_reachable", "_send"):
        original = getattr(RunLogger, name)

        def spy(self, *args, _original=original, **kwargs):
            threads.append(threading.current_thread().name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(RunLogger, name, spy)
    client = RunLogger.client

    def spied_client(self):
        threads.append(threading.current_thread().name)
        return client.fget(self)

    monkeypatch.setattr(RunLogger, "client", property(spied_client))
    return threads


@pytest.mark.mlflow_server
def test_tracking_down_never_stalls_logging_and_loses_no_metric(mlflow_server_uri, monkeypatch):
    from urllib.parse import urlparse

    from orchestrator.tracking import RunLogger, Tracker

    tr = Tracker(mlflow_server_uri, "stall")
    rid, _ = tr.ensure_run({"famix.trial": "t"}, {}, name="t")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here yet: the server is "down"
    notes: list[str] = []
    logger = RunLogger({"uri": f"http://127.0.0.1:{port}", "run_ids": [rid]}, background=True, notify=notes.append)
    threads = _tracking_calls_by_thread(monkeypatch)
    for step in range(20):
        logger.log_metrics({"train/loss": float(step), "train/lr": 0.1}, step)
    deadline = time.time() + 20
    while not notes and time.time() < deadline:
        time.sleep(0.1)
    assert len(notes) == 1 and f"MLflow tracking at http://127.0.0.1:{port} unreachable" in notes[0], notes
    srv, stop = _proxy(port, urlparse(mlflow_server_uri).port)  # the server is back
    try:
        assert logger.flush(timeout_s=60) == []
    finally:
        stop.set()
        srv.close()
    assert len(notes) == 2 and "is reachable again" in notes[1], notes
    # the training does not wait for tracking: every tracking call ran on the sender's thread
    assert threads and set(threads) == {"famix-mlflow-sender"}, set(threads)
    history = tr.client.get_metric_history(rid, "train/loss")
    assert sorted(m.step for m in history) == list(range(20))  # every step once: nothing lost, nothing twice
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == [float(i) for i in range(20)]


@pytest.mark.mlflow_server
def test_a_resumed_stage_does_not_wait_for_a_tracking_server_that_is_down(mlflow_server_uri, monkeypatch):
    """Resuming a training reads which steps MLflow already has; with the server down that read
    happens in the sender once the server is back, so the stage starts at once, and every step
    ends up logged exactly once."""
    from urllib.parse import urlparse

    from orchestrator.tracking import RunLogger, Tracker

    tr = Tracker(mlflow_server_uri, "stall-resume")
    rid, _ = tr.ensure_run({"famix.trial": "t"}, {}, name="t")
    first = RunLogger({"uri": mlflow_server_uri, "run_ids": [rid]}, background=True)
    for step in range(10):  # the first attempt logged steps 0-9, then was killed
        first.log_metrics({"train/loss": float(step)}, step)
    assert first.flush(timeout_s=60) == []
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # the server is "down"
    notes: list[str] = []
    logger = RunLogger({"uri": f"http://127.0.0.1:{port}", "run_ids": [rid]}, background=True, notify=notes.append)
    threads = _tracking_calls_by_thread(monkeypatch)
    logger.skip_logged_steps("train/loss")
    for step in range(6, 20):  # resumed from the checkpoint at step 6: steps 6-9 come again
        logger.log_metrics({"train/loss": float(step)}, step)
    deadline = time.time() + 20
    while not notes and time.time() < deadline:
        time.sleep(0.1)
    assert notes and "unreachable" in notes[0], notes
    srv, stop = _proxy(port, urlparse(mlflow_server_uri).port)
    try:
        assert logger.flush(timeout_s=60) == []
    finally:
        stop.set()
        srv.close()
    # the stage did not wait for tracking: the history read and every send ran on the sender's thread
    assert threads and set(threads) == {"famix-mlflow-sender"}, set(threads)
    history = tr.client.get_metric_history(rid, "train/loss")
    assert sorted(m.step for m in history) == list(range(20))  # 6-9 not twice, 10-19 not lost


REPO = Path(__file__).resolve().parents[1]

SAME_STAGE_IN_ANOTHER_DRIVER = """\
import json, sys, time
from pathlib import Path
from orchestrator.execute import execute_stage
from orchestrator.stages import StageTask

me = sys.argv[1]
task = StageTask(kind="synthetic", key="k" * 64, config={"seconds": 10.0}, deps={}, store=str(Path("runs/store").absolute()),
                 log_path=str(Path(f"runs/{me}/logs/synthetic.log").absolute()), name="synthetic k")
Path(f"ready-{me}").touch()
while not all(Path(f"ready-{x}").exists() for x in ("a", "b")):  # both drivers reach the stage together
    time.sleep(0.01)
print(json.dumps(execute_stage(task).status))
"""


def test_two_drivers_reaching_the_same_stage_run_it_once():
    """Two sweeps sharing a run dir (one store) reached the same training at once: both trained it into
    the same checkpoint folder (one resumed from the other's checkpoints) and appended to one history,
    its steps twice. Now one process runs a stage at a time: the other waits, says so in its log, and
    reports the artifact the first one made as cached."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    drivers = {me: subprocess.Popen([sys.executable, "-c", SAME_STAGE_IN_ANOTHER_DRIVER, me], stdout=subprocess.PIPE, text=True, env=env)
               for me in "ab"}  # fmt: skip
    statuses = {me: json.loads(p.communicate()[0]) for me, p in drivers.items()}
    assert all(p.returncode == 0 for p in drivers.values())
    assert sorted(statuses.values()) == ["cached", "done"], statuses
    logs = {me: Path(f"runs/{me}/logs/synthetic.log").read_text() for me in "ab"}
    waiter = next(me for me, status in statuses.items() if status == "cached")
    ran = "b" if waiter == "a" else "a"
    assert f"waiting: another process runs this stage (pid {drivers[ran].pid} on {socket.gethostname()}" in logs[waiter]
    assert "start synthetic" not in logs[waiter] and "cached: finished by the process this one waited for" in logs[waiter]
    assert logs[ran].count("start synthetic") == 1 and "done in" in logs[ran]


FIRST_OPEN_OF_THE_STORE = """\
import sys, time
from pathlib import Path
from reports.mlflow_client import mlflow_client

Path(f"ready-{sys.argv[1]}").touch()
while len(list(Path(".").glob("ready-*"))) < int(sys.argv[2]):  # every driver starts together
    time.sleep(0.005)
mlflow_client(sys.argv[3]).search_experiments()
"""


def test_drivers_starting_together_in_a_new_run_dir_create_one_sound_mlflow_store():
    """Two sweeps started at once into a new run dir both made MLflow create and migrate the SQLite
    tables: both crashed with a traceback (`table _alembic_tmp_metrics already exists`) and the half
    migrated database failed every later command in that run dir. Now the store is opened by one
    process at a time."""
    from reports.collect import default_tracking_uri
    from reports.mlflow_client import mlflow_client

    Path("runs").mkdir()
    uri = default_tracking_uri("runs")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    n = 3
    drivers = [subprocess.Popen([sys.executable, "-c", FIRST_OPEN_OF_THE_STORE, str(i), str(n), uri], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(n)]  # fmt: skip
    errors = [p.communicate()[1] for p in drivers]
    assert [p.returncode for p in drivers] == [0] * n, "\n".join(e.strip().splitlines()[-1] for e in errors if e.strip())
    client = mlflow_client(uri)
    client.create_experiment("after")  # a later command finds a sound store
    assert [e.name for e in client.search_experiments()].count("after") == 1


def test_damaged_mlflow_database_is_named_by_status_and_report_and_rebuilt_by_run(fake_engine, capsys):
    """A truncated runs/mlflow.db: `sweep run` said "all done; MLflow complete" (or, with work to do,
    ended in a 60-line traceback); `status` and `report` said only that reading failed. Now status and
    report name the file and the fix, and run sets the file aside and rebuilds the runs from the store."""
    from orchestrator.driver import RunOptions, run_plan
    from orchestrator.tracking import Tracker, default_uri

    plan = _plan()
    assert run_plan(plan, RunOptions(backend="local"), Console(file=io.StringIO(), width=200)).exit_code == 0
    results = (plan.sweep_dir / "results.csv").read_text()
    db = plan.run_dir / "mlflow.db"
    with open(db, "r+b") as f:
        f.truncate(db.stat().st_size // 2)

    buf = io.StringIO()
    sweep_status(plan, Console(file=buf, width=400, soft_wrap=True))
    assert f"note: MLflow database {db.absolute()} is damaged (database disk image is malformed); `famix sweep run mini" in buf.getvalue()
    assert "sets it aside and rebuilds this sweep's runs from the store" in buf.getvalue()

    capsys.readouterr()
    assert main(["report", "mini", "--run-dir", str(plan.run_dir), "--no-figures"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{db.absolute()}: the MLflow database is damaged (database disk image is malformed)" in err, err
    assert "famix sweep run" in err

    calls = len(fake_engine)
    buf = io.StringIO()
    assert run_plan(plan, RunOptions(backend="local"), Console(file=buf, width=400, soft_wrap=True)).exit_code == 0
    out = buf.getvalue()
    assert "MLflow complete" not in out and f"MLflow database {db.absolute()} is damaged" in out and "set aside as" in out, out
    assert len(fake_engine) == calls  # nothing retrained: MLflow is rebuilt from the store
    kept = [p.name for p in plan.run_dir.glob("mlflow.db.damaged-*")]
    assert len(kept) == 1, kept
    trials = Tracker(default_uri(plan.run_dir), "mini").find({"famix.sweep": "mini", "famix.role": "trial"})
    assert len(trials) == 2 and all("miou/C" in r.data.metrics and r.data.tags["famix.status"] == "done" for r in trials)
    assert (plan.sweep_dir / "results.csv").read_text() == results
    buf = io.StringIO()
    assert run_plan(plan, RunOptions(backend="local"), Console(file=buf, width=400, soft_wrap=True)).exit_code == 0
    assert "all done; MLflow complete" in buf.getvalue() and "is damaged" not in buf.getvalue()


@pytest.mark.parametrize("made_by", ["status", "mlflow"])
def test_a_lost_mlflow_store_rebuilt_by_status_is_completed_by_the_next_run(fake_engine, made_by):
    """After a finished sweep's runs/mlflow.db was lost, `sweep status` (or `report`) rebuilt the trial
    runs from the store but left the sweep's run empty, and the next `sweep run` said "all done; MLflow
    complete" (its finalized.json and a store were there): the sweep's run never got its description,
    table and report, nor did another sweep of the run dir. Now a new store voids the run dir's markers,
    and the fast path asks the store for the sweep's finished run: a new store made by MLflow itself
    (`mlflow ui` on the run dir) is completed too."""
    from orchestrator.driver import RunOptions, run_plan
    from orchestrator.tracking import Tracker, default_uri
    from reports.mlflow_client import forget_store

    def run(p) -> str:
        buf = io.StringIO()
        assert run_plan(p, RunOptions(backend="local"), Console(file=buf, width=400, soft_wrap=True)).exit_code == 0
        return buf.getvalue()

    def parent(name: str):
        [run] = Tracker(default_uri(plan.run_dir), name).find({"famix.sweep": name, "famix.role": "sweep"})
        return run

    plan = _plan()
    other = _plan(SWEEP.replace("name: mini", "name: other"), name="other")  # a second sweep of the same run dir
    run(plan), run(other)
    (plan.run_dir / "mlflow.db").unlink()
    forget_store(default_uri(plan.run_dir))  # as the next command, a new process, finds it
    if made_by == "status":
        sweep_status(plan, Console(file=io.StringIO(), width=200))
        assert "mlflow.note.content" not in parent("mini").data.tags  # all that status can give the sweep's run
    else:  # a bare `mlflow ui --backend-store-uri sqlite:///runs/mlflow.db` makes an empty store
        from mlflow.tracking import MlflowClient

        MlflowClient(tracking_uri=default_uri(plan.run_dir)).search_experiments()
        forget_store(default_uri(plan.run_dir))
        assert (plan.sweep_dir / "finalized.json").is_file()

    calls = len(fake_engine)
    for p in (plan, other):
        out = run(p)
        assert "MLflow complete" not in out, out
        done = parent(p.name)
        assert "### Results" in done.data.tags["mlflow.note.content"] and done.info.status == "FINISHED"
        assert Tracker(default_uri(plan.run_dir), p.name).has_artifacts(done.info.run_id, "report")
    assert len(fake_engine) == calls  # nothing retrained
    assert "all done; MLflow complete" in run(plan)


def test_a_damaged_stage_record_is_not_ingested_into_a_rebuilt_mlflow_store(fake_engine, capsys):
    """Rebuilding MLflow from the store (a lost mlflow.db, then `report`) read a training's truncated
    history.jsonl and the bank's altered summary.json without a look at DONE.json: a cut-short curve was
    logged and tagged ingested, silently. Now the files are checked first; each damaged stage is left
    out with one line naming the file and the fix, which then fills MLflow in. Its trials were tagged
    famix.status=done all the same, as if MLflow held their whole record; now they are `damaged`."""
    import warnings

    from famix_core.errors import FamixWarning
    from orchestrator.driver import RunOptions, run_plan
    from orchestrator.tracking import Tracker, default_uri
    from reports.mlflow_client import forget_store

    plan = _plan()
    assert run_plan(plan, RunOptions(backend="local"), Console(file=io.StringIO(), width=200)).exit_code == 0
    first, second = (plan.trial_stages[t.id] for t in plan.trials)
    history = plan.store.path("train", first.train) / "history.jsonl"
    lines = history.read_text().splitlines(keepends=True)
    history.write_text(lines[0])  # a lost write: two of three steps gone, still well-formed
    summary = plan.store.path("mine", first.mine) / "summary.json"
    summary.write_text(summary.read_text().replace("3", "4"))  # same size: only the sha256 tells
    (plan.run_dir / "mlflow.db").unlink()
    forget_store(default_uri(plan.run_dir))  # as the next command, a new process, finds it

    capsys.readouterr()
    assert main(["report", "mini", "--run-dir", str(plan.run_dir), "--no-figures"]) == 0
    err = capsys.readouterr().err.splitlines()
    fix = "left out of MLflow; `famix sweep run mini --profile smoke --rerun-failed` rebuilds it"
    size = history.stat().st_size
    assert f"famix: warning: damaged train artifact {history}: {size} bytes, expected {len(''.join(lines))}: {fix}" in err, err
    assert f"famix: warning: damaged mine artifact {summary}: content changed (sha256 differs from DONE.json): {fix}" in err, err
    assert len([e for e in err if e.startswith("famix: warning:")]) == 2, err  # the bank of both trials named once
    tracker = Tracker(default_uri(plan.run_dir), "mini")
    runs = {r.data.tags["famix.trial"]: r for r in tracker.find({"famix.sweep": "mini", "famix.role": "trial"})}
    damaged, sound = runs[plan.trials[0].id], runs[plan.trials[1].id]
    assert "famix.history.train" not in damaged.data.tags and "train/loss" not in damaged.data.metrics
    assert sound.data.tags["famix.history.train"] == second.train and "miou/C" in damaged.data.metrics
    assert not any(tracker.has_artifacts(r.info.run_id, "styles") for r in runs.values())
    # MLflow lacks part of each trial's record (the bank is both trials'): neither is called done
    assert {r.data.tags["famix.status"] for r in runs.values()} == {"damaged"}
    assert {r.info.status for r in runs.values()} == {"FAILED"}
    parent = tracker.find({"famix.sweep": "mini", "famix.role": "sweep"})[0]
    assert parent.data.tags.get("famix.status") != "done" and parent.info.status == "RUNNING"

    out = io.StringIO()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert run_plan(plan, RunOptions(backend="local", rerun_failed=True), Console(file=out, width=400, soft_wrap=True)).exit_code == 0
    assert not [w for w in seen if issubclass(w.category, FamixWarning)] and out.getvalue().count(": set aside as ") == 2
    assert [m.step for m in tracker.client.get_metric_history(damaged.info.run_id, "train/loss")] == [0, 1, 2]
    assert all(tracker.has_artifacts(r.info.run_id, "styles") for r in runs.values())
    rebuilt = tracker.find({"famix.sweep": "mini", "famix.role": "trial"}) + tracker.find({"famix.sweep": "mini", "famix.role": "sweep"})
    assert {(r.data.tags["famix.status"], r.info.status) for r in rebuilt} == {("done", "FINISHED")}


KILLED_WHILE_CREATING_THE_TABLES = """\
import os, sys
from sqlalchemy import event
from sqlalchemy.engine import Engine

ddl = []


@event.listens_for(Engine, "before_cursor_execute")
def kill_at(conn, cursor, statement, *args):  # SIGKILL's effect: no handler, no cleanup, at the Nth DDL statement
    if statement.lstrip().upper().startswith(("CREATE", "ALTER", "DROP")):
        ddl.append(statement)
        if len(ddl) == int(sys.argv[2]):
            os._exit(9)


if sys.argv[3] == "mlflow":  # MLflow's own client, as the code before made the store
    from mlflow.tracking import MlflowClient
    MlflowClient(tracking_uri=sys.argv[1])
else:
    from reports.mlflow_client import mlflow_client
    mlflow_client(sys.argv[1])
print(len(ddl))
"""


def _killed_while_creating_the_tables(uri: str, at: int, opener: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", KILLED_WHILE_CREATING_THE_TABLES, uri, str(at), opener], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 9, f"not killed at DDL statement {at} (MLflow makes {proc.stdout.strip()}?): {proc.stderr[-500:]}"


def test_a_kill_while_mlflow_creates_a_new_store_leaves_none_half_made():
    """MLflow creates a new SQLite store's tables in some 400 statements over seconds: a kill in a
    new sweep's first seconds left a file every later open failed on (`table _alembic_tmp_params
    already exists`). The store is now made under another name and moved into place complete."""
    from reports.collect import default_tracking_uri
    from reports.mlflow_client import mlflow_client

    uri = default_tracking_uri("runs")
    _killed_while_creating_the_tables(uri, 60, "famix")
    assert not Path("runs/mlflow.db").exists()
    assert [p.name for p in Path("runs").glob("mlflow.db.creating-*")], "the killed creator's file is where it was made"
    client = mlflow_client(uri)  # the next open creates a whole store and removes the killed one's file
    client.create_experiment("after")
    assert [e.name for e in client.search_experiments()].count("after") == 1
    assert sorted(p.name for p in Path("runs").iterdir()) == ["mlflow.db", "mlflow.db.lock"]


def test_a_store_with_half_made_tables_is_named_by_status_and_report_and_rebuilt_by_run(fake_engine, capsys):
    """A store left half made by a kill during its creation (by the code before, or an MLflow migration)
    passes SQLite's own check, and every command ended in a traceback from alembic. Now status names it,
    report prints one line, and run sets it aside and rebuilds the sweep's runs from the store."""
    import warnings

    from famix_core.errors import FamixWarning
    from orchestrator.driver import RunOptions, run_plan
    from orchestrator.tracking import Tracker, default_uri
    from reports.mlflow_client import forget_store

    plan = _plan()
    assert run_plan(plan, RunOptions(backend="local"), Console(file=io.StringIO(), width=200)).exit_code == 0
    results = (plan.sweep_dir / "results.csv").read_text()
    db = (plan.run_dir / "mlflow.db").absolute()
    half = db.with_name("half.db")
    _killed_while_creating_the_tables(f"sqlite:///{half}", 70, "mlflow")
    os.replace(half, db)
    forget_store(default_uri(plan.run_dir))  # as a new process: MLflow's cached connections read the file before
    (plan.sweep_dir / "finalized.json").unlink()  # the sweep is not finalized against this store
    why = "its tables are half made, as when a process is killed while creating them: table _alembic_tmp_trace_tags already exists"

    buf = io.StringIO()
    sweep_status(plan, Console(file=buf, width=400, soft_wrap=True))
    assert f"note: MLflow database {db} is damaged ({why}); `famix sweep run mini" in buf.getvalue(), buf.getvalue()

    capsys.readouterr()
    assert main(["report", "mini", "--run-dir", str(plan.run_dir), "--no-figures"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{db}: the MLflow database is damaged ({why}); `famix sweep run`" in err, err

    calls = len(fake_engine)
    buf = io.StringIO()
    assert run_plan(plan, RunOptions(backend="local"), Console(file=buf, width=400, soft_wrap=True)).exit_code == 0
    out = buf.getvalue()
    assert f"MLflow database {db} is damaged ({why}): set aside as" in out, out
    assert len(fake_engine) == calls  # nothing retrained
    assert len(list(plan.run_dir.glob("mlflow.db.damaged-*"))) == 1
    trials = Tracker(default_uri(plan.run_dir), "mini").find({"famix.sweep": "mini", "famix.role": "trial"})
    assert len(trials) == 2 and all("miou/C" in r.data.metrics and r.data.tags["famix.status"] == "done" for r in trials)
    assert (plan.sweep_dir / "results.csv").read_text() == results


def _unwritable(*paths: Path) -> None:
    """Make ``paths`` unwritable: immutable (``chattr +i``) as root, which ignores mode bits; read-only modes otherwise."""
    for p in paths:
        if os.geteuid() == 0:
            if subprocess.run(["chattr", "+i", str(p)], capture_output=True).returncode != 0:
                pytest.skip("chattr +i is not supported on this filesystem (root ignores mode bits)")
        else:
            p.chmod(0o555 if p.is_dir() else 0o444)


def _writable_again(*paths: Path) -> None:
    for p in paths:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(p)], capture_output=True)
        else:
            p.chmod(0o755 if p.is_dir() else 0o644)


def test_report_into_a_run_dir_kept_read_only_is_one_line_before_any_work(fake_engine, capsys):
    """`famix report` of a finished sweep whose run dir cannot be written (kept on a read-only mount):
    a note that ingestion was skipped (naming driver.lock), then, after the work, an error naming a
    temp file (`…/report/.table.md.9605543cc182.tmp: cannot write`). Now one line naming the report
    folder and --out, before any work; nothing is ingested into a run dir that cannot be written."""
    from orchestrator.driver import RunOptions, run_plan

    plan = _plan()
    assert run_plan(plan, RunOptions(backend="local"), Console(file=io.StringIO(), width=200)).exit_code == 0
    report, lock = plan.sweep_dir / "report", plan.sweep_dir / "driver.lock"
    before = sorted(p.name for p in report.iterdir())
    _unwritable(report, lock)
    try:
        capsys.readouterr()
        rc = main(["report", "mini", "--run-dir", str(plan.run_dir), "--no-figures"])
        err = capsys.readouterr().err
    finally:
        _writable_again(report, lock)
    assert rc == 2 and err.count("\n") == 1, err
    assert err.startswith(f"famix: error: {report}: cannot write in it (") and err.endswith("; choose another folder with --out\n"), err
    assert sorted(p.name for p in report.iterdir()) == before


def test_a_full_disk_while_writing_a_report_names_the_file(capsys, monkeypatch):
    """`famix report --out` on a full disk said `famix: error: : cannot write (No space left on device)`:
    a writer's failing write() names no file. An atomic write now names the file it was writing (in
    the report folder, not the temp folder the report is built in), and leaves no temp file or folder
    behind: no report folder at all, as none was there before."""
    import errno

    import matplotlib.figure

    from test_reports_csv import PAPER_CSV

    def disk_full(self, fname, **kwargs):
        Path(fname).write_bytes(b"\x89PNG")  # what got out before the disk filled up
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as a file object's write() raises it: no file name

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", disk_full)
    rc = main(["report", "paper", "--csv", str(PAPER_CSV), "--out", "rep"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert err.startswith("famix: error: rep/") and err.endswith(f".png: cannot write ({os.strerror(errno.ENOSPC)})\n"), err
    assert [p.name for p in Path().iterdir()] == []  # no temp file or folder left, no half report
    from famix_core.io import atomic_path

    with pytest.raises(OSError) as raised:  # a training's checkpoint on a full disk: the stage's error line
        with atomic_path("rep/tensors.safetensors"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert str(raised.value) == f"[Errno {errno.ENOSPC}] {os.strerror(errno.ENOSPC)}: 'rep/tensors.safetensors'"


def test_a_done_marker_cut_short_is_not_done_and_the_rerun_rebuilds_the_stage(fake_engine):
    """A DONE.json cut short (a write the machine lost in a crash) counted as done: `status` said
    done, results.csv had no value in that column of a row marked done, and no run rebuilt it (only
    `--rerun-failed`, which nothing suggested). Now the stage is to run and the rerun replaces its folder."""
    from orchestrator.driver import RunOptions, run_plan

    plan = _plan()
    assert run_plan(plan, RunOptions(backend="local"), Console(file=io.StringIO(), width=200)).exit_code == 0
    results = (plan.sweep_dir / "results.csv").read_text()
    key = plan.trial_stages[plan.trials[0].id].evaluate["C"]
    done = plan.store.path("evaluate", key) / "DONE.json"
    done.write_text(done.read_text()[:30])
    assert plan.status()[key] == "to run"
    calls = len(fake_engine)
    assert run_plan(plan, RunOptions(backend="local"), Console(file=io.StringIO(), width=200)).exit_code == 0
    assert fake_engine[calls:] == [("evaluate", key)]  # that stage alone
    assert (plan.sweep_dir / "results.csv").read_text() == results
    assert plan.store.done_info("evaluate", key) is not None and plan.store.problem("evaluate", key, deep=True) is None
    assert not any((plan.store.root / ".tmp").iterdir())  # the damaged folder is gone, not left as debris


def _ctrl_c_in_the_second_training(monkeypatch):
    """Make the second training stage of a sweep raise KeyboardInterrupt (the first one runs);
    returns the real training runner, to put back."""
    from orchestrator import execute

    train = execute.STAGE_RUNNERS["train"]
    trained: list[str] = []

    def ctrl_c_in_the_second_training(ctx):
        if trained:
            raise KeyboardInterrupt
        trained.append(ctx.task.key)
        return train(ctx)

    monkeypatch.setitem(execute.STAGE_RUNNERS, "train", ctrl_c_in_the_second_training)
    return train


def test_an_interrupted_sweep_leaves_no_mlflow_run_running(fake_engine, monkeypatch):
    """Ctrl-C (or SIGTERM, `famix sweep cancel`) stopped the stages, but the sweep's MLflow runs
    stayed RUNNING for good (until a rerun). Now they end KILLED, their famix.status kept; the rerun
    finishes them."""
    from orchestrator import execute
    from orchestrator.driver import RunOptions, run_plan
    from orchestrator.tracking import Tracker, default_uri

    train = _ctrl_c_in_the_second_training(monkeypatch)
    plan = _plan()
    with pytest.raises(KeyboardInterrupt):
        run_plan(plan, RunOptions(backend="local"), Console(file=io.StringIO(), width=200))
    tracker = Tracker(default_uri(plan.run_dir), "mini")
    runs = tracker.find({"famix.sweep": "mini"})
    assert len(runs) == 3 and sorted(r.info.status for r in runs) == ["KILLED"] * 3, [(r.info.run_name, r.info.status) for r in runs]
    seen: list[str] = []

    def watched(ctx):  # while the rerun trains, MLflow showed every run KILLED, its curves growing
        seen.extend(sorted(r.info.status for r in tracker.find({"famix.sweep": "mini"})))
        return train(ctx)

    monkeypatch.setitem(execute.STAGE_RUNNERS, "train", watched)
    assert run_plan(plan, RunOptions(backend="local"), Console(file=io.StringIO(), width=200)).exit_code == 0
    assert seen == ["RUNNING"] * 3
    runs = tracker.find({"famix.sweep": "mini"})
    assert sorted((r.info.status, r.data.tags["famix.status"]) for r in runs) == [("FINISHED", "done")] * 3


def test_the_sweep_run_of_a_new_run_is_not_done_while_it_runs_or_once_interrupted(fake_engine, monkeypatch):
    """The sweep's MLflow run kept `famix.status=done` of a finished earlier plan while a run with other
    overrides ran, and after that run was interrupted (KILLED, `done`). It reads `partial` from the moment
    stages run again until the driver ends it."""
    from orchestrator import execute
    from orchestrator.driver import RunOptions, run_plan
    from orchestrator.tracking import Tracker, default_uri

    plan = _plan()
    assert run_plan(plan, RunOptions(backend="local"), Console(file=io.StringIO(), width=200)).exit_code == 0
    tracker = Tracker(default_uri(plan.run_dir), "mini")
    (parent,) = tracker.find({"famix.sweep": "mini", "famix.role": "sweep"})
    assert (parent.info.status, parent.data.tags["famix.status"]) == ("FINISHED", "done")
    train = execute.STAGE_RUNNERS["train"]
    seen: list[tuple[str, str]] = []

    def watched(ctx):
        run = tracker.client.get_run(parent.info.run_id)
        seen.append((run.info.status, run.data.tags["famix.status"]))
        raise KeyboardInterrupt

    monkeypatch.setitem(execute.STAGE_RUNNERS, "train", watched)
    other = prepare("mini", run_dir="runs", overrides=["train.iterations=3"], check_data=lambda c: None, check_weights=lambda c: None)
    with pytest.raises(KeyboardInterrupt):
        run_plan(other, RunOptions(backend="local"), Console(file=io.StringIO(), width=200))
    assert seen[0] == ("RUNNING", "partial")
    run = tracker.client.get_run(parent.info.run_id)
    assert (run.info.status, run.data.tags["famix.status"]) == ("KILLED", "partial")
    monkeypatch.setitem(execute.STAGE_RUNNERS, "train", train)
    assert run_plan(other, RunOptions(backend="local"), Console(file=io.StringIO(), width=200)).exit_code == 0
    run = tracker.client.get_run(parent.info.run_id)
    assert (run.info.status, run.data.tags["famix.status"]) == ("FINISHED", "done")


@pytest.mark.parametrize(
    "backend, killed, first_stage",
    [("local", True, False), ("local", True, True), ("slurm", True, False), ("local", False, False)],
    ids=["local", "local-in-its-first-stage", "slurm", "not-killed"],
)
def test_status_ends_the_runs_a_killed_driver_left_running_where_its_stages_died_with_it(fake_engine, monkeypatch, backend, killed, first_stage):
    """A driver killed with `kill -9` cannot end its MLflow runs: they stayed RUNNING until the next
    `sweep run`. `famix sweep status` now ends them KILLED when the stages died with the driver (local,
    Ray), also when it was killed before any stage was done (status then did nothing at all); a Slurm
    driver's jobs go on and log, so its runs are left running while they are queued or running, and so
    are the runs of a driver that was not killed (it wrote ``ended``: here they were left running by the test)."""
    import orchestrator.tracking as tracking
    from orchestrator import execute
    from orchestrator.backends.slurm.backend import SlurmBackend

    monkeypatch.setattr(SlurmBackend, "jobs_ended", classmethod(lambda cls, sweep_dir: False))
    from orchestrator.driver import RunOptions, run_plan
    from orchestrator.tracking import Tracker, default_uri

    kind = "mine" if first_stage else "train"
    real = execute.STAGE_RUNNERS[kind]
    if first_stage:
        monkeypatch.setitem(execute.STAGE_RUNNERS, "mine", lambda ctx: (_ for _ in ()).throw(KeyboardInterrupt))
    else:
        _ctrl_c_in_the_second_training(monkeypatch)
    ending = tracking.end_interrupted_runs
    monkeypatch.setattr(tracking, "end_interrupted_runs", lambda *a: None)  # as kill -9 leaves them
    plan = _plan()
    with pytest.raises(KeyboardInterrupt):
        run_plan(plan, RunOptions(backend="local"), Console(file=io.StringIO(), width=200))
    assert any(plan.store.is_done(s.kind, k) for k, s in plan.stages.items()) != first_stage
    monkeypatch.setitem(execute.STAGE_RUNNERS, kind, real)
    monkeypatch.setattr(tracking, "end_interrupted_runs", ending)
    driver = json.loads((plan.sweep_dir / "driver.json").read_text())
    assert driver["ended"] > driver["started"]  # a driver that returns or raises says so; a killed one cannot
    if killed:
        del driver["ended"]
    (plan.sweep_dir / "driver.json").write_text(json.dumps({**driver, "backend": backend}))
    tracker = Tracker(default_uri(plan.run_dir), "mini")
    assert sorted(r.info.status for r in tracker.find({"famix.sweep": "mini"})) == ["RUNNING"] * 3
    assert main(["sweep", "status", "mini", "--run-dir", "runs"]) == 0
    ended = sorted(r.info.status for r in tracker.find({"famix.sweep": "mini"}))
    assert ended == (["KILLED"] * 3 if backend == "local" and killed else ["RUNNING"] * 3)


@pytest.mark.parametrize("command", ["status", "run"])
def test_the_runs_of_a_killed_driver_of_another_plan_are_ended(fake_engine, monkeypatch, capsys, command):
    """A driver run with overrides (`make sweep ARGS=…`) and killed with `kill -9` left its runs RUNNING
    until a command with those same overrides came: the plain `famix sweep status` said the runs came
    from another plan and left them, and the plain `sweep run` superseded them, RUNNING for good.
    Nothing runs them (its stages died with it, and the lock is free): they end KILLED."""
    import orchestrator.tracking as tracking
    from orchestrator import execute
    from orchestrator.driver import RunOptions, run_plan
    from orchestrator.tracking import Tracker, default_uri

    train = execute.STAGE_RUNNERS["train"]
    _ctrl_c_in_the_second_training(monkeypatch)
    ending = tracking.end_interrupted_runs
    monkeypatch.setattr(tracking, "end_interrupted_runs", lambda *a: None)  # as kill -9 leaves them
    _plan()
    plan = prepare("mini", run_dir="runs", overrides=["train.iterations=3"], check_data=lambda c: None, check_weights=lambda c: None)
    with pytest.raises(KeyboardInterrupt):
        run_plan(plan, RunOptions(backend="local"), Console(file=io.StringIO(), width=200))
    monkeypatch.setitem(execute.STAGE_RUNNERS, "train", train)
    monkeypatch.setattr(tracking, "end_interrupted_runs", ending)
    driver = json.loads((plan.sweep_dir / "driver.json").read_text())
    del driver["ended"]  # a killed driver cannot say it ended
    tracker = Tracker(default_uri(plan.run_dir), "mini")
    if command == "status":  # no `ended`, but its process lives (a run dir whose filesystem has no locks): left alone
        (plan.sweep_dir / "driver.json").write_text(json.dumps(driver))
        assert main(["sweep", command, "mini", "--run-dir", "runs"]) == 0
        assert sorted(r.info.status for r in tracker.find({"famix.sweep": "mini"})) == ["RUNNING"] * 3
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (plan.sweep_dir / "driver.json").write_text(json.dumps({**driver, "pid": dead.pid}))  # and its process is gone
    tracker = Tracker(default_uri(plan.run_dir), "mini")
    assert sorted(r.info.status for r in tracker.find({"famix.sweep": "mini"})) == ["RUNNING"] * 3
    capsys.readouterr()
    if command == "status":  # a run of a Slurm sweep, whose jobs go on and log, is left running
        tracker.client.create_run(tracker.experiment_id, tags={"famix.sweep": "mini", "famix.role": "trial", "famix.backend": "slurm"})
    assert main(["sweep", command, "mini", "--run-dir", "runs"]) == 0  # the plain plan
    runs = tracker.find({"famix.sweep": "mini"})
    if command == "status":
        assert sorted(r.info.status for r in runs) == ["KILLED"] * 3 + ["RUNNING"]
        out = capsys.readouterr().out
        assert "MLflow: ended 3 runs KILLED that nothing runs any more (their driver was killed; `famix sweep run mini --profile smoke" in out
        assert "train.iterations=3` runs the rest)" in out
    else:  # the other plan's trials superseded and ended; the plain plan's finished
        assert sorted((r.data.tags["famix.role"], r.info.status) for r in runs) == [
            ("superseded", "KILLED"), ("superseded", "KILLED"), ("sweep", "FINISHED"), ("trial", "FINISHED"), ("trial", "FINISHED")]  # fmt: skip


def test_ctrl_c_while_famix_still_imports_is_one_line():
    """A Ctrl-C in the first tenth of a second of `famix`, while Python imported the commands, printed
    a KeyboardInterrupt traceback. The console script is now a wrapper that says `famix: interrupted`
    and exits 130 wherever the interrupt lands."""
    from importlib.metadata import entry_points

    (script,) = entry_points(group="console_scripts", name="famix")
    assert script.value == "orchestrator.entry:run"
    code = (
        "import sys\n"
        "class CtrlC:  # the interrupt lands while the commands are imported\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'orchestrator.__main__':\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, CtrlC())\n"
        "sys.argv = ['famix', 'sweep', 'status', 'ablation']\n"
        "from orchestrator.entry import run\n"
        "run()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stderr) == (130, "famix: interrupted\n"), proc.stderr[-2000:]


def test_a_bug_exits_3_with_its_traceback_not_the_1_of_a_failed_stage():
    """An unexpected exception exited 1, the status `famix sweep run` gives a failed stage: a script
    could not tell a crash from a sweep that ran and lost a stage."""
    code = (
        "import sys\n"
        "import orchestrator.__main__ as m\n"
        "def main(argv=None):\n"
        "    raise RuntimeError('what no check foresaw')\n"
        "m.main = main\n"
        "sys.argv = ['famix', 'sweep', 'status', 'ablation']\n"
        "from orchestrator.entry import run\n"
        "run()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr[-2000:]
    lines = proc.stderr.splitlines()
    assert lines[0] == "Traceback (most recent call last):" and "RuntimeError: what no check foresaw" in lines
    assert lines[-1] == ("famix: internal error (RuntimeError): a bug of famix, not of your input; the traceback above says where"
                         " (exit status 3)")  # fmt: skip
    as_module = code.replace("from orchestrator.entry import run\nrun()\n", "import runpy\nrunpy.run_module('orchestrator', run_name='__main__')\n")
    proc = subprocess.run([sys.executable, "-c", as_module], capture_output=True, text=True, timeout=60)  # python -m orchestrator
    assert proc.returncode == 3 and proc.stderr.splitlines()[-1].startswith("famix: internal error (RuntimeError)"), proc.stderr[-2000:]


def test_an_interrupt_while_the_driver_ends_the_runs_leaves_none_running_and_says_how_to_resume(fake_engine, monkeypatch):
    """A Ctrl-C or SIGTERM after the stages, while the driver logs and ends the MLflow runs, left them
    RUNNING (the handler covered only the stages). Now they end KILLED there too, and the one line
    says what to run next."""
    from famix_core.errors import Interrupted
    from orchestrator import tracking
    from orchestrator.driver import RunOptions, run_plan
    from orchestrator.tracking import Tracker, default_uri

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tracking, "finalize_runs", interrupted)
    plan = _plan()
    with pytest.raises(Interrupted) as e:
        run_plan(plan, RunOptions(backend="local"), Console(file=io.StringIO(), width=200))
    assert str(e.value) == "the finished stages are kept (a training resumes from its last checkpoint): `famix sweep run mini --profile smoke --backend local` runs the rest"
    runs = Tracker(default_uri(plan.run_dir), "mini").find({"famix.sweep": "mini"})
    # the trials, complete, ended as their last stage finished; the sweep's run, cut short, ends KILLED
    states = sorted((r.data.tags["famix.role"], r.data.tags.get("famix.status"), r.info.status) for r in runs)
    assert states == [("sweep", "partial", "KILLED"), ("trial", "done", "FINISHED"), ("trial", "done", "FINISHED")], states


@pytest.mark.parametrize("jobs_done", [False, True], ids=["jobs-cancelled", "jobs-done"])
def test_an_interrupted_slurm_driver_leaves_its_runs_to_the_jobs_and_cancel_ends_them(fake_engine, monkeypatch, jobs_done):
    """The jobs of a Slurm driver go on when it is interrupted: its line says the rerun waits for
    them, and its MLflow runs stay RUNNING, as after --detach (they were ended KILLED while the jobs
    still ran and logged). `famix sweep cancel` ends them once the jobs are cancelled (a cancelled
    detached sweep left them RUNNING for good): KILLED, or FINISHED where the jobs had finished."""
    from famix_core.errors import Interrupted
    from orchestrator.backends.slurm.backend import SlurmBackend
    from orchestrator.driver import RunOptions, cancel_sweep, run_plan
    from orchestrator.execute import execute_stage
    from orchestrator.tracking import Tracker, default_uri

    class Interrupting:  # a Slurm backend whose driver gets Ctrl-C while it waits for the jobs
        def run(self, tasks, **kwargs):
            for task in tasks if jobs_done else []:
                assert execute_stage(task).status == "done"
            raise KeyboardInterrupt

        def close(self):
            pass

    plan = _plan()
    with pytest.raises(Interrupted) as e:
        run_plan(plan, RunOptions(backend="slurm"), Console(file=io.StringIO(), width=200), backend_obj=Interrupting())
    assert str(e.value) == ("the jobs on slurm go on unless cancelled (`famix sweep cancel mini --profile smoke --backend slurm`); "
                            "`famix sweep run mini --profile smoke --backend slurm` waits for them and runs the rest")  # fmt: skip

    def states() -> list[str]:
        return sorted(r.info.status for r in Tracker(default_uri(plan.run_dir), "mini").find({"famix.sweep": "mini"}))

    assert states() == ["RUNNING"] * 3
    monkeypatch.setattr(SlurmBackend, "jobs_ended", classmethod(lambda cls, sweep_dir: False))  # the jobs run
    sweep_status(plan, Console(file=io.StringIO(), width=200))
    assert states() == (["FINISHED"] * 3 if jobs_done else ["RUNNING"] * 3)  # as each trial's stages finish
    out = io.StringIO()
    cancel_sweep(plan, "slurm", Console(file=out, width=200))
    if jobs_done:  # `famix sweep status` ended them
        assert states() == ["FINISHED"] * 3, out.getvalue()
        assert "MLflow" not in out.getvalue()
    else:
        assert states() == ["KILLED"] * 3, out.getvalue()
        assert "MLflow: ended 3 runs of the cancelled jobs KILLED" in out.getvalue()


def test_cancel_without_the_runs_overrides_ends_its_trial_runs(fake_engine, monkeypatch):
    """`famix sweep cancel SWEEP --run-dir DIR` (as docs/slurm.md shows it) of a Slurm sweep run with
    overrides cancelled its jobs but ended only the parent run: the trial runs, of that plan's trial ids,
    stayed RUNNING until a `status` with the overrides. It ends them by driver.json's arguments."""
    from famix_core.errors import Interrupted
    from orchestrator.backends.slurm.backend import SlurmBackend
    from orchestrator.driver import RunOptions, cancel_sweep, prepare, run_plan
    from orchestrator.tracking import Tracker, default_uri

    class Interrupting:  # a Slurm driver that gets Ctrl-C while its jobs run
        def run(self, tasks, **kwargs):
            raise KeyboardInterrupt

        def close(self):
            pass

    _plan()
    ran = prepare("mini", overrides=["train.iterations=7"], check_data=lambda c: None, check_weights=lambda c: None)
    with pytest.raises(Interrupted):
        run_plan(ran, RunOptions(backend="slurm"), Console(file=io.StringIO(), width=200), backend_obj=Interrupting())

    def states() -> list[tuple[str, str]]:
        runs = Tracker(default_uri(ran.run_dir), "mini").find({"famix.sweep": "mini"})
        return sorted((r.data.tags["famix.role"], r.info.status) for r in runs)

    assert states() == [("sweep", "RUNNING"), ("trial", "RUNNING"), ("trial", "RUNNING")]
    monkeypatch.setattr(SlurmBackend, "cancel", lambda self, sweep_dir: 2)  # its two jobs
    out = io.StringIO()
    cancel_sweep(_plan(), "slurm", Console(file=out, width=200))  # no overrides
    assert states() == [("sweep", "KILLED"), ("trial", "KILLED"), ("trial", "KILLED")], out.getvalue()
    assert "MLflow: ended 3 runs of the cancelled jobs KILLED" in out.getvalue()


@pytest.mark.parametrize("backend", ["local", "slurm"])
def test_a_driver_that_fails_ends_its_runs_where_its_stages_end_with_it(fake_engine, backend):
    """An error out of the backend's loop (a Ray actor killed, a cluster lost, a bug) left the sweep's
    MLflow runs RUNNING for good: `famix sweep status` saw driver.json's `ended` and left them. They
    end KILLED, as after Ctrl-C, unless the stages outlive the driver (Slurm's jobs go on)."""
    from orchestrator.driver import RunOptions, run_plan
    from orchestrator.tracking import Tracker, default_uri

    class Failing:
        def run(self, tasks, **kwargs):
            raise RuntimeError("the stages' timer died")

        def close(self):
            pass

    plan = _plan()
    with pytest.raises(RuntimeError, match="timer died"):
        run_plan(plan, RunOptions(backend=backend), Console(file=io.StringIO(), width=200), backend_obj=Failing())
    runs = Tracker(default_uri(plan.run_dir), "mini").find({"famix.sweep": "mini"})
    assert sorted(r.info.status for r in runs) == (["KILLED"] * 3 if backend == "local" else ["RUNNING"] * 3)


def test_cancel_leaves_the_runs_of_a_driver_on_another_host_at_once(fake_engine, monkeypatch):
    """`famix sweep cancel` of a Slurm sweep whose driver runs on another host cannot stop that
    driver, and leaves its MLflow runs to it, without waiting for its lock."""
    from famix_core.errors import Interrupted
    from orchestrator.driver import RunOptions, run_plan
    from orchestrator.tracking import Tracker, default_uri

    class Interrupting:
        def run(self, tasks, **kwargs):
            raise KeyboardInterrupt

        def close(self):
            pass

    plan = _plan()
    with pytest.raises(Interrupted):
        run_plan(plan, RunOptions(backend="slurm"), Console(file=io.StringIO(), width=200), backend_obj=Interrupting())
    holder = _holder(plan.sweep_dir / "driver.lock")
    try:
        (plan.sweep_dir / "driver.json").write_text(json.dumps({"pid": holder.pid, "host": "login-2", "start": 1.0, "backend": "slurm"}))
        out = io.StringIO()
        slept = []
        with monkeypatch.context() as m:
            m.setattr(time, "sleep", slept.append)
            cancel_sweep(plan, "slurm", Console(file=out, width=200))
    finally:
        holder.kill()
        holder.wait()
    assert f"driver pid {holder.pid} on login-2 holds the lock but cannot be checked from here" in out.getvalue()
    assert "note: the driver still runs; this sweep's MLflow runs are left as they are" in out.getvalue()
    assert "nothing to cancel" not in out.getvalue()  # a driver runs there: not "nothing runs"
    assert slept == []  # no wait for a lock that no signal was sent to free
    runs = Tracker(default_uri(plan.run_dir), "mini").find({"famix.sweep": "mini"})
    assert sorted(r.info.status for r in runs) == ["RUNNING"] * 3


def test_status_ends_the_runs_of_a_slurm_sweep_once_its_jobs_have_ended(fake_engine, monkeypatch):
    """A detached or interrupted Slurm sweep leaves its MLflow runs to its jobs. A trial whose job
    failed stayed RUNNING for good (until a rerun); `famix sweep status` now ends the runs nothing
    runs any more once Slurm has no job of the sweep queued or running, and not before."""
    from orchestrator.backends.slurm.backend import SlurmBackend
    from orchestrator.driver import RunOptions, run_plan
    from orchestrator.execute import execute_stage
    from orchestrator.tracking import Tracker, default_uri

    class Detaching:  # the first trial's jobs succeed, the second's fail
        def run(self, tasks, **kwargs):
            first = plan.trial_stages[plan.trials[0].id].keys()
            for task in tasks:
                if task.key in first:
                    assert execute_stage(task).status == "done"
            return {t.key: StageOutcome(key=t.key, status="submitted") for t in tasks}

        def close(self):
            pass

    from orchestrator.stages import StageOutcome

    plan = _plan()
    run_plan(plan, RunOptions(backend="slurm", detach=True), Console(file=io.StringIO(), width=200), backend_obj=Detaching())

    def states() -> dict[str, str]:
        runs = Tracker(default_uri(plan.run_dir), "mini").find({"famix.sweep": "mini"})
        return {r.info.run_name: r.info.status for r in runs}

    ended = {"value": False}
    monkeypatch.setattr(SlurmBackend, "jobs_ended", classmethod(lambda cls, sweep_dir: ended["value"]))
    out = io.StringIO()
    sweep_status(plan, Console(file=out, width=300))
    assert sorted(states().values()) == ["FINISHED", "RUNNING", "RUNNING"], (states(), out.getvalue())  # the failed job may be retried
    ended["value"] = True
    out = io.StringIO()
    sweep_status(plan, Console(file=out, width=300))
    assert sorted(states().values()) == ["FINISHED", "KILLED", "KILLED"], (states(), out.getvalue())
    assert "MLflow: ended 2 runs KILLED that nothing runs any more (their jobs have ended; `famix sweep run mini --profile smoke --backend slurm` runs the rest)" in out.getvalue()


def test_sigterm_ends_any_command_with_one_line(fake_engine, monkeypatch, capsys):
    """SIGTERM outside a sweep's stages (planning, reporting) ended the process silently with exit 143.
    Now it is an interrupt like Ctrl-C: one line, exit 130, and the default handler is back afterwards."""
    from orchestrator import plan as plan_module

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends
        raise AssertionError("SIGTERM was not handled")

    _plan()
    monkeypatch.setattr(plan_module, "print_plan", terminated)
    # as a fresh `famix` process has it (an in-process ray.init of an earlier test leaves its own)
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        assert main(["sweep", "plan", "mini", "--run-dir", "runs"]) == 130
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # put back on return
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert capsys.readouterr().err.splitlines() == ["famix: interrupted"]


def test_a_cancel_note_names_one_driver_and_a_stale_one_is_dropped(fake_engine):
    """`famix sweep cancel` notes whom it signals (pid, start time, host), so that driver's last line
    says it was cancelled. A note of a driver that had ended first stayed: a later driver with the
    same pid, stopped by Ctrl-C, would have said its jobs were cancelled while they ran on."""
    from orchestrator.driver import CANCEL_NOTE, RunOptions, _cancel_was_for_me, run_plan
    from orchestrator.liveness import driver_identity

    plan = _plan()
    plan.sweep_dir.mkdir(parents=True, exist_ok=True)
    note, me = plan.sweep_dir / CANCEL_NOTE, driver_identity()
    note.write_text(json.dumps({**me, "start": me["start"] - 1}))  # this pid, an earlier process
    assert not _cancel_was_for_me(plan)
    note.write_text(json.dumps(me))
    assert _cancel_was_for_me(plan) and not note.exists()
    note.write_text(json.dumps({**me, "pid": 1}))  # left by a cancel whose driver had ended
    assert run_plan(plan, RunOptions(backend="local"), Console(file=io.StringIO(), width=200)).exit_code == 0
    assert not note.exists()
