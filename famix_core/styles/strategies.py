"""Training-time style strategies: ``module(feat, labels) -> feat`` after layer 1, and their registry."""

from __future__ import annotations

import math

import torch
from torch import nn

from famix_core.config import StyleConfig
from famix_core.errors import FamixError
from famix_core.styles.bank import StyleBank, StyleBankError, draw_styles
from famix_core.styles.ops import apply_styles, centered_stats, dominant_class

__all__ = ["StyleAugmenter", "FamixStyle", "MixStyle", "NoiseStyle", "STRATEGY_REGISTRY", "build_style_augmenter"]


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
        self.detach_stats = False  # style.detach_stats: no gradient through the patch mean and std

    def extra_repr(self) -> str:
        return f"grid={self.grid}, eps={self.eps}, alpha={self.alpha}" + (", detach_stats=True" if self.detach_stats else "")

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
        stats = centered_stats(feat, self.grid, self.eps, detach=self.detach_stats)  # once: mixstyle / noise targets read it too
        mu_t, sigma_t = self.targets(feat, labels, stats[1], stats[2])
        mu_t, sigma_t = mu_t.to(feat.dtype), sigma_t.to(feat.dtype)
        return apply_styles(feat, mu_t, sigma_t, self.grid, self.alpha, self.eps, self.generator, stats=stats)

    @classmethod
    def from_config(cls, style_cfg: StyleConfig, bank: StyleBank | None, num_classes: int) -> "StyleAugmenter":
        raise NotImplementedError


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
        return draw_styles(
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
    "famix": FamixStyle,
    "mixstyle": MixStyle,
    "noise": NoiseStyle,
}
"""Strategy name -> module class: every ``famix_core.config.STRATEGIES`` name but ``none`` (no module)."""


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
    if name == "none":
        return None
    if name not in STRATEGY_REGISTRY:
        raise FamixError(f"style.strategy: unknown strategy {name!r} (known: none, {', '.join(STRATEGY_REGISTRY)})")
    if name == "famix" and bank is not None:
        cls_ids = torch.unique(bank.cls).tolist()  # once, at build time
        stray = [c for c in cls_ids if c != bank.ignore_index and not 0 <= c < num_classes]
        if stray:
            where = bank.source or "style bank"
            raise StyleBankError(
                f"{where}: style bank holds class ids {stray} outside the model's {num_classes} classes"
            )
    module = STRATEGY_REGISTRY[name].from_config(style_cfg, bank, num_classes)
    module.detach_stats = style_cfg.detach_stats
    return module
