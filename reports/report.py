"""Assemble a report folder: results in the sweep's order, tables, figures and a README.

Output files (all written atomically): ``table.md``, ``table.tex``, ``results.csv`` (the Results
CSV contract: one row per trial × seed, percent), ``summary.csv`` (the table's unrounded numbers),
``source.csv`` (source val against the targets, MLflow input with source validation only:
:mod:`reports.source_gap`), ``bars.png|pdf``, ``delta.png|pdf`` (Δ-heatmap), ``loss.png|pdf``
(MLflow input only), ``qualitative.png|pdf`` (on request), ``README.md`` (the tables and the figures).

The folder is replaced as a whole (:func:`report_folder`): a report is built in a hidden sibling
folder and swapped in once every file is written, so a Ctrl-C or a crash meanwhile leaves the
previous report as it was, never a mix of new and old files.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from famix_core.io import atomic_path, commit_dir, exclusive_lock, make_temp_dir, nearest_existing, what_blocks
from famix_core.io import atomic_write_text as write_text_atomic
from famix_core.text import count
from reports.collect import ReportInputError, ResultSet, check_tracking_uri, default_tracking_uri

__all__ = [
    "SweepInfo",
    "ReportFiles",
    "apply_sweep_order",
    "plan_coverage_note",
    "write_report",
    "report_folder",
    "REPORT_FILES",
    "REPORT_HEADING",
    "REPORT_MARKER",
    "foreign_entries",
    "report_lock",
    "check_out_dir",
    "default_out_dir",
    "tracking_uri_for",
]


REPORT_FILES = frozenset(
    ["table.md", "table.tex", "results.csv", "summary.csv", "source.csv", "README.md", ".famix-report"]
    + [f"{stem}.{fmt}" for stem in ("bars", "delta", "loss", "qualitative") for fmt in ("png", "pdf")]
)
"""Every file name a report writes: with a report's README (:data:`REPORT_HEADING`), a folder holding
nothing else is a previous report, replaced whole."""

REPORT_HEADING = "# Report: "
"""The first line of every report's ``README.md``: what tells a previous report from a folder of the
user's files that happen to have a report's names (their own ``README.md``, ``results.csv``)."""

OS_LITTER = frozenset({".DS_Store", "Thumbs.db", "desktop.ini", ".ipynb_checkpoints", ".directory"})
"""What file browsers and notebooks leave in any folder they show (and ``._<name>`` files): not the
user's work, so they do not keep a report folder from being replaced."""

REPORT_MARKER = ".famix-report"
"""Written first into every report folder: a report whose README was not written yet (a writer
killed half-way through a folder written in place) or was deleted is still known as one."""

_DEBRIS_AGE_S = 3600.0  # where folders cannot be locked (NFS), a temp folder this old is a killed writer's


@dataclass
class SweepInfo:
    """What a report needs to know about a sweep, from its file when there is one.

    The umbrella CLI makes it (it reads sweep files; reports do not), and hands it to
    :func:`reports.cli.run_report`.

    Attributes:
        name: sweep name (``famix.sweep`` tag, default output folder).
        path: the sweep file, or ``None`` when only a name was given.
        label_columns: label columns in the sweep's order (``None``: take them from the results).
        domains: domain columns in order (``None``: take them from the results).
        domains_chosen: ``domains`` came from ``--domains`` (a subset chosen: the domains it leaves
            out are not noted as missing from the sweep).
        experiment: MLflow experiment (``None``: the sweep name).
        tracking_uri: MLflow URI from the sweep's ``tracking.uri`` (``None``: the run dir's store).
        profile: the sweep profile whose trials are reported (``None``: every trial of the sweep).
        trials: the trial ids of the plan the command's arguments make (``None``: not known), and
        overrides: those arguments' command-line overrides, as typed: a report from MLflow notes
            the plan's trials that have no results.
    """

    name: str
    path: Path | None = None
    label_columns: list[str] | None = None
    domains: list[str] | None = None
    experiment: str | None = None
    tracking_uri: str | None = None
    profile: str | None = None
    trials: list[str] | None = None
    overrides: str = ""
    domains_chosen: bool = False


@dataclass
class ReportFiles:
    """Paths written by :func:`write_report`."""

    out_dir: Path
    table_md: Path
    table_tex: Path
    results_csv: Path
    summary_csv: Path
    readme: Path
    figures: list[Path] = field(default_factory=list)
    markdown: str = ""
    source_csv: Path | None = None  # source val against the targets (MLflow input with source validation)
    source_markdown: str = ""  # its Markdown table ("" without one)

    def moved_to(self, out_dir: Path) -> ReportFiles:
        """The same files once the folder they were written in is ``out_dir`` (after the swap)."""

        def there(p: Path) -> Path:
            return out_dir / p.relative_to(self.out_dir)

        return ReportFiles(
            out_dir=out_dir,
            table_md=there(self.table_md),
            table_tex=there(self.table_tex),
            results_csv=there(self.results_csv),
            summary_csv=there(self.summary_csv),
            readme=there(self.readme),
            figures=[there(f) for f in self.figures],
            markdown=self.markdown,
            source_csv=None if self.source_csv is None else there(self.source_csv),
            source_markdown=self.source_markdown,
        )


def apply_sweep_order(results: ResultSet, info: SweepInfo) -> ResultSet:
    """Put label and domain columns in the sweep's order; a sweep domain without results becomes an empty column."""
    runs = results.runs.copy()
    labels = results.label_columns
    if info.label_columns:
        by_lower = {c.lower(): c for c in labels}
        if set(by_lower) == {c.lower() for c in info.label_columns}:  # CSV headers may differ in case only
            runs = runs.rename(columns={by_lower[c.lower()]: c for c in info.label_columns})
            labels = list(info.label_columns)
    domains = results.domains
    if info.domains:
        domains = list(info.domains)
        for d in domains:
            if d not in runs:
                runs[d] = float("nan")
    extra = [] if info.domains_chosen else [c for c in results.domains if c not in domains]  # --domains chose them
    notes = [*results.notes, *(f"domain {c} has results but is not in the sweep's domains; left out" for c in extra)]
    return ResultSet(
        sweep=results.sweep,
        source=results.source,
        label_columns=labels,
        domains=domains,
        runs=runs,
        tracking_uri=results.tracking_uri,
        notes=notes,
        provenance=list(results.provenance),
    )


def plan_coverage_note(results: ResultSet, info: SweepInfo) -> str | None:
    """A note when trials of the plan that the report's arguments make have no results in MLflow (a
    sweep still running, or a report given other overrides than the run: its table is of other runs)."""
    from reports.schema import COL_TRIAL

    if not info.trials:
        return None
    have = set(results.runs[COL_TRIAL]) if COL_TRIAL in results.runs else set()
    missing = [t for t in info.trials if t not in have]
    made = f" (`{info.overrides}`)" if info.overrides else ""
    if len(missing) == len(info.trials):
        return (f"none of the {count(len(info.trials), 'trial')} of this command's plan{made} has results: the table holds "
                "other runs of the sweep; give `famix report` the overrides of the run you mean")  # fmt: skip
    if missing:
        return f"{len(missing)} of the {count(len(info.trials), 'trial')} of this command's plan{made} {'has no results (yet): its row is' if len(missing) == 1 else 'have no results (yet): their rows are'} missing"
    return None


def check_out_dir(out_dir: Path, given: bool = True) -> Path:
    """Refuse an output folder that cannot be one, before any work, leaving nothing behind.

    Refused: a folder inside the ``reports`` package (generated files never land in the source),
    an existing file or a path under one, a folder that cannot be created (its missing folders are
    made, then removed again), an existing folder holding anything but a previous report
    (:func:`foreign_entries`: the report would overwrite or delete the user's files), and an
    existing folder nothing can be written in (a read-only mount: probed by making and removing an
    empty folder in it). ``given``: the folder came from ``--out`` (else it is the run dir's
    default, and the message says how to choose another).
    """
    pkg = Path(__file__).resolve().parent
    out = out_dir.resolve()
    where = f"--out {out_dir}" if given else f"{out_dir}"
    other = "" if given else "; choose another folder with --out"
    if out == pkg or pkg in out.parents:
        raise ReportInputError(f"--out {out_dir}: inside the reports package ({pkg}); choose another folder")
    existing = nearest_existing(out)
    if not existing.is_dir():
        what = "" if existing == out else f"{existing} "
        raise ReportInputError(f"{where}: {what}is {what_blocks(existing)} (expected a folder){other}")
    try:
        if existing != out:
            try:
                out.mkdir(parents=True)
            except OSError as e:
                raise ReportInputError(f"{where}: cannot create the folder ({e.strerror}){other}") from None
            for made in [out, *out.parents][: len(out.parents) - len(existing.parents)]:
                made.rmdir()
        else:
            foreign = foreign_entries(out)
            if foreign:
                shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
                raise ReportInputError(
                    f"{where}: the folder holds files that are not a famix report's ({shown}), which the report "
                    f"would overwrite or delete; choose an empty or new folder{' with --out' if not given else ''}"
                )
            os.rmdir(make_temp_dir(out, ".famix-probe-"))
    except OSError as e:
        raise ReportInputError(f"{where}: cannot write in it ({e.strerror}){other}") from None
    return out_dir


def foreign_entries(out: Path) -> list[str]:
    """The names in the folder ``out`` that are not a previous report's, sorted (empty: a report may go there).

    A previous report is recognised by its :data:`REPORT_MARKER` or its ``README.md`` (first line
    :data:`REPORT_HEADING`; reports written before the marker): with either, the files named in
    :data:`REPORT_FILES` are the report's; without it, they are the user's
    (a project's own ``README.md``). Anything else is foreign, except what an interrupted writer
    leaves (hidden ``.<name>.<hex>.tmp`` files, ``.famix-probe-*`` folders). A missing folder has none.
    """
    if not out.is_dir():
        return []
    entries = [p for p in out.iterdir() if not _debris(p) and p.name not in OS_LITTER and not p.name.startswith("._")]
    if (out / REPORT_MARKER).is_file() or _is_report_readme(out / "README.md"):
        entries = [p for p in entries if not (p.name in REPORT_FILES and p.is_file())]
    return sorted(p.name for p in entries)


def _is_report_readme(path: Path) -> bool:
    """Whether ``path`` is a file whose first line is a report README's heading."""
    try:
        if not path.is_file():  # not open(): a FIFO named README.md would block
            return False
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.readline().startswith(REPORT_HEADING)
    except OSError:
        return False


def _readme(title: str, markdown: str, figures: list[Path], out_dir: Path, notes: list[str], source: str,
            source_markdown: str | None = None, latex_width: str = "column") -> str:
    """The report's README: the tables, the figures, and a line naming the files written (no others)."""
    from reports.tables import latex_packages

    lines = [f"{REPORT_HEADING}{title}", "", f"Source: `{source}`", "", markdown.rstrip(), ""]
    lines += [f"- {n}" for n in notes]
    if source_markdown:
        lines += ["", "## Source val against the targets", "", source_markdown.rstrip()]
    pngs = [f for f in figures if f.suffix == ".png"]
    captions = {
        "bars": "mIoU per domain",
        "delta": "Δ mIoU per domain vs the baseline row",
        "loss": "Training loss per row",
        "qualitative": "Input / ground truth / prediction",
    }
    for f in pngs:
        lines += ["", f"## {captions.get(f.stem, f.stem)}", "", f"![{f.stem}]({f.relative_to(out_dir)})"]
    stems = list(dict.fromkeys(f.stem for f in figures))
    lines += ["", f"Files: `table.md`, `table.tex` (its first lines name the packages it needs: {', '.join(latex_packages(latex_width))}), "
              "`results.csv` (one row per trial × seed), "
              "`summary.csv` (the table's numbers)" + (", `source.csv` (source val against the targets)" if source_markdown else "")
              + (f"; figures {', '.join(f'`{s}`' for s in stems)} as PNG and vector PDF" if stems else "") + "."]
    return "\n".join(lines) + "\n"


def write_report(
    results: ResultSet,
    out_dir: str | Path,
    *,
    baseline: str | None = None,
    figures: bool = True,
    loss_curves: bool = True,
    extra_figures: Callable[[Path], list[Path]] | None = None,
    profile: str | None = None,
    latex_width: str = "column",
    figure_width: str | None = None,
) -> ReportFiles:
    """Write the report folder for ``results``, replacing the previous report whole (:func:`report_folder`).

    Args:
        results: collected runs (percent), columns in the sweep's order.
        out_dir: output folder (created).
        baseline: optional baseline row for the Δ column (see :func:`reports.tables.build_table`);
            the Δ-heatmap compares with it, or with the first row when it is None.
        figures: draw the bar chart, the Δ-heatmap (two rows or more) and the loss curves.
        loss_curves: fetch ``train/loss`` histories (and the source-val curves of ``source.csv``) from
            MLflow when the results came from there.
        extra_figures: draws figures made elsewhere (qualitative) into the folder it is given (the
            report being written, so they are swapped in with it) and returns their paths, shown in the README.
        profile: the sweep profile that made the results, named in the headings of table.md, table.tex
            and the README, and in figure titles (``None``: not known, as for a CSV, and not named).
        latex_width: ``column`` | ``page`` | ``none`` (:data:`reports.tables.LATEX_WIDTHS`).
        figure_width: ``column`` | ``page`` for every figure (default: bars and heatmap ``page``,
            loss curves ``column``).

    Returns:
        ReportFiles with every path written (under ``out_dir``) and the Markdown table.
    """
    from reports.tables import build_table, render_latex, render_markdown, summary_frame

    out = check_out_dir(Path(out_dir))
    with report_folder(out) as folder:
        write_text_atomic(folder / REPORT_MARKER, "written by famix report; the files named in reports.report.REPORT_FILES are replaced\n")
        extra = extra_figures(folder) if extra_figures else []
        subject = results.sweep + (f", {profile} profile" if profile else "")  # every heading and figure title
        table = build_table(results, baseline=baseline, title=subject)
        md = render_markdown(table)
        # the notes on where the numbers come from (overrides, code versions) travel with a table pasted elsewhere
        tex = render_latex(table, width=latex_width, notes=results.provenance)
        md_notes = "".join(f"\nNote: {n}\n" for n in results.provenance)
        files = ReportFiles(
            out_dir=folder,
            table_md=write_text_atomic(folder / "table.md", f"# {table.title}\n\n{md}{md_notes}"),
            table_tex=write_text_atomic(folder / "table.tex", tex),
            results_csv=folder / "results.csv",
            summary_csv=folder / "summary.csv",
            readme=folder / "README.md",
            markdown=md,
        )
        with atomic_path(files.results_csv) as tmp:
            results.to_results_csv().to_csv(tmp, index=False)
        with atomic_path(files.summary_csv) as tmp:
            summary_frame(table).to_csv(tmp, index=False)
        source_md = _source_table(results, table, folder, enabled=loss_curves)
        if source_md:
            files.source_csv, files.source_markdown = folder / "source.csv", source_md
        if figures:
            files.figures += _figures(results, table, folder, subject=subject, width=figure_width, loss_curves=loss_curves)
        files.figures += extra
        write_text_atomic(files.readme, _readme(table.title, md, files.figures, folder, results.notes, results.source, source_md,
                                                latex_width=latex_width))  # fmt: skip
    return files.moved_to(out)


@contextmanager
def report_folder(out_dir: str | Path) -> Iterator[Path]:
    """Yield the folder to write a report of ``out_dir`` into; when the block ends, it becomes ``out_dir`` whole.

    A Ctrl-C or a crash while a report was written left ``out_dir`` a mix: some files new, the rest
    missing or from the report before. Now the report is written into ``.<name>.tmp-<hex>`` beside
    ``out_dir`` (same parent, so one filesystem) and, once the block ends without an exception,
    swapped in by :func:`famix_core.io.commit_dir`: in one step where the filesystem can swap two
    folders (Linux's ``renameat2``), else the old folder renamed aside and the new one renamed in;
    then the old one is removed. An exception (Ctrl-C, a full disk, a bad ``--qualitative`` trial)
    removes the temp folder and leaves the previous report byte for byte. Without the one-step swap
    (NFS), ``out_dir`` is missing for an instant between the two renames, so a reader then finds no
    report, never a mixed one; an exception there puts the old folder back, and a SIGKILL there
    leaves it aside, where the next report puts it back first.

    Each writer holds a ``flock`` on its temp folder, so the next report removes the temp folders of
    killed writers (their lock is free) and leaves a live writer's alone (``--out`` folders have no
    :func:`report_lock`).

    Written in place instead, file by file (each file still atomic), where a swap would harm: a
    folder that holds anything but a previous report (:func:`foreign_entries`; :func:`write_report`
    refuses such a folder first, through :func:`check_out_dir`), the working directory or a folder
    above it, and a folder whose parent cannot be written in. An OSError names its file under ``out_dir`` as given,
    never the temp folder.
    """
    out = Path(out_dir)
    real = out.resolve()  # a symlinked report folder: its target is swapped, the link stays
    claimed = None
    with suppress(OSError):  # debris that cannot be removed now is removed by a later report
        _remove_debris(real.parent, real.name)
    made = [p for p in real.parents if not p.exists()]  # deepest first: removed again if the report fails
    try:
        real.parent.mkdir(parents=True, exist_ok=True)
        if _replaceable(real):
            claimed = _claim_temp(real.parent, real.name)
    except OSError:  # a parent nothing can be written in: in place, as the folder's own check allowed
        claimed = None
    if claimed is None:
        out.mkdir(parents=True, exist_ok=True)
        yield out
        return
    tmp, fd = claimed
    committed = False
    try:
        yield tmp
        commit_dir(tmp, real)
        committed = True
    except OSError as e:
        named = _naming(e, tmp, out)
        if named is e:
            raise
        raise named from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone after a commit; an interrupted report's files
        if fd is not None:
            os.close(fd)
        if not committed:  # a report refused on its input (--baseline 99) left the folders made for it
            for folder in made:
                with suppress(OSError):
                    folder.rmdir()


def _replaceable(out: Path) -> bool:
    """Whether the folder ``out`` (resolved) may be replaced whole: missing, or holding only a previous
    report (and the hidden temp files or probes of an interrupted writer), and not the working directory."""
    try:
        cwd = Path.cwd()
    except OSError:
        cwd = None
    if cwd is not None and (cwd == out or out in cwd.parents):
        return False
    return not foreign_entries(out)


def _debris(p: Path) -> bool:
    """An interrupted atomic write's ``.<name>.<hex>.tmp``, or a killed check's probe folder."""
    n = p.name
    if n.startswith(".famix-probe-"):
        return True
    return p.is_file() and n.startswith(".") and n.endswith(".tmp")


def _claim_temp(parent: Path, name: str) -> tuple[Path, int | None]:
    """A new ``.<name>.tmp-<hex>`` folder in ``parent`` and an fd holding its ``flock`` (None: no locks here)."""
    while True:
        tmp = make_temp_dir(parent, f".{name}.tmp-")
        fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY)
        free = _try_lock(fd)
        if free is None:
            os.close(fd)
            return tmp, None
        try:  # another report took it for debris between mkdir and flock: it is gone, make another
            if free and os.stat(tmp).st_ino == os.fstat(fd).st_ino:
                return tmp, fd
        except FileNotFoundError:
            pass
        os.close(fd)


def _try_lock(fd: int) -> bool | None:
    """Take an exclusive ``flock`` on ``fd`` without waiting: True, False (another process holds it), None (no locks)."""
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError:  # a filesystem without locks for folders (NFS)
        return None


def _remove_debris(parent: Path, name: str) -> None:
    """Remove the temp folders killed writers of ``parent/name`` left; first put back a report one set aside.

    A writer's folder is ``.<name>.tmp-<hex>``; :func:`~famix_core.io.commit_dir` sets the old report
    aside in ``.<name>.tmp-<hex>.old-<hex>/<name>``. A group is debris when its writer's lock is free
    (or, without locks, after an hour), or when the writer's folder is gone (it became ``name``).
    """
    prefix = f".{name}.tmp-"
    groups: dict[str, list[Path]] = {}
    for p in parent.iterdir() if parent.is_dir() else []:
        if p.name.startswith(prefix) and p.is_dir() and not p.is_symlink():
            groups.setdefault(p.name[len(prefix):].partition(".old-")[0], []).append(p)
    final = parent / name
    for key, folders in groups.items():
        owner = parent / f"{prefix}{key}"
        fd = None
        try:
            if owner.exists():
                fd = os.open(owner, os.O_RDONLY | os.O_DIRECTORY)
                free = _try_lock(fd)
                if free is None:
                    free = time.time() - owner.stat().st_mtime > _DEBRIS_AGE_S
                if not free:
                    continue
            for aside in (f / name for f in folders if f != owner):
                if aside.is_dir() and not (final.exists() or final.is_symlink()):
                    os.rename(aside, final)  # killed between commit_dir's two renames: the old report goes back
            for f in folders:
                shutil.rmtree(f, ignore_errors=True)
        except FileNotFoundError:  # another report cleaned it meanwhile
            pass
        finally:
            if fd is not None:
                os.close(fd)


def _naming(e: OSError, tmp: Path, out: Path) -> OSError:
    """``e`` naming its file under ``out`` (as the user gave it) instead of under the temp folder ``tmp``."""
    if e.filename is None:
        return e
    try:
        rel = Path(os.fspath(e.filename)).relative_to(tmp)
    except ValueError:
        return e
    return OSError(e.errno, e.strerror, str(out / rel) if str(rel) != "." else str(out))


def _source_table(results: ResultSet, table, out: Path, *, enabled: bool) -> str | None:
    """Write ``source.csv`` and return its Markdown table, when the trials logged source validation (MLflow input)."""
    from reports.source_gap import fetch_source_values, render_source_markdown, source_frame, source_rows

    if not enabled or not results.tracking_uri:
        return None
    rows, left_out = source_rows(table, results, fetch_source_values(results))
    if not rows:
        return None
    with atomic_path(out / "source.csv") as tmp:
        source_frame(rows, table.label_columns).to_csv(tmp, index=False)
    return render_source_markdown(rows, table.label_columns, left_out)


def _figures(results: ResultSet, table, out: Path, *, subject: str, width: str | None, loss_curves: bool) -> list[Path]:
    """Bars, Δ-heatmap (vs the table's baseline, else row 1) and loss curves (MLflow input); ``subject`` follows each title."""
    from reports.plots import fetch_histories, plot_bars, plot_delta_heatmap, plot_loss_curves, row_caption
    from reports.tables import delta_grid

    paths = plot_bars(table, out, subject=subject, width=width or "page")
    if len(table.rows) >= 2:
        grid = delta_grid(results, baseline=table.baseline or 0)
        paths += plot_delta_heatmap(grid, [r.labels for r in table.rows], out, subject=subject, width=width or "page")
    if loss_curves and results.tracking_uri:
        captions_of, groups, row_of = {}, {}, {}
        for _, t in results.runs.iterrows():
            labels = {c: t[c] for c in results.label_columns}
            captions_of[str(t["trial"])] = row_caption(labels)
            groups[str(t["trial"])] = row_of.setdefault(tuple(labels.values()), len(row_of))
        paths += plot_loss_curves(fetch_histories(results), captions_of, out, groups=groups, subject=subject, width=width or "column")
    return paths


@contextmanager
def report_lock(out_dir: str | Path) -> Iterator[None]:
    """Hold ``<out_dir>.lock`` (beside the folder) while a report of ``out_dir`` is read and written.

    For a sweep's own report folder (``<run-dir>/<sweep>/report``), which both its driver (the final
    report) and ``famix report`` write: one writer at a time, so the folder is never a mix of two
    reports, and the later writer, having read later, holds the newer numbers. A wait is said once
    on stderr. Where the folder's parent is missing (no driver has written there) or has no
    ``flock``, the report is written unguarded.
    """
    out = Path(out_dir)

    def busy() -> None:
        print(f"waiting: another process writes the report in {out} (the sweep's driver, or another `famix report`)",
              file=sys.stderr, flush=True)

    with exclusive_lock(out.parent / f"{out.name}.lock", busy):
        yield


def default_out_dir(run_dir: str | Path, sweep: str) -> Path:
    """``<run_dir>/<sweep>/report``."""
    return Path(run_dir) / sweep / "report"


def tracking_uri_for(info: SweepInfo, run_dir: str | Path, override: str | None) -> str:
    """The MLflow URI: ``--tracking-uri``, else the sweep's ``tracking.uri``, else the run dir's SQLite store.

    A given URI is checked first (:func:`~reports.collect.store.check_tracking_uri`): a dead server
    is one line after 2 s, not minutes of MLflow's retries.
    """
    if override:
        check_tracking_uri(override, "--tracking-uri")
    elif info.tracking_uri:
        check_tracking_uri(info.tracking_uri, f"{info.path or info.name}: tracking.uri")
    return override or info.tracking_uri or default_tracking_uri(run_dir)
