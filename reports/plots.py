"""Figures of a report (matplotlib, Agg, no pyplot state): per-domain bars, Δ-heatmap, training-loss curves.

Every figure is written as PNG and as vector PDF (TrueType fonts embedded), atomically, at the
width it will have in a paper: ``column`` (3.25 in) or ``page`` (6.875 in), with text of 7–8.5 pt
at that size (:func:`figure`). Rows keep one style across figures: a colour from Paul Tol's
colour-blind-safe "muted" palette; curves take one of four line styles in turn, and bars from the
10th row on a hatch, so rows that share a colour stay apart.
MLflow is imported only by :func:`fetch_histories` (one ``get_metric_history`` call per trial).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from famix_core.io import atomic_path
from reports.collect import ResultSet
from reports.schema import METRIC_TRAIN_LOSS
from reports.tables import DeltaGrid, Table, column_title, shown_label

__all__ = [
    "FIGURE_FORMATS",
    "FIGURE_WIDTHS",
    "ROW_COLOURS",
    "row_caption",
    "row_style",
    "figure",
    "fit_title",
    "title_size",
    "plot_bars",
    "plot_delta_heatmap",
    "fetch_histories",
    "plot_loss_curves",
    "save_figure",
]

FIGURE_FORMATS: tuple[str, ...] = ("png", "pdf")
FIGURE_WIDTHS: dict[str, float] = {"column": 3.25, "page": 6.875}
"""Figure widths in inches: one column of a two-column paper (CVPR's is 3.281 in: 3.3 in overflowed it
by 1.5 pt), or the full text width (CVPR's 6.875 in)."""

ROW_COLOURS: tuple[str, ...] = ("#332288", "#88CCEE", "#44AA99", "#117733", "#999933", "#CC6677", "#882255", "#AA4499", "#666666")
"""Paul Tol's "muted" qualitative palette (distinct under the common colour-vision deficiencies), with
a neutral dark grey in place of its light sand, so no row is a faint yellow on white; bars get a
dark edge too."""

_HATCHES = ("", "////", "....", "xxxx")
_LINESTYLES = ("-", "--", "-.", ":")
_MAX_LEGEND = 24  # rows (bars) or trials (loss curves) beyond which figures carry no legend
_FONT = {"column": 7.5, "page": 8.0}  # axis labels; ticks and legends 0.5 pt smaller, titles 0.5 pt larger


def _text_colour(background) -> str:
    """``"black"`` or ``"white"``, whichever has the higher WCAG 2 contrast ratio on ``background``
    (RGB(A) in [0, 1]): at least 4.5:1 on any colour (white past 0.55 of the heatmap's limit was 3:1
    on RdBu's mid tones)."""
    c = np.asarray(background, dtype=float)[:3]
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    lum = float(linear @ np.array([0.2126, 0.7152, 0.0722]))  # relative luminance
    return "black" if (lum + 0.05) / 0.05 >= 1.05 / (lum + 0.05) else "white"


def row_style(i: int) -> dict[str, str]:
    """Colour, hatch and line style of table row ``i`` (0-based): colour and line style differ between
    neighbours; the hatch changes every 9 rows (one per round of the palette), so rows 1 and 10 differ."""
    return {
        "color": ROW_COLOURS[i % len(ROW_COLOURS)],
        "hatch": _HATCHES[(i // len(ROW_COLOURS)) % len(_HATCHES)],
        "linestyle": _LINESTYLES[i % len(_LINESTYLES)],
    }


@contextlib.contextmanager
def figure(width: str, height: float) -> Iterator:
    """A matplotlib Figure on an Agg canvas (no pyplot registry), ``width`` ``column`` or ``page``.

    Font sizes are set for that printed width; keep drawing and saving inside the ``with``.
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if width not in FIGURE_WIDTHS:
        from reports.collect import ReportInputError

        raise ReportInputError(f"--figure-width {width}: expected one of {', '.join(FIGURE_WIDTHS)}")
    size = _FONT[width]
    rc = {
        "font.size": size,
        "axes.titlesize": title_size(width),
        "axes.labelsize": size,
        "xtick.labelsize": size - 0.5,
        "ytick.labelsize": size - 0.5,
        "legend.fontsize": size - 0.5,
        "pdf.fonttype": 42,  # TrueType in the PDF: editable, searchable text
        "text.parse_math": False,  # a label's $x$ is shown as written, as the tables show it
        "axes.spines.top": False,
        "axes.spines.right": False,
    }
    with matplotlib.rc_context(rc):
        fig = Figure(figsize=(FIGURE_WIDTHS[width], height), dpi=200, layout="constrained")
        FigureCanvasAgg(fig)
        yield fig


def save_figure(fig, out_dir: str | Path, stem: str) -> list[Path]:
    """Save ``fig`` as ``<stem>.png`` and ``<stem>.pdf`` under ``out_dir`` atomically; returns the paths."""
    paths = []
    for fmt in FIGURE_FORMATS:
        dest = Path(out_dir) / f"{stem}.{fmt}"
        with atomic_path(dest) as tmp:
            fig.savefig(tmp, format=fmt)
        paths.append(dest)
    return paths


def row_caption(labels: dict[str, str]) -> str:
    """Legend text of a row: ``Freeze ✓ · Augment ✗ · Mix ✓``."""
    return " · ".join(f"{column_title(k)} {shown_label(v)}" for k, v in labels.items()) or "all runs"


def _legend_columns(labels: list[str], width: str, handle_in: float = 0.45) -> int:
    """How many legend columns of ``labels`` fit the figure's width (about 0.55 em per character)."""
    longest = max((len(t) for t in labels), default=1)
    entry = longest * 0.55 * (_FONT[width] - 0.5) / 72.0 + handle_in  # inches
    return max(1, min(len(labels), int((FIGURE_WIDTHS[width] - 0.2) // entry)))


def _chars(width: str, size: float, share: float) -> int:
    """About how many characters of ``size``-pt text fit ``share`` of the figure's width (0.55 em each)."""
    return max(8, int(share * (FIGURE_WIDTHS[width] - 0.1) * 72.0 / (0.55 * size)))


def title_size(width: str) -> float:
    """Points of a figure's title at ``width`` (axes titles and suptitles alike)."""
    return _FONT[width] + 0.5


def fit_title(fig, text: str, width: str) -> str:
    """``text`` with its `` — subject`` on a line of its own, and each line wrapped at a space, where
    it would not fit the figure's width as drawn (at column width a sweep's name was cut off)."""
    size = title_size(width)
    room = FIGURE_WIDTHS[width] - 0.15  # inches
    renderer = fig.canvas.get_renderer()

    def fits(line: str) -> bool:
        probe = fig.text(0, 0, line, fontsize=size)
        try:
            return probe.get_window_extent(renderer).width / fig.dpi <= room
        finally:
            probe.remove()

    def pieces(word: str) -> list[str]:  # a word wider than the figure (a long sweep name): cut where it must be
        out: list[str] = []
        while word and not fits(word):
            n = max(1, next(i for i in range(len(word), 0, -1) if fits(word[:i]) or i == 1))
            out.append(word[:n])
            word = word[n:]
        return [*out, word] if word else out

    lines = text.split("\n")
    if not fits(lines[0]) and " — " in lines[0]:
        lines[:1] = lines[0].split(" — ", 1)
    out = []
    for line in lines:
        words = [p for w in line.split(" ") for p in pieces(w)] or [""]
        current = words[0]
        for word in words[1:]:
            if fits(f"{current} {word}"):
                current += f" {word}"
            else:
                out.append(current)
                current = word
        out.append(current)
    return "\n".join(out)


def _seeds_phrase(ns: list[int]) -> str:
    lo, hi = min(ns), max(ns)
    return f"{lo} seeds" if lo == hi else f"{lo}–{hi} seeds"


def plot_bars(table: Table, out_dir: str | Path, *, subject: str = "", width: str = "page", stem: str = "bars") -> list[Path]:
    """Grouped bar chart: one group per column (domains, Mean), one bar per row, ± std error bars.

    Args:
        table: the built table (its means and stds are plotted; a missing cell is a ``–`` on the axis,
            a partial Mean, which the table does not rank, has a ``†`` above its bar).
        out_dir: output folder.
        subject: what the title names after the metric, e.g. ``ablation, smoke profile``.
        width: ``column`` or ``page``.
        stem: file name without extension.

    Returns:
        Paths of the PNG and PDF.
    """
    cols = table.columns
    n_rows = len(table.rows)
    captions = [row_caption(r.labels) for r in table.rows]
    legend_cols = _legend_columns(captions + ["± std over 3 seeds"], width)
    legend_lines = -(-(n_rows + 1) // legend_cols) if n_rows <= _MAX_LEGEND else 0
    with figure(width, (2.3 if width == "column" else 2.8) + 0.16 * (legend_lines + 1)) as fig:
        ax = fig.add_subplot()
        x = np.arange(len(cols), dtype=float)
        bar_w = 0.84 / max(n_rows, 1)
        has_std = False
        for i, row in enumerate(table.rows):
            cells = [table.cell(i, c) for c in cols]
            heights = [c.mean if c.mean is not None else np.nan for c in cells]
            errs = [c.std if c.std is not None else 0.0 for c in cells]
            has_std |= any(errs)
            st = row_style(i)
            xs = x + (i - (n_rows - 1) / 2) * bar_w
            for xj, c in zip(xs, cells):  # as the table marks them: a partial Mean (†), a missing cell (–)
                if c.mean is None:
                    ax.text(xj, 0, "–", ha="center", va="bottom", fontsize=_FONT[width] - 1, color="#555555")
                elif c.partial:  # 2 pt above the error bar's cap: on it, at column width, it read as part of the bar
                    ax.annotate("†", (xj, c.mean + (c.std or 0.0)), xytext=(0, 2), textcoords="offset points",
                                ha="center", va="bottom", fontsize=_FONT[width] - 1)  # fmt: skip
            ax.bar(
                xs, heights, bar_w,
                yerr=errs if any(errs) else None, label=captions[i],
                color=st["color"], hatch=st["hatch"], edgecolor="#222222", linewidth=0.3,
                error_kw={"elinewidth": 0.6, "capsize": 1.2, "capthick": 0.6, "ecolor": "black"},
            )  # fmt: skip
        if has_std:  # a legend entry that says what the error bars are
            ns = [table.cell(i, c).n for i in range(n_rows) for c in cols if table.cell(i, c).std is not None]
            ax.errorbar([], [], yerr=[], fmt="none", ecolor="black", elinewidth=0.6, capsize=1.2,
                        label=f"± std over {_seeds_phrase(ns)}")  # fmt: skip
        ax.set_xticks(x, cols)
        ax.set_xlim(-0.5, len(cols) - 0.5)
        ax.set_ylabel("mIoU (%)")
        # over the figure, not the axes: fit_title fits it to the figure's width, and over the axes (right of the
        # y label) a title that fit ran off the right edge
        fig.suptitle(fit_title(fig, "mIoU (%) per target domain" + (f" — {subject}" if subject else ""), width), fontsize=title_size(width))
        ax.grid(axis="y", alpha=0.3, linewidth=0.5)
        ax.set_axisbelow(True)
        if n_rows <= _MAX_LEGEND:  # beyond that a legend is unreadable; the table names the rows
            fig.legend(loc="outside lower center", ncols=legend_cols, frameon=False, handlelength=1.6, columnspacing=1.2)
        return save_figure(fig, out_dir, stem)


def plot_delta_heatmap(
    grid: DeltaGrid,
    labels: list[dict[str, str]],
    out_dir: str | Path,
    *,
    subject: str = "",
    width: str = "page",
    stem: str = "delta",
) -> list[Path]:
    """Rows × (domains, Mean): each cell the row's mIoU minus the baseline row's, in points.

    A diverging colour map centred at 0 (blue better, red worse than the baseline), the signed
    number in every cell and, with seeds, ``± std`` over the paired seeds below it (at page width:
    a column's cells are too small for two lines; the table has the std). Rows are named
    by their labels (``Freeze ✓ · Augment ✗``), or by the values alone under an axis label naming
    the label columns when the full names would take too much of the width.

    Args:
        grid: from :func:`reports.tables.delta_grid`.
        labels: one ``{label column: value}`` per row.
        out_dir: output folder.
        subject: named in the title, e.g. ``ablation, smoke profile``.
        width: ``column`` or ``page``.
        stem: file name without extension.

    Returns:
        Paths of the PNG and PDF.
    """
    from matplotlib import colormaps
    from matplotlib.colors import TwoSlopeNorm

    g, c = grid.mean.shape
    shown = np.where(np.arange(g)[:, None] == grid.baseline, np.nan, grid.mean)  # (G, C) baseline row blank
    lim = float(np.nanmax(np.abs(shown))) if np.isfinite(shown).any() else 1.0
    lim = lim or 1.0
    seeded = bool(np.isfinite(grid.std).any())
    decimals = 1 if width == "column" else 2  # what fits a cell at that width
    with_std = seeded and width != "column"  # a ± line under each number was 4.5 pt type at column width
    captions = [row_caption(lab) for lab in labels]
    fit = _chars(width, _FONT[width] - 0.5, share=0.3)  # the row names take at most 30 % of the width
    compact = max(len(t) for t in captions) > fit
    if compact:
        captions = [" ".join(shown_label(v) for v in lab.values()) for lab in labels]
    else:  # the row itself says "baseline"; the compact label stays short
        captions = [f"{t} (baseline)" if r == grid.baseline else t for r, t in enumerate(captions)]
    if compact:  # a long value (a prompt type: "random characters + class name") wraps rather than squeeze the cells
        import textwrap

        captions = [textwrap.fill(t, fit) for t in captions]
    lines = max(t.count("\n") + 1 for t in captions)
    row_h = max(0.34 if with_std else 0.22, 0.04 + lines * 1.25 * (_FONT[width] - 0.5) / 72.0)
    with figure(width, 0.85 + row_h * g + (0.45 if width == "column" else 0.0)) as fig:
        ax = fig.add_subplot()
        # ColorBrewer RdBu: blue better, red worse; readable under the common colour-vision deficiencies
        # pcolormesh, not imshow: vector cells in the PDF (imshow embeds a bitmap); row 0 on top, as a table
        edges_x, edges_y = np.arange(c + 1) - 0.5, np.arange(g + 1) - 0.5
        norm = TwoSlopeNorm(vcenter=0.0, vmin=-lim, vmax=lim)
        im = ax.pcolormesh(edges_x, edges_y, np.ma.masked_invalid(shown), cmap=colormaps["RdBu"], norm=norm)
        ax.set_xlim(edges_x[0], edges_x[-1])
        ax.set_ylim(edges_y[-1], edges_y[0])
        size = (5.5 if width == "column" else _FONT[width] - 1.0) - (0.5 if with_std else 0.0)
        for r in range(g):
            for j in range(c):
                v = grid.mean[r, j]
                if r == grid.baseline:
                    continue
                text = "–" if np.isnan(v) else f"{v:+.{decimals}f}".replace("-", "−")  # a minus, as the colour bar's
                if with_std and np.isfinite(grid.std[r, j]):
                    text += f"\n±{grid.std[r, j]:.{decimals}f}"
                colour = _text_colour(im.cmap(norm(v))) if np.isfinite(v) else "black"
                ax.text(j, r, text, ha="center", va="center", fontsize=size, color=colour, linespacing=1.0)
        ax.text((c - 1) / 2, grid.baseline, "baseline", ha="center", va="center", fontsize=size, color="#555555", style="italic")
        ax.set_xticks(range(c), grid.columns)
        ax.set_yticks(range(g), captions)
        if compact and labels and labels[0]:
            ax.set_ylabel(" · ".join(column_title(k) for k in labels[0]))
        ax.tick_params(length=0)
        ax.xaxis.tick_top()
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_xticks(np.arange(c + 1) - 0.5, minor=True)
        ax.set_yticks(np.arange(g + 1) - 0.5, minor=True)
        ax.grid(which="minor", color="white", linewidth=1.0)
        ax.tick_params(which="minor", length=0)
        horizontal = width == "column"  # at column width the cells need the horizontal room
        bar = fig.colorbar(im, ax=ax, shrink=0.9, pad=0.02, aspect=25 if not horizontal else 35,
                           orientation="horizontal" if horizontal else "vertical", location="bottom" if horizontal else "right")  # fmt: skip
        bar.solids.set_rasterized(False)  # matplotlib rasterizes a bar of this many colours: kept vector
        bar.solids.set_edgecolor("face")  # PDF viewers showed hairline seams between its cells
        bar.set_label("Δ mIoU (points)")
        bar.outline.set_visible(False)
        title = "Δ mIoU vs the baseline row" + (f" — {subject}" if subject else "")
        if with_std:
            title += f"\n± std over {_seeds_phrase([int(k) for k in grid.n if k])} (paired by seed)"
        elif seeded:
            title += f"\nmeans over {_seeds_phrase([int(k) for k in grid.n if k])} (paired by seed; ± std in the table)"
        fig.suptitle(fit_title(fig, title, width), fontsize=title_size(width))
        return save_figure(fig, out_dir, stem)


def fetch_histories(results: ResultSet, metric: str = METRIC_TRAIN_LOSS) -> dict[str, pd.DataFrame]:
    """Metric history of every trial run (one MLflow call per trial); empty without a tracking URI.

    Returns:
        trial id -> DataFrame with columns ``step``, ``value`` (sorted by step); trials without
        the metric are left out.
    """
    if not results.tracking_uri:
        return {}
    from reports.mlflow_client import mlflow_client

    client = mlflow_client(results.tracking_uri)
    out: dict[str, pd.DataFrame] = {}
    for trial, run_id in zip(results.runs["trial"], results.runs["run_id"]):
        if not run_id:
            continue
        hist = client.get_metric_history(run_id, metric)
        if hist:
            frame = pd.DataFrame({"step": [m.step for m in hist], "value": [m.value for m in hist]})
            out[str(trial)] = frame.sort_values("step", kind="stable").reset_index(drop=True)
    return out


def plot_loss_curves(
    histories: dict[str, pd.DataFrame],
    captions: dict[str, str],
    out_dir: str | Path,
    *,
    groups: dict[str, int] | None = None,
    subject: str = "",
    width: str = "column",
    stem: str = "loss",
) -> list[Path]:
    """Training loss against iteration, one colour and line style per table row (its seeds share them).

    Args:
        histories: trial id -> frame with ``step``, ``value`` (from :func:`fetch_histories`).
        captions: trial id -> the row's legend text.
        out_dir: output folder.
        groups: trial id -> table row index (default: every trial its own row).
        subject: named in the title, e.g. ``ablation, smoke profile``.
        width: ``column`` or ``page``.
        stem: file name without extension.

    Returns:
        Paths of the PNG and PDF (nothing is written when ``histories`` is empty).
    """
    if not histories:
        return []
    groups = groups or {t: i for i, t in enumerate(histories)}
    rows = sorted({groups.get(t, 0) for t in histories})
    n_seeds = {g: sum(1 for t in histories if groups.get(t, 0) == g) for g in rows}
    below = width == "column"
    legend_cols = _legend_columns([captions.get(t, t) for t in histories], width) if below else 1
    legend_lines = -(-len(rows) // legend_cols) if len(rows) <= _MAX_LEGEND else 0
    height = 2.2 + (0.15 * (legend_lines + 1) if below else 0.0)
    with figure(width, height) as fig:
        ax = fig.add_subplot()
        labelled: set[int] = set()
        for trial, frame in histories.items():
            g = groups.get(trial, 0)
            st = row_style(g)
            label = None
            if g not in labelled:
                labelled.add(g)
                label = captions.get(trial, trial) + (f" ({n_seeds[g]} seeds)" if n_seeds[g] > 1 else "")
            ax.plot(frame["step"], frame["value"], label=label, linewidth=1.0, color=st["color"], linestyle=st["linestyle"])
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # iterations are whole numbers
        ax.set_xlabel("iteration")
        ax.set_ylabel("training loss (cross-entropy)")
        fig.suptitle(fit_title(fig, "Training loss" + (f" — {subject}" if subject else ""), width), fontsize=title_size(width))  # as the bars' title
        ax.grid(alpha=0.3, linewidth=0.5)
        if len(rows) <= _MAX_LEGEND:  # outside the data: below at column width, to the right at page width
            where = "outside lower center" if below else "outside right upper"
            fig.legend(loc=where, ncols=legend_cols, frameon=False, handlelength=2.6)
        return save_figure(fig, out_dir, stem)
