"""Label encodings: the raw label array each dataset's files store for a scene."""

from __future__ import annotations

import numpy as np
from PIL import Image

from famix_core.classes import IGNORE_INDEX, PALETTE
from famix_core.data.layouts import LAYOUTS
from famix_core.data.mappings import MAPPINGS, VISTAS_V12_CLASSES
from famix_core.data.synth.scene import Scene

__all__ = ["encode_label", "palette_image"]

_VISTAS_NAMES = (
    "construction--flat--road", "construction--flat--sidewalk", "construction--structure--building",
    "construction--barrier--wall", "construction--barrier--fence", "object--support--pole", "object--traffic-light",
    "object--traffic-sign--front", "nature--vegetation", "nature--terrain", "nature--sky", "human--person",
    "human--rider--bicyclist", "object--vehicle--car", "object--vehicle--truck", "object--vehicle--bus",
    "object--vehicle--on-rails", "object--vehicle--motorcycle", "object--vehicle--bicycle",
)  # fmt: skip


def _encoder(mapping: str) -> np.ndarray:
    """(256,) train id (255 = void) -> raw value of a mapping."""
    enc = np.zeros(256, np.int64)
    if mapping == "vistas_v12":
        table = {t: VISTAS_V12_CLASSES.index(n) for t, n in enumerate(_VISTAS_NAMES)}
        void = VISTAS_V12_CLASSES.index("object--trash-can")
    else:
        table = MAPPINGS[mapping].encode_table()
        void = {"cityscapes_ids": 4, "train_ids": IGNORE_INDEX, "synthia": 0}[mapping]  # static / ignore / void
    enc[:] = void
    for tid, raw in table.items():
        enc[tid] = raw
    return enc


def encode_label(scene: Scene, domain: str) -> np.ndarray:
    """The raw label array a domain's dataset stores for a scene.

    Args:
        scene: the scene.
        domain: domain name.

    Returns:
        (H, W) uint8 raw ids, or (H, W, 3) uint16 for SYNTHIA (class id, instance id, 0).
    """
    lay = LAYOUTS[domain]
    raw = _encoder(lay.mapping)[scene.labels]
    if lay.mapping == "vistas_v12":
        raw[scene.markings] = VISTAS_V12_CLASSES.index("marking--general")  # Vistas labels lane markings
    if lay.label_first_channel:
        out = np.zeros((*raw.shape, 3), np.uint16)
        out[..., 0] = raw
        out[..., 1] = scene.instances
        return out
    return raw.astype(np.uint8)


def palette_image(raw: np.ndarray, mapping: str) -> Image.Image:
    """A palette PNG of ids whose colours follow the class palette (like GTA5 / Vistas label files)."""
    im = Image.frombytes("P", raw.shape[::-1], np.ascontiguousarray(raw, np.uint8).tobytes())
    colors = np.zeros((256, 3), np.uint8)
    enc = _encoder(mapping)
    for tid, rgb in enumerate(PALETTE):
        colors[enc[tid]] = rgb
    im.putpalette(colors.reshape(-1).tolist())
    return im
