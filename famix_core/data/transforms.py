"""Joint image/label transforms built from torchvision.transforms.v2 (tv_tensors.Image / Mask).

Training: optional rescale of both, random crop (image padded with 0, label with
255 where the image is smaller than the crop), colour jitter on the image only,
horizontal flip of both, CLIP normalization. Evaluation: the full image,
optionally rescaled (the label keeps its full resolution: the evaluator
upsamples logits back to it), CLIP normalization.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from famix_core.classes import IGNORE_INDEX

__all__ = ["CLIP_MEAN", "CLIP_STD", "JointTransform", "build_transform"]

CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class JointTransform:
    """Applies one pipeline to an (image, label) pair so that geometric ops stay aligned.

    Attributes:
        joint: v2 pipeline over (tv_tensors.Image uint8 (3,H,W), tv_tensors.Mask uint8 (H,W)).
        scale: resize factor (1.0 = none).
        scale_label: resize the label too (training) or keep it full-size (evaluation).
    """

    joint: v2.Compose
    scale: float = 1.0
    scale_label: bool = True

    def __call__(self, image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Transform one pair.

        Args:
            image: (H, W, 3) uint8 RGB.
            label: (H, W) uint8 train ids (255 = ignore).

        Returns:
            image (3, H', W') float32 CLIP-normalized, label (H'', W'') int64.
        """
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
) -> JointTransform:
    """Build the joint transform of a split.

    Args:
        train: random crop / jitter / flip (True) or the full image (False).
        crop_size: square crop side in training (None: no crop).
        jitter: (brightness, contrast, saturation) of the colour jitter; zeros disable it.
        hflip: random horizontal flip with probability 0.5 in training.
        scale: resize factor applied first (training: image and label; evaluation: image only).

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
    return JointTransform(v2.Compose(ops), scale=scale, scale_label=train)
