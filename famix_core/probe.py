"""Short timing probes of each stage kind on random inputs of the stage's real shapes.

Used by ``famix sweep plan --estimate``: no dataset and no weights are read (random init,
random images and labels, a random style bank); only the compute is timed. Each probe runs
``warmup`` untimed then ``iters`` timed units on ``device`` (synchronizing CUDA around them):

  * train: one training iteration (the real :class:`famix_core.train.Trainer` step: loader of
    in-memory tensors, forward with the style op, loss, backward, SGD) -> seconds per iteration;
  * mine: one optimization step of a group of patches (:func:`famix_core.mining.optimize_styles`)
    -> seconds per step for the group;
  * evaluate: one image through :func:`famix_core.evaluate.predict` with every test-time scale
    -> seconds per image.

On the CPU the caller may pass reduced shapes and scale the result (work grows linearly with
batch, pixels and patches at these sizes); :class:`Probe` records what was run.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch

if TYPE_CHECKING:
    from famix_core.config import FamixConfig

__all__ = ["Probe", "RandomPairs", "random_trainer", "time_units", "probe_train", "random_mining_problem", "probe_mine", "probe_evaluate"]


@dataclass
class Probe:
    """One probe: what ran and how long a unit took.

    Attributes:
        kind: ``train`` | ``mine`` | ``evaluate``.
        seconds: seconds per unit at the shape that ran.
        shape: human-readable shape that ran (e.g. ``batch 2, crop 256``).
        scale: factor from that shape to the stage's real one (1.0 when it ran at full shape).
    """

    kind: str
    seconds: float
    shape: str
    scale: float = 1.0

    @property
    def full_seconds(self) -> float:
        """Seconds per unit at the stage's real shape (``seconds * scale``)."""
        return self.seconds * self.scale


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_units(run: Callable[[], object], device: torch.device, warmup: int, iters: int) -> float:
    """Mean seconds of ``run()`` over ``iters`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        run()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        run()
    _sync(device)
    return (time.perf_counter() - t0) / max(iters, 1)


class RandomPairs(torch.utils.data.Dataset):
    """``n`` random (image (3, S, S), label (S, S)) pairs held in memory."""

    def __init__(self, n: int, size: int, num_classes: int):
        g = torch.Generator().manual_seed(0)
        self.images = torch.randn(n, 3, size, size, generator=g)
        self.labels = torch.randint(0, num_classes, (n, size, size), generator=g)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], self.labels[i]


def _layer1_channels(backbone: str) -> int:
    from famix_core.models.clip import create_visual, stage_channels

    return stage_channels(create_visual(backbone))["layer1"]


def random_trainer(cfg: "FamixConfig", device: torch.device, *, batch: int, crop: int, iterations: int, folder: str):
    """A :class:`famix_core.train.Trainer` of ``cfg`` on random weights, images, labels and style bank.

    Args:
        cfg: the engine config (model, style, train precision and memory format are kept).
        device: where it trains.
        batch, crop: the batch size and crop side.
        iterations: ``train.iterations`` (the poly schedule's length); logging happens only at the end.
        folder: scratch folder (the random bank is written there).
    """
    from famix_core.config import FamixConfig
    from famix_core.styles.bank import StyleBank
    from famix_core.train import Trainer

    tree = cfg.to_dict()
    tree["model"]["pretrained"] = "none"
    tree["data"].update({"crop_size": crop, "num_workers": 0})
    # No source validation: it would need the real source's val split, and a probe times steps only.
    tree["train"].update({"batch_size": batch, "iterations": iterations, "log_every": iterations,
                          "checkpoint_every": 10**9, "device": str(device), "val_every": None, "select": "last"})  # fmt: skip
    c = FamixConfig.model_validate(tree)
    k = c.model.num_classes
    bank_dir = None
    if c.style.needs_bank():
        ch = _layer1_channels(c.model.backbone)
        g = torch.Generator().manual_seed(0)
        cls = torch.cat([torch.arange(k), torch.tensor([255])]).repeat(2)
        StyleBank(torch.randn(len(cls), ch, generator=g), torch.rand(len(cls), ch, generator=g) + 0.5, cls).save(folder)
        bank_dir = folder
    return Trainer(c, folder, bank_dir=bank_dir, dataset=RandomPairs(2 * batch, crop, k), device=device)


def probe_train(cfg: "FamixConfig", device: torch.device, *, batch: int, crop: int, warmup: int, iters: int) -> float:
    """Seconds per training iteration of ``cfg`` at ``batch`` x ``crop``² (random weights, data and bank)."""
    with tempfile.TemporaryDirectory() as tmp:
        t = random_trainer(cfg, device, batch=batch, crop=crop, iterations=warmup + iters, folder=tmp)
        return time_units(t.step, device, warmup, iters)


def random_mining_problem(cfg: "FamixConfig", device: torch.device, patches: int) -> dict:
    """Keyword arguments of :func:`famix_core.mining.optimize_styles` for ``patches`` random patches.

    Patch side, channels and embedding width follow ``cfg`` (mining crop, grid, backbone); the CLIP
    image encoder has random weights. Returns ``visual, norm, mu0, sigma0, target, pool`` and the
    SGD settings of ``cfg.mining`` (``steps`` is left to the caller).
    """
    import math

    from famix_core.mining import clip_image_size
    from famix_core.models.clip import create_visual

    mc = cfg.mining
    visual = create_visual(cfg.model.backbone, device=device).requires_grad_(False).eval()
    ch = _layer1_channels(cfg.model.backbone)
    side = math.ceil(mc.crop_size / 4 / cfg.style.grid)  # a patch of the layer-1 map of a mining crop
    g = torch.Generator().manual_seed(0)
    dim = visual.attnpool.c_proj.out_features
    return {
        "visual": visual,
        "norm": torch.randn(patches, ch, side, side, generator=g).to(device),
        "mu0": torch.randn(patches, ch, generator=g).to(device),
        "sigma0": (torch.rand(patches, ch, generator=g) + 0.5).to(device),
        "target": torch.nn.functional.normalize(torch.randn(patches, dim, generator=g), dim=-1).to(device),
        "pool": clip_image_size(visual) // 4,
        "lr": mc.lr,
        "momentum": mc.momentum,
        "weight_decay": mc.weight_decay,
    }


def probe_mine(cfg: "FamixConfig", device: torch.device, *, patches: int, warmup: int, iters: int) -> float:
    """Seconds per optimization step of a group of ``patches`` patches (mining crop, grid, precision of ``cfg``)."""
    from famix_core.device import autocast
    from famix_core.mining import optimize_styles

    problem = random_mining_problem(cfg, device, patches)

    def run(steps: int) -> None:
        with autocast(device, cfg.mining.precision):
            optimize_styles(steps=steps, **problem)

    run(warmup)
    _sync(device)
    t0 = time.perf_counter()
    run(iters)
    _sync(device)
    return (time.perf_counter() - t0) / iters


def probe_evaluate(cfg: "FamixConfig", device: torch.device, *, height: int, width: int, warmup: int, iters: int) -> float:
    """Seconds per ``height`` x ``width`` image with every scale of ``cfg.eval.scales`` (random weights)."""
    from famix_core.device import autocast
    from famix_core.evaluate import check_scales, predict
    from famix_core.models.segmenter import build_segmenter

    check_scales(cfg.eval.scales, (height, width))  # as the evaluation will: one line, not a pooling layer's error
    mcfg = cfg.model.model_copy(update={"pretrained": "none", "freeze": "none"})
    model = build_segmenter(mcfg, device=device).eval()
    fmt = torch.channels_last if (cfg.train.channels_last and device.type == "cuda") else torch.contiguous_format
    model = model.to(memory_format=fmt)
    image = torch.randn(1, 3, height, width, device=device).contiguous(memory_format=fmt)

    def run() -> None:
        with torch.inference_mode(), autocast(device, cfg.eval.precision):
            predict(model, image, (height, width), cfg.eval.scales)

    return time_units(run, device, warmup, iters)
