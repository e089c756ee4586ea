"""Patch-wise feature styles: statistics, dominant class, the style bank, style apply/mix, strategies.

Styles act on layer-1 features ``f`` (B, C, H, W) split into a ``g x g`` grid of
patches (METHOD.md "Where styles act"). Everything here is vectorized over
samples and patches (reshape + reduction, one gather, one fused affine) and runs
on whatever device its inputs live on; nothing is copied to the host per step.

Patch geometry: row ``i`` of an ``H``-row map belongs to patch row
``floor(i * g / H)`` (same for columns). When ``H`` and ``W`` are divisible by
``g`` (the paper: 192 / 3, 768 / 3) every patch has ``H/g x W/g`` pixels and the
ops use a plain reshape ``(B, C, g, ph, g, pw)``; otherwise patches differ by at
most one row/column and the ops use segment sums over a per-pixel patch index.
``H`` and ``W`` must be at least ``g`` (no empty patch).

Statistics (official ``utils/stats.py::calc_mean_std``): per-channel mean and
``sigma = sqrt(unbiased var + eps)`` of every patch.

Gradient: as in the official ``network/utils.py``, the gradient flows through
the patch statistics ``mu`` and ``sigma`` (the normalization and the Mix
terms), not only through ``f``; it matters when layers before the op train.

Cost: when ``f`` needs no gradient (the frozen stem and layer 1 of the paper's
Freeze policy) the style op allocates one full-size tensor (``f - mu``, then
scaled, shifted and rectified in place); when it does, the op runs out of place
(autograd keeps what the backward needs). Statistics are reductions.

Randomness: every draw (bank entry, Beta mixing weight, permutation, noise) is
taken through ``torch.rand``/``torch.randn``/``torch.randperm`` with an optional
``torch.Generator`` living on the data's device. The Beta(alpha, alpha) sampler is
written with those primitives (Marsaglia-Tsang Gamma with a fixed number of
vectorized proposals, see :func:`sample_beta`), so results are reproducible given
a seeded generator, or given ``torch.manual_seed`` when ``generator`` is ``None``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from famix_core.classes import CLASS_NAMES, IGNORE_INDEX
from famix_core.config import StyleConfig
from famix_core.errors import FamixError
from famix_core.io import atomic_write_bytes, atomic_write_json

__all__ = [
    "patch_index",
    "patch_stats",
    "dominant_class",
    "sample_beta",
    "mix_stats",
    "stylize",
    "apply_styles",
    "StyleBank",
    "StyleBankError",
    "StyleAugmenter",
    "NoStyle",
    "FamixStyle",
    "MixStyle",
    "NoiseStyle",
    "STRATEGY_REGISTRY",
    "build_style_augmenter",
    "BANK_TENSORS",
    "BANK_JSON",
    "BANK_FORMAT",
]

BANK_TENSORS = "bank.safetensors"
BANK_JSON = "bank.json"
BANK_FORMAT = 1
_LOOKUP = 256  # class-id lookup tables cover ids 0..255 (train ids and the ignore label 255)
_GAMMA_PROPOSALS = 16  # Marsaglia-Tsang proposals per draw (acceptance >= 95 % each)


class StyleBankError(FamixError):
    """A style bank on disk is missing, unreadable, or does not fit the model."""


# ----------------------------------------------------------------------------- geometry


def patch_index(n: int, grid: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Patch row (or column) of each of ``n`` positions: ``floor(i * grid / n)``.

    Args:
        n: number of rows (or columns) of the map; must be >= ``grid``.
        grid: patches per side.
        device: where the index lives.

    Returns:
        (n,) long tensor with values in ``[0, grid)``.
    """
    if n < grid:
        raise ValueError(f"a {n}-pixel side cannot be split into {grid} patches (need at least {grid})")
    return torch.arange(n, device=device) * grid // n


def _divisible(h: int, w: int, grid: int) -> bool:
    return h % grid == 0 and w % grid == 0


def _expand(stat: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Broadcast per-patch values (B, C, g, g) to every pixel (B, C, H, W) (uneven-patch path)."""
    g = stat.shape[-1]
    ri = patch_index(h, g, stat.device)
    ci = patch_index(w, g, stat.device)
    return stat.index_select(2, ri).index_select(3, ci)  # (B, C, H, g) -> (B, C, H, W)


def _centered_stats(f: torch.Tensor, grid: int, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two-pass patch statistics that also return the centered features (the op's one large tensor).

    Pass 1 sums each patch (a reduction, no temporary); the centered map ``f - mu``
    is the only full-size allocation; pass 2 reduces its squares row by row with
    ``vector_norm`` (no squared temporary). Exact two-pass variance, so no
    ``E[x^2] - E[x]^2`` cancellation. The variance is the unbiased one (divided by
    the patch's pixel count minus one; a one-pixel patch divides by one), as the
    official ``calc_mean_std``. Autograd tracks everything when ``f`` requires grad.

    Args:
        f: features (B, C, H, W).
        grid: patches per side (g).
        eps: added to the variance.

    Returns:
        ``centered`` (B, C, H, W), a fresh tensor (the caller may overwrite it when
        ``f`` needs no gradient); ``mu`` and ``sigma`` (B, C, g, g).
    """
    b, c, h, w = f.shape
    g = grid
    if _divisible(h, w, g):
        ph, pw = h // g, w // g
        x = f.reshape(b, c, g, ph, g, pw)  # (B, C, g, ph, g, pw)
        mu = x.sum(dim=(3, 5)) / (ph * pw)  # (B, C, g, g)
        centered = x - mu[:, :, :, None, :, None]  # (B, C, g, ph, g, pw)
        rows = torch.linalg.vector_norm(centered, dim=5)  # (B, C, g, ph, g): per-row root sum of squares
        var = (rows * rows).sum(dim=3) / max(ph * pw - 1, 1)  # (B, C, g, g), unbiased
        return centered.reshape(b, c, h, w), mu, torch.sqrt(var + eps)
    # Uneven patches: segment sums over the flattened patch id of every pixel.
    ri = patch_index(h, g, f.device)
    ci = patch_index(w, g, f.device)
    pid = (ri[:, None] * g + ci[None, :]).reshape(-1)  # (H*W,)
    count = torch.zeros(g * g, device=f.device, dtype=f.dtype).index_add_(0, pid, torch.ones_like(pid, dtype=f.dtype))
    flat = f.reshape(b, c, h * w)  # (B, C, H*W)
    mu = torch.zeros(b, c, g * g, device=f.device, dtype=f.dtype).index_add_(2, pid, flat) / count  # (B, C, g*g)
    centered = flat - mu.index_select(2, pid)  # (B, C, H*W)
    var = torch.zeros_like(mu).index_add_(2, pid, centered * centered) / (count - 1).clamp_min(1)  # unbiased
    return centered.reshape(b, c, h, w), mu.reshape(b, c, g, g), torch.sqrt(var + eps).reshape(b, c, g, g)


def patch_stats(f: torch.Tensor, grid: int, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of every patch of a ``grid x grid`` split.

    The variance is the unbiased one (divided by the patch's pixel count minus
    one, as the official ``utils/stats.py::calc_mean_std``), computed in two
    passes, and ``sigma = sqrt(var + eps)``. Differentiable w.r.t. ``f``.

    Args:
        f: features (B, C, H, W); H, W >= grid.
        grid: patches per side (g).
        eps: added to the variance.

    Returns:
        ``(mu, sigma)``, each (B, C, g, g), in ``f``'s dtype.
    """
    _, mu, sigma = _centered_stats(f, grid, eps)
    return mu, sigma


def dominant_class(
    labels: torch.Tensor, grid: int, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """The mode of every label patch, the ignore label counted as a class.

    Counting is one ``scatter_add`` over (sample, patch, class) bins. Values outside
    ``[0, num_classes)`` (the ignore label 255, or any stray id) all count as
    ignore. Ties go to the smallest class id, and a class wins over ignore
    (ignore is counted in bin ``num_classes``, after every class; ``argmax``
    returns the first maximum).

    Args:
        labels: (B, Hl, Wl) integer label map; Hl, Wl >= grid.
        grid: patches per side (g); the label grid is independent of any feature size.
        num_classes: number of real classes (K).
        ignore_index: the ignore label, returned for ignore-dominated patches.

    Returns:
        (B, g, g) long tensor of class ids in ``[0, K)`` or ``ignore_index``.
    """
    b, h, w = labels.shape
    g = grid
    k1 = num_classes + 1
    lab = labels.long()
    ri = patch_index(h, g, labels.device)
    ci = patch_index(w, g, labels.device)
    pid = (ri[:, None] * g + ci[None, :]) * k1  # (Hl, Wl) first bin of each pixel's patch
    bins = torch.where((lab >= 0) & (lab < num_classes), lab, num_classes)  # (B, Hl, Wl), ignore -> K
    bins.add_(pid)  # in place: bin = patch * (K + 1) + class, in [0, g*g*(K+1))
    counts = torch.zeros(b, g * g * k1, device=labels.device, dtype=torch.int32)
    counts.scatter_add_(1, bins.view(b, h * w), torch.ones(b, h * w, device=labels.device, dtype=torch.int32))
    mode = counts.reshape(b, g, g, k1).argmax(dim=-1)  # (B, g, g)
    return torch.where(mode == num_classes, torch.full_like(mode, ignore_index), mode)


# ----------------------------------------------------------------------------- sampling & mixing


def _log_gamma_sample(shape: Sequence[int], concentration: float, generator, device, dtype) -> torch.Tensor:
    """log of Gamma(concentration, 1) draws, vectorized Marsaglia-Tsang, generator-driven.

    Gamma(a) for a < 1 is Gamma(a + 1) * U^(1/a); it is kept in log space so tiny
    draws (a = 0.1 gives values far below float32's range) do not underflow.
    Each element gets ``_GAMMA_PROPOSALS`` proposals at once and keeps the first
    accepted one; were all rejected (probability < 0.05^16), the last is used.
    """
    a = float(concentration)
    boost = a < 1.0
    k = a + 1.0 if boost else a
    d = k - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    n = _GAMMA_PROPOSALS
    x = torch.randn((n, *shape), generator=generator, device=device, dtype=dtype)  # (P, *shape)
    u = torch.rand((n, *shape), generator=generator, device=device, dtype=dtype)
    v = (1.0 + c * x) ** 3
    v_pos = v.clamp_min(torch.finfo(dtype).tiny)
    accept = (v > 0) & (torch.log(u.clamp_min(torch.finfo(dtype).tiny)) < 0.5 * x * x + d - d * v_pos + d * torch.log(v_pos))
    accept[-1] = True  # fallback proposal
    first = accept.to(torch.int8).argmax(dim=0, keepdim=True)  # (1, *shape): first accepted proposal
    log_g = math.log(d) + torch.log(v_pos).gather(0, first).squeeze(0)  # (*shape)
    if boost:
        ub = torch.rand(tuple(shape), generator=generator, device=device, dtype=dtype)
        log_g = log_g + torch.log(ub.clamp_min(torch.finfo(dtype).tiny)) / a
    return log_g


def sample_beta(
    shape: Sequence[int],
    alpha: float,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Draw Beta(alpha, alpha) samples as X / (X + Y), X, Y ~ Gamma(alpha), in log space.

    Args:
        shape: output shape, e.g. (B, C, 1, 1).
        alpha: both Beta concentrations (0.1 in the paper: draws pile up near 0 and 1).
        generator: optional ``torch.Generator`` on ``device`` (else the global RNG).
        device, dtype: of the output.

    Returns:
        Tensor of ``shape`` with values in [0, 1].
    """
    lx = _log_gamma_sample(shape, alpha, generator, device, dtype)
    ly = _log_gamma_sample(shape, alpha, generator, device, dtype)
    return torch.sigmoid(lx - ly)  # X / (X + Y) = 1 / (1 + exp(log Y - log X))


def mix_stats(
    mu: torch.Tensor, sigma: torch.Tensor, mu_t: torch.Tensor, sigma_t: torch.Tensor, s: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The Mix step: ``mu' = s mu + (1 - s) mu_t``, ``sigma' = s sigma + (1 - s) sigma_t``.

    Args:
        mu, sigma: the patches' own statistics (B, C, g, g).
        mu_t, sigma_t: target statistics (B, C, g, g).
        s: mixing weights broadcastable to them, e.g. (B, C, 1, 1).

    Returns:
        ``(mu', sigma')``, each (B, C, g, g).
    """
    return torch.lerp(mu_t, mu, s), torch.lerp(sigma_t, sigma, s)


def _restyle(centered: torch.Tensor, sigma: torch.Tensor, mu_n: torch.Tensor, sigma_n: torch.Tensor) -> torch.Tensor:
    """``ReLU(centered * sigma_n / sigma + mu_n)`` per patch, with ``centered = f - mu``.

    Without autograd on any input the result overwrites ``centered`` (a fresh tensor owned
    by the caller: no second full-size allocation); with autograd it is computed out of
    place so that the gradient reaches ``f``, ``mu`` and ``sigma``.

    Args:
        centered: (B, C, H, W) features minus their patch means.
        sigma: (B, C, g, g) own stds; mu_n, sigma_n: (B, C, g, g) new statistics.

    Returns:
        (B, C, H, W) stylized features (``centered`` itself on the in-place path).
    """
    b, c, h, w = centered.shape
    g = sigma.shape[-1]
    scale = sigma_n / sigma  # (B, C, g, g)
    track = torch.is_grad_enabled() and any(t.requires_grad for t in (centered, scale, mu_n))
    if _divisible(h, w, g):
        x = centered.view(b, c, g, h // g, g, w // g)  # (B, C, g, ph, g, pw)
        sc, sh = scale[:, :, :, None, :, None], mu_n[:, :, :, None, :, None]
        if track:
            return torch.relu(torch.addcmul(sh, x, sc)).reshape(b, c, h, w)
        x.mul_(sc).add_(sh)
    else:
        sc, sh = _expand(scale, h, w), _expand(mu_n, h, w)
        if track:
            return torch.relu(torch.addcmul(sh, centered, sc))
        centered.mul_(sc).add_(sh)
    return centered.relu_()


def stylize(
    f: torch.Tensor,
    mu_t: torch.Tensor,
    sigma_t: torch.Tensor,
    grid: int,
    eps: float = 1e-5,
    s: torch.Tensor | None = None,
) -> torch.Tensor:
    """Give every patch new statistics: ``ReLU(sigma' (f - mu) / sigma + mu')``.

    The patch statistics are differentiable (official ``network/utils.py``): the
    gradient w.r.t. ``f`` goes through the normalization and the Mix terms too.
    Without autograd, one full-size tensor is allocated (``f - mu``) and then
    scaled, shifted and rectified in place.

    Args:
        f: features (B, C, H, W).
        mu_t, sigma_t: target statistics (B, C, g, g).
        grid: patches per side (g).
        eps: variance epsilon of the patch statistics.
        s: mixing weights (B, C, 1, 1) or ``None`` for no mixing (targets used as they are).

    Returns:
        Stylized features (B, C, H, W).
    """
    centered, mu, sigma = _centered_stats(f, grid, eps)
    if s is not None:
        mu_t, sigma_t = mix_stats(mu, sigma, mu_t, sigma_t, s)
    return _restyle(centered, sigma, mu_t, sigma_t)


def apply_styles(
    f: torch.Tensor,
    mu_t: torch.Tensor,
    sigma_t: torch.Tensor,
    grid: int,
    alpha: float | None,
    eps: float = 1e-5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Style transfer (+ Mix): per-patch normalize, mix with s ~ Beta(alpha, alpha), re-style, ReLU.

    Args:
        f: features (B, C, H, W).
        mu_t, sigma_t: target statistics (B, C, g, g).
        grid: patches per side (g).
        alpha: Beta concentration; ``None`` disables mixing.
        eps: variance epsilon.
        generator: optional generator on ``f.device`` for the mixing weights.

    Returns:
        Stylized features (B, C, H, W); ``s`` has shape (B, C, 1, 1), shared by the g*g patches.
    """
    s = None
    if alpha is not None:
        b, c = f.shape[:2]
        s = sample_beta((b, c, 1, 1), alpha, generator=generator, device=f.device, dtype=f.dtype)
    return stylize(f, mu_t, sigma_t, grid, eps, s)


# ----------------------------------------------------------------------------- the bank


def _bucket_tables(cls: torch.Tensor, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sorted order plus, per class id 0..255, the (offset, count) of the bucket a draw uses.

    Fallback chain, resolved once here: the class's own bucket; else the ignore
    bucket; else (no ignore entries either) the whole bank.

    Returns:
        ``order`` (N,) long, ``offset`` (256,) long, ``count`` (256,) long.
    """
    n = cls.numel()
    order = torch.argsort(cls, stable=True)  # (N,) entries grouped by class
    count = torch.bincount(cls, minlength=_LOOKUP)[:_LOOKUP]  # (256,)
    offset = torch.cumsum(count, 0) - count  # (256,) start of each class in `order`
    ign_off, ign_cnt = offset[ignore_index], count[ignore_index]
    has = count > 0
    eff_cnt = torch.where(has, count, ign_cnt)
    eff_off = torch.where(has, offset, ign_off)
    empty = eff_cnt == 0
    eff_cnt = torch.where(empty, torch.full_like(eff_cnt, n), eff_cnt)
    eff_off = torch.where(empty, torch.zeros_like(eff_off), eff_off)
    return order, eff_off, eff_cnt


def _draw(
    classes: torch.Tensor,
    mu: torch.Tensor,
    sigma: torch.Tensor,
    order: torch.Tensor,
    offset: torch.Tensor,
    count: torch.Tensor,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One uniform draw per (sample, patch) from its class bucket, as a single gather.

    Args:
        classes: (B, g, g) long class ids in [0, 256).
        mu, sigma: bank tensors (N, C).
        order, offset, count: from :func:`_bucket_tables`.
        generator: optional generator on the bank's device.

    Returns:
        ``(mu_t, sigma_t)``, each (B, C, g, g).
    """
    cnt = count[classes]  # (B, g, g)
    off = offset[classes]
    u = torch.rand(classes.shape, generator=generator, device=classes.device, dtype=torch.float64)
    pick = torch.minimum((u * cnt).long(), cnt - 1)  # (B, g, g) uniform in [0, cnt)
    idx = order[off + pick]  # (B, g, g) bank rows
    mu_t = mu[idx].permute(0, 3, 1, 2)  # (B, g, g, C) -> (B, C, g, g)
    sigma_t = sigma[idx].permute(0, 3, 1, 2)
    return mu_t, sigma_t


class StyleBank:
    """Mined styles: per-entry channel statistics plus the class each belongs to.

    Entries of the ignore bucket (patches dominated by the ignore label, mined with
    the prompt "photo") carry class ``ignore_index`` (255). A per-class index
    (entries sorted by class, per-class offset and count, fallbacks resolved) is
    built once, on the bank's device, so sampling is one gather.

    Args:
        mu: (N, C) style means.
        sigma: (N, C) style stds.
        cls: (N,) long class ids in ``[0, num_classes)`` or ``ignore_index``.
        class_names: names of the class ids (default: the 19 Cityscapes classes).
        meta: free JSON-able metadata (backbone, prompt type, seed ...).
        ignore_index: class id of the ignore/photo bucket.
        source: where the bank was loaded from (for error messages).
    """

    def __init__(
        self,
        mu: torch.Tensor,
        sigma: torch.Tensor,
        cls: torch.Tensor,
        *,
        class_names: Sequence[str] = CLASS_NAMES,
        meta: Mapping[str, Any] | None = None,
        ignore_index: int = IGNORE_INDEX,
        source: str | None = None,
    ) -> None:
        where = source or "style bank"
        if mu.ndim != 2 or sigma.shape != mu.shape:
            raise StyleBankError(
                f"{where}: mu and sigma must both be (N, C), got {tuple(mu.shape)} and {tuple(sigma.shape)}"
            )
        if cls.shape != (mu.shape[0],):
            raise StyleBankError(f"{where}: cls must be ({mu.shape[0]},), got {tuple(cls.shape)}")
        if mu.shape[0] == 0:
            raise StyleBankError(f"{where}: the bank holds no styles")
        if not 0 <= ignore_index < _LOOKUP:
            raise ValueError(f"ignore_index must be in [0, {_LOOKUP}), got {ignore_index}")
        if bool(((cls < 0) | (cls >= _LOOKUP)).any()):  # once, at construction
            raise StyleBankError(f"{where}: class ids must be in [0, {_LOOKUP})")
        self.mu = mu
        self.sigma = sigma
        self.cls = cls.long()
        self.class_names = tuple(class_names)
        self.meta = dict(meta or {})
        self.ignore_index = ignore_index
        self.source = source
        self._order, self._offset, self._count = _bucket_tables(self.cls, ignore_index)

    # -- properties
    @property
    def channels(self) -> int:
        return int(self.mu.shape[1])

    @property
    def device(self) -> torch.device:
        return self.mu.device

    def __len__(self) -> int:
        return int(self.mu.shape[0])

    def index_tables(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(order (N,), offset (256,), count (256,))``: the per-class sampling index."""
        return self._order, self._offset, self._count

    def class_name(self, class_id: int) -> str:
        """Name of a class id; ``"ignore"`` for the ignore bucket."""
        if class_id == self.ignore_index:
            return "ignore"
        if 0 <= class_id < len(self.class_names):
            return self.class_names[class_id]
        return f"class{class_id}"

    def counts(self) -> dict[str, int]:
        """Entries per class name (only classes present), ignore last."""
        ids = torch.unique(self.cls).tolist()
        ids.sort(key=lambda i: (i == self.ignore_index, i))
        per = torch.bincount(self.cls, minlength=_LOOKUP).tolist()
        return {self.class_name(i): int(per[i]) for i in ids}

    def to(self, device: torch.device | str) -> "StyleBank":
        """A copy of the bank on ``device``."""
        return StyleBank(
            self.mu.to(device),
            self.sigma.to(device),
            self.cls.to(device),
            class_names=self.class_names,
            meta=self.meta,
            ignore_index=self.ignore_index,
            source=self.source,
        )

    def expect_channels(self, channels: int, what: str = "the backbone's layer-1 features") -> None:
        """Refuse a bank mined for another width.

        Raises:
            StyleBankError: one line naming the bank file, its channel count and the expected one.
        """
        if self.channels != channels:
            where = self.source or "style bank"
            raise StyleBankError(
                f"{where}: style bank has {self.channels} channels but {what} have {channels}; "
                f"mine styles with the same backbone"
            )

    def sample(
        self, classes: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw a uniformly random entry of each patch's class bucket.

        A class without entries draws from the ignore bucket; if that is empty too,
        from the whole bank.

        Args:
            classes: (B, g, g) long class ids (``dominant_class`` output) on the bank's device.
            generator: optional generator on the bank's device.

        Returns:
            ``(mu_t, sigma_t)``, each (B, C, g, g).
        """
        return _draw(classes, self.mu, self.sigma, self._order, self._offset, self._count, generator)

    # -- persistence
    def save(self, directory: str | Path) -> Path:
        """Write ``bank.safetensors`` (mu, sigma, cls) and ``bank.json`` into ``directory``, atomically.

        Returns:
            The directory.
        """
        from safetensors.torch import save

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tensors = {
            "mu": self.mu.detach().to("cpu", torch.float32).contiguous(),
            "sigma": self.sigma.detach().to("cpu", torch.float32).contiguous(),
            "cls": self.cls.detach().to("cpu", torch.int64).contiguous(),
        }
        atomic_write_bytes(d / BANK_TENSORS, save(tensors, metadata={"format": str(BANK_FORMAT)}))
        info = {
            "format": BANK_FORMAT,
            "n_styles": len(self),
            "channels": self.channels,
            "ignore_index": self.ignore_index,
            "class_names": list(self.class_names),
            "counts": self.counts(),
            "meta": self.meta,
        }
        atomic_write_json(d / BANK_JSON, info, indent=2)
        return d

    @classmethod
    def load(cls, directory: str | Path, device: torch.device | str = "cpu") -> "StyleBank":
        """Read a bank written by :meth:`save` (safetensors + JSON only; nothing is unpickled).

        Raises:
            StyleBankError: a file is missing or unreadable, or its tensors are inconsistent.
        """
        from safetensors.torch import load_file

        d = Path(directory)
        tpath, jpath = d / BANK_TENSORS, d / BANK_JSON
        for p in (tpath, jpath):
            if not p.is_file():
                raise StyleBankError(f"{p}: style bank file not found (mine styles first: famix mine-styles)")
        try:
            info = json.loads(jpath.read_text())
        except (OSError, ValueError) as e:
            raise StyleBankError(f"{jpath}: not a readable JSON file ({e})") from None
        if not isinstance(info, dict):
            raise StyleBankError(f"{jpath}: expected a JSON object")
        try:
            t = load_file(str(tpath), device=str(torch.device(device)))
        except Exception as e:  # noqa: BLE001 - corrupt file: one line for the user
            raise StyleBankError(f"{tpath}: not a readable safetensors file ({type(e).__name__})") from None
        missing = [k for k in ("mu", "sigma", "cls") if k not in t]
        if missing:
            raise StyleBankError(f"{tpath}: missing tensors {missing} (expected mu, sigma, cls)")
        if t["cls"].dtype != torch.int64:
            raise StyleBankError(f"{tpath}: cls must be int64, got {t['cls'].dtype}")
        ch = info.get("channels")
        if ch is not None and t["mu"].ndim == 2 and int(ch) != t["mu"].shape[1]:
            raise StyleBankError(f"{tpath}: {t['mu'].shape[1]} channels but {jpath.name} says {ch}")
        ignore = int(info.get("ignore_index", IGNORE_INDEX))
        return cls(
            t["mu"],
            t["sigma"],
            t["cls"],
            class_names=info.get("class_names", CLASS_NAMES),
            meta=info.get("meta", {}),
            ignore_index=ignore,
            source=str(tpath),
        )


# ----------------------------------------------------------------------------- strategies


class StyleAugmenter(nn.Module):
    """Base of the strategies: ``forward(feat, labels) -> feat``, active in training mode only.

    Args:
        grid: patches per side.
        eps: variance epsilon.
        alpha: Beta(alpha, alpha) mixing concentration, ``None`` for no mixing.
    """

    def __init__(self, grid: int, eps: float, alpha: float | None) -> None:
        super().__init__()
        self.grid = grid
        self.eps = eps
        self.alpha = alpha
        self.generator: torch.Generator | None = None  # optional, on the features' device

    def extra_repr(self) -> str:
        return f"grid={self.grid}, eps={self.eps}, alpha={self.alpha}"

    def targets(
        self, feat: torch.Tensor, labels: torch.Tensor | None, mu: torch.Tensor, sigma: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Target statistics (B, C, g, g) for every patch; subclasses define them."""
        raise NotImplementedError

    def forward(self, feat: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Stylize layer-1 features.

        Args:
            feat: (B, C, H, W) features.
            labels: (B, Hl, Wl) long label map (needed by ``famix``).

        Returns:
            (B, C, H, W) features, unchanged in eval mode.
        """
        if not self.training:
            return feat
        centered, mu, sigma = _centered_stats(feat, self.grid, self.eps)
        mu_t, sigma_t = self.targets(feat, labels, mu, sigma)
        mu_t, sigma_t = mu_t.to(feat.dtype), sigma_t.to(feat.dtype)
        if self.alpha is not None:
            b, c = feat.shape[:2]
            s = sample_beta((b, c, 1, 1), self.alpha, generator=self.generator, device=feat.device, dtype=feat.dtype)
            mu_t, sigma_t = mix_stats(mu, sigma, mu_t, sigma_t, s)
        return _restyle(centered, sigma, mu_t, sigma_t)

    @classmethod
    def from_config(cls, style_cfg: StyleConfig, bank: "StyleBank | None", num_classes: int) -> "StyleAugmenter":
        raise NotImplementedError


class NoStyle(StyleAugmenter):
    """``none``: features pass through (``build_style_augmenter`` returns ``None`` for it)."""

    def forward(self, feat: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return feat

    @classmethod
    def from_config(cls, style_cfg: StyleConfig, bank: "StyleBank | None", num_classes: int) -> "NoStyle":
        return cls(style_cfg.grid, style_cfg.eps, None)


class FamixStyle(StyleAugmenter):
    """``famix``: target statistics drawn from the mined bank by each patch's dominant class.

    The bank's tensors and its class index are non-persistent buffers: they follow
    ``.to(device)`` with the model and stay out of its state dict.

    Args:
        bank: the mined styles.
        num_classes: real classes of the label maps (ids >= it count as ignore).
        grid, eps, alpha: as in :class:`StyleAugmenter`.
    """

    def __init__(self, bank: StyleBank, num_classes: int, grid: int, eps: float, alpha: float | None) -> None:
        super().__init__(grid, eps, alpha)
        self.num_classes = num_classes
        self.ignore_index = bank.ignore_index
        self.bank_source = bank.source
        order, offset, count = bank.index_tables()
        self.register_buffer("bank_mu", bank.mu.detach(), persistent=False)
        self.register_buffer("bank_sigma", bank.sigma.detach(), persistent=False)
        self.register_buffer("bank_order", order, persistent=False)
        self.register_buffer("bank_offset", offset, persistent=False)
        self.register_buffer("bank_count", count, persistent=False)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, styles={self.bank_mu.shape[0]}, channels={self.bank_mu.shape[1]}"

    def targets(self, feat, labels, mu, sigma):
        if labels is None:
            raise ValueError("the famix style strategy needs the label map (B, Hl, Wl) in training")
        if feat.shape[1] != self.bank_mu.shape[1]:
            where = self.bank_source or "style bank"
            raise StyleBankError(
                f"{where}: style bank has {self.bank_mu.shape[1]} channels but the backbone's "
                f"layer-1 features have {feat.shape[1]}; mine styles with the same backbone"
            )
        classes = dominant_class(labels, self.grid, self.num_classes, self.ignore_index)  # (B, g, g)
        return _draw(
            classes, self.bank_mu, self.bank_sigma, self.bank_order, self.bank_offset, self.bank_count, self.generator
        )

    @classmethod
    def from_config(cls, style_cfg: StyleConfig, bank: StyleBank | None, num_classes: int) -> "FamixStyle":
        if bank is None:
            raise StyleBankError(
                "style.strategy=famix with style.augment=true needs a style bank (mine styles first, "
                "or set style.augment=false)"
            )
        return cls(bank, num_classes, style_cfg.grid, style_cfg.eps, style_cfg.alpha if style_cfg.mix else None)


class MixStyle(StyleAugmenter):
    """``mixstyle``: target = the same patch of another sample of the batch (random permutation); always mixes."""

    def targets(self, feat, labels, mu, sigma):
        perm = torch.randperm(feat.shape[0], generator=self.generator, device=feat.device)  # (B,)
        return mu[perm], sigma[perm]

    @classmethod
    def from_config(cls, style_cfg: StyleConfig, bank: StyleBank | None, num_classes: int) -> "MixStyle":
        return cls(style_cfg.grid, style_cfg.eps, style_cfg.alpha)


class NoiseStyle(StyleAugmenter):
    """``noise``: target = own statistics + N(0, 1) * noise_std * their std across the batch.

    The batch std is the biased one (0 for a batch of one: no perturbation);
    target stds are clamped to ``sqrt(eps)`` so they stay positive.

    Args:
        noise_std: noise scale in units of the batch std.
        grid, eps, alpha: as in :class:`StyleAugmenter`.
    """

    def __init__(self, noise_std: float, grid: int, eps: float, alpha: float | None) -> None:
        super().__init__(grid, eps, alpha)
        self.noise_std = noise_std

    def targets(self, feat, labels, mu, sigma):
        sd_mu = torch.var(mu, dim=0, keepdim=True, correction=0).sqrt()  # (1, C, g, g)
        sd_sigma = torch.var(sigma, dim=0, keepdim=True, correction=0).sqrt()
        n_mu = torch.randn(mu.shape, generator=self.generator, device=mu.device, dtype=mu.dtype)
        n_sigma = torch.randn(sigma.shape, generator=self.generator, device=sigma.device, dtype=sigma.dtype)
        mu_t = mu + self.noise_std * n_mu * sd_mu
        sigma_t = (sigma + self.noise_std * n_sigma * sd_sigma).clamp_min(math.sqrt(self.eps))
        return mu_t, sigma_t

    @classmethod
    def from_config(cls, style_cfg: StyleConfig, bank: StyleBank | None, num_classes: int) -> "NoiseStyle":
        return cls(style_cfg.noise_std, style_cfg.grid, style_cfg.eps, style_cfg.alpha if style_cfg.mix else None)


STRATEGY_REGISTRY: dict[str, type[StyleAugmenter]] = {
    "none": NoStyle,
    "famix": FamixStyle,
    "mixstyle": MixStyle,
    "noise": NoiseStyle,
}
"""Strategy name -> module class; holds exactly ``famix_core.config.STRATEGIES``."""


def build_style_augmenter(
    style_cfg: StyleConfig, bank: StyleBank | None, num_classes: int
) -> StyleAugmenter | None:
    """The style module of a config (after the augment/mix toggles), or ``None`` for plain training.

    Args:
        style_cfg: ``cfg.style``.
        bank: the mined bank (required by ``famix``; ignored otherwise).
        num_classes: real classes of the label maps.

    Returns:
        An ``nn.Module`` ``(feat (B,C,H,W), labels (B,Hl,Wl)) -> feat``, or ``None``.

    Raises:
        StyleBankError: ``famix`` without a bank, or a bank holding classes >= ``num_classes``.
    """
    name = style_cfg.effective_strategy()
    if name not in STRATEGY_REGISTRY:
        raise FamixError(f"style.strategy: unknown strategy {name!r} (known: {', '.join(STRATEGY_REGISTRY)})")
    if name == "none":
        return None
    if name == "famix" and bank is not None:
        cls_ids = torch.unique(bank.cls).tolist()  # once, at build time
        stray = [c for c in cls_ids if c != bank.ignore_index and not 0 <= c < num_classes]
        if stray:
            where = bank.source or "style bank"
            raise StyleBankError(
                f"{where}: style bank holds class ids {stray} outside the model's {num_classes} classes"
            )
    return STRATEGY_REGISTRY[name].from_config(style_cfg, bank, num_classes)
