"""Prompt-driven style mining (METHOD.md "Style mining"): learn a style bank from language prompts.

Follows the official ``patch_PIN.py`` + ``utils/PPIN.py`` (docs/method.md). The
source images are read with the mining transform (random crop only: no colour
jitter, no flip; batches of ``mining.batch_size`` with ``drop_last``). For each
batch, the frozen CLIP image encoder (its own output stride 32) gives layer-1
features; these are split into ``g x g`` patches (the labels too), each patch
gets its dominant class, and, walking the patches patch-major (for each patch
position, over the batch, as the official ``unfold(...).permute(-1, 0, 1)``),
the first patch of each distinct dominant class of the batch is kept. A kept
patch is normalized once with its own statistics and gets learnable
``(mu, sigma)`` initialized to them; the forward ``ReLU(sigma * normalized +
mu)`` is average-pooled to CLIP's layer-1 size (``image_size / 4``: 56 for
RN50, the official ``--resize_feat``) and run through layers 2-4 and the
attention pool; the loss pulls the embedding towards the prompt's text target.

Loss weighting: the official loss is the MEAN over the ``N_b`` patches kept
from one batch, so each patch moves by ``lr / N_b`` times its own gradient.

Batched optimization: the kept patches of one or more batches (up to
``mining.patches_per_step``) are optimized together as one ``(N, C)`` parameter
pair. CLIP is frozen in eval mode, so patches do not interact, and the loss is
``sum_i w_i (1 - cos(emb_i, target_i))`` with ``w_i = 1 / N_b`` of the batch
patch ``i`` came from: each patch then gets exactly the gradient (and, with
SGD's per-element momentum and weight decay, the update) that one-batch-at-a-time
optimization gives it. The forward/backward runs in chunks of patches, which
changes nothing but the memory peak. Reported losses are means over patches.

Determinism: ``torch.manual_seed(mining.seed)`` before anything random (model
init, loader shuffle, crops), a loader generator seeded the same way, and a
``random.Random(mining.seed)`` for the prompts; same seed -> same bank.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from famix_core.classes import CLASS_NAMES, IGNORE_INDEX
from famix_core.config import FamixConfig
from famix_core.device import autocast, chunk_for_memory, configure_kernels, stage_device
from famix_core.errors import FamixError
from famix_core.prompts import TextTargets, build_prompt
from famix_core.io import atomic_write_json
from famix_core.styles.bank import StyleBank
from famix_core.styles.ops import dominant_class, patch_stats

__all__ = [
    "mine_styles",
    "mining_dataset",
    "KeptPatch",
    "select_patches",
    "optimize_styles",
    "clip_image_size",
    "SUMMARY_FILE",
]

SUMMARY_FILE = "summary.json"
_FORWARD_CHUNK = 64  # kept patches per forward/backward inside one batched problem
_LOG_EVERY = 10

LogFn = Callable[[dict[str, float], "int | None"], None]


@dataclass
class KeptPatch:
    """One patch to mine a style from.

    Attributes:
        norm: (C, P, P) the patch normalized with its own statistics (pooled to the common size P).
        mu: (C,) its mean; sigma: (C,) its std (the initial style).
        cls: dominant class (train id or 255).
        prompt: its text prompt.
        weight: its loss weight ``1 / N_b``, ``N_b`` the number of patches kept from its batch.
    """

    norm: torch.Tensor
    mu: torch.Tensor
    sigma: torch.Tensor
    cls: int
    prompt: str
    weight: float = 1.0


def _patch_bounds(n: int, grid: int) -> list[tuple[int, int]]:
    """Start/stop of each patch along a side, matching :func:`famix_core.styles.ops.patch_index`."""
    starts = [math.ceil(r * n / grid) for r in range(grid)] + [n]
    return [(starts[r], starts[r + 1]) for r in range(grid)]


def select_patches(
    feats: torch.Tensor,
    labels: torch.Tensor,
    *,
    grid: int,
    num_classes: int,
    eps: float,
    size: tuple[int, int],
    prompt_type: str,
    rng: random.Random,
    class_names: tuple[str, ...],
) -> list[KeptPatch]:
    """Keep the first patch of each distinct dominant class of a batch, walking patch-major, normalized.

    The walk goes over patch positions in row-major order and, for each, over the
    samples of the batch (official ``patch_PIN.py``: ``unfold`` then
    ``permute(-1, 0, 1)``), so a class first met at patch (0, 0) of sample 1 is
    kept from there, not from a later patch of sample 0. Every kept patch gets
    the loss weight ``1 / N_b`` (``N_b`` = number kept from this batch).

    Args:
        feats: (B, C, H, W) layer-1 features.
        labels: (B, Hl, Wl) label map.
        grid: patches per side.
        num_classes: real classes.
        eps: variance epsilon.
        size: common (ph, pw) the normalized patches are average-pooled to (a no-op
            when every patch already has it, i.e. H, W divisible by ``grid``).
        prompt_type: prompt type name.
        rng: the prompt RNG.
        class_names: names of the train ids.

    Returns:
        Kept patches in the order met: (row, column, sample).
    """
    b, c, h, w = feats.shape
    g = grid
    dom_bgg = dominant_class(labels, g, num_classes, IGNORE_INDEX)  # (B, g, g)
    dom = dom_bgg.reshape(b, g * g).t().reshape(-1).tolist()  # (g*g*B,) patch-major, host
    mu, sigma = patch_stats(feats, g, eps)  # (B, C, g, g)
    rows, cols = _patch_bounds(h, g), _patch_bounds(w, g)
    seen: set[int] = set()
    kept: list[KeptPatch] = []
    for pos, k in enumerate(dom):
        if k in seen:
            continue
        seen.add(k)
        patch, bi = divmod(pos, b)
        r, q = divmod(patch, g)
        (r0, r1), (c0, c1) = rows[r], cols[q]
        m, s = mu[bi, :, r, q], sigma[bi, :, r, q]  # (C,)
        norm = (feats[bi, :, r0:r1, c0:c1] - m[:, None, None]) / s[:, None, None]  # (C, ph, pw)
        if tuple(norm.shape[1:]) != tuple(size):
            norm = F.adaptive_avg_pool2d(norm, size)
        prompt = build_prompt(prompt_type, k, rng, class_names, IGNORE_INDEX)
        kept.append(KeptPatch(norm, m.clone(), s.clone(), k, prompt))
    for p in kept:
        p.weight = 1.0 / len(kept)
    return kept


def _embed(visual: nn.Module, norm: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor, pool: int) -> torch.Tensor:
    """CLIP image embedding of stylized patches.

    Args:
        visual: open_clip ModifiedResNet (frozen, eval).
        norm: (N, C, P, P) normalized patches.
        mu, sigma: (N, C) styles.
        pool: layer-1 side length of a CLIP input (image_size / 4).

    Returns:
        (N, D) embeddings.
    """
    # mul then add, as the official PPIN.forward: pixels ReLU'd to 0 in layer 1 come back to ~0 here, on
    # ReLU's kink, and a fused addcmul rounds them to the other side often enough to change the gradient
    x = torch.relu(norm * sigma[:, :, None, None] + mu[:, :, None, None])  # (N, C, P, P)
    x = F.adaptive_avg_pool2d(x, pool)  # (N, C, pool, pool)
    x = visual.layer3(visual.layer2(x))
    x = visual.layer4(x)  # (N, C4, pool/8, pool/8)
    return visual.attnpool(x)  # (N, D)


def optimize_styles(
    visual: nn.Module,
    norm: torch.Tensor,
    mu0: torch.Tensor,
    sigma0: torch.Tensor,
    target: torch.Tensor,
    *,
    steps: int,
    lr: float,
    momentum: float,
    weight_decay: float,
    pool: int,
    weights: torch.Tensor | None = None,
    on_step: Callable[[int, torch.Tensor], None] | None = None,
    chunk: int = _FORWARD_CHUNK,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Prompt-driven instance normalization of N patches at once.

    The loss is ``sum_i weights_i * (1 - cos(emb_i, target_i))``: with ``weights_i = 1 / N_b``
    this is the official per-batch mean, batched over several source batches.

    Args:
        visual: frozen CLIP ModifiedResNet.
        norm: (N, C, P, P) normalized patches.
        mu0, sigma0: (N, C) initial styles (the patches' own statistics).
        target: (N, D) unit-norm text targets.
        steps, lr, momentum, weight_decay: SGD settings.
        pool: layer-1 side of a CLIP input.
        weights: (N,) per-patch loss weights (None: 1 each, every patch its own unscaled gradient).
        on_step: called with (step, mean loss as a 0-d tensor) after each step's forward.
        chunk: patches per forward/backward (gradients accumulate; the result is unchanged).

    Returns:
        ``(mu, sigma, initial_losses, final_losses)``: learnt (N, C) styles and the per-patch
        losses (N,) before the first and after the last update.
    """
    mu = mu0.detach().clone().requires_grad_(True)
    sigma = sigma0.detach().clone().requires_grad_(True)
    opt = torch.optim.SGD([mu, sigma], lr=lr, momentum=momentum, weight_decay=weight_decay)
    n = norm.shape[0]
    w = torch.ones(n, device=norm.device) if weights is None else weights.to(norm.device, torch.float32)  # (N,)

    def losses(backward: bool) -> torch.Tensor:
        """Per-patch losses (N,), chunk by chunk; with ``backward``, accumulate the weighted sum's gradient."""
        out = []
        for i in range(0, n, chunk):
            sl = slice(i, i + chunk)
            emb = _embed(visual, norm[sl], mu[sl], sigma[sl], pool)  # (n_chunk, D)
            per = 1.0 - F.cosine_similarity(emb.float(), target[sl], dim=-1)  # (n_chunk,)
            if backward:
                (per * w[sl]).sum().backward()  # patch i gets w_i times its own gradient
            out.append(per.detach())
        return torch.cat(out)

    initial = torch.zeros(n, device=norm.device)
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        per_all = losses(backward=True)
        if step == 0:
            initial = per_all
        opt.step()
        if on_step is not None:
            on_step(step, per_all.mean())  # a tensor: the caller syncs only when it logs
    with torch.no_grad():
        final = losses(backward=False)
    return mu.detach(), sigma.detach(), initial, final


def mining_dataset(cfg: FamixConfig) -> torch.utils.data.Dataset:
    """The source training split as style mining reads it: random ``mining.crop_size`` crops only.

    The official mining runs without ``--data_aug`` (``utils/get_dataset.py``): random crop,
    no colour jitter, no flip, whatever the training transform of the source is. For SYNTHIA
    (760 px high) that official crop of 768 cannot run (``ExtRandomCrop`` has no padding and draws
    ``randint(0, -8)``), so its official styles came from ``--data_aug`` or changed code; here the
    crop is padded (image 0, label 255), which keeps every pixel of the image.

    Returns:
        A dataset of (image (3, S, S) CLIP-normalized, label (S, S) long), S = ``mining.crop_size``.
    """
    from famix_core.data import build_dataset
    from famix_core.data.transforms import build_transform

    ds = build_dataset(cfg.data, cfg.data.source, "train", train=True, crop_size=cfg.mining.crop_size)
    ds.transform = build_transform(train=True, crop_size=cfg.mining.crop_size, jitter=(0.0, 0.0, 0.0), hflip=False)
    return ds


def _class_names(num_classes: int) -> tuple[str, ...]:
    if num_classes == len(CLASS_NAMES):
        return CLASS_NAMES
    raise FamixError(
        f"model.num_classes: style mining needs class names; known for {len(CLASS_NAMES)} classes, got {num_classes}"
    )


def clip_image_size(visual: nn.Module) -> int:
    """The CLIP image encoder's input side (its attention pool is sized for it; 224 when unset)."""
    s = getattr(visual, "image_size", 224)
    return int(s[0] if isinstance(s, (tuple, list)) else s)


def _batches(loader: Iterable, epochs: int, max_batches: int | None) -> Iterable:
    """``epochs`` passes over ``loader`` (each a new shuffle and new random crops), ``max_batches`` in all."""
    n = 0
    for _ in range(epochs):
        for batch in loader:
            if max_batches is not None and n >= max_batches:
                return
            n += 1
            yield batch


def mine_styles(
    cfg: FamixConfig,
    out_dir: str | Path,
    *,
    log: LogFn | None = None,
    dataset: torch.utils.data.Dataset | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Mine a style bank from the source dataset with language prompts.

    Args:
        cfg: the engine config (``model``, ``style.grid/eps``, ``mining``, ``data``, ``train.device``).
        out_dir: receives ``bank.safetensors``, ``bank.json`` and ``summary.json`` (each written atomically).
        log: ``log({"mine/loss": x}, step)`` loss callback (``step`` counts optimization steps of
            patch groups, whose number depends on the classes each batch holds).
        dataset: items ``(image (3, H, W) CLIP-normalized, label (H, W) long)``; default:
            :func:`mining_dataset` (the source train split, random crops only).
        progress: ``progress(steps, total)`` as the styles are optimized: steps of all patch groups,
            the groups still to come estimated from the patches kept per source batch so far.

    Returns:
        The summary: ``styles_per_class``, ``initial_loss``, ``final_loss``, ``prompt``, ``n_styles``,
        ``batches`` (source batches read; a last incomplete one is dropped), ``seconds``.

    Raises:
        FamixError: no data, or weights/data missing (from the model and data builders).
    """
    t0 = time.perf_counter()
    from famix_core.models.clip import create_clip, get_tokenizer

    mc, sc = cfg.mining, cfg.style
    out = Path(out_dir)
    torch.manual_seed(mc.seed)
    rng = random.Random(mc.seed)
    names = _class_names(cfg.model.num_classes)

    # built on the CPU, then moved: a weights problem fails alone, before the device's CPU-fallback notice
    clip = create_clip(cfg.model.backbone, cfg.model.pretrained, cfg.model.cache_dir, needs_text=True)
    device = stage_device(cfg)
    configure_kernels(device, deterministic=cfg.train.deterministic, benchmark=True)  # equal-size patches
    clip = clip.to(device)
    clip.requires_grad_(False)
    clip.eval()
    visual = clip.visual
    pool = clip_image_size(visual) // 4
    texts = TextTargets(clip, get_tokenizer(cfg.model.backbone), device)

    ds = dataset if dataset is not None else mining_dataset(cfg)
    if len(ds) == 0:
        raise FamixError(f"data.source={cfg.data.source}: the training split is empty; nothing to mine from")
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=mc.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(mc.seed),
        num_workers=0,  # crops come from the seeded global RNG stream: workers would split it (loaders.py)
        pin_memory=device.type == "cuda",
        drop_last=True,  # official: no incomplete batch
    )

    total_batches = len(loader) * mc.epochs
    if mc.max_batches is not None:
        total_batches = min(total_batches, mc.max_batches)
    mus, sigmas, classes = [], [], []
    init_sum = final_sum = 0.0
    n_done = 0
    group_idx = 0
    n_batches = 0
    pending: list[KeptPatch] = []
    size: tuple[int, int] | None = None

    n_kept = 0  # patches kept from the batches read so far

    def on_step_for(group: int) -> Callable[[int, torch.Tensor], None]:
        def on_step(step: int, loss: torch.Tensor) -> None:
            if log is not None and (step % _LOG_EVERY == 0 or step == mc.steps - 1):
                log({"mine/loss": float(loss)}, group * mc.steps + step)
            if progress is not None:  # exact once every batch is read (the groups depend on the classes in them)
                expected = n_kept * total_batches / max(n_batches, 1)
                groups = max(group + 1, math.ceil(expected / mc.patches_per_step))
                progress(group * mc.steps + step + 1, groups * mc.steps)

        return on_step

    chunks: list[int] = []

    def chunk_of(norm: torch.Tensor, mu0: torch.Tensor, sigma0: torch.Tensor) -> int:
        """Patches per forward/backward: sized once from the GPU's free memory (64 on the CPU)."""
        if not chunks:
            def probe(k: int) -> None:
                m, s = mu0[:k].clone().requires_grad_(True), sigma0[:k].clone().requires_grad_(True)
                _embed(visual, norm[:k], m, s, pool).float().sum().backward()

            chunks.append(chunk_for_memory(device, probe, default=_FORWARD_CHUNK))
        return chunks[0]

    def flush(group: list[KeptPatch]) -> None:
        nonlocal init_sum, final_sum, n_done, group_idx
        norm = torch.stack([p.norm for p in group])  # (N, C, P, P)
        mu0 = torch.stack([p.mu for p in group])  # (N, C)
        sigma0 = torch.stack([p.sigma for p in group])
        target = texts([p.prompt for p in group])  # (N, D)
        weights = torch.tensor([p.weight for p in group], device=device)  # (N,) 1 / N_b
        with autocast(device, mc.precision):  # mining.precision: the CLIP forward/backward; styles stay fp32
            mu, sigma, init_l, final_l = optimize_styles(
                visual,
                norm,
                mu0,
                sigma0,
                target,
                steps=mc.steps,
                lr=mc.lr,
                momentum=mc.momentum,
                weight_decay=mc.weight_decay,
                pool=pool,
                weights=weights,
                on_step=on_step_for(group_idx),
                chunk=chunk_of(norm, mu0, sigma0),
            )
        mus.append(mu.cpu())
        sigmas.append(sigma.cpu())
        classes.extend(p.cls for p in group)
        init_sum += float(init_l.sum())
        final_sum += float(final_l.sum())
        n_done += len(group)
        group_idx += 1

    for images, labels in _batches(loader, mc.epochs, mc.max_batches):
        n_batches += 1
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        with torch.no_grad():
            feats = visual.layer1(visual.stem(images))  # (B, C, H/4, W/4)
        if size is None:
            size = (math.ceil(feats.shape[2] / sc.grid), math.ceil(feats.shape[3] / sc.grid))
        kept = select_patches(
            feats,
            labels,
            grid=sc.grid,
            num_classes=cfg.model.num_classes,
            eps=sc.eps,
            size=size,
            prompt_type=mc.prompt,
            rng=rng,
            class_names=names,
        )
        n_kept += len(kept)
        pending.extend(kept)
        while len(pending) >= mc.patches_per_step:
            flush(pending[: mc.patches_per_step])
            pending = pending[mc.patches_per_step :]
    if pending:
        flush(pending)
    if n_done == 0:
        raise FamixError(
            f"data.source={cfg.data.source}: no batch was read ({len(ds)} images, mining.batch_size={mc.batch_size},"
            f" incomplete batches dropped); nothing to mine from"
        )

    bank = StyleBank(
        torch.cat(mus),
        torch.cat(sigmas),
        torch.tensor(classes, dtype=torch.long),
        class_names=names,
        meta={
            "backbone": cfg.model.backbone,
            "pretrained": cfg.model.pretrained,
            "prompt": mc.prompt,
            "seed": mc.seed,
            "steps": mc.steps,
            "grid": sc.grid,
            "source": cfg.data.source,
            "crop_size": mc.crop_size,
        },
    )
    bank.save(out)
    summary = {
        "styles_per_class": bank.counts(),
        "initial_loss": init_sum / n_done,
        "final_loss": final_sum / n_done,
        "prompt": mc.prompt,
        "n_styles": len(bank),
        "batches": n_batches,
        "channels": bank.channels,
        "seconds": time.perf_counter() - t0,
    }
    atomic_write_json(out / SUMMARY_FILE, summary, indent=2)
    return summary
