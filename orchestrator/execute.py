"""Run one stage: ``execute_stage(task) -> StageOutcome`` (importable and picklable on any worker).

The stage's artifact is written into a temp folder of the store and renamed into
``<store>/<kind>/<key>/`` with ``DONE.json`` last (:class:`orchestrator.store.Store`).
A stage that is already done is reported ``cached`` without touching anything.
The engine's ``log(metrics, step)`` callback goes to the stage's log file (append,
timestamped) and to the trial runs in MLflow. A stage failure never raises: it
comes back as ``status="failed"`` with the error's message (an engine error or a
full disk) or the tail of its traceback (anything else); the log has both.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import threading
import time
import traceback
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator

from famix_core.errors import FamixError
from orchestrator.progress import progress_path, write_progress
from orchestrator.stages import DISK_FULL_ERRNOS, HISTORY_FILE, STAGE_KINDS, StageOutcome, StageTask
from orchestrator.store import Store, atomic_write_text
from orchestrator.tracking import RunLogger, metrics_from_eval, system_metrics
from reports import schema

__all__ = [
    "execute_stage",
    "STAGE_RUNNERS",
    "StageContext",
    "ArtifactCorrupt",
    "retryable",
    "StopRequest",
    "checkpoint_then_stop",
    "sharing_inputs",
]


class ArtifactCorrupt(FamixError):
    """A stage's input artifact in the store is damaged (truncated, changed): names the file and the fix."""


class StopRequest:
    """A request, made from a signal handler, that the training running in this process checkpoint and stop.

    Whoever installs the handler (:func:`checkpoint_then_stop`) creates one and passes it to
    :func:`execute_stage`; while a training stage runs, its :attr:`event` is the ``stop`` of
    ``famix_core.train.train``.
    """

    def __init__(self) -> None:
        self.event = threading.Event()  # set: the running training checkpoints its iteration and stops
        self._training = threading.Event()  # a training is running under this request

    @contextmanager
    def training(self) -> Iterator[threading.Event]:
        """Mark a training as running for the block; yields the event to pass to ``train(stop=...)``."""
        self._training.set()
        try:
            yield self.event
        finally:
            self._training.clear()
            self.event.clear()  # the request does not outlive the training it was meant for

    def ask(self) -> bool:
        """Set the event if a training is running (signal-safe: flags only).

        Returns:
            False when no training is running: the caller must act on its own.
        """
        if not self._training.is_set():
            return False
        self.event.set()
        return True


class StageContext:
    """What a stage runner gets: the task, its config, the store, the temp folder, log helpers, the stop request."""

    def __init__(
        self, task: StageTask, store: Store, tmp: Path, log_file: Any, tracker: RunLogger, stop: StopRequest | None = None
    ):
        self.task = task
        self.stop = stop
        self.store = store
        self.tmp = tmp
        self._log_file = log_file
        self.tracker = tracker
        self.progress_file = progress_path(task.log_path) if task.log_path else None
        self._progress_at = 0.0
        # A training's history outlives its attempts (work folder, like its checkpoints): a resumed
        # attempt appends to it; the copy in the artifact is what the driver ingests.
        where = store.work_dir(task.kind, task.key) if task.kind == "train" else tmp
        self.history_path = where / HISTORY_FILE

    def progress(self, step: int, total: int | None = None) -> None:
        """Tell the driver's display how far the stage is: ``step`` of ``total`` (a training: its
        iteration of ``train.iterations``; the mining: its optimization steps, of a total estimated
        until every source batch is read; an evaluation: its images).

        At most twice a second; a failure to write never fails the stage.
        """
        if self.progress_file is None:
            return
        if self.task.kind == "train":
            total = (self.task.config.get("train") or {}).get("iterations")
        now = time.monotonic()
        if now - self._progress_at < 0.5 and step != total:
            return
        self._progress_at = now
        try:
            write_progress(self.progress_file, step, total)
        except OSError:
            pass

    def config(self):
        from famix_core.config import FamixConfig

        return FamixConfig.model_validate(self.task.config)

    def write(self, line: str) -> None:
        _write_line(self._log_file, line)

    def log(self, metrics: dict[str, float], step: int | None = None) -> None:
        """The engine's log callback: to the log file, the stage's history, then MLflow (a tracking
        hiccup never fails the stage)."""
        shown = " ".join(f"{k}={v:.6g}" if isinstance(v, (int, float)) else f"{k}={v}" for k, v in metrics.items())
        self.write(f"step={step} {shown}")
        if step is not None and self.task.kind == "train":  # the mining tells its own, with a total (progress)
            self.progress(step)
        numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(float(v))}
        ts = int(time.time() * 1000)  # the same timestamp here and in MLflow: ingesting the history again adds nothing
        if numeric:
            self.history_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.history_path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": int(step or 0), "ts": ts, "metrics": numeric}) + "\n")
        try:
            self.tracker.log_metrics(numeric, step, ts=ts)
        except Exception as e:  # noqa: BLE001
            self.write(f"warning: MLflow logging failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")

    def artifact(self, path: Path, artifact_path: str) -> None:
        try:
            self.tracker.log_artifact(path, artifact_path)
        except Exception as e:  # noqa: BLE001
            self.write(f"warning: MLflow artifact {artifact_path}/{path.name} failed: {type(e).__name__}: {e}")


def _write_line(log_file: Any, line: str) -> None:
    """One timestamped line of a stage log."""
    log_file.write(f"{datetime.now().isoformat(timespec='seconds')} {line}\n")
    log_file.flush()


def _run_mine(ctx: StageContext) -> dict[str, Any]:
    from famix_core.mining import mine_styles

    summary = mine_styles(ctx.config(), ctx.tmp, log=ctx.log, progress=ctx.progress)
    path = ctx.tmp / "summary.json"
    if not path.is_file():
        path.write_text(json.dumps(summary, indent=1, default=str))
    ctx.artifact(path, "styles")
    return _jsonable(summary)


def _run_train(ctx: StageContext) -> dict[str, Any]:
    from famix_core.checkpoint import checkpoint_iteration, latest_checkpoint
    from famix_core.train import train

    task = ctx.task
    bank_dir = ctx.store.path("mine", task.deps["mine"]) if task.deps.get("mine") else None
    ckpt_dir = ctx.store.work_dir("train", task.key)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = latest_checkpoint(ckpt_dir, warn=lambda line: ctx.write(f"warning: {line}"))
    start = checkpoint_iteration(checkpoint) if checkpoint is not None else 0
    logged_before = _keep_history_through(ctx.history_path, start)
    if checkpoint is not None or logged_before or any(ckpt_dir.glob("corrupt-*")):  # an earlier attempt logged steps: not twice
        try:
            ctx.tracker.skip_logged_steps(schema.METRIC_TRAIN_LOSS)  # read by the sender once tracking answers: never blocks here
        except Exception as e:  # noqa: BLE001 — a tracking hiccup never fails the stage
            ctx.write(f"warning: MLflow history of train/loss unreadable: {type(e).__name__}: {e}")
    stop = ctx.stop or StopRequest()
    with system_metrics(task.tracking, ctx.write), stop.training() as event:
        summary = train(ctx.config(), ctx.tmp, bank_dir=bank_dir, ckpt_dir=ckpt_dir, log=ctx.log, stop=event)
    return _jsonable(summary)


def _keep_history_through(path: Path, step: int) -> bool:
    """Drop the lines of an earlier attempt's history after ``step``, where this attempt starts (its
    checkpoint's iteration, 0 without one): the steps it logs again are then in the file once, with
    this attempt's values, and a training restarted from scratch starts a fresh file. A last record
    whose newline was never written gets it. Rewritten atomically. Returns whether an earlier attempt
    logged anything (then MLflow may hold its steps).
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    except FileNotFoundError:
        return False

    def step_of(line: str) -> int:
        try:
            return int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
            return step + 1  # a torn line (a killed writer): dropped

    kept = [line if line.endswith("\n") else line + "\n" for line in lines if step_of(line) <= step]
    if kept != lines:  # a line dropped, or a whole last record left without its newline, which the next append would join
        atomic_write_text(path, "".join(kept))
    return bool(lines)


def _run_evaluate(ctx: StageContext) -> dict[str, Any]:
    from famix_core.evaluate import evaluate_domain

    task = ctx.task
    weights = ctx.store.path("train", task.deps["train"]) / "model.safetensors"
    result = evaluate_domain(ctx.config(), weights, task.domain, ctx.tmp, progress=ctx.progress)
    result = _jsonable(result)
    if not (ctx.tmp / "metrics.json").is_file():
        (ctx.tmp / "metrics.json").write_text(json.dumps(result, indent=1))
    col = task.domain or "?"
    ctx.write(f"{schema.miou_metric(col)}={100 * result['miou']:.2f}")
    try:
        ctx.tracker.log_metrics(metrics_from_eval(col, result), 0)
    except Exception as e:  # noqa: BLE001 — the driver syncs missing metrics at the end
        ctx.write(f"warning: MLflow logging failed: {type(e).__name__}: {e}")
    confusion = ctx.tmp / "confusion.json"
    if confusion.is_file():
        named = ctx.tmp / f"{col}.json"
        named.write_bytes(confusion.read_bytes())
        ctx.artifact(named, "confusion")
        named.unlink()
    return result


def _run_synthetic(ctx: StageContext) -> dict[str, Any]:
    """A stand-in stage for benchmarks and backend tests: a CPU-bound loop of ``config['seconds']``.

    ``config['fail']``: raise after the loop (``'always'``) or on the first attempt only (``'once'``,
    remembered in the work folder); ``'disk_full'``: the ``OSError`` of a full disk.
    """
    cfg = ctx.task.config
    end = time.perf_counter() + float(cfg.get("seconds", 0.0))
    n = 0
    while time.perf_counter() < end:
        n += sum(i * i for i in range(1000)) % 7
    if cfg.get("fail") == "disk_full":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(ctx.tmp / "value.json"))
    marker = ctx.store.work_dir(ctx.task.kind, ctx.task.key) / "attempted"
    if cfg.get("fail") == "always" or (cfg.get("fail") == "once" and not marker.exists()):
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        raise RuntimeError(f"synthetic failure of {ctx.task.name or ctx.task.key}")
    (ctx.tmp / "value.json").write_text(json.dumps({"value": cfg.get("value", 0)}))
    return {"value": cfg.get("value", 0), "loops": n}


STAGE_RUNNERS: dict[str, Callable[[StageContext], dict[str, Any]]] = {
    "mine": _run_mine,
    "train": _run_train,
    "evaluate": _run_evaluate,
    "synthetic": _run_synthetic,
}
"""Stage kind -> runner. ``synthetic`` is a stand-in used by benchmarks and backend tests."""


@contextmanager
def _stage_cpus(task: StageTask) -> Iterator[None]:
    """Torch threads = the stage's ``cpus``, on every backend, at most the CPUs this process may use
    (a stage asking for more than the machine has runs alone, with one thread per CPU); its automatic
    DataLoader workers too.

    CPU results depend slightly on the thread count (reduction order), so a stage computes the
    same numbers in-process, in a local worker, on Ray (which gives a 1-CPU task OMP_NUM_THREADS=1)
    and on Slurm. Batches do not depend on the DataLoader worker count
    (:func:`famix_core.loaders.stage_cpus`).
    """
    cpus = int((task.resources or {}).get("cpus") or 0)
    if cpus <= 0 or task.kind not in STAGE_KINDS:
        yield
        return
    import torch

    from famix_core.loaders import allocated_cpus, stage_cpus

    cpus = min(cpus, allocated_cpus())  # a request above the machine (`cpus: 8` on 2 cores) ran 8 threads on 2
    before = torch.get_num_threads()
    torch.set_num_threads(cpus)
    try:
        with stage_cpus(cpus):
            yield
    finally:  # an in-process stage (the driver's own, a Slurm pack) leaves the process as it found it
        torch.set_num_threads(before)


def checkpoint_then_stop(stop: StopRequest, notice: Callable[[], None] | None = None) -> Callable[[int, Any], None]:
    """A signal handler for SIGTERM / SIGINT: a training running under ``stop`` checkpoints the
    iteration it is in and stops (as SIGUSR2 does on Slurm); otherwise, or on a second signal, stop
    at once with ``KeyboardInterrupt``. Used by the driver (local backend) and by Ray workers
    (``ray.cancel`` without force interrupts the task's main thread through SIGINT's handler);
    the stages they run get the same ``stop`` (:func:`execute_stage`). ``notice()`` is called when
    a training was asked to stop (the user sees why Ctrl-C did not stop at once). A forked child that
    inherited the handler (a data loader worker, which a terminal's Ctrl-C reaches too) ignores the
    signal: it printed the notice once more per worker."""

    asked: list[bool] = []
    owner = os.getpid()

    def handler(signum: int, frame: Any) -> None:
        if os.getpid() != owner:  # a forked child (a data loader worker: Ctrl-C reaches it too): its parent decides
            return
        if not asked and stop.ask():
            asked.append(True)
            if notice is not None:
                notice()
            return  # the trainer raises TrainingInterrupted at its iteration boundary, after the checkpoint
        raise KeyboardInterrupt

    return handler


@contextmanager
def sharing_inputs(tasks: list[StageTask]) -> Iterator[None]:
    """Around stages run one after another in this process (a Slurm pack): what they read alike is loaded once.

    Today: evaluations of one trained model build the segmenter and read its weights once
    (:func:`famix_core.evaluate.keep_loaded_model`); their results are those of separate processes.
    Outside this block nothing is kept between stages (a model would hold its memory, on the GPU too).
    """
    if not any(t.kind == "evaluate" for t in tasks):
        yield
        return
    from famix_core.evaluate import keep_loaded_model

    with keep_loaded_model():
        yield


def _once_per_step(tracker: RunLogger, task: StageTask) -> None:
    """Every stage sends no ``(metric, step)`` its trial runs have (:meth:`RunLogger.once_per_step`).

    A stage that runs again from nothing (``--rerun-failed`` rebuilding a damaged artifact, or one
    deleted) found no checkpoint or history of its first run, so nothing was skipped: its trial run
    got the whole loss curve and every ``miou/<col>``, ``iou/<col>/…`` twice. Which stage's metrics a
    run holds is read from its ``famix.history.<kind>`` tag (the training's, for an evaluation): one
    naming another key is an earlier computation of the trial (new stage keys), logged beside as before.
    Read by the sender, not here: the stage never waits for tracking.
    """
    owner = {"mine": ("mine", task.key), "train": ("train", task.key), "evaluate": ("train", task.deps.get("train"))}.get(task.kind)
    if owner is not None and owner[1]:
        tracker.once_per_step(schema.history_tag(owner[0]), owner[1])


def _tracking_note(holder: list[StageContext], line: str) -> None:
    """A tracking state change (unreachable / back): one line in the stage log and on stderr."""
    import sys

    print(f"famix: {line}", file=sys.stderr, flush=True)
    if holder:
        holder[0].write(line)


def _flush_tracking(ctx: StageContext, timeout_s: float = 300.0) -> None:
    """Wait for the stage's queued MLflow metrics; what could not be sent is written to the stage log."""
    for metrics, step, _runs in ctx.tracker.flush(timeout_s):
        shown = " ".join(f"{k}={v:.6g}" for k, v in metrics.items())
        ctx.write(f"warning: not sent to MLflow (tracking unreachable): step={step} {shown}")


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def retryable(exc: BaseException) -> bool:
    """Whether another attempt can help after ``exc``: not for an engine error (a diverged loss, bad input,
    a damaged artifact: every :class:`famix_core.errors.FamixError`), which comes back the same, nor
    for a full disk or quota (the retry would write to the same disk)."""
    if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
        return False
    return not isinstance(exc, FamixError)


def _error_text(exc: BaseException) -> str:
    head = f"{type(exc).__name__}: {exc}".strip()
    tail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-3:])
    return head + "\n" + tail.strip()


def execute_stage(task: StageTask, stop: StopRequest | None = None) -> StageOutcome:
    """Run one stage unless its artifact exists; never raises for a stage failure.

    Args:
        task: the stage (plain data; see :class:`orchestrator.stages.StageTask`).
        stop: the stop request of the signal handler installed around this call, if any
            (:func:`checkpoint_then_stop`): a training stage checkpoints and stops when it is set.

    Returns:
        ``cached`` (artifact already there), ``done`` (with the engine's result) or ``failed``
        (``error`` = first line + traceback tail; ``retryable`` False for a diverged loss or a user error).
    """
    t0 = time.perf_counter()
    store = Store(task.store)
    log_path = task.log_path or str(store.root.parent / "logs" / f"{task.kind}-{task.key}.log")
    info = store.done_info(task.kind, task.key)
    if info is not None:
        return StageOutcome(task.key, "cached", 0.0, 0, log_path=log_path, result=info.get("result"))
    runner = STAGE_RUNNERS.get(task.kind)
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with (
        open(log_path, "a", encoding="utf-8") as log_file,
        store.running(task.kind, task.key, on_wait=lambda line: _write_line(log_file, line)) as waited,
    ):
        if waited:  # another driver ran this stage meanwhile (a sweep sharing the run dir): its artifact, if it finished
            info = store.done_info(task.kind, task.key)
            if info is not None:
                _write_line(log_file, "cached: finished by the process this one waited for")
                return StageOutcome(task.key, "cached", 0.0, 0, log_path=log_path, result=info.get("result"))
            t0 = time.perf_counter()
        tmp = store.begin()
        holder: list[StageContext] = []
        tracker = RunLogger(task.tracking, background=True, notify=lambda line: _tracking_note(holder, line))
        _once_per_step(tracker, task)
        ctx = StageContext(task, store, tmp, log_file, tracker, stop)
        holder.append(ctx)
        ctx.write(f"start {task.kind} {task.key} {task.name} domain={task.domain} deps={task.deps}")
        try:
            if runner is None:
                raise KeyError(f"unknown stage kind {task.kind!r} (known: {', '.join(STAGE_RUNNERS)})")
            missing = [f"{k} {v}" for k, v in task.deps.items() if not store.is_done(k, v)]
            if missing:
                raise RuntimeError(f"dependency artifact missing: {', '.join(missing)}")
            for dep_kind, dep_key in task.deps.items():
                bad = store.problem(dep_kind, dep_key)
                if bad:  # retrying cannot help: the input has to be rebuilt
                    raise ArtifactCorrupt(
                        f"damaged {dep_kind} artifact {bad}; rebuild it with `{task.command or 'famix sweep run SWEEP'} --rerun-failed` "
                        f"(or delete {store.path(dep_kind, dep_key)})"
                    )
            with _stage_cpus(task):
                result = runner(ctx)
            if ctx.history_path.is_file() and ctx.history_path.parent != tmp:
                shutil.copyfile(ctx.history_path, tmp / HISTORY_FILE)
            _flush_tracking(ctx)  # DONE means: its metrics are in MLflow (or, if it never came back, in the log)
            seconds = time.perf_counter() - t0
            store.commit(tmp, task.kind, task.key, result, seconds)
            ctx.write(f"done in {seconds:.1f}s")
            if task.kind == "train":
                shutil.rmtree(store.work_dir("train", task.key), ignore_errors=True)  # checkpoints served their purpose
            return StageOutcome(task.key, "done", seconds, 1, log_path=log_path, result=result)
        except BaseException as e:  # noqa: BLE001 — a stage failure is data, not an exception
            from famix_core.errors import TrainingInterrupted

            _flush_tracking(ctx, timeout_s=10.0)
            if isinstance(e, (KeyboardInterrupt, SystemExit, TrainingInterrupted)):
                store.abort(tmp)
                if isinstance(e, TrainingInterrupted):
                    ctx.write(f"interrupted: {e}")
                raise

            store.abort(tmp)
            text, again = _error_text(e), retryable(e)
            ctx.write("failed: " + text.replace("\n", "\n    "))
            # an engine error or a full disk says all in its message (the traceback stays in the log);
            # anything else may be a bug: the summary shows where it was raised
            error = text if again else text.splitlines()[0]
            return StageOutcome(task.key, "failed", time.perf_counter() - t0, 1, error=error, log_path=log_path, retryable=again)
        finally:
            if ctx.progress_file is not None:
                ctx.progress_file.unlink(missing_ok=True)  # the stage is over: the driver's display drops it
