"""scripts/reevaluate.py: a finished sweep's trainings scored on more target images, nothing retrained."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from orchestrator.__main__ import main

ROOT = Path(__file__).resolve().parents[1]

SWEEP = """\
name: rescore
grid:
  model.freeze: [none, paper]
labels:
  model.freeze: {column: Freeze, values: {paper: "✓", none: "✗"}}
domains: [C, AN]
"""

TINY = [
    "data.synthetic.train_images=4",
    "data.synthetic.val_images=2",
    "train.batch_size=2",
    "train.iterations=4",
    "~train.val_every",
    "eval.max_images=2",
]

pytestmark = pytest.mark.slow


def _script(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "scripts/reevaluate.py", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def _val_images(root: Path) -> list[Path]:
    return sorted((root / "cityscapes" / "leftImg8bit" / "val").rglob("*.png"))


def test_reevaluate_reproduces_the_sweep_then_scores_more_images(tmp_path):
    sweep, runs = tmp_path / "rescore.yaml", tmp_path / "runs"
    sweep.write_text(SWEEP)
    missing = _script("--sweep", str(sweep), "--run-dir", str(runs), "--images", "3", *TINY)
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr.strip() == f"reevaluate.py: error: {sweep}: no trained model in {runs}: run the sweep first"

    assert main(["sweep", "run", str(sweep), "--run-dir", str(runs), *TINY]) == 0
    own = pd.read_csv(runs / "rescore" / "results.csv")

    same = _script("--sweep", str(sweep), "--run-dir", str(runs), "--images", "2", *TINY)
    assert same.returncode == 0, same.stderr
    again = pd.read_csv(runs / "rescore" / "reeval-2" / "results.csv")
    pd.testing.assert_frame_equal(again[own.columns], own)  # the same models, images and threads: the same digits
    assert "2 images per target domain" in same.stdout and "| Freeze |" in same.stdout
    assert (runs / "rescore" / "reeval-2" / "report" / "table.tex").is_file()
    title = (runs / "rescore" / "reeval-2" / "report" / "table.md").read_text().splitlines()[0]
    assert title == "# rescore, 2 images per target domain"  # told apart from the sweep's own report

    more = _script("--sweep", str(sweep), "--run-dir", str(runs), "--images", "5", *TINY)
    assert more.returncode == 0, more.stderr
    (bench,) = [p for p in (runs / "data").iterdir() if not p.name.endswith("-val5")]
    wider = bench.parent / f"{bench.name}-val5"
    first, extra = _val_images(bench), _val_images(wider)
    assert len(first) == 2 and len(extra) == 5
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in extra[:2]]  # the sweep's own images come first
    assert len(pd.read_csv(runs / "rescore" / "reeval-5" / "results.csv")) == 2
    pd.testing.assert_frame_equal(pd.read_csv(runs / "rescore" / "results.csv"), own)  # the sweep's results untouched


def test_reevaluate_refuses_a_bad_image_count(tmp_path):
    out = _script("--run-dir", str(tmp_path / "runs"), "--images", "0")
    assert out.returncode == 2 and out.stderr.strip() == "reevaluate.py: error: --images: expected an integer >= 1, got 0"


@pytest.mark.parametrize("args, line", [
    ([], "sweeps/ablation.yaml: no trained model in {runs}: run the sweep first"),
    (["--profile", "paper"], "sweeps/ablation.yaml: data.synthetic is not set: this script re-scores the synthetic benchmark only"),
], ids=["nothing-trained", "paper"])  # fmt: skip
def test_reevaluate_refuses_before_it_draws_any_data(tmp_path, args, line):
    """A run dir with no trained model got its 8 MB synthetic benchmark drawn before the refusal, and
    `--profile paper` a list of missing weights and datasets before the one line that matters."""
    runs = tmp_path / "runs"
    out = _script("--run-dir", str(runs), "--images", "10", *args)
    assert out.returncode == 2 and out.stderr.strip() == "reevaluate.py: error: " + line.format(runs=runs), out.stderr
    assert not runs.exists()
