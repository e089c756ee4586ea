"""Models: CLIP backbones (open_clip), the dilated ModifiedResNet, DeepLabv3+ head, Segmenter.

Submodules import torch; this package's ``__init__`` re-exports lazily so that
``import famix_core.models.clip`` stays the only cost a caller pays.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "create_clip": "famix_core.models.clip",
    "get_tokenizer": "famix_core.models.clip",
    "stage_channels": "famix_core.models.clip",
    "BACKBONE_REGISTRY": "famix_core.models.clip",
    "Segmenter": "famix_core.models.segmenter",
    "build_segmenter": "famix_core.models.segmenter",
    "load_official_checkpoint": "famix_core.models.segmenter",
    "DeepLabHeadV3Plus": "famix_core.models.deeplab",
    "ASPP": "famix_core.models.deeplab",
    "FREEZE_REGISTRY": "famix_core.models.freeze",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'famix_core.models' has no attribute {name!r}")
