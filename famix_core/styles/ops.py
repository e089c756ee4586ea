"""The style op: patch statistics, dominant class, Beta sampling, normalize + mix + re-style.

Everything is vectorized over samples and patches and runs on its inputs' device
(see :mod:`famix_core.styles` for the geometry, gradient and randomness conventions).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from famix_core.classes import IGNORE_INDEX

__all__ = [
    "patch_index",
    "centered_stats",
    "patch_stats",
    "dominant_class",
    "sample_beta",
    "mix_stats",
    "stylize",
    "apply_styles",
]

_GAMMA_PROPOSALS = 16  # Marsaglia-Tsang proposals per draw (acceptance >= 95 % each)


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


def centered_stats(
    f: torch.Tensor, grid: int, eps: float, *, detach: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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
        detach: ``mu`` and ``sigma`` carry no gradient (constants for autograd, as in the
            original MixStyle); ``centered`` is then ``f - mu`` with the gradient of ``f`` alone.

    Returns:
        ``centered`` (B, C, H, W), a fresh tensor (the caller may overwrite it when
        ``f`` needs no gradient); ``mu`` and ``sigma`` (B, C, g, g).
    """
    if detach and f.requires_grad:
        with torch.no_grad():
            _, mu, sigma = centered_stats(f, grid, eps)
        h, w = f.shape[-2:]
        if _divisible(h, w, grid):
            x = f.reshape(*f.shape[:2], grid, h // grid, grid, w // grid)
            return (x - mu[:, :, :, None, :, None]).reshape(f.shape), mu, sigma
        return f - _expand(mu, h, w), mu, sigma
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
    _, mu, sigma = centered_stats(f, grid, eps)
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
    *,
    stats: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Give every patch new statistics: ``ReLU(sigma' (f - mu) / sigma + mu')``.

    The patch statistics are differentiable (nothing detached, as the official
    ``network/utils.py`` writes it; module docstring of :mod:`famix_core.styles`): the
    gradient w.r.t. ``f`` goes through the normalization and the Mix terms too.
    Without autograd, one full-size tensor is allocated (``f - mu``) and then
    scaled, shifted and rectified in place.

    Args:
        f: features (B, C, H, W).
        mu_t, sigma_t: target statistics (B, C, g, g).
        grid: patches per side (g).
        eps: variance epsilon of the patch statistics.
        s: mixing weights (B, C, 1, 1) or ``None`` for no mixing (targets used as they are).
        stats: ``centered_stats(f, grid, eps)`` when the caller has it already (computed once);
            its ``centered`` tensor is then the one overwritten without autograd.

    Returns:
        Stylized features (B, C, H, W).
    """
    centered, mu, sigma = stats if stats is not None else centered_stats(f, grid, eps)
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
    *,
    stats: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Style transfer (+ Mix): per-patch normalize, mix with s ~ Beta(alpha, alpha), re-style, ReLU.

    Args:
        f: features (B, C, H, W).
        mu_t, sigma_t: target statistics (B, C, g, g).
        grid: patches per side (g).
        alpha: Beta concentration; ``None`` disables mixing.
        eps: variance epsilon.
        generator: optional generator on ``f.device`` for the mixing weights.
        stats: ``centered_stats(f, grid, eps)`` when the caller has it already (see :func:`stylize`).

    Returns:
        Stylized features (B, C, H, W); ``s`` has shape (B, C, 1, 1), shared by the g*g patches.
    """
    s = None
    if alpha is not None:
        b, c = f.shape[:2]
        s = sample_beta((b, c, 1, 1), alpha, generator=generator, device=f.device, dtype=f.dtype)
    return stylize(f, mu_t, sigma_t, grid, eps, s, stats=stats)

