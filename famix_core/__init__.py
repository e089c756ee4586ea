"""FAMix engine: Freeze, Augment, Mix (language-guided domain generalized segmentation).

``import famix_core`` stays light: the entry points load torch on first use.

    famix_core.mine_styles(cfg, out_dir, *, log=None) -> dict
    famix_core.train.train(cfg, out_dir, *, bank_dir=None, ckpt_dir=None, log=None, stop=None) -> dict
    famix_core.evaluate.evaluate(cfg, weights, domains=None, *, log=None) -> dict[column, dict]
    famix_core.evaluate_domain(cfg, weights, domain, out_dir=None) -> dict
    famix_core.load_official_checkpoint(path, backbone="RN50", output_stride=16) -> Segmenter
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "mine_styles": "famix_core.mining",
    "evaluate_domain": "famix_core.evaluate",
    "load_official_checkpoint": "famix_core.models.segmenter",
    "build_segmenter": "famix_core.models.segmenter",
    "create_clip": "famix_core.models.clip",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'famix_core' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
