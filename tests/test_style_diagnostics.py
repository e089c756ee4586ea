"""Bank diagnostics: style rows, move agreement, coverage of a target, and the script that prints them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from famix_core.styles.diagnostics import layer1_style_rows, move_agreement, style_coverage, style_rows
from famix_core.styles.ops import patch_stats

ROOT = Path(__file__).resolve().parents[1]


def test_style_rows_puts_each_patch_in_one_row():
    mu = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    sigma = mu + 100
    rows = style_rows(mu, sigma)
    assert rows.shape == (8, 6)
    # sample 1, patch (0, 1) is row 1 * 4 + 0 * 2 + 1
    assert torch.equal(rows[5], torch.cat([mu[1, :, 0, 1], sigma[1, :, 0, 1]]))
    bank = style_rows(torch.zeros(4, 3), torch.ones(4, 3))  # bank tensors pass through
    assert bank.shape == (4, 6) and torch.equal(bank[:, 3:], torch.ones(4, 3))


def test_layer1_style_rows_cuts_tiles_like_training_crops():
    g = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 6, 12, generator=g)
    rows = layer1_style_rows(lambda x: x * 2, images, grid=3, eps=1e-5, tile=6)
    assert rows.shape == (2 * 2 * 9, 6)
    mu, sigma = patch_stats(images[..., 6:] * 2, 3, 1e-5)  # the second tile's patches come after the first's
    assert torch.allclose(rows[18:], style_rows(mu, sigma))
    assert layer1_style_rows(lambda x: x, images, grid=3, eps=1e-5).shape == (2 * 9, 6)


def test_move_agreement_is_the_cosine_of_the_moves():
    start = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    d = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0]])
    other = torch.tensor([[2.0, 0, 0, 0], [0, -3.0, 0, 0], [0, 0, 0, 1.0]])
    cos = move_agreement(start, start + d, start + other)
    assert torch.allclose(cos, torch.tensor([1.0, -1.0, 0.0]), atol=1e-6)
    with pytest.raises(ValueError, match="shapes differ"):
        move_agreement(start, start[:2], start)


def test_style_coverage_sees_a_bank_that_reaches_the_target_and_one_that_does_not():
    g = torch.Generator().manual_seed(2)
    source = torch.randn(300, 4, generator=g)
    shift = torch.tensor([8.0, 0, 0, 0])
    target = torch.randn(100, 4, generator=g) + shift
    toward = style_coverage(source, target.clone(), target)  # the bank holds the target's own statistics
    assert toward.nearer_bank == 1.0 and toward.to_bank == 0.0
    assert toward.cos == pytest.approx(1.0, abs=1e-5)
    assert toward.target_shift == pytest.approx(toward.bank_shift, rel=1e-5)
    away = style_coverage(source, source - shift, target)
    assert away.nearer_bank == 0.0
    assert away.cos < -0.9
    assert away.to_bank > away.to_source


def test_diagnose_styles_script_prints_both_tables(tmp_path):
    """The script on a tiny benchmark and a 2-step mining: every prompt type and every domain appear."""
    cmd = [
        sys.executable, "scripts/diagnose_styles.py", "--run-dir", str(tmp_path / "runs"), "--words", "at night",
        "mining.steps=2", "mining.max_batches=2", "data.synthetic.train_images=4", "data.synthetic.val_images=2",
        "eval.max_images=2",
    ]  # fmt: skip
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    for prompt in ("| class |", "| chars |", "| style |", "| chars_class |", "| style_class |", '| "at night <class>" |'):
        assert prompt in text, text
    for col in ("C", "B", "M", "S", "AN", "AS", "AR", "AF"):
        assert f"| {col} |" in text, text
    assert not (tmp_path / "runs" / "store").exists()  # it reads the store, never writes one


def test_diagnose_styles_script_names_a_bad_override(tmp_path):
    cmd = [sys.executable, "scripts/diagnose_styles.py", "--run-dir", str(tmp_path / "runs"), "mining.stepz=2"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert "mining.stepz" in out.stderr and "Traceback" not in out.stderr


def test_diagnose_styles_script_refuses_a_seed_without_a_bank_before_it_draws_any_data(tmp_path):
    """It drew the synthetic benchmark first, and did not say which seeds have a bank."""
    runs = tmp_path / "runs"
    cmd = [sys.executable, "scripts/diagnose_styles.py", "--run-dir", str(runs), "--seed", "99", "--skip-prompts"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and out.stderr.strip() == "diagnose_styles.py: error: sweeps/ablation.yaml: no trial of seed 99 mines a style bank (seeds with one: 0)"
    assert not runs.exists()
