"""The sweep's parent MLflow run, made worth opening: someone who opens only the MLflow UI sees the sweep.

Before the stages run (:func:`describe_parent`):
  * description (``mlflow.note.content``, rendered as Markdown by the UI): the sweep's own
    description, profile, trials, stages, domains, backend;
  * artifacts ``sweep/<file>.yaml`` (the file as written), ``sweep/sweep.resolved.yaml`` (profile
    and command-line overrides applied), ``sweep/plan.json`` (trials, labels, stage keys).
After the run (:func:`publish_results`):
  * the report folder as artifacts ``report/`` (``table.md``, ``table.tex``, ``results.csv``,
    ``summary.csv``, figures as PNG and PDF, ``README.md``), written to ``<run_dir>/<sweep>/report``;
  * the results table appended to the description;
  * metrics ``row/<NN>/miou/mean`` (each table row's Mean, 1-based row number), ``best/miou/mean``
    and ``best/miou/<column>`` (the best row's Mean, the best value of each column); tags
    ``famix.best_row`` (the best row's labels) and ``famix.best_row_index``.
"""

from __future__ import annotations

import math
import shlex

from pathlib import Path
from typing import Any

from famix_core.text import count
from orchestrator.plan import Plan
from reports import schema

__all__ = ["resolved_sweep", "describe_parent", "publish_results", "summary_metrics"]


def resolved_sweep(plan: Plan) -> dict[str, Any]:
    """The sweep as it runs: profile and overrides applied (what ``sweep.resolved.yaml`` holds)."""
    rs = plan.sweep
    return {
        "name": rs.name,
        "profile": rs.profile,
        "source": rs.source,
        "overrides": {o.spelled: o.value for o in rs.overrides},
        "base": rs.base,
        "grid": rs.grid,
        "zip": [z.model_dump() for z in rs.zip],
        "seeds": rs.seeds,
        "labels": {k: v.model_dump() for k, v in rs.labels.items()},
        "domains": rs.domains,
        "backend": rs.backend.model_dump(),
        "tracking": rs.tracking.model_dump(),
    }


def _sweep_description(plan: Plan) -> str:
    try:
        from orchestrator.sweep import load_sweep

        spec, _ = load_sweep(Path(plan.sweep.source))
        return spec.description.strip()
    except Exception:  # noqa: BLE001 — the file may have moved since the plan was made
        return ""


def _description(plan: Plan, backend: str) -> str:
    rs = plan.sweep
    rows = len({tuple(t.labels.values()) for t in plan.trials})
    seeds = len(rs.seeds)
    head = f"**{rs.name}** (profile `{rs.profile}`)"
    text = _sweep_description(plan)
    lines = [head + (f": {text}" if text else ""), ""]
    lines.append(
        f"{count(len(plan.trials), 'trial')} ({count(rows, 'row')} × {count(seeds, 'seed')}), {count(len(plan.stages), 'stage')} "
        f"on `{backend}`; domains {', '.join(rs.domains)}. Sweep file `{rs.source}` (artifacts `sweep/`: the file, "
        "`sweep.resolved.yaml` with profile and overrides applied, `plan.json`)."
    )
    if rs.overrides:
        lines.append(f"Command-line overrides: `{shlex.join(rs.override_words())}`.")
    return "\n".join(lines)


def describe_parent(plan: Plan, tracker: Any, parent: str, backend: str) -> None:
    """Description, sweep file, resolved sweep and plan on the parent run (before the stages run)."""
    import yaml

    tracker.set_tags(parent, {schema.TAG_NOTE: _description(plan, backend), schema.TAG_TRIALS: str(len(plan.trials))})
    tracker.log_text(parent, yaml.safe_dump(resolved_sweep(plan), sort_keys=False, allow_unicode=True), "sweep/sweep.resolved.yaml")
    source = Path(plan.sweep.source)
    if source.is_file():
        tracker.log_text(parent, source.read_text(encoding="utf-8"), f"sweep/{source.name}")
    plan_json = plan.sweep_dir / "plan.json"
    if plan_json.is_file():
        from orchestrator.tracking import with_retry

        with_retry(tracker.client.log_artifact, parent, str(plan_json), "sweep")


def summary_metrics(table: Any) -> tuple[dict[str, float], dict[str, str]]:
    """Parent-run metrics and tags of a :class:`reports.tables.Table`.

    Returns:
        (metrics, tags): ``row/<NN>/miou/mean`` per row with a complete Mean, ``best/miou/mean``,
        ``best/miou/<column>``; ``famix.best_row`` (``Freeze=✓,Augment=✓``, as the row's run names hold it) and
        ``famix.best_row_index`` (1-based). Rows with a partial Mean are not ranked.
    """

    metrics: dict[str, float] = {}
    tags: dict[str, str] = {}
    ranked = [(i, r.mean.mean) for i, r in enumerate(table.rows) if r.mean.mean is not None and not r.mean.partial]
    for i, value in ranked:
        metrics[schema.row_mean_metric(i + 1)] = float(value)
    if ranked:
        best, value = max(ranked, key=lambda x: x[1])
        metrics[schema.METRIC_BEST_MEAN] = float(value)
        labels = table.rows[best].labels
        tags[schema.TAG_BEST_ROW] = schema.labels_text(labels) or f"row {best + 1}"
        tags[schema.TAG_BEST_ROW_INDEX] = str(best + 1)
    for col in table.domains:
        values = [r.cells[col].mean for r in table.rows if r.cells[col].mean is not None]
        if values:
            metrics[schema.best_metric(col)] = float(max(values))
    return metrics, tags


def publish_results(plan: Plan, tracker: Any, parent: str, results: Any, table: Any, markdown: str, backend: str) -> Path:
    """Write ``<sweep dir>/report`` and attach it, the table and the summary metrics to the parent run.

    Args:
        plan: the plan that ran.
        tracker: the driver's :class:`orchestrator.tracking.Tracker`.
        parent: the parent run id.
        results: the sweep's :class:`reports.collect.ResultSet` (from MLflow).
        table: its :class:`reports.tables.Table`.
        markdown: the table as Markdown (appended to the description).
        backend: the backend that ran the sweep (named in the description).

    Returns:
        The report folder.
    """
    from orchestrator.tracking import delete_tag, with_retry
    from reports.report import write_report

    out = plan.sweep_dir / "report"
    write_report(results, out, profile=plan.sweep.profile)
    with_retry(tracker.client.log_artifacts, parent, str(out), "report")
    metrics, tags = summary_metrics(table)
    run = with_retry(tracker.client.get_run, parent)
    have = run.data.metrics
    changed = {k: v for k, v in metrics.items() if k not in have or not math.isclose(have[k], v, rel_tol=1e-9, abs_tol=1e-9)}
    # the run is the sweep's for every plan of it (other overrides, an edited file): a summary metric that this
    # plan's table lacks (a domain, a row, the best Mean of a table with none complete) is another plan's and
    # goes NaN (MLflow deletes no metric), and so do the best-row tags
    changed.update({k: math.nan for k, v in have.items() if schema.is_summary_metric(k) and k not in metrics and not math.isnan(v)})
    if changed:  # a rerun that changes nothing logs nothing twice
        tracker.log_metrics(parent, changed, step=0)
    for key in {schema.TAG_BEST_ROW, schema.TAG_BEST_ROW_INDEX} & set(run.data.tags) - set(tags):
        delete_tag(tracker, parent, key)
    note = _description(plan, backend) + "\n\n### Results\n\n" + markdown
    tracker.set_tags(parent, {**tags, schema.TAG_NOTE: note})
    return out

