"""The report's source-val-against-targets table (reports.source_gap), from trial runs in a SQLite MLflow store."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from famix_core.source_val import METRIC as ENGINE_METRIC
from reports.collect import collect_mlflow, default_tracking_uri
from reports.report import write_report
from reports.schema import METRIC_SOURCE_VAL
from reports.source_gap import selected_value

DOMAINS = ["C", "B", "AN"]
SWEEP = "gap"
# row -> per seed: (source-val curve as (step, percent), train.select); None: the row never validated
CURVES = {
    ("✗",): [([(100, 20.0), (200, 30.0)], "last"), ([(100, 25.0), (200, 28.0)], "last")],
    ("✓",): [([(100, 24.0), (200, 18.0)], "best_source_val"), ([(100, 15.0), (200, 16.0)], "last")],
    ("-",): [(None, "last")],
}


def _mious(row: int, seed: int) -> dict[str, float]:
    return {d: 10.0 + 2.0 * row + 1.5 * j + 0.25 * seed for j, d in enumerate(DOMAINS)}


def _populate(run_dir: Path, curves: dict = CURVES) -> None:
    client = MlflowClient(tracking_uri=default_tracking_uri(run_dir))
    exp = client.create_experiment(SWEEP, artifact_location=(run_dir / "mlartifacts").absolute().as_uri())
    parent = client.create_run(exp, tags={"famix.sweep": SWEEP, "famix.role": "sweep"}).info.run_id
    index = 0
    for row, (labels, seeds) in enumerate(curves.items()):
        for seed, (curve, select) in enumerate(seeds):
            trial = f"t-{row}{seed}"
            tags = {
                "mlflow.parentRunId": parent, "famix.sweep": SWEEP, "famix.role": "trial", "famix.trial": trial,
                "famix.trial_index": str(index), "famix.seed": str(seed), "famix.status": "done",
                "famix.labels": json.dumps({"Freeze": labels[0]}, ensure_ascii=False), "famix.label.Freeze": labels[0],
                "famix.domains": json.dumps(DOMAINS),
            }
            run = client.create_run(exp, tags=tags, run_name=trial).info.run_id
            now = int(time.time() * 1000)
            batch = [Metric(f"miou/{d}", v, now, 0) for d, v in _mious(row, seed).items()]
            batch += [Metric(METRIC_SOURCE_VAL, v, now + step, step) for step, v in (curve or [])]
            client.log_batch(run, metrics=batch, params=[Param("train.select", select)])
            client.set_terminated(run)
            index += 1


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("gap") / "runs"
    run_dir.mkdir(parents=True)
    _populate(run_dir)
    results = collect_mlflow(SWEEP, tracking_uri=default_tracking_uri(run_dir))
    out = run_dir / "report"
    write_report(results, out, figures=False)
    return out


def test_metric_name_is_the_engines():
    assert METRIC_SOURCE_VAL == ENGINE_METRIC


def test_selected_value_is_last_or_best():
    curve = [(300, 5.0), (100, 9.0), (200, 7.0)]
    assert selected_value(curve, "last") == 5.0  # the largest step, whatever the order
    assert selected_value(curve, None) == 5.0
    assert selected_value(curve, "best_source_val") == 9.0
    assert selected_value([], "last") is None


def test_source_csv_numbers(report):
    frame = pd.read_csv(report / "source.csv")
    assert list(frame["Freeze"]) == ["✗", "✓"]  # the row that never validated is left out
    assert list(frame["n"]) == [2, 2]
    for row, (labels, seeds) in enumerate(list(CURVES.items())[:2]):
        src = [selected_value(curve, select) for curve, select in seeds]
        assert src == ([30.0, 28.0] if row == 0 else [24.0, 16.0])  # best of row 2 seed 0 is its first validation
        tgt = [float(np.mean(list(_mious(row, seed).values()))) for seed in range(2)]
        got = frame.iloc[row]
        assert got["source_val"] == pytest.approx(np.mean(src)) and got["source_val_std"] == pytest.approx(np.std(src, ddof=1))
        assert got["mean"] == pytest.approx(np.mean(tgt))
        drops = [s - t for s, t in zip(src, tgt)]
        assert got["drop"] == pytest.approx(np.mean(drops)) and got["drop_std"] == pytest.approx(np.std(drops, ddof=1))
        assert got["kept"] == pytest.approx(np.mean([100 * t / s for s, t in zip(src, tgt)]))


def test_readme_has_the_section(report):
    text = (report / "README.md").read_text()
    assert "## Source val against the targets" in text
    section = text.split("## Source val against the targets", 1)[1]
    assert "| Freeze | n | Source val | Mean | Drop | Kept (%) |" in section
    assert "| ✗ | 2 | 29.00 ± 1.41 |" in section  # 30 and 28
    assert "(both from the unrounded values, so a Drop may differ by 0.01 from the difference of the two shown)" in section
    assert "Rows of the main table left out: row 3 (Freeze -): no source validation." in section  # it vanished unsaid
    assert "`source.csv`" in text


def test_cli_prints_the_source_table(report, capsys):
    from orchestrator.__main__ import main

    run_dir = report.parent
    assert main(["report", SWEEP, "--run-dir", str(run_dir), "--out", str(run_dir / "rep2"), "--no-figures"]) == 0
    out = capsys.readouterr().out
    assert "Source val against the targets:" in out and "| ✓ | 2 | 20.00 ± 5.66 |" in out  # 24 and 16
    assert "source.csv" in out.splitlines()[-1]


def test_a_row_without_a_complete_run_is_named_where_the_source_table_leaves_it_out(tmp_path):
    """A row whose one run lacked a target domain vanished from the source table with nothing said,
    while the main table footnoted its missing cell."""
    run_dir = tmp_path / "runs"
    run_dir.mkdir()
    _populate(run_dir, {("✗",): CURVES[("✗",)][:1], ("✓",): CURVES[("✓",)][:1]})
    results = collect_mlflow(SWEEP, tracking_uri=default_tracking_uri(run_dir))
    results.runs.loc[results.runs["Freeze"] == "✓", "AN"] = np.nan
    out = tmp_path / "rep"
    write_report(results, out, figures=False)
    assert list(pd.read_csv(out / "source.csv")["Freeze"]) == ["✗"]
    section = (out / "README.md").read_text().split("## Source val against the targets", 1)[1]
    assert "Rows of the main table left out: row 2 (Freeze ✓): no run with every target domain." in section


def test_no_source_validation_no_section(tmp_path):
    run_dir = tmp_path / "runs"
    run_dir.mkdir()
    _populate(run_dir, {("✗",): [(None, "last")]})
    out = tmp_path / "rep"
    write_report(collect_mlflow(SWEEP, tracking_uri=default_tracking_uri(run_dir)), out, figures=False)
    assert not (out / "source.csv").exists()
    text = (out / "README.md").read_text()
    assert "| Freeze |" in text and "Source val" not in text  # the main table, no source section
