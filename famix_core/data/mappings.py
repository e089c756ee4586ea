"""Raw label encodings of every dataset -> the 19 Cityscapes train ids (numpy only, no torch).

A :class:`LabelMapping` names the raw values a dataset may contain (its label
space) and the train id of each; everything else becomes 255. Mapping an image
is one gather from a 65536-entry lookup table (8-bit and 16-bit labels alike),
never a Python loop over pixels. Values outside the label space are counted so
that datasets can report them.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

import numpy as np

from famix_core.classes import CITYSCAPES_ID_TO_TRAIN_ID, IGNORE_INDEX, NUM_CLASSES

__all__ = [
    "LabelMapping",
    "LabelTables",
    "MAPPINGS",
    "get_mapping",
    "SYNTHIA_CLASSES",
    "SYNTHIA_ID_TO_TRAIN_ID",
    "VISTAS_V12_CLASSES",
    "VISTAS_NAME_TO_TRAIN_ID",
    "VISTAS_ID_TO_TRAIN_ID",
]

LUT_SIZE = 65536
"""Lookup tables cover every 16-bit value; 8-bit labels index their first 256 entries."""

# SYNTHIA-RAND-CITYSCAPES class ids (GT/LABELS, first channel of the 16-bit PNG).
SYNTHIA_CLASSES: tuple[str, ...] = (
    "void", "sky", "building", "road", "sidewalk", "fence", "vegetation", "pole", "car",
    "traffic sign", "pedestrian", "bicycle", "motorcycle", "parking-slot", "road-work",
    "traffic light", "terrain", "rider", "truck", "bus", "train", "wall", "lanemarking",
)  # fmt: skip

SYNTHIA_ID_TO_TRAIN_ID: Mapping[int, int] = MappingProxyType({
    3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 16: 9,
    1: 10, 10: 11, 17: 12, 8: 13, 18: 14, 19: 15, 20: 16, 12: 17, 11: 18,
})  # fmt: skip
"""The standard SYNTHIA -> Cityscapes-19 mapping (void, parking-slot, road-work, lanemarking -> 255)."""

# Mapillary Vistas v1.2: the 66 classes in label-id order (config.json of the release).
VISTAS_V12_CLASSES: tuple[str, ...] = (
    "animal--bird", "animal--ground-animal", "construction--barrier--curb", "construction--barrier--fence",
    "construction--barrier--guard-rail", "construction--barrier--other-barrier", "construction--barrier--wall",
    "construction--flat--bike-lane", "construction--flat--crosswalk-plain", "construction--flat--curb-cut",
    "construction--flat--parking", "construction--flat--pedestrian-area", "construction--flat--rail-track",
    "construction--flat--road", "construction--flat--service-lane", "construction--flat--sidewalk",
    "construction--structure--bridge", "construction--structure--building", "construction--structure--tunnel",
    "human--person", "human--rider--bicyclist", "human--rider--motorcyclist", "human--rider--other-rider",
    "marking--crosswalk-zebra", "marking--general", "nature--mountain", "nature--sand", "nature--sky",
    "nature--snow", "nature--terrain", "nature--vegetation", "nature--water", "object--banner", "object--bench",
    "object--bike-rack", "object--billboard", "object--catch-basin", "object--cctv-camera",
    "object--fire-hydrant", "object--junction-box", "object--mailbox", "object--manhole",
    "object--phone-booth", "object--pothole", "object--street-light", "object--support--pole",
    "object--support--traffic-sign-frame", "object--support--utility-pole", "object--traffic-light",
    "object--traffic-sign--back", "object--traffic-sign--front", "object--trash-can",
    "object--vehicle--bicycle", "object--vehicle--boat", "object--vehicle--bus", "object--vehicle--car",
    "object--vehicle--caravan", "object--vehicle--motorcycle", "object--vehicle--on-rails",
    "object--vehicle--other-vehicle", "object--vehicle--trailer", "object--vehicle--truck",
    "object--vehicle--wheeled-slow", "void--car-mount", "void--ego-vehicle", "void--unlabeled",
)

# The reduction of Vistas to the 19 classes that the official FAMix code uses (datasets/mapillary.py,
# from RobustNet): road, lane marking (general) and manhole are road; curb and sidewalk are sidewalk;
# pole and utility pole are pole; only sign fronts are traffic signs; all three rider classes are
# rider; "on rails" is train. Every other class becomes 255, including surfaces and objects that other
# reductions merge (service lane, bike lane, crosswalks, pothole, curb cut, pedestrian area, street
# light, sign frame, sand, mountain).
VISTAS_NAME_TO_TRAIN_ID: Mapping[str, int] = MappingProxyType({
    "construction--flat--road": 0, "marking--general": 0, "object--manhole": 0,
    "construction--barrier--curb": 1, "construction--flat--sidewalk": 1,
    "construction--structure--building": 2,
    "construction--barrier--wall": 3,
    "construction--barrier--fence": 4,
    "object--support--pole": 5, "object--support--utility-pole": 5,
    "object--traffic-light": 6,
    "object--traffic-sign--front": 7,
    "nature--vegetation": 8,
    "nature--terrain": 9,
    "nature--sky": 10,
    "human--person": 11,
    "human--rider--bicyclist": 12, "human--rider--motorcyclist": 12, "human--rider--other-rider": 12,
    "object--vehicle--car": 13,
    "object--vehicle--truck": 14,
    "object--vehicle--bus": 15,
    "object--vehicle--on-rails": 16,
    "object--vehicle--motorcycle": 17,
    "object--vehicle--bicycle": 18,
})  # fmt: skip

VISTAS_ID_TO_TRAIN_ID: Mapping[int, int] = MappingProxyType(
    {VISTAS_V12_CLASSES.index(name): tid for name, tid in VISTAS_NAME_TO_TRAIN_ID.items()}
)


@dataclass(frozen=True)
class LabelTables:
    """Compiled lookup tables of a mapping.

    Attributes:
        lut: (65536,) uint8, raw value -> train id (255 = ignore).
        valid: (65536,) bool, whether a raw value belongs to the label space.
    """

    lut: np.ndarray
    valid: np.ndarray

    def apply(self, raw: np.ndarray) -> tuple[np.ndarray, dict[int, int]]:
        """Map a raw label image to train ids.

        Args:
            raw: (H, W) non-negative integer array (uint8, uint16 or int32).

        Returns:
            train ids (H, W) uint8, and {raw value: pixel count} of values outside the label space.
        """
        raw = np.asarray(raw)
        if raw.dtype == np.uint8 or raw.dtype == np.uint16:
            idx = raw
            out_of_range = None
        else:
            out_of_range = (raw < 0) | (raw >= LUT_SIZE)
            idx = np.where(out_of_range, 0, raw).astype(np.intp)
        train = self.lut[idx]
        bad = ~self.valid[idx]
        if out_of_range is not None and out_of_range.any():
            train[out_of_range] = IGNORE_INDEX
            bad |= out_of_range
        unknown: dict[int, int] = {}
        if bad.any():
            values, counts = np.unique(raw[bad], return_counts=True)
            unknown = {int(v): int(c) for v, c in zip(values, counts)}
        return train, unknown


@dataclass(frozen=True)
class LabelMapping:
    """How one dataset encodes labels.

    Attributes:
        name: registry name.
        to_train: raw value -> train id (values of the label space missing here map to 255).
        space: every raw value the dataset may contain (others are counted as unknown).
        description: one line for docs and messages.
    """

    name: str
    to_train: Mapping[int, int]
    space: frozenset[int]
    description: str = ""

    def tables(self) -> LabelTables:
        """Build the (65536,) lookup tables (cheap: build once per dataset instance)."""
        lut = np.full(LUT_SIZE, IGNORE_INDEX, dtype=np.uint8)
        valid = np.zeros(LUT_SIZE, dtype=bool)
        for raw, tid in self.to_train.items():
            lut[raw] = tid
        valid[list(self.space)] = True
        return LabelTables(lut=lut, valid=valid)

    def encode_table(self) -> dict[int, int]:
        """Train id -> the smallest raw value mapping to it (used to write synthetic labels)."""
        out: dict[int, int] = {}
        for raw, tid in sorted(self.to_train.items()):
            out.setdefault(tid, raw)
        return out


MAPPINGS: Mapping[str, LabelMapping] = MappingProxyType({
    m.name: m
    for m in (
        LabelMapping(
            "cityscapes_ids",
            MappingProxyType(dict(CITYSCAPES_ID_TO_TRAIN_ID)),
            frozenset(range(34)),
            "Cityscapes label ids 0..33 (GTA5, Cityscapes, ACDC)",
        ),
        LabelMapping(
            "train_ids",
            MappingProxyType({i: i for i in range(NUM_CLASSES)}),
            frozenset([*range(NUM_CLASSES), IGNORE_INDEX]),
            "train ids 0..18, 255 = ignore (BDD100K)",
        ),
        LabelMapping(
            "synthia",
            SYNTHIA_ID_TO_TRAIN_ID,
            frozenset(range(len(SYNTHIA_CLASSES))),
            "SYNTHIA-RAND-CITYSCAPES class ids 0..22 (first channel of a 16-bit PNG)",
        ),
        LabelMapping(
            "vistas_v12",
            VISTAS_ID_TO_TRAIN_ID,
            frozenset(range(len(VISTAS_V12_CLASSES))),
            "Mapillary Vistas v1.2 class ids 0..65 (palette PNG)",
        ),
    )
})
"""name -> :class:`LabelMapping` (read-only)."""


def get_mapping(name: str) -> LabelMapping:
    """Look a label mapping up by name.

    Raises:
        KeyError: naming the known mappings.
    """
    if name not in MAPPINGS:
        raise KeyError(f"unknown label mapping {name!r} (known: {', '.join(MAPPINGS)})")
    return MAPPINGS[name]
