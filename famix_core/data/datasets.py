"""The torch Dataset of every domain: file pairs from a layout, labels through a lookup table, joint transforms."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from famix_core.classes import IGNORE_INDEX
from famix_core.data.io import read_label, read_rgb
from famix_core.data.layouts import get_layout, list_pairs
from famix_core.data.mappings import get_mapping
from famix_core.data.transforms import HeightCenterCrop, JointTransform, PairFn, RandomScaleCrop, build_transform

if TYPE_CHECKING:
    from famix_core.config import DataConfig

__all__ = ["SegmentationDataset", "build_dataset", "UnknownLabelWarning", "SizeMismatchWarning", "TRAIN_CACHE_BYTES"]

log = logging.getLogger(__name__)

TRAIN_CACHE_BYTES = 256 * 2**20
"""A training split whose decoded pairs fit in this many bytes stays in memory (per process: each
DataLoader worker holds its own copy); decoding was about half of a synthetic item's load time."""


class UnknownLabelWarning(UserWarning):
    """Label values outside a dataset's label space were found (and mapped to 255)."""


class SizeMismatchWarning(UserWarning):
    """An image differs in size from its label (it is resized to the label's size)."""


class SegmentationDataset(Dataset):
    """Pairs of (image, label) files of one domain split.

    Items are ``(image, label)``: image (3, H, W) float32 CLIP-normalized, label (H, W) int64 train ids
    (255 = ignore).

    Attributes:
        domain: domain name.
        split: split name.
        pairs: list of (image path, label path), the files this dataset reads.
        mapping: name of the label encoding (:data:`famix_core.data.mappings.MAPPINGS`).
        unknown_labels: {raw value: pixel count} of label values outside the label space seen so far
            (in this process; DataLoader workers count their own; a cached pair counts once).
        cache_bytes: keep every decoded pair in memory when the whole split fits in this many bytes
            (judged from the first pair read: its size times the number of pairs); 0 never caches.
            The synthetic source's 32 pairs at 128x256 take 4 MiB; a real source never fits the
            training default (:data:`TRAIN_CACHE_BYTES`).
    """

    def __init__(
        self,
        domain: str,
        split: str,
        pairs: list[tuple[Path, Path]],
        mapping: str,
        transform: JointTransform,
        *,
        label_first_channel: bool = False,
        cache_bytes: int = 0,
    ) -> None:
        self.domain = domain
        self.split = split
        self.pairs = list(pairs)
        self.mapping = mapping
        self.transform = transform
        self.label_first_channel = label_first_channel
        self.unknown_labels: dict[int, int] = {}
        self._tables = get_mapping(mapping).tables()  # numpy arrays only: the dataset pickles for workers
        self._warned = False
        self._warned_size = False
        self.cache_bytes = cache_bytes
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] | None = {} if cache_bytes > 0 else None

    def __len__(self) -> int:
        return len(self.pairs)

    def load_raw(self, index: int):
        """Read one pair without transforms.

        Returns:
            image (H, W, 3) uint8 and train ids (H, W) uint8 (numpy arrays).

        Raises:
            DataError: unreadable file.
        """
        img_path, lbl_path = self.pairs[index]
        image = read_rgb(img_path)
        raw = read_label(lbl_path, first_channel=self.label_first_channel)
        if raw.shape != image.shape[:2]:
            # a few real GTA5 images differ in size from their labels: follow the label
            if not self._warned_size:
                self._warned_size = True
                msg = (
                    f"{self.domain} {self.split}: image {img_path} is {image.shape[1]}x{image.shape[0]} but its label"
                    f" {lbl_path} is {raw.shape[1]}x{raw.shape[0]}; images are resized to their label's size"
                )
                log.warning(msg)
                warnings.warn(msg, SizeMismatchWarning, stacklevel=2)
            image = np.array(Image.fromarray(image).resize((raw.shape[1], raw.shape[0]), Image.BILINEAR))
        train_ids, unknown = self._tables.apply(raw)
        if unknown:
            for v, c in unknown.items():
                self.unknown_labels[v] = self.unknown_labels.get(v, 0) + c
            if not self._warned:
                self._warned = True
                msg = (
                    f"{self.domain} {self.split}: label values {sorted(unknown)} outside the"
                    f" {self.mapping} label space ({sum(unknown.values())} pixels in {lbl_path}) mapped to 255;"
                    f" further ones are counted in dataset.unknown_labels"
                )
                log.warning(msg)
                warnings.warn(msg, UnknownLabelWarning, stacklevel=2)
        return image, train_ids

    def _decoded(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`load_raw`, from memory when the split is cached (copies: a transform may write)."""
        if self._cache is None:
            return self.load_raw(index)
        hit = self._cache.get(index)
        if hit is None:
            hit = self.load_raw(index)
            if not self._cache and (hit[0].nbytes + hit[1].nbytes) * len(self) > self.cache_bytes:
                self._cache = None  # the split does not fit: decode every read
                return hit
            self._cache[index] = hit
        return hit[0].copy(), hit[1].copy()

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, train_ids = self._decoded(index)
        return self.transform(image, train_ids)

    def __repr__(self) -> str:
        return f"SegmentationDataset({self.domain!r}, {self.split!r}, {len(self)} pairs, mapping={self.mapping!r})"


def build_dataset(
    data_cfg: "DataConfig",
    domain: str,
    split: str,
    *,
    train: bool,
    crop_size: int | None = None,
    scale: float = 1.0,
    max_items: int | None = None,
) -> SegmentationDataset:
    """Build the dataset of one domain split (generating the synthetic benchmark first when configured).

    Args:
        data_cfg: data config (roots, jitter, flip, crop size, synthetic settings).
        domain: domain name or table column (``gta5``, ``C``, ``acdc_night`` ...).
        split: ``train`` or ``val``.
        train: training transforms (random crop/jitter/flip) or evaluation (full image).
        crop_size: training crop side (default ``data_cfg.crop_size``; ignored in evaluation).
        scale: resize factor (training: image and label; evaluation: image only).
        max_items: keep the first N pairs (sorted by name).

    Returns:
        a :class:`SegmentationDataset` with items (image (3,H,W) float32, label (H,W) int64).

    Raises:
        DataError: missing root/folder, unpaired files, bad split list (one line).
    """
    if data_cfg.synthetic is not None:
        from famix_core.data.synth.benchmark import ensure_synthetic

        ensure_synthetic(data_cfg)
    d, lay = get_layout(domain)
    pairs = list_pairs(data_cfg, d, split)
    if max_items is not None:
        pairs = pairs[:max_items]
    crop = (crop_size or data_cfg.crop_size) if train else None
    pre = _train_protocol(data_cfg, d.name, crop) if train else _eval_protocol(data_cfg, d.name)
    transform = build_transform(
        train=train,
        crop_size=None if pre is not None else crop,  # a protocol's geometry replaces the random crop
        jitter=tuple(data_cfg.jitter),
        hflip=data_cfg.hflip,
        scale=scale,
        pre=pre,
    )
    return SegmentationDataset(
        d.name,
        split,
        pairs,
        lay.mapping,
        transform,
        label_first_channel=lay.label_first_channel,
        cache_bytes=TRAIN_CACHE_BYTES if train else 0,  # training reads each pair many times, evaluation once
    )


def _eval_protocol(data_cfg: "DataConfig", domain: str) -> PairFn | None:
    """The geometric step a domain's evaluation protocol adds (official FAMix ``utils/get_dataset.py``)."""
    if domain == "mapillary":
        fill = 0 if data_cfg.mapillary_protocol == "official" else IGNORE_INDEX
        return HeightCenterCrop(data_cfg.mapillary_size, label_fill=fill)
    return None


def _train_protocol(data_cfg: "DataConfig", domain: str, crop_size: int | None) -> PairFn | None:
    """The geometry a source's official training transform uses instead of a plain random crop."""
    if domain == "synthia" and crop_size is not None:
        fill = 0 if data_cfg.synthia_protocol == "official" else IGNORE_INDEX
        lo, hi = data_cfg.synthia_scale
        return RandomScaleCrop(data_cfg.synthia_crop, crop_size, lo, hi, label_fill=fill)
    return None
