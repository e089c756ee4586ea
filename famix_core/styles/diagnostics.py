"""Diagnostics of a mined style bank: what the prompt words do, and where the styles lie.

Two questions a bank can be asked without training anything:

* **Do the prompt's style words move the styles?** Mine the same source patches with two prompt
  types; each kept patch starts from its own statistics and moves to its mined style. When the
  style words mean nothing to the text encoder, a "random style + class name" move points where
  the "class name" move points (:func:`move_agreement` near 1).
* **Do the styles reach the target domains?** Layer-1 patch statistics of the source, of the bank
  and of a target domain, in units of the source's per-dimension spread: the share of target
  patches nearer some bank style than any source patch, and the cosine between the bank's mean
  shift from the source and the target's (:func:`style_coverage`).

A style is the row ``[mu (C), sigma (C)]``; statistics are those of :func:`famix_core.styles.ops.patch_stats`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from famix_core.styles.ops import patch_stats

_EXACT = "donot_use_mm_for_euclid_dist"  # exact distances (no matmul expansion): a style at distance 0 stays 0

__all__ = ["style_rows", "layer1_style_rows", "move_agreement", "Coverage", "style_coverage"]


def style_rows(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``(B, C, g, g)`` patch statistics (or ``(N, C)`` bank tensors) -> ``(N, 2C)`` rows ``[mu, sigma]``."""
    if mu.dim() == 4:
        mu = mu.permute(0, 2, 3, 1).reshape(-1, mu.shape[1])
        sigma = sigma.permute(0, 2, 3, 1).reshape(-1, sigma.shape[1])
    return torch.cat([mu, sigma], 1)


@torch.no_grad()
def layer1_style_rows(layer1: torch.nn.Module, images: torch.Tensor, grid: int, eps: float, tile: int | None = None) -> torch.Tensor:
    """Style rows of every patch of every image's layer-1 features.

    Args:
        layer1: ``images -> layer-1 features`` (e.g. the segmenter's stem then layer 1).
        images: (N, 3, H, W), CLIP-normalized.
        grid: patches per side.
        eps: the variance epsilon of the style op.
        tile: cut each image into ``tile``-wide columns first (training crops are square tiles of
            a wider image); ``None``: whole images.

    Returns:
        ``(N * tiles * grid * grid, 2C)``.
    """
    w = images.shape[-1]
    step = tile or w
    rows = []
    for x0 in range(0, w - step + 1, step):
        mu, sigma = patch_stats(layer1(images[..., x0 : x0 + step]).float(), grid, eps)
        rows.append(style_rows(mu, sigma))
    return torch.cat(rows)


def move_agreement(start: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per entry, the cosine between the moves ``a - start`` and ``b - start`` ((N,) in [-1, 1]).

    ``start``, ``a``, ``b``: (N, D) style rows of the same kept patches, in the same order.
    """
    if not start.shape == a.shape == b.shape:
        raise ValueError(f"move_agreement: shapes differ ({tuple(start.shape)}, {tuple(a.shape)}, {tuple(b.shape)})")
    return F.cosine_similarity(a - start, b - start, dim=1)


@dataclass(frozen=True)
class Coverage:
    """How a bank relates to one target domain (distances in source-spread units).

    Attributes:
        target_shift: norm of the target's mean shift from the source.
        bank_shift: norm of the bank's mean shift from the source.
        cos: cosine between the two shifts (1: the bank moves toward the target on average).
        nearer_bank: share of target patches nearer some bank style than any source patch.
        to_source: mean distance of a target patch to its nearest source patch.
        to_bank: mean distance of a target patch to its nearest bank style.
    """

    target_shift: float
    bank_shift: float
    cos: float
    nearer_bank: float
    to_source: float
    to_bank: float


def style_coverage(source: torch.Tensor, bank: torch.Tensor, target: torch.Tensor) -> Coverage:
    """Compare a bank with one target domain, both seen from the source.

    Args:
        source: (Ns, D) style rows of source patches; each dimension is scaled by its spread here.
        bank: (Nb, D) bank styles.
        target: (Nt, D) style rows of target patches.
    """
    scale = source.std(0).clamp_min(1e-6)
    s, b, t = source / scale, bank / scale, target / scale
    centre = s.mean(0)
    shift_t, shift_b = t.mean(0) - centre, b.mean(0) - centre
    d_src = torch.cdist(t, s, compute_mode=_EXACT).min(1).values
    d_bank = torch.cdist(t, b, compute_mode=_EXACT).min(1).values
    return Coverage(
        target_shift=float(shift_t.norm()),
        bank_shift=float(shift_b.norm()),
        cos=float(F.cosine_similarity(shift_t, shift_b, dim=0)),
        nearer_bank=float((d_bank < d_src).float().mean()),
        to_source=float(d_src.mean()),
        to_bank=float(d_bank.mean()),
    )
