"""Benchmark: the vectorized FAMix style op vs a per-sample, per-patch loop (research-code style).

The op = patch statistics + dominant class + bank sampling + Beta mix + apply, at the
paper's shape: B=8, C=256, 192x192 layer-1 features, 768x768 labels, 3x3 grid, a bank
of ~200 styles over 19 classes + ignore.

Two loop references walk patches x samples, take ``torch.mode`` of each label patch
on the host and draw with ``random.choice`` from Python lists, as research code
usually does: a lean one that stylizes patch by patch, and one that also builds
full-size per-pixel statistic maps on the host before one final mix + affine (the
usual form of that code). Prints medians and speed-ups; runs on CPU, and on CUDA
too when present. The variants run in turns, so a shared machine's load hits all alike.

Usage: ``python bench/bench_styles.py [--repeats 3] [--batch 8] [--device cpu cuda]``
"""

from __future__ import annotations

import argparse
import random

import torch
from timing import time_all  # bench/timing.py, beside this script


def make_inputs(batch: int, channels: int, feat: int, label: int, bank_size: int, device: torch.device, seed: int = 0):
    """Features (B, C, F, F), blocky labels (B, L, L) and a bank (N, C) over 19 classes + ignore."""
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(batch, channels, feat, feat, generator=g).relu()
    coarse = torch.randint(0, 20, (batch, 12, 12), generator=g)  # class 19 stands for ignore
    coarse[coarse == 19] = 255
    rep = label // 12
    labels = coarse.repeat_interleave(rep, 1).repeat_interleave(rep, 2)  # (B, L, L)
    mu = torch.randn(bank_size, channels, generator=g)
    sigma = torch.rand(bank_size, channels, generator=g) + 0.1
    ids = list(range(19)) + [255]
    cls = torch.tensor([ids[i % len(ids)] for i in range(bank_size)])  # ~10 styles per class
    return f.to(device), labels.to(device), mu, sigma, cls


def loop_style_op(f, labels, bank_lists, grid: int, alpha: float, eps: float) -> torch.Tensor:
    """Reference: loops over samples x patches, host-side mode, random.choice from Python lists."""
    b, c, h, w = f.shape
    lh, lw = labels.shape[1] // grid, labels.shape[2] // grid
    ph, pw = h // grid, w // grid
    out = f.clone()
    lam = torch.distributions.Beta(alpha, alpha).sample((b, c, 1, 1)).to(f.device)
    for bi in range(b):
        for i in range(grid):
            for j in range(grid):
                lab = labels[bi, i * lh : (i + 1) * lh, j * lw : (j + 1) * lw].cpu()
                cls = int(torch.mode(lab.flatten()).values)
                entries = bank_lists.get(cls) or bank_lists[255]
                mu_t, sig_t = random.choice(entries)
                mu_t, sig_t = mu_t.to(f.device)[:, None, None], sig_t.to(f.device)[:, None, None]
                patch = f[bi, :, i * ph : (i + 1) * ph, j * pw : (j + 1) * pw]
                mu = patch.mean(dim=(1, 2), keepdim=True)
                sig = (patch.var(dim=(1, 2), keepdim=True, unbiased=True) + eps).sqrt()  # as calc_mean_std
                m = lam[bi] * mu + (1 - lam[bi]) * mu_t
                s = lam[bi] * sig + (1 - lam[bi]) * sig_t
                out[bi, :, i * ph : (i + 1) * ph, j * pw : (j + 1) * pw] = torch.relu(s * (patch - mu) / sig + m)
    return out


def host_maps_style_op(f, labels, bank_lists, grid: int, alpha: float, eps: float) -> torch.Tensor:
    """Reference in the common research-code form: per-pixel statistic maps built on the host in loops.

    Own and target means/stds are written patch by patch (and sample by sample for the
    targets) into full-size (B, C, H, W) host tensors, which are then moved to the
    features' device and combined with the normalized features in one expression.
    """
    b, c, h, w = f.shape
    ph, pw = h // grid, w // grid
    lh, lw = labels.shape[1] // grid, labels.shape[2] // grid
    lab = labels.cpu()
    mu_o, sd_o = torch.zeros(b, c, h, w), torch.zeros(b, c, h, w)
    mu_t, sd_t = torch.zeros(b, c, h, w), torch.zeros(b, c, h, w)
    norm = torch.empty_like(f)
    for i in range(grid):
        for j in range(grid):
            rows, cols = slice(i * ph, (i + 1) * ph), slice(j * pw, (j + 1) * pw)
            patch = f[:, :, rows, cols]
            m = patch.mean(dim=(2, 3), keepdim=True)
            sd = (patch.var(dim=(2, 3), keepdim=True, unbiased=True) + eps).sqrt()  # as calc_mean_std
            norm[:, :, rows, cols] = (patch - m) / sd
            mu_o[:, :, rows, cols] = m.cpu().expand(b, c, ph, pw)
            sd_o[:, :, rows, cols] = sd.cpu().expand(b, c, ph, pw)
            for k in range(b):
                cls = int(torch.mode(lab[k, i * lh : (i + 1) * lh, j * lw : (j + 1) * lw].flatten()).values)
                entries = bank_lists.get(cls) or bank_lists[255]
                m_t, s_t = random.choice(entries)
                mu_t[k, :, rows, cols] = m_t[:, None, None]
                sd_t[k, :, rows, cols] = s_t[:, None, None]
    lam = torch.distributions.Beta(alpha, alpha).sample((b, c, 1, 1)).to(f.device)
    mu_mix = lam * mu_o.to(f.device) + (1 - lam) * mu_t.to(f.device)
    sd_mix = lam * sd_o.to(f.device) + (1 - lam) * sd_t.to(f.device)
    return torch.relu(sd_mix * norm + mu_mix)


def run(device: torch.device, args) -> list[float]:
    from famix_core.config import StyleConfig
    from famix_core.styles.bank import StyleBank
    from famix_core.styles.strategies import build_style_augmenter

    f, labels, mu, sigma, cls = make_inputs(args.batch, args.channels, args.feat, args.label, args.bank, device)
    bank = StyleBank(mu, sigma, cls).to(device)
    aug = build_style_augmenter(StyleConfig(), bank, 19).to(device).train()
    bank_lists: dict[int, list] = {}
    for k, m, s in zip(cls.tolist(), mu, sigma):
        bank_lists.setdefault(k, []).append((m, s))
    with torch.no_grad():
        return time_all(
            [
                lambda: aug(f, labels),
                lambda: loop_style_op(f, labels, bank_lists, 3, 0.1, 1e-5),
                lambda: host_maps_style_op(f, labels, bank_lists, 3, 0.1, 1e-5),
            ],
            device,
            args.repeats,
        )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--channels", type=int, default=256)
    p.add_argument("--feat", type=int, default=192)
    p.add_argument("--label", type=int, default=768)
    p.add_argument("--bank", type=int, default=200)
    p.add_argument("--device", nargs="*", default=None, help="default: cpu, plus cuda when available")
    args = p.parse_args(argv)
    devices = args.device or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    random.seed(0)
    torch.manual_seed(0)
    print(
        f"style op (stats + dominant class + sampling + mix + apply), B={args.batch}, C={args.channels}, "
        f"{args.feat}x{args.feat} features, {args.label}x{args.label} labels, 3x3 grid, bank {args.bank}; "
        f"median of {args.repeats}, torch threads {torch.get_num_threads()}"
    )
    print(f"{'device':<7} {'variant':<34} {'ms/step':>9} {'speed-up of vectorized':>23}")
    names = ("vectorized (this project)", "per-patch loop", "loop + host per-pixel stat maps")
    for name in devices:
        times = run(torch.device(name), args)
        for i, (label, t) in enumerate(zip(names, times)):
            ratio = f"{t / times[0]:.1f}x" if i else ""
            print(f"{name:<7} {label:<34} {t * 1e3:>9.1f} {ratio:>23}")


if __name__ == "__main__":
    main()
