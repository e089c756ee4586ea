"""The Ray backend: each stage is a Ray task (``ray.remote(execute_stage)``), submitted when its deps are done.

By default Ray is started in-process (``ray.init(num_cpus=…, include_dashboard=False,
log_to_driver=False)``) with its temp dir under the sweep folder, or, when that path
would make Ray's unix socket paths too long (> 107 bytes), under a short
``/tmp/famix-ray-<hash>``. With ``backend.ray.address`` (``auto``, ``ray://host:port``) it
connects to an existing cluster instead. It shuts down only what it started.

Before anything is submitted (:meth:`RayBackend.preflight`, called at plan time too) a cluster
address is probed with a bounded wait (:mod:`orchestrator.backends.ray_cluster`) and every stage
kind's request is checked against the largest node. Without ``--max-parallel`` the number of
stages in flight comes from the cluster's resources, not from the driver machine's CPU count.

A stage that *runs* past its ``resources.timeout_min`` is stopped (``ray.cancel(force=True)``) and
counts as a retryable failure: a retried training resumes from its latest checkpoint. The clock
starts when the stage starts on a worker (each stage reports its start to a small actor), so
time spent queued for resources does not count.

A stage lost with its worker or node is a retryable failure too, unless the cluster's head (its
GCS; through Ray Client, its client server) takes no connection for about 6 s: then the sweep
stops with :class:`BackendLost`, in one line, instead of spending its retries on a cluster that is
gone (Ray would end the driver's process 60 s after it lost the GCS, leaving its MLflow runs RUNNING).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Collection, Iterator

from famix_core.loaders import allocated_cpus
from famix_core.text import count
from orchestrator.backends.base import Backend, backend_failure, timed_out
from orchestrator.backends.dag import DagScheduler
from orchestrator.backends.ray_cluster import (
    NodeInfo, check_no_env_address, connect_client, local_nodes, probe_cluster, slots, unreachable, unschedulable,
)  # fmt: skip
from orchestrator.errors import BackendLost, SweepError
from orchestrator.stages import EventFn, StageOutcome, StageTask

if TYPE_CHECKING:
    from orchestrator.execute import StopRequest

__all__ = ["RayBackend", "ray_temp_dir"]

HEAD_PROBES = 3
"""Tries of a connection to the head after a lost stage (each bounded to 3 s), before the cluster counts as gone."""

HEAD_PROBE_GAP_S = 3.0

_SOCKET_BUDGET = 107 - 60  # Ray appends about 60 chars (session_<date>_<pid>/sockets/plasma_store) to _temp_dir


def ray_temp_dir(sweep_dir: str | Path) -> tuple[str, bool]:
    """Ray's temp dir: ``<sweep_dir>/ray`` when short enough, else ``/tmp/famix-ray-<hash>``.

    Returns:
        (path, fell_back)
    """
    preferred = str(Path(sweep_dir).absolute() / "ray")
    if len(preferred) <= _SOCKET_BUDGET:
        return preferred, False
    h = hashlib.sha256(preferred.encode()).hexdigest()[:10]
    return f"/tmp/famix-ray-{h}", True


@contextmanager
def _keeping_signal_handlers() -> Iterator[None]:
    """Around ``ray.init``, which starts Ray's own processes (GCS, raylet) in the driver's process
    group and replaces the driver's SIGTERM handler with ``sys.exit`` for good.

    - SIGTERM: a driver's SIGTERM (``kill``, ``famix sweep cancel``) skipped the driver's own handler:
      no stage was cancelled to checkpoint, and the sweep's MLflow runs stayed RUNNING. Ray's handler
      only matters while it connects; the one there before (the driver's) is put back once ``init``
      returns.
    - SIGHUP: a closed terminal signals the whole process group, and Ray's processes died of it at
      once, stages and all. They start with SIGHUP ignored (inherited), so the driver alone handles
      the hangup: it cancels the stages, a training checkpoints first.
    """
    import threading

    main = threading.current_thread() is threading.main_thread()
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)} if main else {}
    if main:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        yield
    finally:
        for sig, handler in before.items():
            if handler is not None:
                signal.signal(sig, handler)


class RayBackend(Backend):
    """Stages as Ray tasks with the sweep's per-kind CPU/GPU resources.

    Args:
        sweep_dir: the sweep's folder (Ray's temp dir goes under it when short enough).
        options: the sweep's backend block (``resources``, ``ray: {address, num_cpus, num_gpus}``).
        execute: the stage function, called as ``execute(task, stop)`` (default :func:`orchestrator.execute.execute_stage`).
        log: where to say what was started (default: stderr).
    """

    name = "ray"

    def __init__(
        self,
        sweep_dir: str | Path = "runs/ray",
        options: dict[str, Any] | None = None,
        execute: Callable[[StageTask, StopRequest], StageOutcome] | None = None,
        log: Callable[[str], None] | None = None,
    ):
        self.sweep_dir = Path(sweep_dir)
        self.options = options or {}
        self.execute = execute
        self.log = log or (lambda s: print(s, file=sys.stderr))
        self._started = False
        self._connected = False
        self._fallback_dir: str | None = None
        self._gcs: str | None = None  # where the head answers this driver (its GCS, or a ray:// client server)

    @classmethod
    def preflight(cls, options: dict[str, Any], kinds: Collection[str] | None = None) -> list[NodeInfo]:
        """Plan-time check: the cluster answers (bounded wait) and every stage kind fits on some node;
        without an address, no ``$RAY_ADDRESS`` would redirect the in-process Ray (no Ray started here).

        Raises:
            SweepError: one line (the address and how to start a cluster, ``$RAY_ADDRESS`` and how to
                use or ignore it, or the stage kind that cannot be scheduled and what the largest node has).
        """
        ray_opts = options.get("ray") or {}
        address = ray_opts.get("address")
        if not address:
            check_no_env_address()
        nodes = probe_cluster(address) if address else local_nodes(ray_opts.get("num_cpus"), ray_opts.get("num_gpus"))
        for kind, res in (options.get("resources") or {}).items():
            if kinds is not None and kind not in kinds:  # the plan runs no such stage
                continue
            why = unschedulable(kind, res or {}, nodes)
            if why:
                where = f"Ray cluster {address}" if address else f"in-process Ray ({count(nodes[0].cpus, 'CPU')}, {count(nodes[0].gpus, 'GPU')})"
                too_many_cpus = float((res or {}).get("cpus", 1) or 0) > max(n.cpus for n in nodes)
                fix = "" if address or not too_many_cpus else (
                    "; in-process Ray has the CPUs this process may use (its affinity, or SLURM_CPUS_PER_TASK in a job): "
                    f"lower backend.resources.{kind}.cpus, or set backend.ray.num_cpus"
                )  # fmt: skip
                raise SweepError(f"backend.resources.{why} ({where}){fix}")
        return nodes

    @classmethod
    def remote_workers(cls, options: dict[str, Any]) -> bool:
        """With ``ray.address`` the stages run on the cluster's nodes; in-process Ray stays on this machine."""
        return bool((options.get("ray") or {}).get("address"))

    @classmethod
    def stage_gpus(cls, kind: str, options: dict[str, Any]) -> int | None:
        """``resources.<kind>.gpus``, a fraction rounding up: Ray shows a task the GPUs it gives it."""
        import math

        return math.ceil(float(((options.get("resources") or {}).get(kind) or {}).get("gpus") or 0))

    def _ensure_ray(self) -> Any:
        import ray

        if ray.is_initialized():
            return ray
        with _keeping_signal_handlers():
            self._init_ray(ray)
        return ray

    def _init_ray(self, ray: Any) -> None:
        ray_opts = self.options.get("ray") or {}
        address = ray_opts.get("address")
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        if not sys.stderr.isatty():  # Ray's own lines (`(raylet) A worker died…`) kept their colour codes in a log file
            os.environ.setdefault("RAY_COLOR_PREFIX", "0")
        if address:
            # configure_logging=False: no "INFO … Connecting to existing Ray cluster" line in the sweep's output
            connect = lambda: ray.init(address=address, log_to_driver=False, configure_logging=False)  # noqa: E731
            connect_client(connect, ray.shutdown, address, self.log)
            self._connected = True  # close() disconnects this process; the cluster keeps running
            self.log(f"ray: connected to {address}")
        else:
            temp_dir, fell_back = ray_temp_dir(self.sweep_dir)
            if fell_back:
                self.log(f"ray: run dir path too long for Ray's sockets; using temp dir {temp_dir}")
                self._fallback_dir = temp_dir  # removed again at close()
            Path(temp_dir).mkdir(parents=True, exist_ok=True)
            num_cpus = ray_opts.get("num_cpus") or allocated_cpus()  # what this process may use (affinity, Slurm), as local
            ray.init(
                num_cpus=num_cpus,
                num_gpus=ray_opts.get("num_gpus"),
                include_dashboard=False,
                log_to_driver=False,
                _temp_dir=temp_dir,
                configure_logging=False,
            )
            self._started = True
            self.log(f"ray: started in-process with {count(num_cpus, 'CPU')} (temp dir {temp_dir})")
        target = os.environ.get("RAY_ADDRESS", "") if address == "auto" else address  # as ray.init resolves it
        if target and target.startswith("ray://"):  # the head's GCS as the head sees it may be out of reach from
            self._gcs = target  # here (a laptop through a forwarded port): its Ray Client server is what answers
        else:
            self._gcs = ray.get_runtime_context().gcs_address  # the one this driver talks to

    def _check_cluster(self, lost: str) -> None:
        """After ``lost`` (a stage or the stages' timer): stop the sweep when the cluster's head is gone.

        The head is asked up to :data:`HEAD_PROBES` times, :data:`HEAD_PROBE_GAP_S` apart (a DNS hiccup, a
        GCS restarting), well within the 60 s after which Ray ends a driver that lost its GCS.

        Raises:
            BackendLost: the head took no connection on any try.
        """
        if not self._gcs:
            return
        for attempt in range(HEAD_PROBES):
            why = unreachable(self._gcs, timeout_s=3.0)
            if why is None:
                return
            if attempt + 1 < HEAD_PROBES:
                time.sleep(HEAD_PROBE_GAP_S)
        address = (self.options.get("ray") or {}).get("address")
        what = f"the Ray cluster at {address}" if address else "the in-process Ray"
        raise BackendLost(f"{what} is gone: {lost}, and its head ({self._gcs}) does not answer ({why})")

    def _stage_resources(self, task: StageTask) -> dict[str, Any]:
        res = dict((self.options.get("resources") or {}).get(task.kind) or {})
        res.update(task.resources or {})
        return res

    def _resources(self, task: StageTask) -> dict[str, Any]:
        res = self._stage_resources(task)
        return {"num_cpus": float(res.get("cpus", 1)), "num_gpus": float(res.get("gpus", 0))}

    def _time_limit_s(self, task: StageTask) -> float | None:
        minutes = self._stage_resources(task).get("timeout_min")
        return 60.0 * float(minutes) if minutes else None

    def run(self, tasks: list[StageTask], *, max_parallel: int, retries: int, on_event: EventFn) -> dict[str, StageOutcome]:
        """Run ``tasks`` as Ray tasks; ``max_parallel`` 0 = as many as the cluster's resources hold."""
        if not tasks:
            return {}
        ray = self._ensure_ray()
        execute = self.execute
        if execute is None:
            from orchestrator.execute import execute_stage

            execute = execute_stage
        nodes = [
            NodeInfo(n["NodeID"], float(n["Resources"].get("CPU", 0)), float(n["Resources"].get("GPU", 0)))
            for n in ray.nodes()
            if n.get("Alive")
        ]
        remote = ray.remote(max_retries=0)(_run_stage)
        board = ray.remote(num_cpus=0)(StartBoard).remote()
        dag = DagScheduler(tasks, retries, on_event)
        inflight: dict[Any, tuple[str, str]] = {}  # ref -> (stage key, attempt tag)
        limits: dict[Any, float] = {}  # ref -> its stage's time limit in seconds, counted from its start
        queued: dict[str, str] = {}  # attempt tag -> stage key, submitted but not yet seen running (Ray's queue)

        def announce(tags: Any) -> None:  # the stages the board saw start are shown running from now
            for tag in [t for t in queued if t in tags]:
                dag.started(queued.pop(tag))

        limit = max_parallel if max_parallel > 0 else max(slots(self._stage_resources(t), nodes) for t in tasks)
        self.parallelism = limit
        try:
            while not dag.finished():
                for task in dag.ready(limit=limit - len(inflight), announce=False):
                    why = unschedulable(task.kind, self._stage_resources(task), nodes)
                    if why:  # it would wait in Ray's queue forever
                        dag.started(task.key)
                        dag.complete(task.key, self._failed(task, why))
                        continue
                    tag = f"{task.key}#{dag.attempts[task.key]}"
                    ref = remote.options(**self._resources(task), name=_task_name(task)).remote(execute, board, tag, task)
                    inflight[ref] = (task.key, tag)
                    queued[tag] = task.key
                    limit_s = self._time_limit_s(task)
                    if limit_s:
                        limits[ref] = limit_s
                if not inflight:
                    if dag.finished():
                        break
                    raise RuntimeError("dependency cycle or missing dependency among stages")
                done, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0 if limits or queued else None)
                if not done:  # which stages started; a stage that ran past its time limit is stopped (a retry resumes)
                    try:
                        running = ray.get(board.elapsed.remote(), timeout=30)
                    except ray.exceptions.GetTimeoutError:  # alive but slow (a loaded head node): ask again
                        self._check_cluster("the stages' timer did not answer within 30 s")  # unless the head is gone
                        continue
                    except ray.exceptions.RayActorError as e:  # the timer died (killed, its node lost): the stages go on
                        self._check_cluster(f"the stages' timer was lost ({type(e).__name__})")  # unless the cluster went with it
                        unlimited = f"the time limits of {count(len(limits), 'running stage')} are not enforced" if limits else "the stages go on"
                        self.log(f"ray: the stages' timer is gone ({type(e).__name__}); {unlimited}")
                        board = ray.remote(num_cpus=0)(StartBoard).remote()  # for the stages still to start
                        limits.clear()
                        announce(set(queued))  # whether they run or wait is no longer known: shown running
                        continue
                    announce(running)
                    for ref in [r for r, lim in limits.items() if running.get(inflight[r][1], 0.0) > lim]:
                        key, _tag = inflight.pop(ref)
                        limits.pop(ref)
                        ray.cancel(ref, force=True)
                        dag.complete(key, self._timed_out(dag.tasks[key]))
                    continue
                for ref in done:
                    limits.pop(ref, None)
                    key, tag = inflight.pop(ref)
                    announce({tag})  # ended before the board was asked
                    try:
                        outcome = ray.get(ref)
                    except Exception as e:  # noqa: BLE001 — worker died (OOM, node lost): a retryable failure
                        error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                        self._check_cluster(f"{dag.tasks[key].name or key} was lost ({type(e).__name__})")  # or the sweep stops
                        outcome = backend_failure(dag.tasks[key], error, retryable=True)  # in the stage's log too
                    outcome.job_id = ref.task_id().hex() if hasattr(ref, "task_id") else None
                    dag.complete(key, outcome)
        except BackendLost:  # nothing is left to stop (close() disconnects); waiting would outlast Ray's 60 s
            dag.cancel_rest()
            raise
        except BaseException:  # Ctrl-C, SIGTERM, or the driver failing: the stages stop, a training checkpointing first
            try:
                self._stop(ray, list(inflight))
            except Exception as why:  # noqa: BLE001 — Ray itself is what failed: its stages go with it
                self.log(f"ray: could not stop the running stages ({type(why).__name__}: {str(why).splitlines()[0] if str(why) else ''})")
            dag.cancel_rest()
            raise  # the interrupt or the error that stopped the loop, not _stop's
        return dag.outcomes

    def _stop(self, ray: Any, refs: list[Any], grace_s: float = 60.0) -> None:
        """Interrupt running stages (a training checkpoints its current iteration first), then force the rest.

        Only stages still running after the grace period are force-cancelled: force-cancelling a task
        whose reply is already on its way makes Ray's driver abort the whole process
        (``task_manager.cc`` "unexpected system state", exit status 1; seen with Ray 2.60).
        """
        for ref in refs:
            ray.cancel(ref, force=False)
        pending = list(refs)
        try:
            _, pending = ray.wait(refs, num_returns=len(refs), timeout=grace_s)
        except KeyboardInterrupt:  # a second interrupt: do not wait
            pass
        for ref in pending:
            ray.cancel(ref, force=True)
        try:  # the replies of the stopped tasks arrive before the driver disconnects
            ray.wait(refs, num_returns=len(refs), timeout=10.0)
        except KeyboardInterrupt:
            pass

    def _failed(self, task: StageTask, error: str) -> StageOutcome:
        return backend_failure(task, error, retryable=False)

    def _timed_out(self, task: StageTask) -> StageOutcome:
        return timed_out(task, self._stage_resources(task)["timeout_min"], "Ray")

    def close(self) -> None:
        if self._connected:  # a driver left connected dies with the cluster (Ray ends the process)
            import ray

            ray.shutdown()
            self._connected = False
            self.log("ray: disconnected from the cluster")
        if self._started:
            import ray

            t0 = time.perf_counter()
            ray.shutdown()
            self._started = False
            self.log(f"ray: shut down ({time.perf_counter() - t0:.1f}s)")
            if self._fallback_dir:
                shutil.rmtree(self._fallback_dir, ignore_errors=True)
                self._fallback_dir = None


class StartBoard:
    """A tiny actor (0 CPUs) where each stage notes when it started running, on the actor's own clock."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}

    def mark(self, tag: str) -> None:
        self.started.setdefault(tag, time.monotonic())

    def elapsed(self) -> dict[str, float]:
        """Seconds each started stage (by attempt tag) has been running."""
        now = time.monotonic()
        return {tag: now - t for tag, t in self.started.items()}


def _run_stage(execute: Callable[[StageTask, StopRequest], StageOutcome], board: Any, tag: str, task: StageTask) -> StageOutcome:
    """The Ray task: note the start on the board (the time limit counts from here), run, name the node."""
    import threading

    import ray

    from famix_core.errors import TrainingInterrupted
    from orchestrator.execute import StopRequest, checkpoint_then_stop

    board.mark.remote(tag)
    main = threading.current_thread() is threading.main_thread()
    stop = StopRequest()
    old = signal.signal(signal.SIGINT, checkpoint_then_stop(stop)) if main else None  # ray.cancel(force=False)
    try:
        outcome = execute(task, stop)
    except TrainingInterrupted as e:  # cancelled: the training saved the iteration it was in
        outcome = StageOutcome(task.key, "cancelled", error=str(e), log_path=task.log_path or None)
    finally:
        if main:
            signal.signal(signal.SIGINT, old)
    outcome.node = ray.get_runtime_context().get_node_id()
    return outcome


def _task_name(task: StageTask) -> str:
    return (task.name or f"{task.kind}-{task.key[:8]}").replace(" ", "_")[:60]
