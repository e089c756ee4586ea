"""Evaluation: a confusion matrix accumulated on the device over a whole split; mIoU, per-class IoU, pixel accuracy.

Conventions:
  * the confusion matrix ``M`` is (K, K) int64, rows = ground truth, columns = prediction;
    pixels labelled 255 (or any id >= K) are ignored;
  * IoU_c = M[c,c] / (sum_row_c + sum_col_c - M[c,c]); a class with union 0 (absent from
    the ground truth AND never predicted) has IoU ``None`` and is excluded from the mean;
    a class predicted but absent from the ground truth has IoU 0 and counts;
  * mIoU = mean IoU over the classes with a non-zero union (fractions in [0, 1]);
  * test-time scales (official ``main.py::validate``): for a scale ``s != 1`` the image is resized
    by ``F.interpolate(scale_factor=s, mode="bilinear", align_corners=True)``; the logits of every
    scale are resized to the label size the same way (bilinear, ``align_corners=True``; the model
    itself upsamples to its input with ``align_corners=False``); with several scales
    (``[1.0, 0.5]`` = the official ``--scale 0.5 --ensemble``) their LOGITS are averaged.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F

from famix_core.checkpoint import atomic_write_json
from famix_core.classes import CLASS_NAMES, IGNORE_INDEX
from famix_core.device import stage_device
from famix_core.domains import resolve_domain

if TYPE_CHECKING:
    from famix_core.config import FamixConfig
    from famix_core.models.segmenter import Segmenter

__all__ = [
    "ConfusionMatrix",
    "confusion_record",
    "confusion_update",
    "metrics_from_confusion",
    "predict",
    "scaled_logits",
    "evaluate_model",
    "evaluate_domain",
    "evaluate",
    "load_segmenter",
    "keep_loaded_model",
]

LogFn = Callable[[dict[str, float], "int | None"], None]


def confusion_update(conf: torch.Tensor, pred: torch.Tensor, gt: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Add a batch to a confusion matrix, in place, on the tensors' device.

    Args:
        conf: (K, K) int64, rows = ground truth, columns = prediction.
        pred: (B, H, W) or (N,) predicted class ids in [0, K).
        gt: same shape, ground-truth ids; ``ignore_index`` and ids >= K are skipped.

    Returns:
        ``conf`` (updated).
    """
    k = conf.shape[0]
    gt = gt.reshape(-1).long()  # (N,)
    pred = pred.reshape(-1).long()
    valid = (gt != ignore_index) & (gt >= 0) & (gt < k)
    # fixed sizes only (no boolean-mask indexing, no bincount sizing): nothing waits for the device
    idx = torch.where(valid, gt * k + pred, k * k)  # (N,) flat (gt, pred) cell; skipped pixels -> spare bin k*k
    counts = torch.zeros(k * k + 1, dtype=conf.dtype, device=conf.device)
    counts.scatter_add_(0, idx, torch.ones_like(idx, dtype=conf.dtype))  # (K*K + 1,)
    conf += counts[: k * k].view(k, k)
    return conf


class ConfusionMatrix:
    """A (K, K) int64 confusion matrix living on a device.

    Args:
        num_classes: K.
        device: where the counts accumulate.
        ignore_index: label skipped in the ground truth.
    """

    def __init__(self, num_classes: int, device: torch.device | str = "cpu", ignore_index: int = IGNORE_INDEX):
        self.mat = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
        self.ignore_index = ignore_index

    def update(self, pred: torch.Tensor, gt: torch.Tensor) -> None:
        """Count predictions (B, H, W) against labels (B, H, W)."""
        confusion_update(self.mat, pred, gt, self.ignore_index)

    def metrics(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        """``{"miou", "iou": {name: float|None}, "pixel_acc"}`` (see the module docstring)."""
        return metrics_from_confusion(self.mat, class_names)


def confusion_record(conf: torch.Tensor, class_names: Sequence[str]) -> dict[str, Any]:
    """``confusion.json``: the (K, K) counts with the names of their rows and columns, so the file reads
    on its own (in MLflow: ``confusion/<column>.json``).

    Returns:
        ``{"classes": [K names], "rows": "ground truth", "columns": "prediction", "matrix": K lists of K ints}``.
        Stores written before this record was named hold the bare matrix.
    """
    return {"classes": list(class_names), "rows": "ground truth", "columns": "prediction", "matrix": conf.cpu().tolist()}


def metrics_from_confusion(conf: torch.Tensor, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """mIoU, per-class IoU and pixel accuracy of a confusion matrix.

    Args:
        conf: (K, K) counts, rows = ground truth.
        class_names: K names (default: the Cityscapes train classes when K = 19, else ``"0".."K-1"``).

    Returns:
        ``{"miou": float, "iou": {name: float | None}, "pixel_acc": float}``; ``miou`` averages the
        classes whose union is non-zero (``nan`` when there are none).
    """
    c = conf.double().cpu()
    k = c.shape[0]
    names = list(class_names) if class_names is not None else (list(CLASS_NAMES) if k == len(CLASS_NAMES) else [str(i) for i in range(k)])
    tp = torch.diagonal(c)  # (K,)
    union = c.sum(0) + c.sum(1) - tp  # (K,)
    iou: dict[str, float | None] = {}
    present = []
    for i, name in enumerate(names):
        if union[i] > 0:
            v = float(tp[i] / union[i])
            iou[name] = v
            present.append(v)
        else:
            iou[name] = None
    total = float(c.sum())
    return {
        "miou": sum(present) / len(present) if present else float("nan"),
        "iou": iou,
        "pixel_acc": float(tp.sum()) / total if total > 0 else float("nan"),
    }


MIN_SCALED_SIDE = 16
"""The smallest image side the CLIP ResNets take (smaller: a pooling layer's output is empty)."""


def check_scales(scales: Sequence[float], size: tuple[int, int]) -> None:
    """Every test-time scale below 1 leaves an image of ``size`` at least :data:`MIN_SCALED_SIDE` pixels a side.

    ``eval.scales=[0.001]`` passed the plan, then every evaluation failed in a pooling layer ("Output
    size is too small") and was retried as a fault of the machine.

    Raises:
        ConfigError: ``eval.scales: 0.001 shrinks a 128×256 image to 0×0 pixels; …``.
    """
    from famix_core.errors import ConfigError

    h, w = size
    for s in scales:
        sh, sw = int(h * s), int(w * s)  # F.interpolate's floor of scale_factor
        if s < 1.0 and min(sh, sw) < MIN_SCALED_SIDE:  # (the images as they are: the data's, not a scale's)
            raise ConfigError(f"eval.scales: {s:g} shrinks a {h}×{w} image to {sh}×{sw} pixels; the backbone needs at least "
                              f"{MIN_SCALED_SIDE} on each side (expected a scale of at least {math.ceil(100 * MIN_SCALED_SIDE / min(h, w)) / 100:g})")


@torch.no_grad()
def scaled_logits(
    model: "Segmenter", images: torch.Tensor, out_size: tuple[int, int], scales: Sequence[float] = (1.0,)
) -> torch.Tensor:
    """Logits at the label size, averaged over test-time scales (official ``main.py::validate``).

    Args:
        model: the segmenter (eval mode); its logits come at its input's size.
        images: (B, 3, H, W).
        out_size: (Hl, Wl) of the labels.
        scales: input scales; each ``s != 1`` resizes the input bilinearly with ``align_corners=True``
            (``scale_factor=s``: floor(H * s) rows); the logits of each scale are resized to
            ``out_size`` bilinearly with ``align_corners=True`` and the logits are averaged.

    Returns:
        (B, K, Hl, Wl) float32 logits.
    """
    acc = None
    for s in scales:
        x = images
        if s != 1.0:
            x = F.interpolate(images, scale_factor=s, mode="bilinear", align_corners=True)  # (B, 3, ~sH, ~sW)
        logits = model(x).float()  # (B, K, h, w)
        if logits.shape[-2:] != tuple(out_size):
            logits = F.interpolate(logits, size=tuple(out_size), mode="bilinear", align_corners=True)
        acc = logits if acc is None else acc + logits
    assert acc is not None
    return acc / len(scales) if len(scales) > 1 else acc


@torch.no_grad()
def predict(model: "Segmenter", images: torch.Tensor, out_size: tuple[int, int], scales: Sequence[float] = (1.0,)) -> torch.Tensor:
    """Class predictions at the label size: the argmax of :func:`scaled_logits`.

    Args:
        model: the segmenter (eval mode).
        images: (B, 3, H, W).
        out_size: (Hl, Wl) of the labels.
        scales: test-time scales (several: their logits averaged).

    Returns:
        (B, Hl, Wl) int64 predictions.
    """
    return scaled_logits(model, images, out_size, scales).argmax(1)


def _groups(loader: Iterable[list]) -> Iterable[list[tuple[torch.Tensor, torch.Tensor]]]:
    """Split each loaded list of items into runs of equal image and label sizes (one forward each)."""
    for batch in loader:
        if len({(tuple(x.shape), tuple(y.shape)) for x, y in batch}) == 1:
            yield batch
        else:
            yield from ([item] for item in batch)


def evaluate_model(
    model: "Segmenter",
    dataset,
    num_classes: int,
    device: torch.device,
    scales: Sequence[float] = (1.0,),
    batch_size: int = 1,
    *,
    precision: str = "fp32",
    channels_last: bool = False,
    num_workers: int = 0,
    progress: Callable[[int, int | None], None] | None = None,
) -> tuple[torch.Tensor, int]:
    """Accumulate the confusion matrix of a model over a dataset, on ``device``.

    Images are decoded by DataLoader workers (pinned on CUDA) and predicted one forward per
    loaded group under ``torch.inference_mode()``, every test-time scale in the same pass; the
    logits and the confusion matrix stay on ``device`` (nothing per image comes back to the host).

    Args:
        model: the segmenter, on ``device``.
        dataset: items (image (3,H,W), label (Hl,Wl)); images of different sizes are run one by one.
        num_classes: K.
        device: compute device.
        scales: test-time scales.
        batch_size: images per forward pass (when their sizes agree; 1 = one full-resolution image at a time).
        precision: ``fp32`` or ``bf16`` (autocast of the forward; the logits are compared in fp32).
        channels_last: channels_last images and model (CUDA).
        num_workers: loader worker processes.
        progress: called with (images done, images in all) after each forward pass (reads no tensor,
            so it waits for nothing on the device).

    Returns:
        ((K, K) int64 confusion on ``device``, number of images).
    """
    from torch.utils.data import DataLoader

    from famix_core.device import autocast
    from famix_core.loaders import loader_options

    model.eval()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    if channels_last:
        model = model.to(memory_format=fmt)
    conf = ConfusionMatrix(num_classes, device)
    n = 0
    total = len(dataset) if hasattr(dataset, "__len__") else None
    # its own generator: an iterator draws its base seed from it, and the global stream belongs to
    # the training that may call this for source validation (drawing from it would change the run)
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=list, generator=torch.Generator(),
                        **loader_options(num_workers, device, persistent=False))
    with torch.inference_mode(), autocast(device, precision):
        for group in _groups(loader):
            images = torch.stack([torch.as_tensor(x) for x, _ in group]).to(device, non_blocking=True)  # (B, 3, H, W)
            labels = torch.stack([torch.as_tensor(y) for _, y in group]).to(device, non_blocking=True)  # (B, Hl, Wl)
            check_scales(scales, tuple(images.shape[-2:]))
            pred = predict(model, images.contiguous(memory_format=fmt), tuple(labels.shape[-2:]), scales)
            conf.update(pred, labels)
            n += len(group)
            if progress is not None:
                progress(n, total)
    return conf.mat, n


def load_segmenter(cfg: "FamixConfig", weights: str | Path, device: torch.device | str = "cpu") -> "Segmenter":
    """Build ``cfg.model``'s segmenter and load trained weights (ours or an official checkpoint), strictly.

    Args:
        cfg: the engine config (backbone, output stride, classes).
        weights: ``model.safetensors`` (or its folder), or an official FAMix ``.pth``.
        device: target device.

    Returns:
        The segmenter in eval mode.
    """
    from famix_core.models.clip import read_state_dict
    from famix_core.models.segmenter import build_segmenter, load_strict

    p = Path(weights)
    if p.is_dir():
        p = p / "model.safetensors"
    sd = read_state_dict(p)
    mcfg = cfg.model.model_copy(update={"pretrained": "none", "freeze": "none"})
    model = build_segmenter(mcfg)
    load_strict(model, sd, p, cfg.model.backbone)
    return model.to(torch.device(device)).eval()


_kept: dict[str, Any] = {"depth": 0, "key": None, "model": None}
"""The segmenter :func:`evaluate_domain` loaded last, while a :func:`keep_loaded_model` block is open."""


@contextmanager
def keep_loaded_model() -> Iterator[None]:
    """Within the block, :func:`evaluate_domain` keeps the segmenter it loaded last and reuses it.

    Consecutive evaluations of one trained model in one process (the evaluations of a Slurm pack)
    then build the model and read its weights once. The model is reused only for the same weights
    file (path, size, modification time, inode), the same ``cfg.model``, device and memory format;
    anything else loads afresh and replaces it. Evaluation never changes the model (eval mode,
    inference mode), so the numbers are those of a fresh load. On leaving the outermost block the
    model is dropped (outside one, nothing is kept: a model would hold its memory, on the GPU too).
    """
    _kept["depth"] += 1
    try:
        yield
    finally:
        _kept["depth"] -= 1
        if _kept["depth"] == 0:
            _kept.update(key=None, model=None)


def _segmenter(cfg: "FamixConfig", weights: str | Path, device: torch.device, channels_last: bool) -> "Segmenter":
    """:func:`load_segmenter`, or the model kept by an open :func:`keep_loaded_model` block for the same inputs."""
    if not _kept["depth"]:
        return load_segmenter(cfg, weights, device)
    p = Path(weights)
    if p.is_dir():
        p = p / "model.safetensors"
    try:
        st = p.stat()
    except OSError:  # let the loader say what is wrong with it
        return load_segmenter(cfg, weights, device)
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns, st.st_ino,
           json.dumps(cfg.model.model_dump(mode="json"), sort_keys=True), str(device), channels_last)  # fmt: skip
    if _kept["key"] != key:
        _kept.update(key=None, model=None)  # the previous model's memory goes before the next one loads
        _kept["model"] = load_segmenter(cfg, weights, device)
        _kept["key"] = key
    return _kept["model"]


def evaluate_domain(
    cfg: "FamixConfig",
    weights: str | Path,
    domain: str,
    out_dir: str | Path | None = None,
    *,
    model: "Segmenter | None" = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> dict[str, Any]:
    """Evaluate trained weights on one domain split (``cfg.eval.split``, ``cfg.eval.scales``).

    Args:
        cfg: the engine config.
        weights: ``model.safetensors`` of a training run (or an official checkpoint).
        domain: domain name or table column (``C``, ``acdc_night``, ...).
        out_dir: if given, receives ``metrics.json`` and ``confusion.json`` (:func:`confusion_record`), atomically.
        model: an already loaded segmenter (skips loading ``weights``; used by :func:`evaluate`). Without
            it the weights are loaded, or reused inside a :func:`keep_loaded_model` block.
        progress: called with (images done, images in all) as the evaluation goes.

    Returns:
        ``{"miou": float in [0,1], "iou": {class: float|None}, "pixel_acc": float, "n_images": int}``.
    """
    from famix_core.data import build_dataset
    from famix_core.device import configure_kernels
    from famix_core.loaders import resolve_workers

    t0 = time.perf_counter()
    device = stage_device(cfg)
    configure_kernels(device, deterministic=cfg.train.deterministic, benchmark=False)  # image sizes vary
    channels_last = cfg.train.channels_last and device.type == "cuda"
    if model is None:
        model = _segmenter(cfg, weights, device, channels_last)
    dataset = build_dataset(cfg.data, domain, cfg.eval.split, train=False, max_items=cfg.eval.max_images)
    conf, n = evaluate_model(
        model, dataset, cfg.model.num_classes, device, cfg.eval.scales, cfg.eval.batch_size,
        precision=cfg.eval.precision, channels_last=channels_last,
        num_workers=resolve_workers(cfg.data.num_workers), progress=progress,
    )  # fmt: skip
    m = metrics_from_confusion(conf)
    result = {"miou": m["miou"], "iou": m["iou"], "pixel_acc": m["pixel_acc"], "n_images": n}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        d = resolve_domain(domain)
        atomic_write_json(
            out / "metrics.json",
            {**result, "domain": d.name, "column": d.column, "split": cfg.eval.split,
             "scales": list(cfg.eval.scales), "precision": cfg.eval.precision, "seconds": time.perf_counter() - t0},
        )
        atomic_write_json(out / "confusion.json", confusion_record(conf, list(m["iou"])))
    return result


def evaluate(
    cfg: "FamixConfig",
    weights: str | Path,
    domains: Sequence[str] | None = None,
    *,
    log: LogFn | None = None,
    out_dir: str | Path | None = None,
    progress: Callable[[str, int, int | None], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Evaluate on several domains (default ``cfg.eval.domains``), loading the weights once.

    Args:
        cfg: the engine config.
        weights: trained weights.
        domains: names or columns.
        log: called with ``{"miou/<column>": percent}`` after each domain.
        out_dir: if given, each domain writes into ``out_dir/<column>/``.
        progress: called with (column, images done, images in all) as each domain goes.

    Returns:
        ``{column: result of evaluate_domain}`` in the given order.

    Raises:
        DataError: a domain's data is missing or unreadable (every domain is checked before the first is
            scored); InputErrors: several such domains, one line each (:func:`famix_core.data.check_splits`).
    """
    from famix_core.data import check_splits

    # loaded on the CPU, then moved: a weights problem fails alone, before the device's CPU-fallback notice
    model = load_segmenter(cfg, weights).to(stage_device(cfg))
    names = list(domains or cfg.eval.domains)
    # every domain's data before the first is scored, every problem said at once
    check_splits(cfg.data, [(name, cfg.eval.split) for name in names], "nothing was scored")
    results: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(names):
        col = resolve_domain(name).short_name
        sub = Path(out_dir) / col if out_dir is not None else None
        tell = (lambda done, total, col=col: progress(col, done, total)) if progress is not None else None
        results[col] = evaluate_domain(cfg, weights, name, sub, model=model, progress=tell)
        if log is not None:
            log({f"miou/{col}": 100.0 * results[col]["miou"]}, i)
    return results

