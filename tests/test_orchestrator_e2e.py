"""End to end with the real engine on the tiny synthetic benchmark: local vs Ray, kill -9 and resume, failures.

A 2-trial sweep (plain training, and FAMix augmentation with a mined bank), 2 domains, a few iterations.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from orchestrator.__main__ import main
from orchestrator.tracking import Tracker, default_uri

SWEEP = """\
name: e2e
base:
  style: {strategy: famix, mix: false}
grid:
  style.augment: [false, true]
labels:
  style.augment: {column: Augment, values: {true: "✓", false: "✗"}}
domains: [C, AN]
"""

TINY = [
    "data.synthetic.train_images=8",
    "data.synthetic.val_images=2",
    "train.batch_size=2",
    "train.iterations=12",
    "train.checkpoint_every=2",
    "train.log_every=1",
    "mining.steps=2",
    "mining.batch_size=2",
    "mining.max_batches=1",
    "eval.max_images=2",
]

pytestmark = pytest.mark.slow


def _sweep_file(folder: Path, text: str = SWEEP) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / "e2e.yaml"
    p.write_text(text)
    return p


def _eval_results(run_dir: Path) -> dict[str, float]:
    out = {}
    for done in (run_dir / "store" / "evaluate").glob("*/DONE.json"):
        out[done.parent.name] = json.loads(done.read_text())["result"]["miou"]
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted local run."""
    root = tmp_path_factory.mktemp("ref")
    sweep = _sweep_file(root)
    rc = main(["sweep", "run", str(sweep), "--run-dir", str(root / "runs"), "--backend", "local", *TINY])
    assert rc == 0
    return root / "runs"


def test_local_run_writes_results_and_a_rerun_does_nothing(reference, capsys, tmp_path):
    results = _eval_results(reference)
    assert len(results) == 4 and all(0.0 <= v <= 1.0 for v in results.values())
    df = pd.read_csv(reference / "e2e" / "results.csv")
    assert list(df.columns) == ["Augment", "seed", "status", "trial", "C", "AN"] and list(df["status"]) == ["done", "done"]
    assert (reference / "store" / "mine").is_dir() and len(list((reference / "store" / "mine").iterdir())) == 1
    assert not list(reference.glob("work/train/*"))  # checkpoints are removed once the model is in the store
    mtimes = {p: p.stat().st_mtime for p in reference.glob("store/*/*/DONE.json")}
    rc = main(["sweep", "run", str(reference.parent / "e2e.yaml"), "--run-dir", str(reference), "--backend", "local", *TINY])
    out = capsys.readouterr().out
    assert rc == 0 and "7 stages, all done; MLflow complete" in out
    assert {p: p.stat().st_mtime for p in reference.glob("store/*/*/DONE.json")} == mtimes
    tr = Tracker(default_uri(reference), "e2e")
    assert len(tr.find({"famix.sweep": "e2e", "famix.role": "trial"})) == 2
    assert len(tr.find({"famix.sweep": "e2e", "famix.role": "sweep"})) == 1
    run = tr.find({"famix.sweep": "e2e", "famix.role": "trial", "famix.trial_index": "1"})[0]
    assert run.data.metrics["miou/C"] == pytest.approx(100 * results[run.data.tags["famix.stage.evaluate.C"]])
    # what the training cost, beside its numbers (it was only in the store's summary.json)
    trained = json.loads((reference / "store" / "train" / run.data.tags["famix.stage.train"] / "DONE.json").read_text())["result"]
    assert trained["seconds"] > 0 and trained["images_per_s"] > 0
    assert {k: run.data.metrics[k] for k in ("train/seconds", "train/images_per_s")} == pytest.approx(
        {"train/seconds": trained["seconds"], "train/images_per_s": trained["images_per_s"]})  # fmt: skip
    assert {a.path for a in tr.client.list_artifacts(run.info.run_id)} >= {"config.yaml", "styles", "confusion"}
    # the confusion matrix in MLflow names its rows and columns
    confusion = json.loads(Path(tr.client.download_artifacts(run.info.run_id, "confusion/C.json", str(tmp_path))).read_text())
    assert confusion["classes"][0] == "road" and len(confusion["matrix"]) == len(confusion["classes"]) == 19


@pytest.mark.ray
def test_ray_gives_the_same_numbers(reference, tmp_path):
    sweep = _sweep_file(tmp_path)
    rc = main(["sweep", "run", str(sweep), "--run-dir", str(tmp_path / "runs"), "--backend", "ray", "--max-parallel", "2", *TINY])
    assert rc == 0
    assert _eval_results(tmp_path / "runs") == _eval_results(reference)
    import ray

    assert not ray.is_initialized()


def test_kill_9_then_rerun_finishes_only_what_is_missing(reference, tmp_path):
    sweep = _sweep_file(tmp_path)
    run_dir = tmp_path / "runs"
    cmd = [sys.executable, "-m", "orchestrator", "sweep", "run", str(sweep), "--run-dir", str(run_dir), "--backend", "local", *TINY]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 400
        # kill while a training has committed a checkpoint (latest.json is written last) but is not
        # finished; the mine stage is done by then. Any file under work/ could be a half-written one.
        committed = None
        while time.time() < deadline and proc.poll() is None:
            if committed := next(run_dir.glob("work/train/*/latest.json"), None):
                break
            time.sleep(0.1)
        assert proc.poll() is None and committed is not None, "the sweep finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    done_before = {p: p.stat().st_mtime for p in run_dir.glob("store/*/*/DONE.json")}
    assert any("mine" in str(p) for p in done_before)
    assert not _eval_results(run_dir) or len(_eval_results(run_dir)) < 4
    killed_train = committed.parent.name
    assert not (run_dir / "store" / "train" / killed_train / "DONE.json").exists(), "the training finished before the kill landed"
    rc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert rc.returncode == 0, rc.stderr[-2000:]
    # no finished stage ran twice
    for p, m in done_before.items():
        assert p.stat().st_mtime == m
    for log in (run_dir / "e2e" / "logs").glob("mine-*.log"):
        assert log.read_text().count("start mine") == 1
    # the killed training resumed from its checkpoint (its first logged step after the restart is past step 1)
    log = (run_dir / "e2e" / "logs" / f"train-{killed_train}.log").read_text()
    assert log.count("start train") == 2
    second = log.split("start train")[2]
    first_step = int(second.split("step=")[1].split()[0])
    assert first_step > 1, second[:500]
    # no duplicate MLflow runs, same numbers as the uninterrupted sweep
    tr = Tracker(default_uri(run_dir), "e2e")
    trials = tr.find({"famix.sweep": "e2e", "famix.role": "trial"})
    assert len(trials) == 2 and len({r.data.tags["famix.trial"] for r in trials}) == 2
    assert len(tr.find({"famix.sweep": "e2e", "famix.role": "sweep"})) == 1
    assert _eval_results(run_dir) == _eval_results(reference)
    assert all(r.data.tags["famix.status"] == "done" for r in trials)


def test_failures_are_isolated_reported_and_not_retried_when_deterministic(tmp_path, capsys):
    from famix_core.errors import DataError
    from orchestrator.driver import RunOptions, prepare, run_plan
    from rich.console import Console

    text = SWEEP.replace("grid:\n  style.augment: [false, true]", "grid:\n  style.augment: [false]\n  train.lr_decoder: [0.01, 1.0e+30]")
    text = text.replace("labels:\n  style.augment: {column: Augment, values: {true: \"✓\", false: \"✗\"}}\n", "")
    sweep = _sweep_file(tmp_path, text)
    plan = prepare(sweep, run_dir=tmp_path / "runs", overrides=TINY)
    # the AN data disappears after planning: that evaluation fails (a real DataError), the rest goes on
    an_root = Path(plan.trials[0].config.data.root_of("AN"))
    import shutil

    shutil.rmtree(an_root)
    import io

    buf = io.StringIO()
    result = run_plan(plan, RunOptions(backend="local", retries=2), Console(file=buf, width=300))
    out = buf.getvalue()
    assert result.exit_code == 1
    outcomes = result.outcomes
    by_name = {plan.stages[k].kind + "/" + str(plan.stages[k].domain) + "/" + str(plan.stages[k].config["train"]["lr_decoder"]): o for k, o in outcomes.items()}
    assert by_name["train/None/0.01"].status == "done"
    nan = by_name["train/None/1e+30"]
    assert nan.status == "failed" and nan.attempts == 1 and "TrainingDiverged" in nan.error
    assert by_name["evaluate/C/0.01"].status == "done"
    an = by_name["evaluate/AN/0.01"]
    assert an.status == "failed" and DataError.__name__ in an.error and an.attempts == 1
    assert by_name["evaluate/C/1e+30"].error.startswith("dependency")
    assert "FAILED  train" in out and "FAILED  evaluate/AN" in out and "stages failed:" in out
    assert out.index("FAILED  train") < out.index("stages failed:")  # shown when it happened, and in the summary
    df = pd.read_csv(plan.sweep_dir / "results.csv")
    assert df.loc[0, "C"] > 0 and pd.isna(df.loc[0, "AN"]) and df.loc[1, ["C", "AN"]].isna().all()
    assert list(df["status"]) == ["failed", "failed"]
