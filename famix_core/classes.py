"""The 19 Cityscapes train classes (torch-free): names, train ids, label ids, palette."""

from __future__ import annotations

__all__ = ["CLASS_NAMES", "NUM_CLASSES", "IGNORE_INDEX", "PALETTE", "CITYSCAPES_ID_TO_TRAIN_ID", "palette_for"]

IGNORE_INDEX = 255

# (train id, name, Cityscapes label id, RGB colour) — as in the Cityscapes scripts / torchvision.
_CLASSES = (
    (0, "road", 7, (128, 64, 128)),
    (1, "sidewalk", 8, (244, 35, 232)),
    (2, "building", 11, (70, 70, 70)),
    (3, "wall", 12, (102, 102, 156)),
    (4, "fence", 13, (190, 153, 153)),
    (5, "pole", 17, (153, 153, 153)),
    (6, "traffic light", 19, (250, 170, 30)),
    (7, "traffic sign", 20, (220, 220, 0)),
    (8, "vegetation", 21, (107, 142, 35)),
    (9, "terrain", 22, (152, 251, 152)),
    (10, "sky", 23, (70, 130, 180)),
    (11, "person", 24, (220, 20, 60)),
    (12, "rider", 25, (255, 0, 0)),
    (13, "car", 26, (0, 0, 142)),
    (14, "truck", 27, (0, 0, 70)),
    (15, "bus", 28, (0, 60, 100)),
    (16, "train", 31, (0, 80, 100)),
    (17, "motorcycle", 32, (0, 0, 230)),
    (18, "bicycle", 33, (119, 11, 32)),
)

CLASS_NAMES: tuple[str, ...] = tuple(c[1] for c in _CLASSES)
NUM_CLASSES: int = len(_CLASSES)
PALETTE: tuple[tuple[int, int, int], ...] = tuple(c[3] for c in _CLASSES)
CITYSCAPES_ID_TO_TRAIN_ID: dict[int, int] = {c[2]: c[0] for c in _CLASSES}
"""Cityscapes/GTA5/ACDC label id -> train id; every other id maps to IGNORE_INDEX."""


def palette_for(train_id: int) -> tuple[int, int, int]:
    """RGB colour of a train id (black for ignore)."""
    return PALETTE[train_id] if 0 <= train_id < NUM_CLASSES else (0, 0, 0)
