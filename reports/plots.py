"""Figures of a report (matplotlib, Agg, no pyplot state): per-domain bars and training-loss curves.

Each figure is written as PNG and PDF, atomically. MLflow is imported only by
:func:`fetch_histories` (one ``get_metric_history`` call per trial).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from reports.collect import ResultSet
from famix_core.io import atomic_path
from reports.tables import Table, shown_label

__all__ = ["FIGURE_FORMATS", "row_caption", "plot_bars", "fetch_histories", "plot_loss_curves", "save_figure"]

FIGURE_FORMATS: tuple[str, ...] = ("png", "pdf")
_MAX_LEGEND = 24  # rows (bars) or trials (loss curves) beyond which figures carry no legend


def _new_figure(width: float, height: float):
    """A matplotlib Figure on an Agg canvas (no global pyplot figure registry)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


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
    return " · ".join(f"{k[:1].upper() + k[1:]} {shown_label(v)}" for k, v in labels.items()) or "all runs"


def plot_bars(table: Table, out_dir: str | Path, stem: str = "bars") -> list[Path]:
    """Grouped bar chart: one group per column (domains, Mean), one bar per row, ± std error bars.

    Args:
        table: the built table (its means and stds are plotted; missing cells are left out).
        out_dir: output folder.
        stem: file name without extension.

    Returns:
        Paths of the PNG and PDF.
    """
    cols = table.columns
    n_rows = len(table.rows)
    fig = _new_figure(max(6.0, min(12.0, len(cols) * (0.45 + 0.1 * n_rows))), 4.5)
    ax = fig.add_subplot()
    x = np.arange(len(cols), dtype=float)
    width = 0.8 / max(n_rows, 1)
    from matplotlib import colormaps

    colours = colormaps["viridis"](np.linspace(0.05, 0.95, max(n_rows, 1)))
    for i, row in enumerate(table.rows):
        cells = [table.cell(i, c) for c in cols]
        heights = [c.mean if c.mean is not None else np.nan for c in cells]
        errs = [c.std if c.std is not None else 0.0 for c in cells]
        ax.bar(
            x + (i - (n_rows - 1) / 2) * width,
            heights,
            width,
            yerr=errs if any(errs) else None,
            label=row_caption(row.labels),
            color=colours[i],
            capsize=2,
        )
    ax.set_xticks(x, cols)
    ax.set_ylabel("mIoU (%)")
    ax.set_title(table.title)
    ax.grid(axis="y", alpha=0.3)
    if n_rows <= _MAX_LEGEND:  # beyond that a legend is unreadable; the table names the rows
        ax.legend(fontsize=7, ncols=min(n_rows, 4), loc="upper center", bbox_to_anchor=(0.5, -0.08), frameon=False)
    return save_figure(fig, out_dir, stem)


def fetch_histories(results: ResultSet, metric: str = "train/loss") -> dict[str, pd.DataFrame]:
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
    stem: str = "loss",
    groups: dict[str, int] | None = None,
) -> list[Path]:
    """Training loss against iteration, one line per trial (one colour per table row, line style per seed).

    Args:
        histories: trial id -> frame with ``step``, ``value`` (from :func:`fetch_histories`).
        captions: trial id -> legend text.
        out_dir: output folder.
        stem: file name without extension.
        groups: trial id -> table row index (default: every trial its own colour).

    Returns:
        Paths of the PNG and PDF (nothing is written when ``histories`` is empty).
    """
    if not histories:
        return []
    fig = _new_figure(7.0, 4.2)
    ax = fig.add_subplot()
    from matplotlib import colormaps

    groups = groups or {t: i for i, t in enumerate(histories)}
    n_groups = max(groups.values(), default=0) + 1
    colours = colormaps["viridis"](np.linspace(0.05, 0.95, max(n_groups, 1)))
    seen: dict[int, int] = {}
    styles = ("-", "--", ":", "-.")
    for trial, frame in histories.items():
        g = groups.get(trial, 0)
        k = seen[g] = seen.get(g, -1) + 1  # k-th run (seed) of this row
        ax.plot(frame["step"], frame["value"], label=captions.get(trial, trial), linewidth=1.2,
                color=colours[g % len(colours)], linestyle=styles[k % len(styles)])
    ax.set_xlabel("iteration")
    ax.set_ylabel("train/loss")
    ax.grid(alpha=0.3)
    if len(histories) <= _MAX_LEGEND:
        ax.legend(fontsize=7, ncols=2 if len(histories) > 6 else 1)
    return save_figure(fig, out_dir, stem)
