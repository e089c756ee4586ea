"""A sweep's results from the store: the wide results frame (results.csv), a Markdown table of it, and
the report's result set from MLflow with its domain values taken from the store."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.plan import Plan

__all__ = ["results_frame", "markdown_table", "collect_results"]


def results_frame(plan: Plan, statuses: dict[str, str] | None = None):
    """Wide results (Results CSV): label columns, ``seed``, ``status``, ``trial`` (its id: the MLflow run's
    ``famix.trial``), one column per domain (mIoU %), from the store."""
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
            row[col] = _percent(info)
            done += info is not None
        row["status"] = (statuses or {}).get(t.id) or ("done" if done == len(ts.evaluate) else "partial")
        row["trial"] = t.id
        rows.append(row)
    # the rows are keyed as the trials' eval.domains holds them (C, where the sweep may name cityscapes)
    cols = [*label_cols, "seed", "status", "trial", *plan.trials[0].config.eval.domains]
    return pd.DataFrame(rows, columns=cols)


def _percent(info: dict[str, Any] | None) -> float:
    """An evaluation's mIoU in percent, unrounded, as MLflow's ``miou/<column>`` holds it (tables round
    once, for display: rounding here too moved 9.614985 to 9.615 and then 9.62); NaN when not done."""
    return 100.0 * float(info["result"]["miou"]) if info else float("nan")


def markdown_table(df) -> str:
    """A minimal Markdown table of the results frame (with the per-row mean over the domain columns)."""
    df = df.drop(columns=["trial"], errors="ignore")
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
                runs.at[i, col] = _percent(info)


def collect_results(plan: Plan, uri: str, experiment: str):
    """The sweep's :class:`reports.collect.ResultSet` from MLflow, or None (a note on stderr) when it cannot be read."""
    try:
        from reports.collect import collect_mlflow

        rs = collect_mlflow(plan.name, tracking_uri=uri, experiment=experiment, profile=plan.sweep.profile, trials=[t.id for t in plan.trials])
        _values_from_store(plan, rs.runs)  # the printed table agrees with results.csv
        return rs
    except Exception as e:  # noqa: BLE001 — fall back to the store-based table
        print(f"famix: note: reports table unavailable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})", file=sys.stderr)
        return None
