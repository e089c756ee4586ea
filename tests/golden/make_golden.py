"""Regenerate ``style_apply.safetensors``: inputs and outputs of the style op, for regression tests.

Run once (``python tests/golden/make_golden.py``) when the op's definition changes on purpose;
tests/test_styles.py recomputes the outputs from the stored inputs and compares with allclose.
Only deterministic ops are stored (no RNG stream is involved in the outputs).
"""

from __future__ import annotations

from pathlib import Path

import torch


def build() -> dict[str, torch.Tensor]:
    """Inputs (seeded) and outputs of patch_stats / dominant_class / stylize on small tensors."""
    from famix_core.styles.ops import dominant_class, patch_stats, stylize

    g = torch.Generator().manual_seed(1234)
    f = torch.randn(2, 5, 12, 9, generator=g).relu()  # (B, C, H, W), divisible by 3
    f_uneven = torch.randn(2, 5, 10, 8, generator=g).relu()  # uneven patches
    mu_t = torch.randn(2, 5, 3, 3, generator=g)
    sigma_t = torch.rand(2, 5, 3, 3, generator=g) + 0.1
    s = torch.rand(2, 5, 1, 1, generator=g)
    labels = torch.randint(0, 4, (2, 14, 11), generator=g)
    labels[labels == 3] = 255
    mu, sigma = patch_stats(f, 3, 1e-5)
    return {
        "f": f,
        "f_uneven": f_uneven,
        "mu_t": mu_t,
        "sigma_t": sigma_t,
        "s": s,
        "labels": labels,
        "out_mu": mu,
        "out_sigma": sigma,
        "out_dominant": dominant_class(labels, 3, 3),
        "out_mixed": stylize(f, mu_t, sigma_t, 3, 1e-5, s),
        "out_plain": stylize(f, mu_t, sigma_t, 3, 1e-5, None),
        "out_uneven": stylize(f_uneven, mu_t, sigma_t, 3, 1e-5, s),
    }


def main() -> None:
    from safetensors.torch import save_file

    out = Path(__file__).with_name("style_apply.safetensors")
    save_file({k: v.contiguous() for k, v in build().items()}, str(out))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
