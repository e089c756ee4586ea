"""``famix sweep plan|run|status|cancel SWEEP [options] [key=value ...]`` (imports stay lazy)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.plan import Plan
    from orchestrator.sweep import ResolvedSweep
    from reports.report import SweepInfo

__all__ = ["register", "report_sweep_info"]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep", help="sweep file, or a name in ./sweeps or the project's sweeps/ (e.g. ablation.yaml)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides applied to the sweep's base")
    p.add_argument("--profile", default=None, help="profile: smoke (the embedded synthetic default), paper, or one of the file (default: the file's default_profile, else smoke)")
    p.add_argument("--run-dir", default="runs", help="everything the sweep writes goes here (default: runs)")


def register(subparsers: Any) -> None:
    """Add ``sweep`` and its sub-commands to the ``famix`` parser."""
    sweep = subparsers.add_parser("sweep", help="plan, run, inspect or cancel an experiment sweep")
    sweep.set_defaults(func=lambda args: (sweep.print_help(), 2)[1])
    sub = sweep.add_subparsers(dest="sweep_command", metavar="ACTION")

    p = sub.add_parser("plan", help="print the trials and, per stage, done / to run / shared; runs nothing")
    _common(p)
    p.add_argument("--estimate", action="store_true",
                   help="also time each stage kind on this machine's device (random inputs of the real shapes) and "
                        "print GPU-hours per stage and for the sweep; data, weights and train.device are not checked")  # fmt: skip
    p.add_argument("--backend", default=None,
                   help="local | ray | slurm: check the plan as that backend would run it (default: the sweep's backend.kind)")  # fmt: skip
    p.add_argument(
        "--explain",
        action="append",
        metavar="KEY",
        help="print each trial's resolved value of KEY (a leaf or a section, e.g. train) and the layer it came from; "
        "data, weights and train.device are not checked",
    )
    p.set_defaults(func=_plan)

    p = sub.add_parser("run", help="run what is not done yet; print progress, failures and the results table")
    _common(p)
    p.add_argument("--backend", default=None, help="local | ray | slurm (default: the sweep's backend.kind)")
    p.add_argument("--max-parallel", type=int, default=None,
                   help="stages running at once (default: the sweep's backend.max_parallel, else the backend's own: "
                        "local: backend.local.workers; ray: what the cluster holds; slurm: the array cap)")  # fmt: skip
    p.add_argument("--retries", type=int, default=None,
                   help="extra attempts for a failing stage (default: the sweep's backend.retries, 1 unless set)")
    p.add_argument("--detach", action="store_true", help="slurm: submit the jobs and exit; `famix sweep status` follows them")
    p.add_argument(
        "--rerun-failed",
        action="store_true",
        help="verify every finished artifact first (sizes, sha256); damaged ones are set aside and their stages run again",
    )
    p.set_defaults(func=_run)

    p = sub.add_parser("status", help="what is done, what is left, whether a driver is running")
    _common(p)
    p.set_defaults(func=_status)

    p = sub.add_parser("cancel", help="cancel a running sweep (its backend jobs and its driver)")
    _common(p)
    p.add_argument("--backend", default=None, help="whose jobs to cancel (default: the backend the sweep last ran on)")
    p.set_defaults(func=_cancel)


def _prepare(args: argparse.Namespace, **kw: Any):
    from orchestrator.driver import prepare

    return prepare(args.sweep, profile=args.profile, run_dir=args.run_dir, overrides=args.overrides, **kw)


def _plan(args: argparse.Namespace) -> int:
    """``famix sweep plan``: writes nothing (no run dir, no synthetic benchmark, no download); only
    ``--estimate`` computes (timing probes)."""
    from functools import partial

    from orchestrator.checks import check_data, check_weights
    from orchestrator.plan import print_plan
    from orchestrator.progress import make_console

    if args.backend is not None:
        from orchestrator.backends import get_backend_class

        get_backend_class(args.backend)  # an unknown name fails before anything is planned
    if args.estimate or args.explain:  # neither needs data, weights nor the stages' GPU: a login node can ask, and
        # --explain is how one debugs the inputs those checks would refuse
        plan = _prepare(args, check_data=lambda cfg: None, check_weights=lambda cfg: None, check_device=lambda cfg: None,
                        dry=True, backend=args.backend)  # fmt: skip
    else:
        plan = _prepare(args, check_data=partial(check_data, generate=False), check_weights=partial(check_weights, fetch=False),
                        dry=True, backend=args.backend)  # fmt: skip
    console = make_console()
    if args.explain:
        _print_explain(plan, args.explain, console)
    else:
        print_plan(plan, console, backend=args.backend)
    if args.estimate:
        from orchestrator.estimate import print_estimate

        print_estimate(plan, console)
    return 0


def _print_explain(plan: Any, keys: list[str], console: Any) -> None:
    from rich.table import Table

    from orchestrator.explain import explain_rows

    rows = [row for key in keys for row in explain_rows(plan.sweep, plan.trials, key)]
    table = Table(title=f"sweep {plan.name} (profile {plan.sweep.profile}): where each value comes from")
    for col in ("key", "trials", "value", "from"):
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print("precedence: engine default < built-in profile < file base < file profiles.<name> < grid/zip < command line")


def _run(args: argparse.Namespace) -> int:
    from orchestrator.driver import RunOptions, run_plan
    from orchestrator.errors import SweepError

    for name in ("max_parallel", "retries"):
        v = getattr(args, name)
        if v is not None and v < (1 if name == "max_parallel" else 0):
            raise SweepError(f"command line: --{name.replace('_', '-')}: expected {'>= 1' if name == 'max_parallel' else '>= 0'}, got {v}")
    if args.backend is not None:
        from orchestrator.backends import get_backend_class

        get_backend_class(args.backend)  # an unknown name fails before anything is planned
    if args.detach:  # refused before anything is written (prepare generates the synthetic data)
        from famix_core.config_io import parse_overrides
        from orchestrator.backends import detachable
        from orchestrator.sweep import load_sweep, resolve_profile, resolve_sweep_path

        can = detachable()
        spec, source = load_sweep(resolve_sweep_path(args.sweep))
        kind = args.backend or resolve_profile(spec, source, args.profile, parse_overrides(args.overrides)).backend.kind
        if kind not in can:
            raise SweepError(
                f"command line: --detach: only the {' / '.join(can)} backend runs without its driver (use --backend {can[0]})"
            )
    plan = _prepare(args, backend=args.backend, reachable=True)
    result = run_plan(plan, RunOptions(args.backend, args.max_parallel, args.retries, args.detach, args.rerun_failed))
    return result.exit_code


def _status(args: argparse.Namespace) -> int:
    from orchestrator.driver import sweep_status

    plan = _prepare(args, check_data=lambda cfg: None, check_weights=lambda cfg: None, writable=False)
    sweep_status(plan)
    return 0


def _cancel(args: argparse.Namespace) -> int:
    from orchestrator.driver import cancel_sweep

    plan = _prepare(args, check_data=lambda cfg: None, check_weights=lambda cfg: None, writable=False)
    if not plan.sweep_dir.is_dir():  # a mistyped --run-dir: "cancelled 0 item(s)" read as a cancel that worked
        print(f"note: {plan.sweep_dir} does not exist: this sweep never ran there, nothing to cancel (another --run-dir?)")
        return 0
    cancel_sweep(plan, args.backend)
    return 0


def report_sweep_info(
    arg: str, profile: str | None, run_dir: str | None = None, overrides: list[str] | None = None
) -> SweepInfo:
    """What ``famix report SWEEP [key=value ...]`` needs of a sweep.

    A YAML path, or a bare name found as ``sweeps/<name>.yaml``, is read with the sweep loader
    (profile and overrides applied); a name with no file is taken as the sweep name as is. With
    ``run_dir`` (a report from MLflow), what the finished stages of the plan the overrides make
    left in the store and MLflow lacks is logged first (:func:`orchestrator.driver.sync_tracking`:
    stages that ran without a driver, e.g. ``--detach`` with ``seeds=[0,1,2]``).

    Raises:
        ReportInputError: a YAML path that does not exist; DamagedStoreError (one) when MLflow cannot
            open the run dir's store. SweepError: a sweep file or an override that does not validate,
            or overrides with a sweep name that has no file.
    """
    import shlex

    from famix_core.config_io import parse_overrides
    from orchestrator.errors import SweepError
    from orchestrator.sweep import expand_trials, load_sweep, resolve_profile, resolve_sweep_path
    from reports.collect import ReportInputError, domain_column
    from reports.report import SweepInfo

    overrides = list(overrides or [])
    try:
        path = resolve_sweep_path(arg)
    except SweepError:
        if "=" in arg and not arg.endswith((".yaml", ".yml")):  # an override first: its own message (the sweep file comes first)
            raise
        if arg.endswith((".yaml", ".yml")) or "/" in arg or "\\" in arg:
            raise ReportInputError(f"{arg}: sweep file not found") from None
        if overrides:
            raise SweepError(f"command line: {overrides[0]}: overrides need a sweep file; {arg!r} is a sweep name without one") from None
        return SweepInfo(name=arg)
    spec, source = load_sweep(path)
    rs = resolve_profile(spec, source, profile, parse_overrides(overrides))
    plan = None
    if run_dir is not None and (Path(run_dir) / rs.name).is_dir():
        plan = _sync_before_report(rs, run_dir)
    trials = plan.trials if plan is not None else expand_trials(rs)  # no sync ran (the sweep never ran here), or its plan failed (a note)
    return SweepInfo(
        name=rs.name,
        path=Path(path),
        label_columns=[ls.column for ls in rs.labels.values()] or None,
        domains=[domain_column(d) or d for d in rs.domains],
        experiment=rs.tracking.experiment,
        tracking_uri=rs.tracking.uri,
        profile=rs.profile,
        trials=[t.id for t in trials],
        overrides=shlex.join(rs.override_words()),
    )


def _sync_before_report(rs: ResolvedSweep, run_dir: str) -> Plan | None:
    """Ingest the finished stages of ``rs``'s plan into MLflow; a failure is a one-line note (the report
    still reads MLflow). Returns the plan, ``None`` when it could not be built (said in that note).

    Raises:
        FamixError: the plan's own mistake, e.g. a grid value the engine refuses (once: no note before it).
        DamagedStoreError: a store MLflow cannot open.
    """
    from rich.console import Console

    from famix_core.errors import FamixError
    from orchestrator.driver import note_skipped, sync_tracking
    from orchestrator.plan import build_plan
    from reports.collect import DamagedStoreError

    def no_check(cfg: Any) -> None:
        return None

    what = "MLflow ingestion of finished stages"
    try:  # no run-dir check: it holds the sweep's folder
        plan = build_plan(rs, run_dir, check_data=no_check, check_weights=no_check)
    except FamixError:  # the sweep's own mistake (a grid value the engine refuses): the command's one error, not also a note
        raise
    except Exception as e:  # noqa: BLE001
        note_skipped(what, e)
        return None
    try:
        sync_tracking(plan, Console(stderr=True, highlight=False, soft_wrap=True))  # stdout is the table
    except DamagedStoreError:  # a store MLflow cannot open gives no report: its one line, and the fix
        raise
    except Exception as e:  # noqa: BLE001
        note_skipped(what, e)
    return plan
