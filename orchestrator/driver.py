"""The sweep driver: plan -> MLflow runs -> backend -> results (``famix sweep plan|run|status|cancel``).

A rerun of the same command finishes only what is missing: finished stages are
found in the store, trial runs are found in MLflow by tags, and metrics already
in MLflow are not logged twice.

This module is the run loop and what guards it (one driver per sweep, SIGTERM); the MLflow
bookkeeping is in :mod:`orchestrator.tracking`, the display in :mod:`orchestrator.progress`, the
results table in :mod:`orchestrator.results`, and everything about a backend behind
:class:`orchestrator.backends.base.Backend`.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sys
import time
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

from famix_core.config_io import canonical_hash, parse_overrides
from famix_core.errors import FamixError, Interrupted
from famix_core.interrupts import interrupt_when_reader_gone
from famix_core.text import count
from orchestrator.errors import BackendLost, SweepError
from orchestrator.parent_run import describe_parent, publish_results
from orchestrator.plan import Plan, StageSpec, build_plan, print_plan
from orchestrator.progress import Progress, busy, make_console, print_failures, print_notes, print_table
from orchestrator.results import collect_results, markdown_table, results_frame
from orchestrator.stages import StageOutcome, StageTask, failed_dependency
from orchestrator.store import atomic_write_text
from orchestrator.sweep import load_sweep, resolve_profile, resolve_sweep_path

__all__ = [
    "prepare", "run_plan", "RunOptions", "SweepResult", "sweep_status", "cancel_sweep", "stage_tasks", "sync_tracking",
    "tracking_writer", "quietly",
]  # fmt: skip


def prepare(
    sweep: str | Path,
    *,
    profile: str | None = None,
    run_dir: str | Path = "runs",
    overrides: list[str] | None = None,
    check_data: Any = None,
    check_weights: Any = None,
    check_device: Any = None,
    writable: bool = True,
    backend: str | None = None,
    dry: bool = False,
    reachable: bool = False,
) -> Plan:
    """Find, validate, expand and check a sweep (nothing runs; raises a one-line FamixError on any mistake).

    ``writable`` (``plan`` and ``run``; ``status`` only reads): first the sweep's ``tracking.uri`` is
    checked (an MLflow URI; a server answers within 2 s), then that the run dir can be written; then the
    backend's own plan-time checks run (``backend``, default the sweep's ``backend.kind``): e.g. a Ray
    cluster address answers and every stage fits on one of its nodes.
    ``dry`` (``famix sweep plan``): write nothing — the run dir is not created (only its permission is
    checked) and the synthetic benchmark is not generated.
    Otherwise (``famix sweep run``) every input is checked first, making nothing, and each problem said
    in one report: a wrong ``train.device`` or a missing data folder has not made the run dir, drawn
    the synthetic benchmark or begun a download. Then the backend's checks, then what the stages need
    is made (the run dir, the synthetic benchmark, missing weights downloaded). ``reachable``
    (``famix sweep run``): the backend must answer (:meth:`~orchestrator.backends.base.Backend.unreachable`:
    Slurm's controller) before that, unless every stage is done already.

    ``check_device`` (``train.device`` is usable where the stages run): by default, where ``writable``,
    :func:`orchestrator.checks.check_device` for a backend whose stages run on this machine (local,
    in-process Ray; :meth:`~orchestrator.backends.base.Backend.remote_workers` is False), not for one
    whose stages may run on others (Slurm, a Ray cluster: this machine cannot see their devices), and
    :func:`orchestrator.checks.check_stage_gpus` where the backend gives each stage its GPUs (Slurm, Ray).
    """
    from orchestrator import checks

    path = resolve_sweep_path(sweep)
    spec, source = load_sweep(path)
    rs = resolve_profile(spec, source, profile, parse_overrides(list(overrides or [])))
    if writable:  # before the run dir and the synthetic data are made: a dead server is said in 2 s
        from orchestrator.tracking import check_tracking

        check_tracking(rs, run_dir)
    data_check = check_data or checks.check_data
    backend_cls, options = None, rs.backend.model_dump()
    if writable:
        from orchestrator.backends import get_backend_class

        name = backend or rs.backend.kind
        backend_cls = get_backend_class(name)
        if check_device is None:
            check_device = _device_checks(backend_cls, name, options)

    if writable and not dry:  # every input is checked, all in one report, before anything is made
        checked = build_plan(rs, run_dir, check_data=partial(_validate_inputs, run_dir, check_data), check_device=check_device,
                             check_weights=check_weights or partial(checks.check_weights, fetch=False, announce=False, probe=True))  # fmt: skip
        check_device = None  # said above
        backend_cls.preflight(options, kinds={s.kind for s in checked.stages.values()})
        if reachable and (why := backend_cls.unreachable()) is not None:  # before the run dir and benchmark are made
            if not all(checked.store.is_done(s.kind, k) for k, s in checked.stages.items()):  # a finished one needs none
                raise SweepError(f"{name} backend: {why}; nothing was submitted")

    def run_dir_then_data(cfg: Any) -> None:  # called once every trial is validated: nothing is created before
        if writable:
            checks.check_run_dir(run_dir, create=not dry)
        else:
            checks.check_run_dir_is_folder(run_dir)
        data_check(cfg)

    plan = build_plan(rs, run_dir, check_data=run_dir_then_data, check_weights=check_weights, check_device=check_device)
    if backend_cls is not None and dry:
        backend_cls.preflight(options, kinds={s.kind for s in plan.stages.values()})
        if (why := backend_cls.unreachable()) is not None:  # a plan made away from the cluster is still a plan
            print(f"note: {name} backend: {why}; `famix sweep run` needs it", file=sys.stderr, flush=True)
    return plan


def _validate_inputs(run_dir: str | Path, check_data: Any, cfg: Any) -> None:
    """``famix sweep run``'s first pass: the run dir could be made and the data is there, making nothing
    (the synthetic benchmark, made from its settings, cannot be missing); ``check_data`` if given."""
    from orchestrator import checks

    checks.check_run_dir(run_dir, create=False)
    (check_data or partial(checks.check_data, generate=False))(cfg)


@dataclass
class RunOptions:
    backend: str | None = None
    max_parallel: int | None = None
    retries: int | None = None
    detach: bool = False  # submit and return (backends with supports_detach); `famix sweep status` / a rerun picks up later
    rerun_failed: bool = False  # verify the done artifacts (sizes + sha256) first; damaged ones are set aside and rebuilt


@dataclass
class SweepResult:
    outcomes: dict[str, StageOutcome]
    failed: list[str] = field(default_factory=list)
    results_csv: Path | None = None
    table: str = ""
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def _device_checks(backend_cls: Any, name: str, options: dict[str, Any]) -> Any:
    """``train.device``'s plan-time checks on ``backend_cls``: against this machine's GPUs where the
    stages run here (:func:`orchestrator.checks.check_device`), and against the GPUs each stage is
    given where the backend gives them (:func:`orchestrator.checks.check_stage_gpus`); None: none."""
    from orchestrator import checks

    found = []
    if not backend_cls.remote_workers(options):
        found.append(checks.check_device)
    gpus = {kind: backend_cls.stage_gpus(kind, options) for kind in checks.DEVICE_STAGE_KINDS}
    if all(n is not None for n in gpus.values()):
        keys = {kind: backend_cls.stage_gpus_key(kind, options) for kind in checks.DEVICE_STAGE_KINDS}
        found.append(lambda cfg: checks.check_stage_gpus(cfg, gpus, name, keys))
    if not found:
        return None

    def check(cfg: Any) -> None:  # the first problem: one line
        for one in found:
            one(cfg)

    return check


def _fingerprint(plan: Plan, uri: str, experiment: str) -> str:
    """Identity of a plan's MLflow content: trials, labels, stage keys, profile, tracking target. The
    sweep file counts by what it is, not by how it was named (``ablation``, ``sweeps/ablation.yaml``)."""
    return canonical_hash([{**plan.to_json(), "source": str(Path(plan.sweep.source).resolve())}, uri, experiment])


def quietly(what: str, fn: Any, *args: Any) -> Any:
    """Run an extra (MLflow parent-run content, ingestion); a failure is a one-line note on stderr, never a failed command."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001
        note_skipped(what, e)
        return None


def note_skipped(what: str, e: BaseException) -> None:
    """The one line on stderr of an extra that failed: ``famix: note: <what> skipped (<Error>: <first line>)``."""
    print(f"famix: note: {what} skipped ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})", file=sys.stderr)


# ----------------------------------------------------------------------------------------------- run


@contextmanager
def _driver_lock(plan: Plan) -> Iterator[None]:
    """One driver per sweep folder at a time (flock; released by the OS even on SIGKILL). On a
    filesystem without file locks (an NFS mount without lockd: ENOLCK) the block runs unguarded, as
    the stages' locks do, with a warning."""
    import fcntl
    import warnings

    from famix_core.errors import FamixWarning

    plan.sweep_dir.mkdir(parents=True, exist_ok=True)
    lock_path = plan.sweep_dir / "driver.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            info = _read_json(plan.sweep_dir / "driver.json")
            raise SweepError(
                f"{plan.sweep_dir}: another driver (pid {info.get('pid', '?')}) is running this sweep; "
                f"wait for it or `famix sweep cancel {plan.arguments()}`"
            ) from None
        except OSError as e:
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP):
                raise
            warnings.warn(f"{lock_path}: this filesystem has no file locks ({e.strerror}); nothing stops a second "
                          "driver of this sweep, and `status` cannot tell whether one runs", FamixWarning, stacklevel=3)  # fmt: skip
        yield
    finally:
        os.close(fd)


@contextmanager
def _noting_its_end(plan: Plan) -> Iterator[None]:
    """``driver.json`` gets ``ended`` when the driver returns or raises (Ctrl-C included); a driver
    killed outright (``kill -9``, a lost machine) leaves none, so ``sweep status`` knows whose MLflow
    runs were left ``RUNNING`` (:func:`sync_tracking`)."""
    try:
        yield
    finally:
        path = plan.sweep_dir / "driver.json"
        info = _read_json(path)
        if info:
            try:
                atomic_write_text(path, json.dumps({**info, "ended": time.time()}))
            except OSError:  # a full disk or read-only run dir: the runs are ended anyway when it returns normally
                pass


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def stage_tasks(plan: Plan, status: dict[str, str], runs: dict[str, str], uri: str | None, resources: dict[str, Any]) -> list[StageTask]:
    """The stages still to run, as backend tasks (topological order), reporting to their trials' runs."""
    labels = {t.id: t.labels for t in plan.trials}
    return [_task(plan, s, labels, runs, uri, resources) for key, s in plan.stages.items() if status[key] != "done"]


def _task(
    plan: Plan, s: StageSpec, labels: dict[str, dict[str, str]], runs: dict[str, str], uri: str | None, resources: dict[str, Any]
) -> StageTask:
    shown = f"[{','.join(labels[s.trials[0]].values())}]"
    if len(s.trials) > 1:  # a stage several trials share (the ablation's mining stage: 4)
        shown += f" (+{count(len(s.trials) - 1, 'trial')})"
    return StageTask(
        kind=s.kind,  # type: ignore[arg-type]
        key=s.key,
        config=s.config,
        deps=dict(s.deps),
        domain=s.domain,
        store=str(plan.store.root),
        log_path=str(plan.log_path(s)),
        tracking={
            "uri": uri,
            "run_ids": [runs[t] for t in s.trials if t in runs],
            "system_metrics": plan.sweep.tracking.system_metrics_interval if plan.sweep.tracking.system_metrics and s.kind == "train" else None,
        },
        resources=dict(resources.get(s.kind) or {}),
        name=f"{s.kind}{'/' + s.domain if s.domain else ''} {shown} {s.key[:8]}",
        command=f"famix sweep run {plan.arguments()}",
    )


def run_plan(plan: Plan, opts: RunOptions, console: Any = None, *, backend_obj: Any = None) -> SweepResult:
    """Run the stages that are not done, log to MLflow, print progress, failures, the results table.

    Args:
        plan: from :func:`prepare`.
        opts: backend / parallelism / retries (None: the sweep file's values).
        console: a rich Console (default: stdout).
        backend_obj: an already constructed backend (tests inject one); default from the registry.

    Returns:
        outcomes, failed stage keys, the results CSV path, the Markdown table.
    """

    from orchestrator.backends import get_backend_class
    from orchestrator.execute import execute_stage
    from orchestrator.liveness import driver_identity
    from orchestrator.tracking import (
        end_interrupted_runs, ensure_runs, finalize_runs, finished_in_store, open_tracker, resume_runs,
        set_aside_damaged_store, tracking_target,
    )  # fmt: skip
    from reports.collect import DamagedStoreError

    console = console or make_console()
    t0 = time.perf_counter()
    rs = plan.sweep
    backend_name = opts.backend or rs.backend.kind
    backend_cls = get_backend_class(backend_name)
    retries = rs.backend.retries if opts.retries is None else opts.retries
    # 0: the backend decides (Ray: from the cluster's resources; Slurm: the array cap, docs/slurm.md)
    max_parallel = opts.max_parallel or rs.backend.max_parallel or backend_cls.parallelism(rs.backend.model_dump())
    # `famix sweep run … | head` (a pager quit early) stops the sweep as Ctrl-C does, not with a BrokenPipeError
    with _driver_lock(plan), _noting_its_end(plan), interrupt_when_reader_gone():
        (plan.sweep_dir / CANCEL_NOTE).unlink(missing_ok=True)  # a note for an earlier driver (it ended first)
        arguments = plan.arguments()
        identity = {**driver_identity(), "backend": backend_name, "started": time.time(), "profile": rs.profile, "arguments": arguments}
        last_run = _read_json(plan.sweep_dir / "driver.json")
        results_of = last_run.get("results_of")  # the plan of the results.csv there
        # the last driver was killed (kill -9: it wrote no `ended`) and its stages died with it: its runs read RUNNING for no one
        last_killed = _killed(last_run) and not _stages_outlive_driver(last_run.get("backend") or rs.backend.kind)
        atomic_write_text(plan.sweep_dir / "driver.json", json.dumps({**identity, "results_of": results_of}))

        def write_results(frame: Any) -> Path:
            """``results.csv``, then ``driver.json``'s note that it is this plan's (a later plan names it)."""
            path = plan.sweep_dir / "results.csv"
            atomic_write_text(path, frame.to_csv(index=False))
            atomic_write_text(plan.sweep_dir / "driver.json", json.dumps({**identity, "results_of": arguments}))
            return path

        plan.write()
        if opts.rerun_failed:
            _set_aside_damaged(plan, console)
        status = plan.status()
        uri, experiment = tracking_target(plan)
        damaged = set_aside_damaged_store(plan)  # before the "MLflow complete" shortcut: it would not be
        if damaged:
            console.print(damaged, highlight=False, markup=False)
        stale = plan.store.clean_tmp()  # also before the fast path below: the last run's workers may have left some
        if stale:
            console.print(f"removed {count(stale, 'half-written stage folder')} left in {plan.store.root / '.tmp'} by killed workers", highlight=False)
        marker = plan.sweep_dir / "finalized.json"
        fingerprint = _fingerprint(plan, uri, experiment)
        cached = _read_json(marker)
        report_gone = bool(cached.get("report")) and _report_stamp(plan.sweep_dir / "report") is None  # deleted: the full path writes it again
        if (all(v == "done" for v in status.values()) and cached.get("fingerprint") == fingerprint and not report_gone
                and finished_in_store(uri, cached.get("parent"))):  # fmt: skip
            # nothing to run and MLflow was completed for exactly this plan, in this store: no need to even load MLflow
            console.print(f"sweep {plan.name} ({rs.profile}): {count(len(plan.stages), 'stage')}, all done; MLflow complete", highlight=False)
            print_table(console, cached.get("table", ""), cached.get("table_json"))
            print_notes(console, cached.get("notes") or [])
            csv_path = write_results(results_frame(plan))
            console.print(f"results: {csv_path}  (MLflow: {uri}, experiment {experiment})", highlight=False)
            if cached.get("report") and cached["report"] == _report_stamp(plan.sweep_dir / "report"):  # as this plan left it
                console.print(f"report: {plan.sweep_dir / 'report'} (tables, figures; also on the MLflow parent run)", highlight=False)
            return SweepResult({}, [], csv_path, cached.get("table", ""), time.perf_counter() - t0)
        if backend_obj is None and any(v != "done" for v in status.values()) and (why := backend_cls.unreachable()) is not None:
            # before MLflow's runs are made RUNNING for jobs that cannot be submitted (a finished sweep
            # took the fast path above: it needs no scheduler)
            raise SweepError(f"{backend_name} backend: {why}; nothing was submitted")
        marker.unlink(missing_ok=True)
        try:
            tracker = open_tracker(plan)
        except DamagedStoreError as e:  # SQLite finds the file sound, MLflow cannot open it (tables half made)
            console.print(set_aside_damaged_store(plan, e.why), highlight=False, markup=False)
            tracker = open_tracker(plan)
        parent, runs = ensure_runs(plan, tracker, backend_name)
        if last_killed and tracker.uri.startswith("sqlite:"):  # of another plan (other overrides): this plan's own are resumed or ended below
            quietly("ending the MLflow runs a killed driver left running", end_orphaned_runs, plan, tracker, {parent, *runs.values()})
        try:
            quietly("parent run description", describe_parent, plan, tracker, parent, backend_name)
            resources = {k: v.model_dump() for k, v in rs.backend.resources.items()}
            driver_writes = tracking_writer(rs.tracking.writer, tracker.uri, backend_cls, rs.backend.model_dump()) == "driver"
            tasks = stage_tasks(plan, status, runs, None if driver_writes else tracker.uri, resources)
            if tasks:  # an interrupt ended them KILLED: they run again
                to_run = {t.key for t in tasks}
                quietly("MLflow runs set running again", resume_runs, tracker, parent, runs,
                        [tid for tid, stages in plan.trial_stages.items() if to_run.intersection(stages.keys())])  # fmt: skip
            n_done = sum(v == "done" for v in status.values())
            console.print(
                f"sweep {plan.name} ({rs.profile}): {count(len(plan.trials), 'trial')}, {count(len(plan.stages), 'stage')}, "
                f"{n_done} cached, {len(tasks)} to run on {backend_name} (max parallel {max_parallel or 'from the backend'}, retries {retries})",
                highlight=False,
            )
            from orchestrator.execute import StopRequest

            stop = StopRequest()  # an interrupt: a training running in this process checkpoints first
            extra: dict[str, Any] = {"detach": True} if opts.detach else {}
            if backend_cls.in_process:
                extra["stop"] = stop  # its stages run here, under this handler
            backend = backend_obj or backend_cls(
                sweep_dir=str(plan.sweep_dir), options=rs.backend.model_dump(), execute=execute_stage, **extra
            )
            if driver_writes and tasks:
                console.print(
                    f"MLflow: the stages on {backend_name} record their metrics in the store and this driver logs them "
                    f"as they finish (the SQLite store {tracker.uri} is not safe to write from other machines; "
                    "tracking.uri = an MLflow server gives live curves and system metrics)",
                    highlight=False,
                )
            progress = Progress(tasks, len(plan.stages), n_done, console, console.is_terminal, max_parallel=max_parallel)
            on_event = _recording(progress.on_event, plan, tracker, runs, driver_writes)
            with closing(backend), _stopping_for_a_checkpoint(stop, progress.stopping), progress:
                outcomes = backend.run(tasks, max_parallel=max_parallel, retries=retries, on_event=on_event)
            if opts.detach:
                submitted = [o for o in outcomes.values() if o.status == "submitted"]
                args = plan.arguments()
                console.print(
                    f"detached: {count(len(submitted), 'stage')} submitted to {backend_name}; follow with\n"
                    f"  famix sweep status {args}\n"
                    f"and once all are done, collect the table (or run what failed) with\n"
                    f"  famix sweep run {args} --backend {backend_name}",
                    highlight=False,
                    markup=False,
                )
                return SweepResult(outcomes, [], None, "", time.perf_counter() - t0)
            failed = [k for k, o in outcomes.items() if o.status in ("failed", "cancelled")]
            with busy(console, "MLflow: logging what the stages left and ending the runs"):
                statuses = finalize_runs(plan, tracker, parent, runs, set(failed), outcomes)
                df = results_frame(plan, statuses)
                csv_path = write_results(df)
            from reports.report import report_lock

            with report_lock(plan.sweep_dir / "report"):  # a `famix report` writing there meanwhile goes first or after
                results = collect_results(plan, tracker.uri, rs.tracking.experiment or rs.name)
                table, table_json, report_table, report = markdown_table(df), None, None, None
                if results is not None:
                    from reports.tables import build_table, render_markdown
                    from reports.terminal import table_to_json

                    report_table = build_table(results, title=f"{plan.name} ({rs.profile})")
                    table, table_json = render_markdown(report_table), table_to_json(report_table)
                print_table(console, table, table_json)
                notes = list(results.notes) if results is not None else []
                print_notes(console, notes)
                if report_table is not None:
                    with busy(console, "writing the report (tables, figures) and attaching it to the MLflow parent run"):
                        report = quietly("report on the MLflow parent run", publish_results, plan, tracker, parent, results, report_table, table, backend_name)
            console.print(f"results: {csv_path}  (MLflow: {tracker.uri}, experiment {rs.tracking.experiment or rs.name})", highlight=False)
            if report is not None:
                console.print(f"report: {report} (tables, figures; also on the MLflow parent run)", highlight=False)
            if results_of and not plan.follows(results_of):  # e.g. `make sweep ARGS=…` after the plain command
                console.print(f"note: these replace the results and report of another plan (`famix sweep run {plan.from_here(results_of)}`); "
                              "that command writes them back from the cached stages", highlight=False, markup=False)  # fmt: skip
            result = SweepResult(outcomes, failed, csv_path, table, time.perf_counter() - t0)
            if all(v == "done" for v in statuses.values()):
                atomic_write_text(marker, json.dumps({"fingerprint": fingerprint, "parent": parent, "table": table, "table_json": table_json,
                                                      "notes": notes, "report": _report_stamp(report)}, ensure_ascii=False))  # fmt: skip
            print_failures(console, progress.failures, progress.not_started, plan.run_dir)
            halted = len(progress.not_started)
            waiting = sum(failed_dependency(o.error) is not None for _, o in progress.failures)  # as print_failures counts them
            console.print(f"finished in {result.seconds:.1f}s: {progress.counts['done']} run, {progress.counts['cached']} cached, "
                          f"{len(failed) - halted - waiting} failed" + (f", {waiting} not run (a stage they need failed)" if waiting else "")
                          + (f", {halted} not started" if halted else ""), highlight=False)  # fmt: skip
            return result
        except KeyboardInterrupt:  # Ctrl-C, SIGTERM: the stages are stopped; the runs are not left RUNNING
            args = plan.arguments()
            again = f"famix sweep run {args}" + (f" --backend {opts.backend}" if opts.backend else "")
            cancelled = _cancel_was_for_me(plan)
            if backend_cls.stages_outlive_driver and cancelled:  # `famix sweep cancel` ended the jobs, then this driver
                raise Interrupted(f"`famix sweep cancel` cancelled the jobs on {backend_name} (a running training checkpointed "
                                  f"first); `{again}` runs the rest") from None  # fmt: skip
            if backend_cls.stages_outlive_driver:  # Slurm: the jobs go on, and their runs stay RUNNING (as after --detach)
                stop = f"famix sweep cancel {args}" + (f" --backend {opts.backend}" if opts.backend else "")
                raise Interrupted(f"the jobs on {backend_name} go on unless cancelled (`{stop}`); `{again}` waits for them and runs the rest") from None
            quietly("ending the interrupted sweep's MLflow runs", end_interrupted_runs, tracker, parent, runs)
            raise Interrupted(("`famix sweep cancel` stopped the sweep; " if cancelled else "") + f"the finished stages are kept (a training resumes from its last checkpoint): `{again}` runs the rest") from None
        except BackendLost as e:  # its stages went with it; what finished is in the store
            quietly("ending the MLflow runs of the lost stages", end_interrupted_runs, tracker, parent, runs)
            again = f"famix sweep run {plan.arguments()}" + (f" --backend {opts.backend}" if opts.backend else "")
            raise BackendLost(f"{e}; the finished stages are kept (a training resumes from its last checkpoint): `{again}` runs the rest") from None
        except Exception:  # the driver itself failed (a bug): its runs are not left RUNNING for good
            if not backend_cls.stages_outlive_driver:
                quietly("ending the MLflow runs of a driver that failed", end_interrupted_runs, tracker, parent, runs)
            raise


def _report_stamp(report: Path | None) -> list[Any] | None:
    """What tells the report a completed run wrote from a later one in its folder (``famix report`` writes
    there too): its table's path, size and modification time; None where there is none."""
    table = Path(report) / "table.md" if report is not None else None
    try:
        st = table.stat() if table is not None else None
    except OSError:
        return None
    return [str(table), st.st_size, st.st_mtime_ns] if st is not None else None


def _stopping_for_a_checkpoint(stop: Any, told: Callable[[], None]) -> Any:
    """While the stages run: Ctrl-C, SIGTERM and a hangup (a closed terminal) let a training running in
    this process checkpoint its iteration first (a second signal stops at once); any other stage stops
    at once. ``told()`` first (the display says it is stopping). Under ``nohup`` a hangup stays
    ignored. The handlers there before are put back after."""
    from famix_core.interrupts import handling_interrupts
    from orchestrator.execute import checkpoint_then_stop

    checkpoint_or_stop = checkpoint_then_stop(stop, notice=_say_checkpointing)

    def handler(signum: int, frame: Any) -> None:
        told()
        checkpoint_or_stop(signum, frame)

    return handling_interrupts(handler)


def tracking_writer(writer: str, uri: str, backend_cls: Any, options: dict[str, Any]) -> str:
    """Who writes to MLflow (``tracking.writer``): ``auto`` is ``driver`` for the SQLite store when the
    backend runs stages on other machines, else ``stages``."""
    if writer != "auto":
        return writer
    return "driver" if uri.startswith("sqlite:") and backend_cls.remote_workers(options) else "stages"


def _recording(on_event: Any, plan: Plan, tracker: Any, runs: dict[str, str], driver_writes: bool) -> Any:
    """``on_event`` that also records a finished stage in MLflow: its trials that are now complete end
    there at once, and, when the driver is the writer, its metrics are logged to its trials' runs."""
    from orchestrator.tracking import record_stage_done

    def handler(event: str, task: StageTask, outcome: StageOutcome | None) -> None:
        on_event(event, task, outcome)
        if event == "done" and task.key in plan.stages:
            quietly("MLflow record of a finished stage", record_stage_done, plan, tracker, runs, task.key, driver_writes)

    return handler


def sync_tracking(plan: Plan, console: Any = None, *, name_last_run: bool = True) -> int:
    """Log into MLflow what the store has and MLflow lacks (``famix sweep status``, ``famix report``):
    after ``--detach`` the stages finish without a driver. Nothing is done while a driver runs (it is
    the writer), before any stage of the sweep is done (but a killed driver's runs are ended, below),
    or for a tracking server (stages log to a server themselves; a server that is down must not stall
    ``status``). When MLflow's active trial
    runs of the sweep belong to another plan (the run that made them had overrides these commands
    were not given), only the runs of this plan's trials that exist are written to: nothing is
    created and nothing hidden; only a driver, running a plan, supersedes. Otherwise missing runs
    are made (a lost or never-written store). A trial run whose stages are all done is marked
    ``done`` and ended, as the driver does, and so is the sweep's run once all of them are (when
    this plan owns the trial runs). The runs that this plan's driver left ``RUNNING`` when it was
    killed (``kill -9``, a lost machine: ``driver.json`` has no ``ended``) end ``KILLED`` where its
    stages died with it (local, Ray); those of a Slurm sweep (an interrupted driver, ``--detach``) once
    no job of it is queued or running (:meth:`~orchestrator.backends.base.Backend.jobs_ended`). Returns
    how many trial runs got something."""
    from orchestrator.tracking import (
        damaged_store, embedded_store_exists, ensure_runs, kill_runs, open_tracker, plan_trial_runs, record_finished, running_runs,
        tracking_target,
    )  # fmt: skip

    uri = tracking_target(plan)[0]
    if not uri.startswith("sqlite:") or damaged_store(plan) is not None:  # status names the damage
        return 0
    if not plan.sweep_dir.is_dir():
        return 0
    last_run = _read_json(plan.sweep_dir / "driver.json")
    backend = last_run.get("backend") or plan.sweep.backend.kind
    same_plan = bool(last_run) and plan.follows(last_run.get("arguments"))
    outlive = _stages_outlive_driver(backend)
    # this plan's driver was killed (kill -9, a lost machine) where its stages died with it: nothing runs its runs
    killed = same_plan and "ended" not in last_run and not outlive
    left_running = killed or (same_plan and outlive)  # runs this plan's driver may have left to no one, or to its jobs
    # the same for another plan's driver (other overrides): its runs stayed RUNNING until a command with its arguments
    other_killed = not same_plan and _killed(last_run) and not outlive
    anything_done = any(plan.store.is_done(s.kind, k) for k, s in plan.stages.items())
    if not anything_done and not ((left_running or other_killed) and embedded_store_exists(uri)):
        return 0
    ended = 0
    try:
        with _driver_lock(plan):  # held by a running driver: that one writes
            tracker = open_tracker(plan)
            runs, others = plan_trial_runs(plan, tracker)
            parent = None
            if not others and (anything_done or runs):  # runs are made to be filled, not to be ended at once
                parent, runs = ensure_runs(plan, tracker, backend)
            n = record_finished(plan, tracker, runs, parent) if runs else 0
            running = running_runs(tracker, parent, runs) if parent is not None and left_running else []
            if running and (killed or _jobs_ended(backend, plan)):  # the lock was free: no driver, no job runs them
                ended = kill_runs(tracker, running)
            if other_killed:  # the lock was free and its stages died with it
                ended += end_orphaned_runs(plan, tracker)
    except SweepError:
        return 0
    except OSError as e:  # a run dir that is read-only (a finished run kept on a read-only mount): nothing to log into
        if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return 0
        raise
    if others and console is not None:
        ran = last_run.get("arguments")
        if ran and not plan.follows(ran):
            hint = f" (the last run had `{ran}`: give this command the same)" if name_last_run else ""
        else:
            hint = " (run with other overrides? give this command the same key=value)"
        one = others == 1
        console.print(f"note: MLflow's {count(others, 'trial run')} of this sweep {'comes' if one else 'come'} from another plan "
                      f"of it{hint}; {'it was' if one else 'they were'} left as {'it is' if one else 'they are'}",
                      highlight=False, markup=False)  # fmt: skip
    if n and console is not None:
        console.print(f"MLflow: logged the finished stages' metrics of {count(n, 'trial run')} ({tracker.uri})", highlight=False)
    if ended and console is not None:
        why = "their jobs have ended" if outlive else "their driver was killed"
        args = plan.from_here(last_run["arguments"]) if other_killed and last_run.get("arguments") else plan.arguments()
        again = f"famix sweep run {args}" + (f" --backend {backend}" if backend != plan.sweep.backend.kind else "")
        console.print(f"MLflow: ended {count(ended, 'run')} KILLED that nothing runs any more ({why}; `{again}` runs the rest)",
                      highlight=False, markup=False)  # fmt: skip
    return n


def _jobs_ended(backend: str, plan: Plan) -> bool:
    """Whether every job ``backend`` was given for the sweep has ended (:meth:`Backend.jobs_ended`)."""
    from orchestrator.backends import get_backend_class

    try:
        return get_backend_class(backend).jobs_ended(plan.sweep_dir)
    except SweepError:  # a driver.json of another version: leave its runs alone
        return False


def _set_aside_damaged(plan: Plan, console: Any) -> int:
    """``--rerun-failed``: every done artifact of the plan is verified; a damaged one moves to ``store/.corrupt/``."""
    store = plan.store
    n = 0
    for key, s in plan.stages.items():
        if store.is_done(s.kind, key):
            bad = store.problem(s.kind, key, deep=True)
            if bad:
                dest = store.set_aside(s.kind, key)
                console.print(f"damaged {s.kind} artifact {bad}: set aside as {dest}; the stage runs again", highlight=False, markup=False)
                n += 1
    return n


def _killed(last_run: dict[str, Any]) -> bool:
    """Whether the driver that wrote ``last_run`` (a ``driver.json``) was killed: it wrote no ``ended``
    (a driver that returns or raises does) and, on this host, its pid no longer has the start time it
    recorded (where the lock could not be taken, a live driver has no ``ended`` either)."""
    from orchestrator.liveness import recorded_process_alive

    if not last_run or "ended" in last_run or "host" not in last_run:
        return False
    return recorded_process_alive(last_run) is False  # None: another host's, which cannot be told from here


def end_orphaned_runs(plan: Plan, tracker: Any, keep: set[str] = frozenset()) -> int:  # type: ignore[assignment]
    """End ``KILLED`` the sweep's runs that a killed driver left ``RUNNING`` on a backend whose stages died
    with it (local, Ray in-process; not Slurm, whose jobs go on and log), ``keep`` aside; returns how many."""
    from orchestrator.tracking import kill_runs
    from reports import schema

    orphans = [r.info.run_id for r in tracker.find({schema.TAG_SWEEP: plan.name})
               if r.info.status == "RUNNING" and r.info.run_id not in keep
               and not _stages_outlive_driver(r.data.tags.get(schema.TAG_BACKEND, ""))]  # fmt: skip
    return kill_runs(tracker, orphans)


def _stages_outlive_driver(backend: str) -> bool:
    """Whether the stages of a driver on ``backend`` go on without it (an unknown name: assume they do)."""
    from orchestrator.backends import get_backend_class

    try:
        return get_backend_class(backend).stages_outlive_driver
    except SweepError:  # a driver.json of another version: leave its runs alone
        return True


def _say_checkpointing() -> None:
    """What the first Ctrl-C (or SIGTERM) during an in-process training prints: it does not stop at once."""
    print("famix: stopping after this iteration's checkpoint (Ctrl-C again stops at once)", file=sys.stderr, flush=True)


def sweep_status(plan: Plan, console: Any = None) -> dict[str, int]:
    """Print the plan with done / to run per stage, the driver's state and the failures recorded in logs."""

    from orchestrator.backends import BACKENDS, get_backend_class
    from orchestrator.liveness import running_driver

    console = console or make_console()
    counts = print_plan(plan, console, show_running=True)  # a driver's workers, a detached run's jobs on this machine
    if not Path(plan.run_dir).is_dir():  # e.g. a mistyped --run-dir: say so rather than only "to run"
        console.print(f"note: run dir {plan.run_dir} does not exist: nothing has run there (another --run-dir?)", highlight=False, markup=False)
        return counts
    from orchestrator.tracking import damaged_store
    from reports.collect import DamagedStoreError

    def damage_note(db: Path, why: str) -> None:
        console.print(f"note: MLflow database {db} is damaged ({why}); `famix sweep run {plan.arguments()}` "
                      "sets it aside and rebuilds this sweep's runs from the store", highlight=False, markup=False)  # fmt: skip

    def sync(p: Plan, c: Any) -> None:
        try:
            sync_tracking(p, c, name_last_run=False)
        except DamagedStoreError as e:  # what SQLite's own check cannot see: MLflow failed to open it
            damage_note(e.db, e.why)

    damage = damaged_store(plan)
    if damage is not None:
        damage_note(*damage)
    quietly("MLflow ingestion of finished stages", sync, plan, console)

    info = running_driver(plan.sweep_dir)
    if info is not None:
        console.print(f"driver pid {info.get('pid')} on {info.get('host', '?')} ({info.get('backend')}): running", highlight=False)
        ran = info.get("arguments")
        if ran and not plan.follows(ran):  # e.g. `make status` beside `make sweep ARGS=…`
            console.print(f"note: the running driver's plan is `famix sweep run {ran}`; the counts above are of this "
                          "command's plan: give it the same arguments to follow that run", highlight=False, markup=False)
    elif (plan.sweep_dir / "driver.json").is_file():
        console.print("driver: not running", highlight=False)
        ran = _read_json(plan.sweep_dir / "driver.json").get("arguments")
        if ran and not plan.follows(ran):  # e.g. `make status` after `make sweep ARGS=…` or a detached run
            console.print(f"note: the last run had `{ran}`: give this command the same arguments to follow its plan; "
                          "the counts above are of this command's plan", highlight=False, markup=False)
    for name in BACKENDS:  # what a backend still holds for the sweep (e.g. Slurm jobs of a detached run)
        for line in get_backend_class(name).status(plan.sweep_dir):
            console.print(line, highlight=False, markup=False)
    return counts


def cancel_sweep(plan: Plan, backend: str | None = None, console: Any = None) -> int:
    """Cancel a running sweep: the backend's own jobs (e.g. Slurm's) and the driver process."""
    from orchestrator.backends import create_backend
    from orchestrator.liveness import running_driver

    console = console or make_console()
    info = _read_json(plan.sweep_dir / "driver.json")
    name = backend or info.get("backend") or plan.sweep.backend.kind
    n = create_backend(name, sweep_dir=str(plan.sweep_dir), options=plan.sweep.backend.model_dump()).cancel(str(plan.sweep_dir))
    live = running_driver(plan.sweep_dir)  # a stale driver.json pid may belong to any process by now
    pid = int((live or {}).get("pid") or 0)
    if live is not None and not live.get("verified"):
        console.print(f"driver pid {pid} on {live.get('host', '?')} holds the lock but cannot be checked from here; stop it there", highlight=False)
    elif pid and pid != os.getpid():
        note = plan.sweep_dir / CANCEL_NOTE
        with suppress(OSError):  # without the note the driver's last line reads as after Ctrl-C
            atomic_write_text(note, json.dumps({k: live.get(k) for k in ("pid", "start", "host")}))
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:  # it ended meanwhile (the jobs' cancel may take a minute)
            note.unlink(missing_ok=True)
            console.print(f"driver pid {pid} ended meanwhile", highlight=False)
        else:
            console.print(f"sent SIGTERM to driver pid {pid}", highlight=False)
            n += 1
    if n:
        console.print(f"cancelled {count(n, 'item')} of sweep {plan.name}", highlight=False)
    elif live is None:  # "cancelled 0 item(s)" read as a cancel that worked
        console.print(f"nothing to cancel: no driver of sweep {plan.name} runs, and {name} holds no job of it", highlight=False)
    if _stages_outlive_driver(name):  # its jobs kept the MLflow runs RUNNING (an interrupted driver, --detach)
        elsewhere = live is not None and not live.get("verified")  # not stopped: its runs are its own
        quietly("ending the cancelled sweep's MLflow runs", _end_cancelled_runs, plan, console, 0.0 if elsewhere else 30.0)
    return n


def _last_runs_plan(plan: Plan) -> Plan:
    """The plan of the driver that last ran in ``plan``'s sweep folder (``driver.json``'s arguments:
    its overrides), where it is another plan of the sweep; else ``plan``. `famix sweep cancel SWEEP`
    without the run's overrides cancelled its jobs, but ended only the parent run: the trial runs,
    those of other trial ids, stayed RUNNING. A record that no longer plans (the file edited since) is
    left: ``plan``."""
    from orchestrator.plan import _without_run_dir

    recorded = _read_json(plan.sweep_dir / "driver.json").get("arguments")
    if not recorded or plan.follows(recorded):
        return plan
    words = _without_run_dir(plan.from_here(recorded))
    if len(words) < 3 or words[1] != "--profile":
        return plan
    try:
        return prepare(plan.sweep.source, profile=words[2], run_dir=plan.run_dir, overrides=words[3:], writable=False,
                       check_data=lambda c: None, check_weights=lambda c: None, check_device=lambda c: None)  # fmt: skip
    except FamixError:
        return plan


CANCEL_NOTE = "cancelled.json"
"""Written in the sweep folder by ``famix sweep cancel`` just before it signals the driver: the pid it signals."""


def _cancel_was_for_me(plan: Plan) -> bool:
    """Whether the signal that stopped this driver came from ``famix sweep cancel`` (its note names this
    process: pid, start time, host); the note is removed."""
    from orchestrator.liveness import driver_identity

    path = plan.sweep_dir / CANCEL_NOTE
    if _read_json(path) != driver_identity():
        return False
    with suppress(OSError):
        path.unlink()
    return True


def _end_cancelled_runs(plan: Plan, console: Any, wait_s: float = 30.0) -> int:
    """``famix sweep cancel`` of a backend whose jobs outlive their driver (Slurm): once the driver has
    gone (it leaves the runs RUNNING for the jobs), the trials whose stages are all done end
    ``FINISHED`` (as ``status`` ends them) and the sweep's other runs ``KILLED``. Returns how many ended."""
    from orchestrator.tracking import (
        damaged_store, embedded_store_exists, end_interrupted_runs, open_tracker, plan_trial_runs, record_finished, sweep_run,
        tracking_target,
    )  # fmt: skip

    uri = tracking_target(plan)[0]
    if not plan.sweep_dir.is_dir() or (uri.startswith("sqlite:") and not embedded_store_exists(uri)) or damaged_store(plan):
        return 0
    plan = _last_runs_plan(plan)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with _driver_lock(plan):  # the driver, sent SIGTERM, exits within a second
                tracker = open_tracker(plan)
                runs, others = plan_trial_runs(plan, tracker)
                parent = sweep_run(plan, tracker)
                record_finished(plan, tracker, runs, None if others else parent)
                n = end_interrupted_runs(tracker, parent, runs)
            break
        except SweepError:
            if time.monotonic() >= deadline:
                console.print("note: the driver still runs; this sweep's MLflow runs are left as they are", highlight=False)
                return 0
            time.sleep(0.5)
    if n:
        console.print(f"MLflow: ended {count(n, 'run')} of the cancelled jobs KILLED ({tracker.uri})", highlight=False)
    return n
