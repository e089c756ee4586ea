"""Source val against the targets: how much of its source mIoU each table row keeps out of domain.

Domain generalization is about the drop from the source to unseen domains. A row's target Mean
alone mixes two things: how well the model fits the source, and how much of that it keeps on the
targets. This table separates them, per row of the main table:

- **Source val**: the source-val mIoU (``source_val/miou``, logged when ``train.val_every`` is set)
  of the model that was evaluated: the last validation, or the best with ``train.select=best_source_val``;
- **Mean**: the target Mean of the main table;
- **Drop**: Source val − Mean; **Kept**: Mean / Source val, in percent.

Per trial, then mean ± sample std over the row's seeds, of the trials that have a source value and
every target domain. Only MLflow input has the source curve; a row with no such trial is left out,
and the legend names it and says why.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from reports.collect import ResultSet
from reports.schema import METRIC_SOURCE_VAL, SOURCE_GAP_COLUMNS
from reports.tables import CellValue, Table, column_title, markdown_cell, md_escape, row_name, shown_label, summary_cell

__all__ = ["SourceRow", "fetch_source_values", "source_rows", "render_source_markdown", "source_frame"]

SELECT_PARAM = "train.select"
SELECT_BEST = "best_source_val"


@dataclass
class SourceRow:
    """One row of the main table: its labels and the four cells (mean ± std over the trials that have both values)."""

    labels: dict[str, str]
    n: int
    source: CellValue
    mean: CellValue
    drop: CellValue
    kept: CellValue


def selected_value(curve: list[tuple[int, float]], select: str | None) -> float | None:
    """The source-val mIoU of the evaluated model: the best of the curve under ``best_source_val``, else the last."""
    if not curve:
        return None
    if select == SELECT_BEST:
        return max(v for _, v in curve)
    return max(curve, key=lambda sv: sv[0])[1]


def fetch_source_values(results: ResultSet) -> dict[str, float]:
    """trial id -> source-val mIoU (percent) of its evaluated model, from MLflow: the curves as the loss
    curves are fetched (:func:`reports.plots.fetch_histories`), then ``train.select`` of each trial with one.

    Empty without a tracking URI; trials without the metric are left out.
    """
    from reports.plots import fetch_histories

    curves = fetch_histories(results, METRIC_SOURCE_VAL)
    if not curves:
        return {}
    from reports.mlflow_client import mlflow_client

    client = mlflow_client(results.tracking_uri)
    run_of = dict(zip(results.runs["trial"].astype(str), results.runs["run_id"]))
    out: dict[str, float] = {}
    for trial, frame in curves.items():
        select = client.get_run(run_of[trial]).data.params.get(SELECT_PARAM)
        out[trial] = float(selected_value(list(zip(frame["step"], frame["value"])), select))
    return out


def source_rows(table: Table, results: ResultSet, source: dict[str, float]) -> tuple[list[SourceRow], list[str]]:
    """One :class:`SourceRow` per row of ``table`` with at least one trial that has a source value and all
    domains; and, for each row left out, a line that names it and says why (``row 8 (Freeze ✓): …``)."""
    runs = results.runs
    doms = list(results.domains)
    trial_mean: dict[str, float] = {}
    for trial, vals in zip(runs["trial"].astype(str), runs[doms].to_numpy(dtype=float)):
        if len(vals) and not np.isnan(vals).any():
            trial_mean[trial] = float(vals.mean())
    rows, left_out = [], []
    for i, r in enumerate(table.rows, 1):
        pairs = [(source[t], trial_mean[t]) for t in r.trials if t in source and t in trial_mean]
        if not pairs:
            why = "no source validation" if not any(t in source for t in r.trials) else "no run with every target domain"
            left_out.append(f"{row_name(i, {c: r.labels[c] for c in table.label_columns})}: {why}")
            continue
        src, tgt = [p[0] for p in pairs], [p[1] for p in pairs]
        rows.append(
            SourceRow(
                labels=r.labels,
                n=len(pairs),
                source=summary_cell(src),
                mean=summary_cell(tgt),
                drop=summary_cell([s - m for s, m in pairs]),
                kept=summary_cell([100.0 * m / s for s, m in pairs if s > 0]),
            )
        )
    return rows, left_out


def render_source_markdown(rows: list[SourceRow], label_columns: list[str], left_out: list[str] | tuple = ()) -> str:
    """The rows as a Markdown table with a one-line legend (no marks: a larger drop is not worse by itself)."""
    show_n = any(r.n != 1 for r in rows)
    head = [md_escape(column_title(c)) for c in label_columns] + (["n"] if show_n else [])
    head += ["Source val", "Mean", "Drop", "Kept (%)"]
    align = [":-:"] * (len(label_columns) + show_n) + ["--:"] * 4
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    for r in rows:
        cells = [md_escape(shown_label(r.labels[c])) for c in label_columns] + ([str(r.n)] if show_n else [])
        cells += [markdown_cell(c) for c in (r.source, r.mean, r.drop, r.kept)]
        lines.append("| " + " | ".join(cells) + " |")
    legend = (
        "mIoU (%). Source val: the evaluated model on the source's val split; Mean: over the target domains; "
        "Drop: Source val − Mean; Kept: Mean / Source val (both from the unrounded values, so a Drop may differ "
        "by 0.01 from the difference of the two shown)."
        + (" Several seeds: mean ± sample std over n runs." if show_n else "")
        + (f" Rows of the main table left out: {'; '.join(md_escape(t) for t in left_out)}." if left_out else "")
    )
    return "\n".join(lines) + "\n\n" + legend + "\n"


def source_frame(rows: list[SourceRow], label_columns: list[str]) -> pd.DataFrame:
    """``source.csv``: label columns, ``n``, then mean and std of each value (unrounded; std empty for one seed)."""
    records = []
    for r in rows:
        rec: dict[str, object] = {c: r.labels[c] for c in label_columns}
        rec["n"] = r.n
        for name, c in zip(SOURCE_GAP_COLUMNS, (r.source, r.mean, r.drop, r.kept), strict=True):
            rec[name] = c.mean
            rec[f"{name}_std"] = c.std
        records.append(rec)
    cols = [*label_columns, "n"] + [f"{k}{s}" for k in SOURCE_GAP_COLUMNS for s in ("", "_std")]
    return pd.DataFrame(records, columns=cols)
