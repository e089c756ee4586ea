"""reports.qualitative: palette/denormalization numerics, config from MLflow params, the grid end to end."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from famix_core.classes import PALETTE
from famix_core.config import FamixConfig
from famix_core.errors import WeightsError
from reports.qualitative import colorize, config_from_params, denormalize, weights_path


def _tiny_cfg(root: Path) -> FamixConfig:
    return FamixConfig.model_validate(
        {
            "model": {"backbone": "famix-tiny", "pretrained": "none", "freeze": "none"},
            "data": {"root": str(root), "synthetic": {"height": 64, "width": 128, "train_images": 1, "val_images": 1}},
            "train": {"device": "cpu"},
            "eval": {"domains": ["C", "AN"]},
        }
    )


def test_colorize_uses_cityscapes_palette_and_black_ignore():
    label = np.array([[0, 13], [255, 18]])
    rgb = colorize(label)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == PALETTE[0] == (128, 64, 128)
    assert tuple(rgb[0, 1]) == PALETTE[13] and tuple(rgb[1, 1]) == PALETTE[18]
    assert tuple(rgb[1, 0]) == (0, 0, 0)


def test_denormalize_inverts_clip_normalization():
    from famix_core.data.transforms import CLIP_MEAN, CLIP_STD

    rgb = np.random.default_rng(0).integers(0, 256, size=(4, 5, 3)).astype(np.uint8)
    norm = (rgb.transpose(2, 0, 1) / 255.0 - np.array(CLIP_MEAN)[:, None, None]) / np.array(CLIP_STD)[:, None, None]
    assert np.array_equal(denormalize(norm.astype(np.float32)), rgb)


def test_config_round_trips_through_mlflow_param_strings(tmp_path):
    cfg = _tiny_cfg(tmp_path / "data")
    params = {k: str(v) for k, v in cfg.flat().items()}  # what MLflow stores
    back = config_from_params(params)
    assert back.to_dict() == cfg.to_dict()


def test_weights_path_errors_name_the_trial(tmp_path):
    with pytest.raises(WeightsError, match="trial t-1: no famix.stage.train"):
        weights_path(tmp_path, None, "t-1")
    with pytest.raises(WeightsError, match="t-2: trained weights not found at .*store/train/abc/model.safetensors"):
        weights_path(tmp_path, "abc", "t-2")


def _save_tiny_weights(cfg: FamixConfig, dest: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from famix_core.models.segmenter import build_segmenter

    torch.manual_seed(0)
    model = build_segmenter(cfg.model)
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(dest))


def test_render_qualitative_with_tiny_model(tmp_path):
    from PIL import Image

    from reports.qualitative import render_qualitative

    cfg = _tiny_cfg(tmp_path / "data")
    weights = tmp_path / "w" / "model.safetensors"
    _save_tiny_weights(cfg, weights)
    paths = render_qualitative(cfg, weights, ["C", "AN"], tmp_path / "out", title="tiny")
    assert [p.name for p in paths] == ["qualitative.png", "qualitative.pdf"]
    img = np.asarray(Image.open(paths[0]).convert("RGB"))
    assert img.shape[0] > 100 and img.shape[1] > 300
    # the ground-truth panels carry Cityscapes palette colours
    colours = {tuple(c) for c in img.reshape(-1, 3)[::7]}
    assert len(colours & set(PALETTE)) >= 2
    # a legend names the 19 class colours (and ignore): every palette colour appears as a swatch
    every = {tuple(c) for c in img.reshape(-1, 3)}
    assert set(PALETTE) <= every
    if shutil.which("pdftotext"):
        words = " ".join(subprocess.run(["pdftotext", str(paths[1]), "-"], capture_output=True, text=True).stdout.split())
        assert all(name in words for name in ("road", "traffic sign", "motorcycle", "bicycle", "ignore"))


def test_image_panels_have_no_frame_and_keep_their_domain_label(tmp_path, monkeypatch):
    """Every panel had an L-shaped black frame (the figures' left and bottom axis lines) round its image."""
    from reports.qualitative import render_qualitative
    from tests.test_reports_figures import _drawn

    cfg = _tiny_cfg(tmp_path / "data")
    weights = tmp_path / "w" / "model.safetensors"
    _save_tiny_weights(cfg, weights)
    drawn = _drawn(monkeypatch)
    render_qualitative(cfg, weights, ["C", "AN"], tmp_path / "out", title="tiny", width="column")
    panels = [ax for ax in drawn[0].axes if ax.images]
    assert len(panels) == 6
    assert not [name for ax in panels for name, spine in ax.spines.items() if spine.get_visible()]
    assert [ax.get_ylabel() for ax in panels if ax.get_ylabel()] == ["C", "AN"]


def test_the_qualitative_figure_takes_the_figure_width_and_stays_within_a_text_block(tmp_path):
    """--figure-width column drew it page-wide all the same; eight domains at page width made it
    9.6 in tall, past a paper's text block (8.875 in)."""
    from PIL import Image

    from reports.qualitative import MAX_HEIGHT_IN, render_qualitative

    cfg = _tiny_cfg(tmp_path / "data")
    weights = tmp_path / "w" / "model.safetensors"
    _save_tiny_weights(cfg, weights)

    def size_in(png):  # saved at 200 dpi
        w, h = Image.open(png).size
        return w / 200.0, h / 200.0

    png, _ = render_qualitative(cfg, weights, ["C", "AN"], tmp_path / "col", title="tiny", width="column")
    assert size_in(png)[0] == pytest.approx(3.25, abs=0.01)
    png, _ = render_qualitative(cfg, weights, ["C", "AN"] * 5, tmp_path / "tall", title="tiny", width="page")
    w, h = size_in(png)
    assert w == pytest.approx(6.875, abs=0.01) and 0.9 * MAX_HEIGHT_IN <= h <= MAX_HEIGHT_IN + 0.01


def test_cli_qualitative_from_mlflow_trial(tmp_path, capsys):
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    from orchestrator.__main__ import main
    from reports.collect import default_tracking_uri

    run_dir = tmp_path / "runs"
    cfg = _tiny_cfg(tmp_path / "data")
    _save_tiny_weights(cfg, run_dir / "store" / "train" / "k123" / "model.safetensors")
    client = MlflowClient(tracking_uri=default_tracking_uri(run_dir))
    exp = client.create_experiment("q", artifact_location=(run_dir / "mlartifacts").as_uri())
    tags = {
        "famix.sweep": "q",
        "famix.role": "trial",
        "famix.trial": "t-q",
        "famix.trial_index": "0",
        "famix.seed": "0",
        "famix.labels": json.dumps({"Mix": "✓"}),
        "famix.domains": json.dumps(["C", "AN"]),
        "famix.status": "done",
        "famix.stage.train": "k123",
    }
    run = client.create_run(exp, tags=tags).info.run_id
    now = int(time.time() * 1000)
    client.log_batch(
        run,
        metrics=[Metric("miou/C", 12.5, now, 0), Metric("miou/AN", 7.25, now, 0)],
        params=[Param(k, str(v)) for k, v in cfg.flat().items()],
    )
    rc = main(["report", "q", "--run-dir", str(run_dir), "--out", "rep", "--qualitative", "t-q"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert Path("rep/qualitative.png").is_file() and Path("rep/qualitative.pdf").is_file()
    assert "![qualitative](qualitative.png)" in Path("rep/README.md").read_text()
    assert "| ✓ | 12.50 | 7.25 | 9.88 |" in captured.out
    rc = main(["report", "q", "--run-dir", str(run_dir), "--out", "rep", "--qualitative", "t-none"])
    err = capsys.readouterr().err
    assert rc == 2 and "--qualitative t-none: no such trial" in err
    rc = main(["report", "q", "--run-dir", str(run_dir), "--out", "rep", "--qualitative", "9"])
    err = capsys.readouterr().err  # a row number out of range names the rows there are
    assert rc == 2 and "--qualitative 9: no such trial or row (rows: 1..1; trials: t-q)" in err, err


def test_device_checked_before_any_work_in_one_line(capsys):
    """`--device gpu` ended in torch's `RuntimeError: Expected one of cpu, cuda, …` traceback, and a GPU
    this machine lacks (`cuda:5` without a driver) in a 41-line `Found no NVIDIA driver` one, after the
    runs were read. Now `pick_device` checks it first, and the line names `--device`."""
    import torch

    from orchestrator.__main__ import main

    def error(device: str) -> str:
        rc = main(["report", "q", "--run-dir", "runs", "--out", "rep", "--qualitative", "t-q", "--device", device])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
        return err

    assert error("gpu") == "famix: error: --device: unknown device 'gpu' (expected auto, cpu, cuda or cuda:N)"
    err = error("cuda:99")
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        assert err.startswith(f"famix: error: --device cuda:99: this machine has {n} CUDA device") and "use --device auto, cpu or cuda:0" in err
    else:
        assert err == "famix: error: --device cuda:99: CUDA is not available on this machine; use --device auto or cpu"
        assert error("cuda") == "famix: error: --device cuda: CUDA is not available on this machine; use --device auto or cpu"
    assert not Path("rep").exists() and not Path("runs").exists()  # nothing read, nothing made

    from reports.cli import report_device

    assert report_device("CPU") == "cpu"
    if not torch.cuda.is_available():  # auto runs on the CPU, saying so with the flag's name
        with pytest.warns(UserWarning, match=r"^--device auto: no CUDA device visible; running on the CPU$"):
            assert report_device("auto") == "cpu"
