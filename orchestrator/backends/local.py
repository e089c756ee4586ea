"""The local backend: stages on this machine, one after another in the driver or a few at once in worker processes.

``backend.local.workers`` (or ``--max-parallel``) 1: each stage runs in the driver's own process
(debuggers, monkeypatched tests). More: that many worker processes (started once, ``spawn``), each
running one stage at a time; stages start while their ``resources.<kind>.cpus`` fit the machine's
CPUs, and stages asking for GPUs run one at a time (nothing here assigns devices). A stage sets its
torch threads to its ``cpus`` wherever it runs (:func:`orchestrator.execute.execute_stage`), so a
stage computes the same numbers in a worker as in the driver, on Ray or on Slurm.

Interrupts: Ctrl-C (the workers ignore SIGINT), SIGTERM or a hangup (a closed terminal) to the
driver sends SIGTERM to the busy workers: a training checkpoints the iteration it is in and stops,
any other stage is abandoned (its half-written folder is removed), and the sweep stops with
everything else cancelled. In the
driver's own process the driver's handler (``stop``) does the same: a training checkpoints and
raises :class:`~famix_core.errors.TrainingInterrupted`; a second signal stops at once.

Time limits: with worker processes, a stage running longer than its ``resources.<kind>.timeout_min``
(counted from its start) is stopped the same way (SIGTERM, then SIGKILL after ``grace_s``), fails
retryably, and its worker is replaced; the rest of the sweep goes on, and a retried training
resumes from its checkpoint. In the driver's own process (one worker) nothing can stop a stage,
so the limit is not enforced there.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any, Callable, Collection

from famix_core.errors import TrainingInterrupted
from famix_core.loaders import allocated_cpus
from famix_core.text import count
from orchestrator.backends.base import Backend, backend_failure, timed_out
from orchestrator.backends.dag import DagScheduler
from orchestrator.stages import EventFn, StageOutcome, StageTask

if TYPE_CHECKING:
    from orchestrator.execute import StopRequest

__all__ = ["LocalBackend"]

Execute = Callable[[StageTask, "StopRequest | None"], StageOutcome]
_INTERRUPTED = "interrupted"


class LocalBackend(Backend):
    """This machine: sequential in-process (``workers`` 1), or a pool of worker processes.

    Args:
        execute: the stage function, called as ``execute(task, stop)`` (default
            :func:`orchestrator.execute.execute_stage`; tests inject stand-ins, which must be
            module-level functions with more than one worker: they are pickled to the workers).
        stop: the stop request of the driver's SIGTERM handler (an in-process training checkpoints and stops).
        cpus: the CPUs the worker processes' stages may fill (default: :func:`famix_core.loaders.allocated_cpus`,
            the driver's: ``SLURM_CPUS_PER_TASK`` inside a Slurm allocation, else its affinity mask).
        grace_s: after an interrupt, how long the busy workers get to checkpoint and answer.

    The sweep's backend block (``options=``, as every backend gets it) is read by :meth:`parallelism`.
    """

    name = "local"
    default_parallelism = 1
    in_process = True

    def __init__(
        self,
        execute: Execute | None = None,
        stop: StopRequest | None = None,
        cpus: int | None = None,
        grace_s: float = 60.0,
        **_: object,
    ):
        if execute is None:
            from orchestrator.execute import execute_stage

            execute = execute_stage
        self.execute = execute
        self.stop = stop
        self.cpus = cpus
        self.grace_s = grace_s
        self.parallelism_used = 1

    @classmethod
    def preflight(cls, options: dict[str, Any], kinds: Collection[str] | None = None) -> None:
        """Plan-time note (not a refusal): stage kinds asking for more GPUs (``resources.<kind>.gpus``)
        than this machine has still run here, one at a time, on the GPUs there are, else on the CPU
        (``train.device`` picks the device: :func:`orchestrator.checks.check_device` checks it). Ray,
        which could not schedule them, refuses such a sweep."""
        asked = {kind: float((res or {}).get("gpus") or 0) for kind, res in ((options or {}).get("resources") or {}).items()}
        asked = {kind: n for kind, n in asked.items() if n > 0}
        if not asked:
            return None
        import torch

        have = torch.cuda.device_count()
        over = [f"{kind}.gpus {n:g}" for kind, n in asked.items() if n > have]
        if over:
            where = "the CPU where train.device allows it (cpu, or auto with train.cpu_fallback)" if have == 0 else f"its {count(have, 'GPU')} or the CPU, as train.device picks"
            print(f"note: backend.resources asks for more GPUs than this machine has ({have}): {', '.join(over)}; "
                  f"the local backend runs those stages here, one at a time, on {where}", file=sys.stderr)  # fmt: skip
        return None

    @classmethod
    def parallelism(cls, options: dict[str, Any]) -> int:
        """``local.workers`` of the backend block: an integer, or ``auto`` = this machine's CPUs."""
        workers = ((options or {}).get("local") or {}).get("workers", cls.default_parallelism)
        return allocated_cpus() if workers == "auto" else int(workers)

    def run(self, tasks: list[StageTask], *, max_parallel: int, retries: int, on_event: EventFn) -> dict[str, StageOutcome]:
        dag = DagScheduler(tasks, retries, on_event)
        workers = min(max_parallel, len(tasks)) if max_parallel > 0 else 1
        self.parallelism_used = max(1, workers)
        if workers <= 1:
            return self._run_in_process(dag)
        return _Pool(self.execute, workers, self.cpus or allocated_cpus(), self.grace_s).run(dag)

    def _run_in_process(self, dag: DagScheduler) -> dict[str, StageOutcome]:
        try:
            while not dag.finished():
                batch = dag.ready(limit=1)
                if not batch:
                    if dag.finished():
                        break
                    raise RuntimeError("dependency cycle or missing dependency among stages")  # plan bug
                task = batch[0]
                dag.complete(task.key, self.execute(task, self.stop))
        except KeyboardInterrupt:
            dag.cancel_rest()
            raise
        except TrainingInterrupted:  # SIGTERM: the training checkpointed its iteration; the sweep stops
            dag.cancel_rest()
            raise KeyboardInterrupt from None
        return dag.outcomes


def _cpus(task: StageTask) -> int:
    return max(1, int((task.resources or {}).get("cpus") or 1))


def _needs_gpu(task: StageTask) -> bool:
    return float((task.resources or {}).get("gpus") or 0) > 0


class _Worker:
    """One worker process and the stage it runs (None: idle)."""

    def __init__(self, ctx: Any, execute: Execute):
        self.conn, child = ctx.Pipe()
        # not daemonic: a stage starts processes of its own (a DataLoader's workers), which a daemonic
        # process may not; the pool closes its workers itself, and a worker exits with its driver
        self.proc = ctx.Process(target=_worker_main, args=(child, execute), name="famix-local-worker", daemon=False)
        self.proc.start()
        child.close()
        self.task: StageTask | None = None
        self.deadline: float | None = None  # monotonic time past which the stage is stopped
        self.timed_out = False  # stopped for its time limit; killed at ``deadline`` if still running
        self.interrupted = False  # sent SIGTERM by this pool (an interrupt, a time limit), not by another process

    def send(self, task: StageTask) -> None:
        self.conn.send(task)
        self.task, self.interrupted = task, False
        minutes = (task.resources or {}).get("timeout_min")
        self.deadline = time.monotonic() + 60.0 * float(minutes) if minutes else None

    def interrupt(self) -> None:
        if self.task is not None and self.proc.is_alive() and self.proc.pid:
            self.interrupted = True
            os.kill(self.proc.pid, signal.SIGTERM)

    def close(self, timeout_s: float = 10.0) -> None:
        try:
            if self.task is None and self.proc.is_alive():
                self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.proc.join(timeout_s)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5.0)
        self.conn.close()


class _Pool:
    """Worker processes fed from a :class:`DagScheduler`, packed by each stage's CPUs."""

    def __init__(self, execute: Execute, workers: int, cpus: int, grace_s: float):
        self.execute = execute
        self.n = workers
        self.cpus = cpus
        self.grace_s = grace_s
        self.ctx = multiprocessing.get_context("spawn")  # torch and threads: never fork the driver
        self.workers: list[_Worker] = []

    def _used(self) -> tuple[int, bool]:
        busy = [w.task for w in self.workers if w.task is not None]
        return sum(_cpus(t) for t in busy), any(_needs_gpu(t) for t in busy)

    def _fits(self, task: StageTask) -> bool:
        used, gpu_busy = self._used()
        if used == 0:
            return True  # a stage asking for more than the machine has runs alone
        return used + _cpus(task) <= self.cpus and not (gpu_busy and _needs_gpu(task))

    def _idle(self) -> _Worker | None:
        for w in self.workers:
            if w.task is None:
                return w
        if len(self.workers) < self.n:
            self.workers.append(_Worker(self.ctx, self.execute))
            return self.workers[-1]
        return None

    def _start_ready(self, dag: DagScheduler) -> None:
        while any(w.task is None for w in self.workers) or len(self.workers) < self.n:
            batch = dag.ready(limit=1, fits=self._fits)
            if not batch:
                return
            worker = self._idle()
            assert worker is not None  # a free slot was checked above
            worker.send(batch[0])

    def run(self, dag: DagScheduler) -> dict[str, StageOutcome]:
        try:
            while not dag.finished():
                self._start_ready(dag)
                busy = [w for w in self.workers if w.task is not None]
                if not busy:
                    if dag.finished():
                        break
                    raise RuntimeError("dependency cycle or missing dependency among stages")  # plan bug
                deadlines = [w.deadline for w in busy if w.deadline is not None]
                timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
                for conn in wait([w.conn for w in busy], timeout=timeout):
                    worker = next(w for w in busy if w.conn is conn)
                    reply = self._receive(worker)
                    dag.complete(reply.key, reply)
                self._stop_overdue()
        except KeyboardInterrupt:
            self._interrupt(dag)
            dag.cancel_rest()
            raise
        finally:
            try:
                for w in self.workers:
                    w.close()
            except KeyboardInterrupt:  # a further Ctrl-C while waiting: the workers are not daemonic, so
                for w in self.workers:  # the interpreter's exit would wait for them; kill what is left
                    if w.proc.is_alive():
                        w.proc.kill()
                raise
            finally:
                self.workers = []
        return dag.outcomes

    def _stop_overdue(self) -> None:
        """SIGTERM the stages past their time limit; SIGKILL those that have not answered ``grace_s`` later."""
        now = time.monotonic()
        for w in self.workers:
            if w.task is None or w.deadline is None or now < w.deadline:
                continue
            if not w.timed_out:
                w.timed_out, w.deadline = True, now + self.grace_s
                w.interrupt()  # a training checkpoints, then answers "interrupted"
            elif w.proc.is_alive():
                w.proc.kill()  # its pipe closes: _receive gets EOF

    def _receive(self, worker: _Worker) -> StageOutcome:
        """The reply of a busy worker; a dead worker (killed, out of memory) fails its stage, retryably,
        and so does a stage stopped for its time limit (its worker, which exits, is replaced)."""
        task = worker.task
        assert task is not None
        try:
            reply = worker.conn.recv()
        except (EOFError, OSError):
            worker.proc.join(5.0)
            code = worker.proc.exitcode
            self._drop(worker)
            if worker.timed_out:
                return timed_out(task, (task.resources or {})["timeout_min"], "local")
            error = f"worker process died (exit code {code}) while running {task.name or task.key}"
            return backend_failure(task, error, retryable=True)
        worker.task, worker.deadline = None, None
        if worker.timed_out:  # a SIGTERM was sent: the worker exits, or may on its way to the next stage
            self._drop(worker)
            if isinstance(reply, StageOutcome) and reply.status in ("done", "cached"):
                return reply  # finished as it was being stopped: keep it
            return timed_out(task, (task.resources or {})["timeout_min"], "local")
        if isinstance(reply, tuple) and reply and reply[0] == _INTERRUPTED:
            if worker.interrupted:  # the sweep's own stop (_interrupt keeps only what finished): stopped, not failed
                return StageOutcome(task.key, "cancelled", error=reply[1] or "stopped by the sweep", log_path=task.log_path or None)
            # SIGTERM reached this worker, not from the driver (its own stops are read in _interrupt):
            # a `kill` of the worker had stopped the whole sweep, blaming the user's Ctrl-C. A signal to
            # the whole process group reaches the driver too: its handler raises in this sleep and the
            # sweep stops as asked; otherwise the stage is retried (a training resumes its checkpoint)
            time.sleep(0.5)
            pid = worker.proc.pid
            self._drop(worker)
            error = (f"worker process {pid} was sent SIGTERM by another process while running {task.name or task.key}"
                     " (a training checkpoints its iteration first)")
            return backend_failure(task, error, retryable=True)
        return reply

    def _drop(self, worker: _Worker) -> None:
        self.workers.remove(worker)
        worker.task = None
        worker.close(timeout_s=5.0)

    def _interrupt(self, dag: DagScheduler) -> None:
        """SIGTERM the busy workers and wait up to ``grace_s`` for their replies (a training checkpoints first)."""
        busy = [w for w in self.workers if w.task is not None]
        for w in busy:
            w.interrupt()
        deadline = time.monotonic() + self.grace_s
        try:
            while busy and time.monotonic() < deadline:
                for conn in wait([w.conn for w in busy], timeout=max(0.0, deadline - time.monotonic())):
                    worker = next(w for w in busy if w.conn is conn)
                    task = worker.task
                    reply = self._receive(worker)
                    busy.remove(worker)
                    if isinstance(reply, StageOutcome) and reply.status in ("done", "cached") and task is not None:
                        dag.complete(task.key, reply)  # finished just before the interrupt: keep it
        except KeyboardInterrupt:  # a second interrupt: do not wait
            pass
        for w in busy:
            w.task = None  # abandoned: close() kills it


def _exit_with_parent(parent: int, poll_s: float = 1.0) -> None:
    """A worker whose driver was killed (SIGKILL, a crash) exits within ``poll_s``: a training loses
    what it did since its last periodic checkpoint, as it would in the driver's own process."""
    while True:
        time.sleep(poll_s)
        if os.getppid() != parent:
            os._exit(1)


def _worker_main(conn: "Connection", execute: Execute) -> None:
    """A worker process: run the stages the driver sends until it sends None or goes away.

    Ctrl-C and a hangup are the driver's to handle (SIGINT ignored here; SIGHUP, which a closed terminal
    sends to the workers too, only takes the output off that terminal); SIGTERM from the driver stops
    the stage being run: a training checkpoints its iteration first
    (:func:`orchestrator.execute.checkpoint_then_stop`).
    """
    import threading

    from orchestrator.execute import StopRequest, checkpoint_then_stop
    from famix_core.interrupts import hangup_handler

    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), name="famix-parent-watch", daemon=True).start()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, hangup_handler())
    stop = StopRequest()
    signal.signal(signal.SIGTERM, checkpoint_then_stop(stop))
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError, KeyboardInterrupt):
            return
        if task is None:
            return
        try:
            reply: Any = execute(task, stop)
        except (TrainingInterrupted, KeyboardInterrupt) as e:
            reply = (_INTERRUPTED, str(e))
        except BaseException as e:  # noqa: BLE001 — execute_stage never raises; a stand-in might
            reply = StageOutcome(task.key, "failed", error=f"{type(e).__name__}: {e}", log_path=task.log_path or None)
        try:
            conn.send(reply)
        except (OSError, KeyboardInterrupt):
            return
        if isinstance(reply, tuple):
            return
