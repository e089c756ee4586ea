"""Source validation during training and checkpoint selection (official ``main.py``, ``--val_interval``).

Every ``train.val_every`` iterations, and at the last one, the model is scored
(mIoU, scale 1, no ensemble) on the source domain's validation split; GTA5
images are centre-cropped to ``train.val_crop`` (official ``utils/get_dataset.py``:
``ExtCenterCrop((1046, 1914))``). The curve goes to the training's ``log``
callback as ``source_val/miou`` (percent, like every mIoU the orchestrator logs).
The best model so far (strictly higher mIoU; the first validation always counts)
is kept beside the latest checkpoint; ``train.select`` says which of the two the
training's ``model.safetensors`` is.

The split comes from :func:`source_val_dataset`, a small interface over
``famix_core.data.build_dataset(source, "val")``: whatever split list the data
layer uses for the source's ``val`` split is what is scored. Validation draws no
random number and changes no weight or running statistic, so with
``train.select=last`` the trained weights do not depend on it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

from famix_core.checkpoint import atomic_write_json, save_safetensors_atomic
from famix_core.classes import IGNORE_INDEX

if TYPE_CHECKING:
    from famix_core.config import FamixConfig
    from famix_core.data.datasets import SegmentationDataset
    from famix_core.models.segmenter import Segmenter

__all__ = ["CentreCrop", "source_val_dataset", "SourceValidation", "BEST_WEIGHTS", "BEST_JSON", "METRIC"]

BEST_WEIGHTS = "best.safetensors"
BEST_JSON = "best.json"
METRIC = "source_val/miou"

LogFn = Callable[[dict[str, float], "int | None"], None]


class CentreCrop:
    """Centre crop of an (image, label) pair before the evaluation transform; pads where the image is smaller.

    Offsets as torchvision's ``center_crop``: top = round((H - h) / 2), left likewise. The image is
    padded with 0 and the label with 255 (the official GTA5 dataset maps label ids after its
    transform, so its zero pad becomes ignore).

    Args:
        size: (h, w) of the crop.
        then: the transform of the cropped pair (``(image HxWx3 uint8, label HxW uint8) -> tensors``).
    """

    def __init__(self, size: tuple[int, int], then: Callable[[np.ndarray, np.ndarray], Any]):
        self.size = (int(size[0]), int(size[1]))
        self.then = then

    def __call__(self, image: np.ndarray, label: np.ndarray):
        h, w = self.size
        ih, iw = label.shape
        ph, pw = max(h - ih, 0), max(w - iw, 0)
        if ph or pw:
            pads = ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2))
            image = np.pad(image, (*pads, (0, 0)), constant_values=0)
            label = np.pad(label, pads, constant_values=IGNORE_INDEX)
            ih, iw = label.shape
        top, left = int(round((ih - h) / 2.0)), int(round((iw - w) / 2.0))
        return self.then(image[top : top + h, left : left + w], label[top : top + h, left : left + w])


def source_val_dataset(cfg: "FamixConfig") -> "SegmentationDataset":
    """The source domain's validation split as training validates on it.

    Args:
        cfg: the engine config (``data``; ``train.val_crop`` for a GTA5 source).

    Returns:
        A dataset of (image (3, H, W) CLIP-normalized, label (H, W) long), centre-cropped to
        ``train.val_crop`` when the source is GTA5 (SYNTHIA and Cityscapes: full images, as the official).

    Raises:
        DataError: the source has no readable ``val`` split (one line, from the data layer).
    """
    from famix_core.data import build_dataset

    ds = build_dataset(cfg.data, cfg.data.source, "val", train=False)
    if cfg.train.val_crop is not None and cfg.data.source == "gta5":
        ds.transform = CentreCrop(tuple(cfg.train.val_crop), ds.transform)
    return ds


class SourceValidation:
    """Scores the model on the source val split, tracks the curve and keeps the best weights.

    Args:
        cfg: the engine config (``train.val_every``, ``train.select``, ``model.num_classes``).
        ckpt_dir: where ``best.safetensors`` + ``best.json`` live beside the checkpoints (or None).
        dataset: the split (default :func:`source_val_dataset`).
    """

    def __init__(self, cfg: "FamixConfig", ckpt_dir: Path | None, dataset=None):
        self.cfg = cfg
        self.every = int(cfg.train.val_every)
        self.ckpt_dir = ckpt_dir
        self.dataset = dataset if dataset is not None else source_val_dataset(cfg)
        self.curve: list[tuple[int, float]] = []  # (iteration, mIoU fraction)
        self.best_iteration: int | None = None
        self.best_miou = float("-inf")
        self.best_state: dict[str, torch.Tensor] | None = None  # CPU copy of the best weights

    def due(self, iteration: int) -> bool:
        """Validate after this iteration? (every ``val_every`` and at the last; not twice.)"""
        done = bool(self.curve) and self.curve[-1][0] == iteration
        last = iteration == self.cfg.train.iterations
        return iteration > 0 and not done and (iteration % self.every == 0 or last)

    def score(self, model: "Segmenter", device: torch.device) -> float:
        """mIoU (fraction) of the model on the split at scale 1; leaves the model in eval mode."""
        from famix_core.evaluate import evaluate_model, metrics_from_confusion

        conf, _ = evaluate_model(model, self.dataset, self.cfg.model.num_classes, device, (1.0,), self.cfg.eval.batch_size)
        return float(metrics_from_confusion(conf)["miou"])

    def run(self, model: "Segmenter", device: torch.device, iteration: int, log: LogFn | None) -> float:
        """Score, log ``source_val/miou`` (percent), and keep the weights when they beat the best."""
        miou = self.score(model, device)
        self.curve.append((iteration, miou))
        if log is not None:
            log({METRIC: 100.0 * miou}, iteration)
        if miou > self.best_miou or self.best_iteration is None:  # nan never beats a number; the first always counts
            self.best_miou, self.best_iteration = miou, iteration
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            if self.ckpt_dir is not None:
                self.ckpt_dir.mkdir(parents=True, exist_ok=True)
                save_safetensors_atomic(self.ckpt_dir / BEST_WEIGHTS, self.best_state)
                atomic_write_json(self.ckpt_dir / BEST_JSON, {"iteration": iteration, "miou": miou})
        return miou

    # -- checkpoint state ----------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """JSON state for the training checkpoint (the best weights live in their own file)."""
        return {"curve": [[i, m] for i, m in self.curve]}

    def restore(self, state: dict[str, Any]) -> None:
        """Restore the curve from a checkpoint and the best weights from ``ckpt_dir`` (the newest best on disk).

        A best written after the checkpoint (a crash in between) is kept: the replayed iterations
        produce the same weights, and a replayed validation only replaces it when strictly better.
        """
        from safetensors.torch import load_file

        self.curve = [(int(i), float(m)) for i, m in state.get("curve", [])]
        info = self.ckpt_dir / BEST_JSON if self.ckpt_dir is not None else None
        if info is not None and info.is_file() and (self.ckpt_dir / BEST_WEIGHTS).is_file():
            meta = json.loads(info.read_text())
            self.best_iteration, self.best_miou = int(meta["iteration"]), float(meta["miou"])
            self.best_state = load_file(str(self.ckpt_dir / BEST_WEIGHTS), device="cpu")

    def summary(self) -> dict[str, Any]:
        """``{"miou_curve": [[iteration, miou]], "best_iteration", "best_miou"}`` (fractions)."""
        return {"miou_curve": [[i, m] for i, m in self.curve], "best_iteration": self.best_iteration,
                "best_miou": self.best_miou if self.best_iteration is not None else None}  # fmt: skip
