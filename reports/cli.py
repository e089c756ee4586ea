"""``famix report SWEEP``: the paper's tables and figures from MLflow (default) or a results CSV.

Nothing heavy is imported at module level (``famix --help`` stays fast): pandas, MLflow and
matplotlib are imported when the command runs. Reports read no sweep files: whoever registers the
command passes the function that turns ``SWEEP`` into a :class:`reports.report.SweepInfo`.
"""

from __future__ import annotations

import argparse
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from famix_core.text import count

if TYPE_CHECKING:
    from reports.report import SweepInfo

__all__ = ["SweepInfoFn", "register", "run_report", "check_flag_conflicts", "parse_domains", "report_device", "check_report_run_dir"]

SweepInfoFn = Callable[[str, "str | None", "str | None", "list[str]"], "SweepInfo"]
"""``(SWEEP argument, --profile, --run-dir when the report reads MLflow, else None, the key=value
overrides) -> SweepInfo`` (the orchestrator's also logs into MLflow what the finished stages of the
plan those overrides make left in the run dir's store)."""


def register(subparsers: argparse._SubParsersAction, sweep_info: SweepInfoFn) -> None:
    """Add the ``report`` subcommand.

    Args:
        subparsers: the ``famix`` parser's subcommands.
        sweep_info: turns the ``SWEEP`` argument and ``--profile`` into a :class:`~reports.report.SweepInfo`.
    """
    p = subparsers.add_parser(
        "report",
        help="tables (Markdown, LaTeX) and figures of a sweep, from MLflow or a results CSV",
        description=(
            "Build the paper's table for a sweep: rows are grid points (labels), columns the domains in "
            "the sweep's order, then Mean (computed here). Best value per column bold, second underlined. "
            "Reads every trial run of the sweep from MLflow in one query, or a results CSV (--csv)."
        ),
    )
    p.add_argument("sweep", metavar="SWEEP", help="sweep YAML path, bare name (sweeps/<name>.yaml) or sweep name")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="the overrides the sweep ran with (e.g. seeds=[0,1,2]): its finished stages are logged into MLflow "
        "before the report reads it (needs a sweep file)",
    )
    p.add_argument("--run-dir", default="runs", help="run directory holding mlflow.db (default: runs)")
    p.add_argument("--profile", default=None, help="sweep profile (domains, tracking), named in the report's headings (default: the sweep's; "
                   "with --csv none is named unless given)")
    p.add_argument("--csv", default=None, metavar="FILE", help="read this results CSV (wide or long) instead of MLflow")
    p.add_argument(
        "--units",
        choices=("percent", "fraction"),
        default=None,
        help="units of --csv values; required when every value lies in [0, 1] (default: percent)",
    )
    p.add_argument("--domains", default=None, help="comma-separated domain columns to report, in order (default: the sweep's, else C,B,M,S,AN,AS,AR,AF)")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: <run-dir>/<sweep>/report)")
    p.add_argument(
        "--baseline",
        default=None,
        metavar="ROW",
        help="paired-difference column vs this row, and the Δ-heatmap's reference: 1-based row number or label=value,… "
        "(default: no Δ column; the heatmap compares with row 1)",
    )
    p.add_argument(
        "--latex-width",
        choices=("column", "page", "none"),
        default="column",
        help="table.tex fits one column of a two-column paper (\\small, shrunk to \\linewidth when wider), "
        "a page-wide table* (page), or is a bare tabular (none) (default: column)",
    )
    p.add_argument(
        "--figure-width",
        choices=("column", "page"),
        default=None,
        help="print width of every figure: column (3.25 in) or page (6.875 in) (default: bars, heatmap, qualitative page; loss column)",
    )
    p.add_argument("--tracking-uri", default=None, metavar="URI",
                   help="MLflow URI (default: the sweep's tracking.uri, else sqlite:///<run-dir>/mlflow.db)")
    p.add_argument("--experiment", default=None, help="MLflow experiment (default: the sweep's tracking.experiment or name)")
    p.add_argument("--qualitative", default=None, metavar="TRIAL",
                   help="also draw input / ground truth / prediction for this trial: its id (famix.trial), MLflow run id or 1-based row")
    p.add_argument("--device", default=None, help="device for --qualitative: auto, cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--no-figures", action="store_true", help="write the tables only")
    p.set_defaults(func=partial(run_report, sweep_info=sweep_info))


def run_report(args: argparse.Namespace, sweep_info: SweepInfoFn) -> int:
    """Run ``famix report`` with parsed arguments; returns the exit code."""
    from reports.collect import collect_csv, collect_mlflow
    from reports.report import (
        apply_sweep_order, check_out_dir, default_out_dir, plan_coverage_note, report_lock, tracking_uri_for, write_report,
    )  # fmt: skip

    # every flag is checked before anything is read, logged or written
    check_flag_conflicts(args)
    domains = parse_domains(args.domains)
    device = report_device(args.device or "cpu") if args.qualitative else None
    if not (args.csv and args.out):  # the run dir is read (MLflow, weights) or holds the default output folder
        check_report_run_dir(args.run_dir)
    out_dir = check_out_dir(Path(args.out)) if args.out else None  # before sweep_info logs finished stages into MLflow
    info = sweep_info(args.sweep, args.profile, None if args.csv else args.run_dir, args.overrides)
    if domains is not None:
        info.domains, info.domains_chosen = domains, True
    sweeps_own = default_out_dir(args.run_dir, info.name)
    out_dir = out_dir or check_out_dir(sweeps_own, given=False)
    # the sweep's own folder: its driver writes the final report there too, one writer at a time
    with report_lock(out_dir) if out_dir.resolve() == sweeps_own.resolve() else nullcontext():
        if args.csv:
            results = collect_csv(args.csv, units=args.units, domains=info.domains, sweep=info.name)
        else:
            uri = tracking_uri_for(info, args.run_dir, args.tracking_uri)
            results = collect_mlflow(info.name, tracking_uri=uri, experiment=args.experiment or info.experiment,
                                     profile=info.profile, make_it=_missing_store_hint(args, info), trials=info.trials)  # fmt: skip
            note = plan_coverage_note(results, info)
            if note:  # also in table.md and table.tex: a table pasted elsewhere says whose rows it holds
                results.notes.append(note)
                results.provenance.append(note)
        had_values = _has_values(results)
        results = apply_sweep_order(results, info)
        check_has_results(results, had_values, args)  # before a table of dashes replaces a report

        extra = None
        if args.qualitative:  # drawn into the report being written (the folder is its last argument), swapped in with it
            from reports.qualitative import qualitative_grid

            extra = partial(qualitative_grid, results, args.qualitative, run_dir=args.run_dir, device=device, width=args.figure_width)

        files = write_report(
            results,
            out_dir,
            baseline=args.baseline,
            figures=not args.no_figures,
            extra_figures=extra,
            profile=args.profile or (None if args.csv else info.profile),  # a CSV may come from any profile: not guessed
            latex_width=args.latex_width,
            figure_width=args.figure_width,
        )
    print(files.markdown, end="")
    if files.source_markdown:
        print("\nSource val against the targets:\n\n" + files.source_markdown, end="")
    for note in results.notes:  # e.g. the overrides that made these trials (also in the report's README)
        print(f"\nnote: {note}", end="")
    print(f"\nreport: {files.out_dir} (table.md, table.tex, results.csv, summary.csv"
          + (", source.csv" if files.source_csv else "") + ", README.md"
          + (f", {len(files.figures)} figure files)" if files.figures else ")"))
    return 0


def _has_values(results: Any) -> bool:
    """Whether any run has a value in any of the result set's domain columns."""
    runs = results.runs
    cols = [c for c in results.domains if c in runs]
    return bool(cols) and not runs.empty and bool(runs[cols].notna().to_numpy().any())


def _missing_store_hint(args: argparse.Namespace, info: "SweepInfo") -> str:
    """What to do when the run dir has no MLflow store: run the sweep (a sweep file's own command), or
    read another store; the options not given already."""
    given = {"--run-dir": args.run_dir != "runs", "--tracking-uri": bool(args.tracking_uri), "--csv": False}
    other = [o for o, was in given.items() if not was]
    elsewhere = "pass " + (f"{', '.join(other[:-1])} or {other[-1]}" if len(other) > 1 else other[0])
    if info.path is None:  # `famix sweep run nosuchsweep` names no file either
        return f"nor is {args.sweep!r} a sweep file: give the sweep file that ran there, or {elsewhere}"
    return f"run `{sweep_command('run', args)}` first, or {elsewhere}"


def sweep_command(action: str, args: argparse.Namespace) -> str:
    """``famix sweep <action>`` with the report's sweep, ``--profile``, ``--run-dir`` and overrides: the
    run its hints point at (written here: ``reports`` may not import the orchestrator's ``plan.arguments``)."""
    import shlex

    return shlex.join(["famix", "sweep", action, args.sweep, *(["--profile", args.profile] if args.profile else []),
                       *(["--run-dir", args.run_dir] if args.run_dir != "runs" else []), *args.overrides])  # fmt: skip


def check_has_results(results: Any, had_values: bool, args: argparse.Namespace) -> None:
    """Refuse a report without a single value in the columns it shows: its table would be all dashes,
    and would replace the sweep's report of its last finished run. ``had_values``: whether the
    results had values before they were narrowed to the domains asked for.

    Raises:
        ReportInputError: one line saying why there is nothing to report, and what to run.
    """
    from reports.collect import ReportInputError

    if results.runs.empty or _has_values(results):
        return
    cols = ", ".join(results.domains)
    if had_values:  # --domains or domains=[…] chose columns without values
        raise ReportInputError(f"{results.sweep}: no value for {cols}, the domains asked for ({results.source}); nothing written")
    if args.csv:
        raise ReportInputError(f"{args.csv}: no value in the columns {cols}; nothing written")
    status = sweep_command("status", args)
    raise ReportInputError(
        f"{results.sweep}: none of the sweep's {count(len(results.runs), 'trial run')} in MLflow has an mIoU yet (its last run still going, "
        f"or stopped before its evaluations); nothing written. `{status}` names that run's arguments; `famix sweep run` "
        "with them finishes it, or, with the arguments of an earlier run, gives that run's table back from its cached stages"
    )


def check_flag_conflicts(args: argparse.Namespace) -> None:
    """Refuse a flag the report would ignore given the others (``--units`` without ``--csv``, MLflow's
    flags with ``--csv``, ``--device`` without ``--qualitative``, a figure's flag with ``--no-figures``),
    naming both.

    Raises:
        ReportInputError: one line naming the ignored flag and its value.
    """
    from reports.collect import ReportInputError

    if args.units is not None and not args.csv:
        raise ReportInputError(f"--units {args.units}: only read with --csv (MLflow values are percent); drop it or pass --csv FILE")
    if args.csv:
        for flag, value in (("--tracking-uri", args.tracking_uri), ("--experiment", args.experiment)):
            if value is not None:
                raise ReportInputError(f"{flag} {value}: not used with --csv {args.csv} (the report reads the CSV, not MLflow); drop one of them")
        if args.qualitative:
            from reports.qualitative import NEEDS_MLFLOW

            raise ReportInputError(NEEDS_MLFLOW)
    if args.device is not None and not args.qualitative:
        raise ReportInputError(f"--device {args.device}: only used by --qualitative; drop it or pass --qualitative TRIAL")
    if args.qualitative and args.no_figures:  # it drew the figure all the same
        raise ReportInputError(f"--qualitative {args.qualitative}: a figure, and --no-figures writes none; drop one of them")
    if args.figure_width is not None and args.no_figures:
        raise ReportInputError(f"--figure-width {args.figure_width}: sizes figures, and --no-figures writes none; drop one of them")


def parse_domains(text: str | None) -> list[str] | None:
    """The ``--domains`` columns in order (``None``: the flag was not given).

    Raises:
        ReportInputError: an empty list or entry, an unknown domain, or one domain twice (``C,C``, ``C,cityscapes``).
    """
    from famix_core.domains import repeated_domain
    from reports.collect import ReportInputError, domain_column

    if text is None:
        return None
    names = [d.strip() for d in text.split(",")]
    expected = "expected comma-separated domains, e.g. C,B,M"
    if not any(names):
        raise ReportInputError(f"--domains {text!r}: no domain given ({expected}; leave the flag out for the default)")
    if "" in names:
        raise ReportInputError(f"--domains {text!r}: an empty name between commas ({expected})")
    bad = [d for d in names if domain_column(d) is None]
    if bad:
        raise ReportInputError(f"--domains: unknown domain {bad[0]!r} (known: C, B, M, S, AN, AS, AR, AF)")
    twice = repeated_domain(names)
    if twice is not None:
        given = [names[i] for i in twice[1]]
        as_ = f" ({', '.join(given)})" if len(set(given)) > 1 else ""
        raise ReportInputError(f"--domains {text}: domain {twice[0]} appears {len(given)} times{as_}; each domain may appear once")
    return [domain_column(d) for d in names]


def report_device(spec: str) -> str:
    """``--device`` resolved on this machine by :func:`famix_core.device.pick_device` (``auto``: a GPU,
    else the CPU, with a notice).

    Raises:
        DeviceError: one line naming ``--device``: a malformed spec, or a GPU this machine does not have.
    """
    from famix_core.device import pick_device  # imports torch

    return str(pick_device(spec, set_as="--device "))


def check_report_run_dir(run_dir: str) -> None:
    """Refuse a ``--run-dir`` that is a file or lies under one (a missing folder is fine: nothing was run there yet).

    Raises:
        ReportInputError: naming ``--run-dir`` and the file.
    """
    from famix_core.io import file_in_the_way, what_blocks
    from reports.collect import ReportInputError

    path = Path(run_dir)
    blocker = file_in_the_way(path)
    if blocker is not None:
        what = f"is {what_blocks(blocker)}" if blocker == path else f"{blocker} is {what_blocks(blocker)}"
        raise ReportInputError(f"--run-dir {run_dir}: {what} (expected a folder, the run directory)")
