"""The sweep driver: plan -> MLflow runs -> backend -> results (``famix sweep plan|run|status|cancel``).

A rerun of the same command finishes only what is missing: finished stages are
found in the store, trial runs are found in MLflow by tags, and metrics already
in MLflow are not logged twice.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from orchestrator.backends.base import StageOutcome, StageTask
from orchestrator.errors import SweepError
from orchestrator.parent_run import describe_parent, publish_results
from orchestrator.plan import Plan, StageSpec, build_plan, print_plan
from orchestrator.progress import Progress
from orchestrator.store import atomic_write_text
from orchestrator.sweep import load_sweep, parse_overrides, resolve_profile, resolve_sweep_path

__all__ = ["prepare", "run_plan", "RunOptions", "SweepResult", "sweep_status", "cancel_sweep", "results_frame", "markdown_table"]


def prepare(
    sweep: str | Path,
    *,
    profile: str | None = None,
    run_dir: str | Path = "runs",
    overrides: list[str] | None = None,
    check_data: Any = None,
    check_weights: Any = None,
    writable: bool = True,
    backend: str | None = None,
) -> Plan:
    """Find, validate, expand and check a sweep (nothing runs; raises a one-line FamixError on any mistake).

    ``writable``: check first that the run dir can be written (``plan`` and ``run``; ``status`` only
    reads); then the backend's own plan-time checks run (``backend``, default the sweep's
    ``backend.kind``): e.g. a Ray cluster address answers and every stage fits on one of its nodes.
    """
    from orchestrator import checks

    path = resolve_sweep_path(sweep)
    spec, source = load_sweep(path)
    rs = resolve_profile(spec, source, profile, parse_overrides(list(overrides or [])))
    data_check = check_data or checks.check_data

    def run_dir_then_data(cfg: Any) -> None:  # called once every trial is validated: nothing is created before
        if writable:
            checks.check_run_dir(run_dir)
        data_check(cfg)

    plan = build_plan(rs, run_dir, check_data=run_dir_then_data, check_weights=check_weights)
    if writable:
        from orchestrator.backends import get_backend_class

        get_backend_class(backend or rs.backend.kind).preflight(rs.backend.model_dump())
    return plan


@dataclass
class RunOptions:
    backend: str | None = None
    max_parallel: int | None = None
    retries: int | None = None
    detach: bool = False  # submit and return (slurm only); `famix sweep status` / a rerun picks up later
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


# ----------------------------------------------------------------------------------------------- tracking


def _tracking_target(plan: Plan) -> tuple[str, str]:
    """(tracking URI, experiment name) of a plan."""
    from orchestrator.tracking import default_uri

    rs = plan.sweep
    return rs.tracking.uri or default_uri(plan.run_dir), rs.tracking.experiment or rs.name


def _tracking(plan: Plan):
    from orchestrator.tracking import Tracker

    uri, experiment = _tracking_target(plan)
    artifacts = (plan.run_dir / "mlartifacts").absolute().as_uri() if plan.sweep.tracking.uri is None else None
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    return Tracker(uri, experiment, artifact_location=artifacts)


def _fingerprint(plan: Plan, uri: str, experiment: str) -> str:
    """Identity of a plan's MLflow content: trials, labels, stage keys, profile, tracking target."""
    import hashlib

    blob = json.dumps([plan.to_json(), uri, experiment], sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _store_exists(uri: str) -> bool:
    """The fast path is only taken for the embedded SQLite store that is still there."""
    from reports.collect import sqlite_path

    db = sqlite_path(uri)
    return db is not None and db.is_file()


def _trial_tags(plan: Plan, trial, backend: str, commit: str) -> dict[str, str]:
    from orchestrator.tracking import labels_tags

    ts = plan.trial_stages[trial.id]
    tags = {
        "famix.trial_index": str(trial.index),
        "famix.seed": str(trial.seed),
        "famix.stage.train": ts.train,
        "famix.git_commit": commit,
        "famix.backend": backend,
        "famix.profile": plan.sweep.profile,
        "famix.domains": json.dumps(list(ts.evaluate)),
        **labels_tags(trial.labels),
    }
    if ts.mine:
        tags["famix.stage.mine"] = ts.mine
    tags.update({f"famix.stage.evaluate.{c}": k for c, k in ts.evaluate.items()})
    return tags


def ensure_runs(plan: Plan, tracker: Any, backend: str) -> tuple[str, dict[str, str]]:
    """Create (or find by tags) the sweep's parent run and one nested run per trial; returns (parent, trial id -> run id)."""
    import yaml

    from orchestrator.tracking import git_commit

    commit = git_commit()
    name = plan.sweep.name
    parent, _ = tracker.ensure_run(
        {"famix.sweep": name, "famix.role": "sweep", "famix.profile": plan.sweep.profile},
        {"famix.git_commit": commit, "famix.backend": backend, "famix.domains": json.dumps(plan.sweep.domains)},
        name=f"{name}-{plan.sweep.profile}",
    )
    all_runs = tracker.find({"famix.sweep": name})
    existing = {r.data.tags.get("famix.trial"): r for r in all_runs if r.data.tags.get("famix.role") in ("trial", "superseded")}
    wanted = {t.id for t in plan.trials}
    for r in all_runs:  # trials of this profile that the sweep no longer has: hidden from reports, kept in MLflow
        tags = r.data.tags
        if tags.get("famix.role") == "trial" and tags.get("famix.profile") == plan.sweep.profile and tags.get("famix.trial") not in wanted:
            tracker.set_tags(r.info.run_id, {"famix.role": "superseded"})
    runs: dict[str, str] = {}
    for trial in plan.trials:
        tags = {**_trial_tags(plan, trial, backend, commit), "famix.role": "trial"}
        run = existing.get(trial.id)
        if run is not None:
            runs[trial.id] = run.info.run_id
            changed = {k: v for k, v in tags.items() if run.data.tags.get(k) != v}
            if changed:
                tracker.set_tags(run.info.run_id, changed)
            continue
        find = {"famix.sweep": name, "famix.role": "trial", "famix.trial": trial.id}
        label = ",".join(f"{k}={v}" for k, v in trial.labels.items())
        run_id, created = tracker.ensure_run(
            find,
            {**tags, "mlflow.parentRunId": parent, "famix.status": "partial"},
            name=f"{trial.index:02d} {label} seed={trial.seed}",
            params=trial.config.flat(),
        )
        if created:
            tracker.log_text(run_id, yaml.safe_dump(trial.config.to_dict(), sort_keys=False), "config.yaml")
        runs[trial.id] = run_id
    return parent, runs


def finalize_runs(plan: Plan, tracker: Any, parent: str, runs: dict[str, str], failed: set[str]) -> dict[str, str]:
    """Log every metric the store has and MLflow lacks, set ``famix.status`` and end the runs; returns trial -> status."""
    from orchestrator.tracking import metrics_from_eval

    store = plan.store
    existing = {r.info.run_id: r for r in tracker.find({"famix.sweep": plan.name, "famix.role": "trial"})}
    statuses: dict[str, str] = {}
    for trial in plan.trials:
        ts = plan.trial_stages[trial.id]
        run_id = runs[trial.id]
        run = existing.get(run_id)
        have = dict(run.data.metrics) if run is not None else {}
        want: dict[str, float] = {}
        mious = []
        for col, key in ts.evaluate.items():
            info = store.done_info("evaluate", key)
            if info is None:
                continue
            m = metrics_from_eval(col, info["result"])
            want.update(m)
            mious.append(m[f"miou/{col}"])
        if len(mious) == len(ts.evaluate):
            want["miou/mean"] = sum(mious) / len(mious)
        missing = {k: v for k, v in want.items() if k not in have or not math.isclose(have[k], v, rel_tol=1e-9, abs_tol=1e-9)}
        if missing:
            tracker.log_metrics(run_id, missing, step=0)
        if ts.mine and store.is_done("mine", ts.mine):
            summary = store.path("mine", ts.mine) / "summary.json"
            if summary.is_file() and not _has_artifact(tracker, run_id, "styles"):
                tracker.client.log_artifact(run_id, str(summary), "styles")
        all_done = all(store.is_done(plan.stages[k].kind, k) for k in ts.keys())
        status = "done" if all_done else ("failed" if any(k in failed for k in ts.keys()) else "partial")
        statuses[trial.id] = status
        if run is None or run.data.tags.get("famix.status") != status or run.info.status == "RUNNING":
            tracker.set_tags(run_id, {"famix.status": status})
            tracker.finish(run_id, status == "done")
    overall = "done" if all(s == "done" for s in statuses.values()) else ("failed" if failed else "partial")
    tracker.set_tags(parent, {"famix.status": overall})
    tracker.finish(parent, overall == "done")
    return statuses


def _has_artifact(tracker: Any, run_id: str, path: str) -> bool:
    try:
        return bool(tracker.client.list_artifacts(run_id, path))
    except Exception:  # noqa: BLE001
        return False


# ----------------------------------------------------------------------------------------------- results


def results_frame(plan: Plan, statuses: dict[str, str] | None = None):
    """Wide results (Results CSV): label columns, ``seed``, ``status``, one column per domain (mIoU %), from the store."""
    import pandas as pd

    store = plan.store
    label_cols: list[str] = []
    for t in plan.trials:
        label_cols += [c for c in t.labels if c not in label_cols]
    rows = []
    for t in plan.trials:
        ts = plan.trial_stages[t.id]
        row: dict[str, Any] = {c: t.labels.get(c, "") for c in label_cols}
        row["seed"] = t.seed
        done = 0
        for col, key in ts.evaluate.items():
            info = store.done_info("evaluate", key)
            row[col] = round(100.0 * info["result"]["miou"], 4) if info else float("nan")
            done += info is not None
        row["status"] = (statuses or {}).get(t.id) or ("done" if done == len(ts.evaluate) else "partial")
        rows.append(row)
    cols = [*label_cols, "seed", "status", *plan.sweep.domains]
    return pd.DataFrame(rows, columns=cols)


def markdown_table(df) -> str:
    """A minimal Markdown table of the results frame (with the per-row mean over the domain columns)."""
    domain_cols = [c for c in df.columns if c not in ("seed", "status") and df[c].dtype.kind == "f"]
    header = [*df.columns, "Mean"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, r in df.iterrows():
        vals = [r[c] for c in domain_cols]
        mean = sum(vals) / len(vals) if vals and all(v == v for v in vals) else float("nan")
        cells = [f"{r[c]:.2f}" if c in domain_cols else str(r[c]) for c in df.columns] + [f"{mean:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _values_from_store(plan: Plan, runs: Any) -> None:
    """Domain values of the collected MLflow runs := the store's (as results.csv has them; NaN where not done).

    MLflow keeps a metric once logged, even when its evaluation artifact is gone or being rebuilt;
    the printed table must agree with results.csv.
    """
    store = plan.store
    for i, trial_id in runs["trial"].items():
        ts = plan.trial_stages.get(trial_id)
        if ts is None:
            continue
        for col, key in ts.evaluate.items():
            if col in runs.columns:
                info = store.done_info("evaluate", key)
                runs.at[i, col] = round(100.0 * info["result"]["miou"], 4) if info else float("nan")


def _collect_results(plan: Plan, uri: str, experiment: str):
    """The sweep's :class:`reports.collect.ResultSet` from MLflow, or None (a note on stderr) when it cannot be read."""
    try:
        from reports.collect import collect_mlflow

        rs = collect_mlflow(plan.name, tracking_uri=uri, experiment=experiment, profile=plan.sweep.profile)
        _values_from_store(plan, rs.runs)  # the printed table agrees with results.csv
        return rs
    except Exception as e:  # noqa: BLE001 — fall back to the store-based table
        print(f"famix: note: reports table unavailable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})", file=sys.stderr)
        return None


def _quietly(what: str, fn: Any, *args: Any) -> Any:
    """Run an extra (MLflow parent-run content); a failure is a one-line note, never a failed sweep."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001
        print(f"famix: note: {what} skipped ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})", file=sys.stderr)
        return None


def _print_table(console: Any, markdown: str, table_json: dict[str, Any] | None) -> None:
    """The results table: a rich table on a terminal, the Markdown otherwise (pipes, files, CI logs)."""
    if console.is_terminal and table_json:
        from reports.terminal import render_rich, table_from_json

        console.print(render_rich(table_from_json(table_json)))
    else:
        console.print(markdown, highlight=False, markup=False)


# ----------------------------------------------------------------------------------------------- run


@contextmanager
def _driver_lock(plan: Plan) -> Iterator[None]:
    """One driver per sweep folder at a time (flock; released by the OS even on SIGKILL)."""
    import fcntl

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
                f"wait for it or `famix sweep cancel {plan.name}`"
            ) from None
        yield
    finally:
        os.close(fd)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _tasks(plan: Plan, status: dict[str, str], runs: dict[str, str], uri: str | None, resources: dict[str, Any]) -> list[StageTask]:
    """The stages still to run, as backend tasks (topological order), reporting to their trials' runs."""
    labels = {t.id: t.labels for t in plan.trials}
    return [_task(plan, s, labels, runs, uri, resources) for key, s in plan.stages.items() if status[key] != "done"]


def _task(
    plan: Plan, s: StageSpec, labels: dict[str, dict[str, str]], runs: dict[str, str], uri: str | None, resources: dict[str, Any]
) -> StageTask:
    shown = ",".join(labels[s.trials[0]].values())
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
        name=f"{s.kind}{'/' + s.domain if s.domain else ''} [{shown}]{'+' + str(len(s.trials) - 1) if len(s.trials) > 1 else ''} {s.key[:8]}",
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

    from orchestrator.backends import create_backend
    from orchestrator.liveness import driver_identity

    console = console or _console()
    t0 = time.perf_counter()
    rs = plan.sweep
    backend_name = opts.backend or rs.backend.kind
    retries = rs.backend.retries if opts.retries is None else opts.retries
    # 0: the backend decides (Ray: from the cluster's resources; Slurm: backend.slurm.array_parallelism)
    max_parallel = opts.max_parallel or rs.backend.max_parallel or (1 if backend_name == "local" else 0)
    with _driver_lock(plan):
        atomic_write_text(
            plan.sweep_dir / "driver.json",
            json.dumps({**driver_identity(), "backend": backend_name, "started": time.time(), "profile": rs.profile}),
        )
        plan.write()
        if opts.rerun_failed:
            _set_aside_damaged(plan, console)
        status = plan.status()
        uri, experiment = _tracking_target(plan)
        marker = plan.sweep_dir / "finalized.json"
        fingerprint = _fingerprint(plan, uri, experiment)
        if all(v == "done" for v in status.values()) and _read_json(marker).get("fingerprint") == fingerprint and _store_exists(uri):
            # nothing to run and MLflow was completed for exactly this plan: no need to even load MLflow
            cached = _read_json(marker)
            console.print(f"sweep {plan.name} ({rs.profile}): {len(plan.stages)} stages, all done; MLflow complete", highlight=False)
            _print_table(console, cached.get("table", ""), cached.get("table_json"))
            csv_path = plan.sweep_dir / "results.csv"
            atomic_write_text(csv_path, results_frame(plan).to_csv(index=False))
            console.print(f"results: {csv_path}  (MLflow: {uri}, experiment {experiment})", highlight=False)
            return SweepResult({}, [], csv_path, cached.get("table", ""), time.perf_counter() - t0)
        marker.unlink(missing_ok=True)
        stale = plan.store.clean_tmp()
        if stale:
            console.print(f"removed {stale} half-written stage folder(s) left in {plan.store.root / '.tmp'} by killed workers", highlight=False)
        tracker = _tracking(plan)
        parent, runs = ensure_runs(plan, tracker, backend_name)
        _quietly("parent run description", describe_parent, plan, tracker, parent, backend_name)
        resources = {k: v.model_dump() for k, v in rs.backend.resources.items()}
        tasks = _tasks(plan, status, runs, tracker.uri, resources)
        n_done = sum(v == "done" for v in status.values())
        console.print(
            f"sweep {plan.name} ({rs.profile}): {len(plan.trials)} trials, {len(plan.stages)} stages, "
            f"{n_done} done, {len(tasks)} to run on {backend_name} (max parallel {max_parallel or 'from the backend'}, retries {retries})",
            highlight=False,
        )
        from orchestrator.execute import StopRequest, checkpoint_then_stop

        stop = StopRequest()  # SIGTERM: a training running in this process checkpoints first
        extra: dict[str, Any] = {"detach": True} if opts.detach else {}
        if backend_name == "local":
            extra["stop"] = stop  # the local backend runs its stages here, under this handler
        backend = backend_obj or create_backend(backend_name, sweep_dir=str(plan.sweep_dir), options=rs.backend.model_dump(), **extra)
        progress = Progress(tasks, len(plan.stages), n_done, console, console.is_terminal, max_parallel=max_parallel)
        old = signal.getsignal(signal.SIGTERM)
        if _is_main_thread():
            signal.signal(signal.SIGTERM, checkpoint_then_stop(stop))
        try:
            with progress:
                outcomes = backend.run(tasks, max_parallel=max_parallel, retries=retries, on_event=progress.on_event)
        finally:
            if _is_main_thread():
                signal.signal(signal.SIGTERM, old)
            backend.close()
        if opts.detach:
            submitted = [o for o in outcomes.values() if o.status == "submitted"]
            console.print(
                f"detached: {len(submitted)} stage(s) submitted to {backend_name}; "
                f"follow with `famix sweep status {plan.name}`, then rerun `famix sweep run` to collect the table",
                highlight=False,
            )
            return SweepResult(outcomes, [], None, "", time.perf_counter() - t0)
        failed = [k for k, o in outcomes.items() if o.status in ("failed", "cancelled")]
        statuses = finalize_runs(plan, tracker, parent, runs, set(failed))
        df = results_frame(plan, statuses)
        csv_path = plan.sweep_dir / "results.csv"
        atomic_write_text(csv_path, df.to_csv(index=False))
        results = _collect_results(plan, tracker.uri, rs.tracking.experiment or rs.name)
        table, table_json, report_table, report = markdown_table(df), None, None, None
        if results is not None:
            from reports.tables import build_table, render_markdown
            from reports.terminal import table_to_json

            report_table = build_table(results, title=f"{plan.name} ({rs.profile})")
            table, table_json = render_markdown(report_table), table_to_json(report_table)
        _print_table(console, table, table_json)
        if report_table is not None:
            report = _quietly("report on the MLflow parent run", publish_results, plan, tracker, parent, results, report_table, table, backend_name)
        console.print(f"results: {csv_path}  (MLflow: {tracker.uri}, experiment {rs.tracking.experiment or rs.name})", highlight=False)
        if report is not None:
            console.print(f"report: {report} (tables, figures; also on the MLflow parent run)", highlight=False)
        result = SweepResult(outcomes, failed, csv_path, table, time.perf_counter() - t0)
        if all(v == "done" for v in statuses.values()):
            atomic_write_text(marker, json.dumps({"fingerprint": fingerprint, "table": table, "table_json": table_json}, ensure_ascii=False))
        _print_failures(console, plan, progress.failures)
        console.print(f"finished in {result.seconds:.1f}s: {progress.counts['done']} run, {progress.counts['cached']} cached, {len(failed)} failed", highlight=False)
        return result


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


def _console() -> Any:
    """stdout console; when piped, wide and unwrapped so log lines stay whole."""
    from rich.console import Console

    probe = Console()
    return Console(highlight=False, soft_wrap=True, width=None if probe.is_terminal else 200)


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _print_failures(console: Any, plan: Plan, failures: list[tuple[StageTask, StageOutcome]]) -> None:
    if not failures:
        return
    console.print(f"\n{len(failures)} stage(s) failed:", style="bold red")
    for task, out in failures:
        lines = (out.error or "").splitlines()
        console.print(f"- {task.name} (attempts {out.attempts}){' log: ' + out.log_path if out.log_path else ''}", highlight=False, markup=False)
        for line in lines[:4]:
            console.print(f"    {line}", highlight=False, markup=False)


def sweep_status(plan: Plan, console: Any = None) -> dict[str, int]:
    """Print the plan with done / to run per stage, the driver's state and the failures recorded in logs."""

    console = console or _console()
    counts = print_plan(plan, console)
    from orchestrator.liveness import running_driver

    info = running_driver(plan.sweep_dir)
    if info is not None:
        console.print(f"driver pid {info.get('pid')} on {info.get('host', '?')} ({info.get('backend')}): running", highlight=False)
    elif (plan.sweep_dir / "driver.json").is_file():
        console.print("driver: not running", highlight=False)
    if (plan.sweep_dir / "slurm" / "jobs.json").is_file():
        _print_slurm_jobs(plan, console)
    return counts


def _print_slurm_jobs(plan: Plan, console: Any) -> None:
    """Slurm's view of the sweep's submitted stages (squeue / sacct), for detached or dead drivers."""
    from orchestrator.backends.slurm import slurm_status

    rows = slurm_status(plan.sweep_dir)
    states: dict[str, int] = {}
    for r in rows:
        states[r["state"]] = states.get(r["state"], 0) + 1
    console.print("slurm jobs: " + ", ".join(f"{n} {s}" for s, n in sorted(states.items())), highlight=False)
    for r in rows:
        if r["status"] == "failed" or r["state"] not in ("COMPLETED", "UNKNOWN"):
            console.print(
                f"  {r['name']}: job {r['job_id']} {r['state']}" + (f" (failed; log {r['stderr']})" if r["status"] == "failed" else ""),
                highlight=False,
                markup=False,
            )


def cancel_sweep(plan: Plan, backend: str | None = None, console: Any = None) -> int:
    """Cancel a running sweep: the backend's own jobs (Slurm) and the driver process (local / Ray)."""

    from orchestrator.backends import create_backend

    from orchestrator.liveness import running_driver

    console = console or _console()
    info = _read_json(plan.sweep_dir / "driver.json")
    name = backend or info.get("backend") or plan.sweep.backend.kind
    n = create_backend(name, sweep_dir=str(plan.sweep_dir), options=plan.sweep.backend.model_dump()).cancel(str(plan.sweep_dir))
    live = running_driver(plan.sweep_dir)  # a stale driver.json pid may belong to any process by now
    pid = int((live or {}).get("pid") or 0)
    if live is not None and not live.get("verified"):
        console.print(f"driver pid {pid} on {live.get('host', '?')} holds the lock but cannot be checked from here; stop it there", highlight=False)
    elif pid and pid != os.getpid():
        os.kill(pid, signal.SIGTERM)
        console.print(f"sent SIGTERM to driver pid {pid}", highlight=False)
        n += 1
    console.print(f"cancelled {n} item(s) of sweep {plan.name}", highlight=False)
    return n
