"""Datasets of every domain, joint transforms and the built-in synthetic benchmark.

Importing this package imports no torch: :func:`check_domain` and
:func:`famix_core.data.synth.ensure_synthetic` run at plan time in the
orchestrator; :func:`build_dataset` imports torch when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from famix_core.data.layouts import LAYOUTS, get_layout, list_pairs

if TYPE_CHECKING:
    from famix_core.config import DataConfig
    from famix_core.data.datasets import SegmentationDataset

__all__ = ["build_dataset", "check_domain", "list_pairs", "LAYOUTS"]


def build_dataset(
    data_cfg: "DataConfig",
    domain: str,
    split: str,
    *,
    train: bool,
    crop_size: int | None = None,
    scale: float = 1.0,
    max_items: int | None = None,
) -> "SegmentationDataset":
    """Build the torch Dataset of a domain split; see :func:`famix_core.data.datasets.build_dataset`.

    Returns:
        items (image float32 (3,H,W) CLIP-normalized, label int64 (H,W) train ids, 255 = ignore);
        ``.pairs`` lists the (image, label) files.
    """
    from famix_core.data.datasets import build_dataset as _build

    return _build(data_cfg, domain, split, train=train, crop_size=crop_size, scale=scale, max_items=max_items)


def check_domain(data_cfg: "DataConfig", domain: str, split: str) -> int:
    """Check a domain split's layout and pairing without torch (generating the synthetic benchmark if configured).

    Args:
        data_cfg: data config.
        domain: domain name or table column.
        split: ``train`` or ``val``.

    Returns:
        the number of (image, label) pairs.

    Raises:
        DataError: one line naming the domain, path and expected pattern, or the unreadable first image.
    """
    from famix_core.data.io import image_size

    if data_cfg.synthetic is not None:
        from famix_core.data.synth import ensure_synthetic

        ensure_synthetic(data_cfg)
    d, _ = get_layout(domain)
    pairs = list_pairs(data_cfg, d, split)
    image_size(pairs[0][0])  # the first image must at least be readable
    return len(pairs)
