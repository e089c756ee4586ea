"""A contact sheet of the benchmark: one row per domain, images beside their colourized labels."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

from famix_core.classes import PALETTE
from famix_core.data.synth.appearance import render
from famix_core.data.synth.benchmark import scene_ids
from famix_core.data.synth.scene import make_scene
from famix_core.domains import DOMAINS

if TYPE_CHECKING:
    from famix_core.config import SynthConfig

__all__ = ["contact_sheet"]


def _colorize(train_ids: np.ndarray) -> np.ndarray:
    lut = np.zeros((256, 3), np.uint8)
    lut[: len(PALETTE)] = np.asarray(PALETTE, np.uint8)
    return lut[train_ids]


def contact_sheet(cfg: "SynthConfig", n_scenes: int = 2) -> Image.Image:
    """One row per domain: (image, colourized labels) of the first val scenes, rendered in that domain.

    Args:
        cfg: benchmark settings.
        n_scenes: scenes per row.

    Returns:
        an RGB PIL image.
    """
    ids = list(scene_ids(cfg)["val"])[:n_scenes]
    scenes = [make_scene(cfg.seed, k, cfg.height, cfg.width) for k in ids]
    h, w = cfg.height, cfg.width
    pad, label_w = 4, 110
    rows = list(DOMAINS)
    sheet = Image.new("RGB", (label_w + len(ids) * 2 * (w + pad), len(rows) * (h + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, domain in enumerate(rows):
        y = pad + r * (h + pad)
        col = DOMAINS[domain].column
        draw.text((4, y + h // 2 - 6), f"{domain}" + (f" ({col})" if col else " (source)"), fill=(0, 0, 0))
        for j, (k, scene) in enumerate(zip(ids, scenes)):
            x = label_w + j * 2 * (w + pad)
            sheet.paste(Image.fromarray(render(scene, domain, cfg.seed, k)), (x, y))
            sheet.paste(Image.fromarray(_colorize(scene.labels)), (x + w + pad, y))
    return sheet
