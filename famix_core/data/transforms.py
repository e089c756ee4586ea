"""Joint image/label transforms built from torchvision.transforms.v2 (tv_tensors.Image / Mask).

Training: optional rescale of both, random crop (image padded with 0, label with
255 where the image is smaller than the crop), colour jitter on the image only,
horizontal flip of both, CLIP normalization. Evaluation: the full image,
optionally rescaled (the label keeps its full resolution: the evaluator
upsamples logits back to it), CLIP normalization.

A dataset's protocol may add a geometric step that runs first, on the uint8
arrays (``JointTransform.pre``): :class:`HeightCenterCrop` is the official
Mapillary evaluation geometry (FAMix ``utils/get_dataset.py``: ``ResizeHeight``
then ``CenterCropPad`` of ``utils/ext_transforms.py``), and
:class:`RandomScaleCrop` the official SYNTHIA-source training geometry
(``RandomSizeAndCrop`` then ``ExtResize``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from famix_core.classes import IGNORE_INDEX

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "JointTransform",
    "build_transform",
    "HeightCenterCrop",
    "RandomScaleCrop",
    "center_crop_pad",
]

PairFn = Callable[[np.ndarray, np.ndarray], "tuple[np.ndarray, np.ndarray]"]

CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)


def center_crop_pad(a: np.ndarray, size: int, fill: int) -> np.ndarray:
    """A ``size`` x ``size`` centre crop with the official ``CenterCropPad`` offsets, padding with ``fill``.

    Per axis of length n: the crop starts at ``round((n - size) / 2)`` (Python's rounding) of the
    image padded by ``max(size - n, 0)`` on *both* sides, an offset computed from the unpadded n.
    So a longer axis is centred, but a shorter one is not: its content lands at the far end of the
    crop and loses about ``1.5 (size - n)`` of its last samples (a 16-wide label in a 32 crop shows
    its first 8 columns, at columns 24..31); everything that is not content is ``fill``.

    Args:
        a: (H, W) or (H, W, C) array.
        size: crop side.
        fill: value of the padded area.

    Returns:
        (size, size[, C]) array of ``a``'s dtype.
    """
    out = np.full((size, size, *a.shape[2:]), fill, dtype=a.dtype)
    src, dst = [], []
    for n in a.shape[:2]:
        off = round((n - size) / 2) - max(size - n, 0)  # output index i reads input index i + off
        lo, hi = max(0, -off), min(size, n - off)
        if hi <= lo:
            return out
        dst.append(slice(lo, hi))
        src.append(slice(lo + off, hi + off))
    out[dst[0], dst[1]] = a[src[0], src[1]]
    return out


def _resize(a: np.ndarray, size: tuple[int, int], resample: int) -> np.ndarray:
    """PIL resize of a uint8 array to (W, H) ``size`` (a writable copy)."""
    return np.array(Image.fromarray(a).resize(size, resample))


@dataclass(frozen=True)
class HeightCenterCrop:
    """Official Mapillary evaluation geometry: resize to height ``size``, then a ``size`` x ``size`` centre crop.

    The width becomes ``int(w / h * size)``; the image is resized bicubic and the label (train ids)
    nearest, with PIL, then both go through :func:`center_crop_pad` (image pad 0, label pad
    ``label_fill``: 0, road, in the official code, which maps ids before the crop; 255 to ignore it).

    Attributes:
        size: height and crop side (1536 in the paper).
        label_fill: label value of the padded area.
    """

    size: int
    label_fill: int = 0

    def __call__(self, image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) uint8 image, (H, W) uint8 label -> (size, size, 3), (size, size)."""
        h, w = label.shape
        new = (int(w / h * self.size), self.size)  # PIL order (W, H)
        img, lbl = _resize(image, new, Image.BICUBIC), _resize(label, new, Image.NEAREST)
        return center_crop_pad(img, self.size, 0), center_crop_pad(lbl, self.size, self.label_fill)


@dataclass(frozen=True)
class RandomScaleCrop:
    """Official SYNTHIA-source training geometry: random rescale, random square crop, resize.

    1. scale both by ``s ~ U(scale_min, scale_max)`` to ``int(w * s) x int(h * s)`` (image bicubic,
       label nearest);
    2. a side shorter than ``crop`` is padded by ``(crop - n) // 2 + 1`` on both sides (image 0,
       label ``label_fill``: 0, road, in the official code, which maps ids before the transform);
    3. a random ``crop`` x ``crop`` window;
    4. resize to ``size`` x ``size`` (image bilinear, label nearest).

    Randomness comes from torch's generator, so seeded runs and DataLoader workers repeat.

    Attributes:
        crop: side of the random crop (720 in the paper).
        size: final side (``data.crop_size``, 768 in the paper).
        scale_min: smallest scale (0.5).
        scale_max: largest scale (2.0).
        label_fill: label value of the padded area.
    """

    crop: int
    size: int
    scale_min: float = 0.5
    scale_max: float = 2.0
    label_fill: int = 0

    def __call__(self, image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) uint8 image, (H, W) uint8 label -> (size, size, 3), (size, size)."""
        s = self.scale_min + (self.scale_max - self.scale_min) * float(torch.rand(()))
        h, w = label.shape
        new = (max(1, int(w * s)), max(1, int(h * s)))  # PIL order (W, H)
        img, lbl = _resize(image, new, Image.BICUBIC), _resize(label, new, Image.NEAREST)
        py, px = ((self.crop - n) // 2 + 1 if n < self.crop else 0 for n in lbl.shape)
        if py or px:
            img = np.pad(img, ((py, py), (px, px), (0, 0)), constant_values=0)
            lbl = np.pad(lbl, ((py, py), (px, px)), constant_values=self.label_fill)
        y0, x0 = (int(torch.randint(0, n - self.crop + 1, ())) for n in lbl.shape)
        img = img[y0 : y0 + self.crop, x0 : x0 + self.crop]  # (crop, crop, 3)
        lbl = lbl[y0 : y0 + self.crop, x0 : x0 + self.crop]
        out = (self.size, self.size)
        return _resize(np.ascontiguousarray(img), out, Image.BILINEAR), _resize(np.ascontiguousarray(lbl), out, Image.NEAREST)


@dataclass
class JointTransform:
    """Applies one pipeline to an (image, label) pair so that geometric ops stay aligned.

    Attributes:
        joint: v2 pipeline over (tv_tensors.Image uint8 (3,H,W), tv_tensors.Mask uint8 (H,W)).
        scale: resize factor (1.0 = none).
        scale_label: resize the label too (training) or keep it full-size (evaluation).
        pre: a geometric step on the uint8 (image, label) arrays run before everything else (a
            dataset protocol such as :class:`HeightCenterCrop`), or None.
    """

    joint: v2.Compose
    scale: float = 1.0
    scale_label: bool = True
    pre: PairFn | None = None

    def __call__(self, image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Transform one pair.

        Args:
            image: (H, W, 3) uint8 RGB.
            label: (H, W) uint8 train ids (255 = ignore).

        Returns:
            image (3, H', W') float32 CLIP-normalized, label (H'', W'') int64.
        """
        if self.pre is not None:
            image, label = self.pre(image, label)
        img = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1))  # (3, H, W)
        lbl = tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(label)))  # (H, W)
        if self.scale != 1.0:
            h, w = img.shape[-2:]
            size = [max(1, round(h * self.scale)), max(1, round(w * self.scale))]
            img = F.resize(img, size, antialias=True)
            if self.scale_label:
                lbl = F.resize(lbl, size)  # Mask: nearest neighbour
        img, lbl = self.joint(img, lbl)
        return img.as_subclass(torch.Tensor), lbl.as_subclass(torch.Tensor).long()


def build_transform(
    *,
    train: bool,
    crop_size: int | None = None,
    jitter: tuple[float, float, float] = (0.8, 0.8, 0.8),
    hflip: bool = True,
    scale: float = 1.0,
    pre: PairFn | None = None,
) -> JointTransform:
    """Build the joint transform of a split.

    Args:
        train: random crop / jitter / flip (True) or the full image (False).
        crop_size: square crop side in training (None: no crop).
        jitter: (brightness, contrast, saturation) of the colour jitter; zeros disable it.
        hflip: random horizontal flip with probability 0.5 in training.
        scale: resize factor (training: image and label; evaluation: image only), after ``pre``.
        pre: a geometric step on the uint8 arrays run first (a dataset protocol), or None.

    Returns:
        a :class:`JointTransform`.
    """
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    ops: list[v2.Transform] = []
    if train:
        if crop_size is not None:
            fill = {tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX}
            ops.append(v2.RandomCrop(crop_size, pad_if_needed=True, fill=fill))
        if any(j > 0 for j in jitter):
            b, c, s = jitter
            ops.append(v2.ColorJitter(brightness=b, contrast=c, saturation=s))  # images only; masks pass through
        if hflip:
            ops.append(v2.RandomHorizontalFlip(p=0.5))
    ops.append(v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True))
    ops.append(v2.Normalize(mean=list(CLIP_MEAN), std=list(CLIP_STD)))
    return JointTransform(v2.Compose(ops), scale=scale, scale_label=train, pre=pre)
