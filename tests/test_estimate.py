"""``famix sweep plan --estimate``: probes on random inputs, per-stage arithmetic, the Slurm time warning."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.sweep import BUILTIN_PROFILES

ROOT = Path(__file__).resolve().parent.parent

SWEEP = """
name: est
base:
  style: {strategy: none, augment: false, mix: false}
  eval: {domains: [C, AN]}
grid:
  model.freeze: [paper]
labels:
  model.freeze: {column: Freeze}
backend:
  kind: local
  slurm: {time: 1, train: {time: 600}}
"""


def _console():
    import io

    from rich.console import Console

    buf = io.StringIO()
    return Console(file=buf, width=400, force_terminal=False, color_system=None), buf


def test_estimate_arithmetic_and_time_warning(tmp_path, monkeypatch):
    """With fixed probe times, each stage's estimate is units x seconds per unit, and stages over their
    Slurm time are named; the paper profile needs neither its data nor its weights for this."""
    from famix_core import probe
    from orchestrator.driver import prepare
    from orchestrator.estimate import EVAL_SPLITS, SOURCE_IMAGES, print_estimate

    calls = []
    monkeypatch.setattr(probe, "probe_train", lambda cfg, dev, **kw: calls.append(("train", kw)) or 0.5)
    monkeypatch.setattr(probe, "probe_mine", lambda cfg, dev, **kw: calls.append(("mine", kw)) or 2.0)
    monkeypatch.setattr(probe, "probe_evaluate", lambda cfg, dev, **kw: calls.append(("evaluate", kw)) or 0.25)
    plan = prepare(ROOT / "sweeps" / "ablation.yaml", profile="paper", run_dir=tmp_path / "runs",
                   check_data=lambda c: None, check_weights=lambda c: None, check_device=lambda c: None)  # fmt: skip
    console, buf = _console()
    ests = print_estimate(plan, console, device="cpu")
    out = buf.getvalue()
    kinds = [k for k, _ in calls]
    assert kinds.count("mine") == 1 and kinds.count("evaluate") == 1
    assert kinds.count("train") == 6  # freeze {none, paper} x style {none, mixstyle, famix}: the ablation's compute signatures
    train_kw = next(kw for k, kw in calls if k == "train")
    assert train_kw["batch"] == 2 and train_kw["crop"] == 128 and train_kw["warmup"] == 1 and train_kw["iters"] == 1
    scale = (8 * 768 * 768) / (2 * 128 * 128)  # the CPU probe ran reduced: scaled to batch 8, crop 768
    ev_kw = next(kw for k, kw in calls if k == "evaluate")
    per_pixel = 0.25 / (ev_kw["height"] * ev_kw["width"])
    # source validation every 750 iterations and at the last (54 in 40k) on GTA5's 1,000 val images, cropped to 1046x1914
    validations = 54 * 1000 * 1046 * 1914 * per_pixel
    tr = [e for e in ests if e.kind == "train"]
    assert len(tr) == 24 and all(e.seconds == pytest.approx(0.5 * scale * 40000 + validations) for e in tr)
    assert tr[0].what == "40000 iterations + 54 source validations of 1000 images"
    mine = [e for e in ests if e.kind == "mine"]
    groups = -(-(-(-SOURCE_IMAGES["gta5"] // 16)) * 20 // 256)  # batches x (19 classes + ignore) / 256 per group
    assert len(mine) == 3 and mine[0].seconds == pytest.approx(2.0 * (256 / 2) * groups * 100)
    n, h, w = EVAL_SPLITS["cityscapes"]
    ev_c = next(e for e in ests if e.kind == "evaluate" and e.what.startswith("C:"))
    assert ev_c.seconds == pytest.approx(per_pixel * h * w * n)
    assert "no GPU on this machine: these are CPU estimates" in out
    assert re.search(r"train\s+24 stages, each up to [\d.]+ h \(40000 iterations \+ 54 source validations of 1000 images\)", out), out
    total = sum(e.seconds for e in ests) / 3600
    assert f"sweep: {total:.2f} CPU-hours in all" in out
    # the paper's stages are given a GPU: CPU times said they needed 1,560 h of Slurm time (set the time higher)
    assert "warning:" not in out and "over their Slurm time" not in out
    assert all(e.gpus > 0 for e in ests) and out.endswith(f"note: the Slurm time of the {len(ests)} stages given a GPU (backend.resources or backend.slurm) is not compared with these "
                        "CPU times; `famix sweep plan --estimate` on a GPU node compares it\n")  # fmt: skip
    import torch

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "a stand-in GPU")
    monkeypatch.setattr(probe, "probe_train", lambda cfg, dev, **kw: 3.0)  # 40k iterations: 33 h
    print_estimate(plan, console, device="cuda")  # timed on a GPU (the probes are stand-ins here): compared
    assert "warning: 24 train stages need up to" in buf.getvalue() and "over their Slurm time of 1440 min" in buf.getvalue()


def test_mining_epochs_multiply_the_mine_estimate(tmp_path, monkeypatch):
    from famix_core import probe
    from orchestrator.driver import prepare
    from orchestrator.estimate import SOURCE_IMAGES, print_estimate

    monkeypatch.setattr(probe, "probe_train", lambda cfg, dev, **kw: 0.5)
    monkeypatch.setattr(probe, "probe_mine", lambda cfg, dev, **kw: 2.0)
    monkeypatch.setattr(probe, "probe_evaluate", lambda cfg, dev, **kw: 0.25)
    seconds = {}
    for epochs in (1, 3):
        plan = prepare(ROOT / "sweeps" / "ablation.yaml", profile="paper", run_dir=tmp_path / f"runs{epochs}",
                       overrides=[f"mining.epochs={epochs}"], check_data=lambda c: None, check_weights=lambda c: None, check_device=lambda c: None)  # fmt: skip
        mine = [e for e in print_estimate(plan, _console()[0], device="cpu") if e.kind == "mine"]
        batches = 773 * epochs  # GTA5's 12,382 train images in batches of 16, the last incomplete one dropped as mining does
        assert SOURCE_IMAGES["gta5"] == 12382
        assert f"({batches} source batches)" in mine[0].what
        seconds[epochs] = mine[0].seconds
    assert seconds[3] == pytest.approx(3 * seconds[1], rel=0.01)  # whole groups of 256 patches: nearly 3x


def test_a_cheap_reduced_cpu_probe_runs_again_at_the_real_shape(tmp_path, monkeypatch):
    """Scaled up from 2 patches per step, the smoke ablation's mining read 0.11 h on the CPU where it
    takes 20 s (a tiny probe's fixed costs, counted 128 times). A reduced probe whose real-shape units
    would be cheap runs again there, and that time counts; the paper's stay reduced (test above)."""
    from famix_core import probe
    from orchestrator.driver import prepare
    from orchestrator.estimate import print_estimate

    calls = []
    real = {"train": 0.2, "mine": 0.1}  # seconds per unit at the real shape; the reduced ones below
    monkeypatch.setattr(probe, "probe_train", lambda cfg, dev, **kw: calls.append(("train", kw["batch"], kw["crop"])) or (0.1 if kw["batch"] == 2 else real["train"]))
    monkeypatch.setattr(probe, "probe_mine", lambda cfg, dev, **kw: calls.append(("mine", kw["patches"])) or (0.015 if kw["patches"] == 2 else real["mine"]))
    monkeypatch.setattr(probe, "probe_evaluate", lambda cfg, dev, **kw: 0.01)
    plan = prepare(ROOT / "sweeps" / "ablation.yaml", run_dir=tmp_path / "runs", check_data=lambda c: None, check_weights=lambda c: None)
    console, buf = _console()
    ests = print_estimate(plan, console, device="cpu")
    smoke = BUILTIN_PROFILES["smoke"]["base"]
    patches = plan.trials[0].config.mining.patches_per_step
    assert ("mine", 2) in calls and ("mine", patches) in calls and patches > 2
    assert ("train", 2, 128) in calls and ("train", smoke["train"]["batch_size"], smoke["data"]["crop_size"]) in calls
    mine = next(e for e in ests if e.kind == "mine")
    steps = plan.trials[0].config.mining.steps
    assert mine.seconds == pytest.approx(real["mine"] * steps * int(mine.what.split()[1]))  # the real shape's time, per group
    train = next(e for e in ests if e.kind == "train")
    assert train.seconds == pytest.approx(real["train"] * smoke["train"]["iterations"], rel=0.05)  # + source validations
    assert f"probe mine: famix-tiny fp32, {patches} patches per step: 0.1 s/step\n" in buf.getvalue()


@pytest.mark.parametrize("units_s, again", [(0.99, True), (1.01, False)])
def test_the_cpu_re_probe_stops_at_its_threshold(tmp_path, monkeypatch, units_s, again):
    """A reduced probe runs again at the real shape only when its scaled-up warm-up and timed units
    fit within CPU_FULL_PROBE_S: just under it, yes; just over it, the scaled time stands."""
    from famix_core import probe
    from orchestrator import estimate
    from orchestrator.driver import prepare

    calls = []
    plan = prepare(ROOT / "sweeps" / "ablation.yaml", run_dir=tmp_path / "runs", check_data=lambda c: None, check_weights=lambda c: None)
    patches = plan.trials[0].config.mining.patches_per_step
    units = sum(estimate.CPU_COUNTS)
    reduced = units_s * estimate.CPU_FULL_PROBE_S / units / (patches / 2)  # seconds per step at 2 patches
    monkeypatch.setattr(probe, "probe_train", lambda cfg, dev, **kw: 0.1)
    monkeypatch.setattr(probe, "probe_mine", lambda cfg, dev, **kw: calls.append(kw["patches"]) or (reduced if kw["patches"] == 2 else 0.5))
    monkeypatch.setattr(probe, "probe_evaluate", lambda cfg, dev, **kw: 0.01)
    ests = estimate.print_estimate(plan, _console()[0], device="cpu")
    mine = next(e for e in ests if e.kind == "mine")
    assert calls == ([2, patches] if again else [2])
    per_step = 0.5 if again else reduced * patches / 2
    assert mine.seconds == pytest.approx(per_step * plan.trials[0].config.mining.steps * int(mine.what.split()[1]))


def test_plan_estimate_runs_real_probes_and_plain_plan_computes_nothing(tmp_path):
    (tmp_path / "est.yaml").write_text(SWEEP)
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    code = ("import sys; from orchestrator.__main__ import main; rc = main(sys.argv[1:]); "
            "print('TORCH', 'torch' in sys.modules); sys.exit(rc)")  # fmt: skip
    base = [sys.executable, "-c", code, "sweep", "plan", str(tmp_path / "est.yaml"), "--run-dir", str(tmp_path / "runs")]
    plain = subprocess.run(base, capture_output=True, text=True, env=env, timeout=300)
    assert plain.returncode == 0 and "TORCH False" in plain.stdout, plain.stdout + plain.stderr
    est = subprocess.run(base + ["--estimate", "--explain", "train.iterations"], capture_output=True, text=True, env=env, timeout=600)
    out = est.stdout
    assert est.returncode == 0, out + est.stderr
    assert "where each value comes from" in out  # --explain's table, and the estimate too (it was dropped)
    # the smoke training (batch 8, crop 128) is probed at batch 2 and scaled x4; its 128x256 evaluation as it is
    m = re.search(r"probe train: famix-tiny OS16 freeze=paper style=none fp32, batch 2, crop 128: ([\d.e-]+) s/iteration "
                  r"\(reduced from the real shape: x4\) -> ([\d.e-]+) s/iteration", out)  # fmt: skip
    assert m and float(m.group(2)) == pytest.approx(4 * float(m.group(1)), rel=0.01), out
    # cheap at the real shape on the CPU: probed there again, and that time counts
    assert re.search(r"probe train: famix-tiny OS16 freeze=paper style=none fp32, batch 8, crop 128: [\d.e-]+ s/iteration\n", out), out
    # probed once, at the first size asked for: the smoke training's source validation (128x256 cropped to 120x240)
    ev = re.search(r"probe evaluate: famix-tiny fp32, 120x240, scales \[1.0\]: ([\d.e-]+) s/image", out)
    assert ev and float(ev.group(1)) > 0 and out.count("probe evaluate") == 1, out
    its = BUILTIN_PROFILES["smoke"]["base"]["train"]["iterations"]
    checks = -(-its // BUILTIN_PROFILES["smoke"]["base"]["train"]["val_every"])
    assert re.search(rf"train\s+1 stage, each up to [\d.]+ (min|h) \({its} iterations \+ {checks} source validations of 8 images\)", out), out
    assert re.search(r"evaluate\s+2 stages", out) and "still to run (on cpu)" in out
    assert "warning: 2 evaluate stages" not in out  # 8 tiny images fit in 1 minute


def test_paper_training_probe_needs_no_data(tmp_path):
    """The real training probe of a paper stage (source validation every 750 iterations on the GTA5 val
    split, best-on-source-val selection) runs where no dataset exists: a probe times steps only."""
    import torch

    from famix_core import probe
    from famix_core.config import FamixConfig
    from orchestrator.driver import prepare

    plan = prepare(ROOT / "sweeps" / "ablation.yaml", profile="paper", run_dir=tmp_path / "runs",
                   overrides=[f"data.root={tmp_path / 'no-data'}"], check_data=lambda c: None, check_weights=lambda c: None, check_device=lambda c: None)  # fmt: skip
    cfg = FamixConfig.model_validate(next(st.config for st in plan.stages.values() if st.kind == "train"))
    assert cfg.train.val_every is not None and not (tmp_path / "no-data").exists()  # what used to stop the probe
    seconds = probe.probe_train(cfg, torch.device("cpu"), batch=2, crop=64, warmup=0, iters=1)
    assert seconds > 0
