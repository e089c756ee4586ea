"""Training: SGD + poly schedule on the source domain, atomic checkpoints, bit-exact resume.

Determinism (what makes resume bit-exact on CPU):
  * the batch of iteration ``i`` is a pure function of ``(train.seed, i)``: sample
    position ``p = i*B + k`` reads index ``perm_e[p mod N]`` of the permutation of
    epoch ``e = p // N``, drawn from a generator seeded by ``(seed, e)``;
  * each item's augmentation (crop, jitter, flip) runs under RNGs seeded by
    ``(seed, i, k)`` and restored afterwards, whichever process fetches it;
  * the learning rate is a pure function of ``i`` (poly, floored);
  * model, optimizer (momentum buffers), the global torch RNG (dropout) and the
    style generator are saved in every checkpoint and restored on resume.
"""

from __future__ import annotations

import json
import math
import random
import resource
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from famix_core.checkpoint import (
    CheckpointState,
    atomic_write_json,
    latest_checkpoint,
    load_checkpoint,
    optimizer_from_flat,
    optimizer_to_flat,
    save_checkpoint,
    save_safetensors_atomic,
)
from famix_core.device import (
    activate,
    autocast,
    configure_kernels,
    device_rng_state,
    set_device_rng_state,
    stage_device,
)
from famix_core.errors import DataError, TrainingDiverged, TrainingInterrupted, WeightsError
from famix_core.identity import resume_view, training_identity

if TYPE_CHECKING:
    from famix_core.config import FamixConfig
    from famix_core.models.segmenter import Segmenter

__all__ = ["train", "Trainer", "poly_lr", "BatchSchedule", "ScheduleSampler", "SeededItems", "collate_pairs", "LogFn"]

LogFn = Callable[[dict[str, float], "int | None"], None]
OUTPUT_FILES = ("model.safetensors", "summary.json", "best.safetensors", "last.safetensors")
"""What a training writes into its ``out_dir`` (:meth:`Trainer.finalize`)."""
_MASK63 = (1 << 63) - 1


def poly_lr(base_lr: float, iteration: int, total: int, power: float = 0.9, min_lr: float = 1e-6) -> float:
    """Poly learning rate ``base * (1 - i/total)^power``, floored at ``min_lr``."""
    frac = min(max(iteration / max(total, 1), 0.0), 1.0)
    return max(base_lr * (1.0 - frac) ** power, min_lr)


def _mix(*xs: int) -> int:
    """A deterministic 63-bit seed from integers (splitmix-style), stable across processes."""
    h = 0x9E3779B97F4A7C15
    for x in xs:
        h = (h ^ (int(x) & _MASK63)) * 0xBF58476D1CE4E5B9 & ((1 << 64) - 1)
        h ^= h >> 31
    return h & _MASK63


class BatchSchedule:
    """Which dataset index fills slot ``k`` of the batch of iteration ``i``: a pure function of (seed, i, k).

    Args:
        n: dataset length.
        batch_size: items per batch.
        seed: ``train.seed``.
    """

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self._epoch = -1
        self._perm: list[int] = []

    def _perm_of(self, epoch: int) -> list[int]:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(_mix(self.seed, epoch))
            self._perm = torch.randperm(self.n, generator=g).tolist()
            self._epoch = epoch
        return self._perm

    def batch(self, iteration: int) -> list[tuple[int, int, int]]:
        """``[(iteration, slot, dataset index)]`` for one iteration."""
        out = []
        for k in range(self.batch_size):
            p = iteration * self.batch_size + k
            out.append((iteration, k, self._perm_of(p // self.n)[p % self.n]))
        return out


class ScheduleSampler(Sampler):
    """Batch sampler over iterations ``[start, stop)`` of a :class:`BatchSchedule`."""

    def __init__(self, schedule: BatchSchedule, start: int, stop: int):
        self.schedule, self.start, self.stop = schedule, start, stop

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        for i in range(self.start, self.stop):
            yield self.schedule.batch(i)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


class SeededItems(Dataset):
    """Fetch ``dataset[index]`` with every RNG seeded by (seed, iteration, slot), restoring them afterwards."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int, int]):
        iteration, slot, index = key
        s = _mix(self.seed, iteration, slot, 0x5EED)
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            # the CPU generator only: torch.manual_seed would also re-seed every CUDA generator
            # (dropout's, with 0 workers), making results depend on data.num_workers
            torch.default_generator.manual_seed(s)
            random.seed(s)
            np.random.seed(s % (1 << 32))
            try:
                return self.dataset[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)


def collate_pairs(items):
    """Stack ``(image (3,H,W), label (H,W))`` items into ``images (B,3,H,W)`` and long ``labels (B,H,W)``."""
    images = torch.stack([torch.as_tensor(it[0]) for it in items])  # (B, 3, H, W)
    labels = torch.stack([torch.as_tensor(it[1]) for it in items]).long()  # (B, H, W)
    return images, labels


def _peak_mem_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


class Trainer:
    """One training run, steppable and checkpointable on demand (for preemption handlers).

    Args:
        cfg: the engine config.
        out_dir: where ``model.safetensors`` and ``summary.json`` go.
        bank_dir: mined style bank folder (needed when ``cfg.style.needs_bank()``).
        ckpt_dir: periodic checkpoints; the run resumes from it when one exists.
        log: ``log(metrics, step)`` callback.
        dataset: optional dataset overriding ``famix_core.data.build_dataset`` (tests, benchmarks).
        device: optional device overriding ``cfg.train.device``.
        val_dataset: optional source val split overriding :func:`famix_core.source_val.source_val_dataset`
            (used when ``train.val_every`` is set).
        note: ``note(line)`` for what the run says in words (it resumes from a checkpoint).
    """

    def __init__(
        self,
        cfg: "FamixConfig",
        out_dir: str | Path,
        *,
        bank_dir: str | Path | None = None,
        ckpt_dir: str | Path | None = None,
        log: LogFn | None = None,
        dataset: Dataset | None = None,
        device: torch.device | str | None = None,
        val_dataset: Dataset | None = None,
        note: Callable[[str], None] | None = None,
    ):
        from famix_core.models.segmenter import build_segmenter
        from famix_core.source_val import SourceValidation

        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self.ckpt_dir = Path(ckpt_dir) if ckpt_dir is not None else None
        self.log = log
        self.note = note
        tc = cfg.train
        self.device = activate(torch.device(device)) if device is not None else stage_device(cfg)
        self.cuda = self.device.type == "cuda"
        configure_kernels(self.device, deterministic=tc.deterministic, benchmark=True)  # fixed-size crops
        torch.manual_seed(tc.seed)  # initial weights and, until restored, dropout

        augmenter = self._build_augmenter(bank_dir)
        # what its checkpoints record: only this training resumes from them (see resume)
        self.identity = json.loads(json.dumps({**training_identity(cfg), "bank": self._bank_identity}))  # as a checkpoint reads back
        self.model: Segmenter = build_segmenter(
            cfg.model, style_augmenter=augmenter, device=self.device, source=cfg.data.source
        )
        self.style_generator: torch.Generator | None = None
        if augmenter is not None:  # a child of the model: it moved to the device with it
            self.style_generator = torch.Generator(device=self.device).manual_seed(_mix(tc.seed, 0x57E1E))
            augmenter.generator = self.style_generator
        self.channels_last = tc.channels_last and self.cuda
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.precision = tc.precision  # bf16 runs on the CPU too (CPU autocast), so it is tested there

        dec, bb = self.model.param_groups()
        groups = [{"params": dec, "lr": tc.lr_decoder, "base_lr": tc.lr_decoder, "name": "decoder"}]
        if bb:
            groups.append({"params": bb, "lr": tc.lr_backbone, "base_lr": tc.lr_backbone, "name": "backbone"})
        self.optimizer = torch.optim.SGD(groups, lr=tc.lr_decoder, momentum=tc.momentum, weight_decay=tc.weight_decay)

        self.dataset = dataset if dataset is not None else self._build_dataset()
        n = len(self.dataset)  # type: ignore[arg-type]
        if n == 0:
            raise DataError(f"{cfg.data.root_of(cfg.data.source)}: no training images for {cfg.data.source}")
        self.schedule = BatchSchedule(n, tc.batch_size, tc.seed)
        self.items = SeededItems(self.dataset, tc.seed)
        self.source_val = SourceValidation(cfg, self.ckpt_dir, val_dataset) if tc.val_every is not None else None

        self.iteration = 0
        self.loss_window: list[float] = []
        self.last_loss = float("nan")
        self._pending: list[torch.Tensor] = []  # detached 0-d losses not read yet (on the device)
        self.images_seen = 0
        self.train_seconds = 0.0
        self._batches: Iterator | None = None

    # -- construction helpers ---------------------------------------------------------------
    def _build_augmenter(self, bank_dir: str | Path | None):
        from famix_core.styles.bank import StyleBank
        from famix_core.styles.strategies import build_style_augmenter

        bank = None
        self._bank_identity: dict[str, Any] | None = None
        if self.cfg.style.needs_bank():
            if bank_dir is None:
                raise DataError("style.strategy=famix with style.augment=true needs a style bank: pass bank_dir (mine styles first)")
            bank = StyleBank.load(bank_dir, device=self.device)
            self._bank_identity = {"n_styles": len(bank.cls), **bank.meta}  # how it was mined (not its path)
        return build_style_augmenter(self.cfg.style, bank, self.cfg.model.num_classes)

    def _build_dataset(self) -> Dataset:
        from famix_core import data

        dc = self.cfg.data  # build_dataset generates the synthetic benchmark when configured
        return data.build_dataset(dc, dc.source, "train", train=True, crop_size=dc.crop_size)

    # -- the loop -----------------------------------------------------------------------------
    def _loader(self) -> Iterator:
        from famix_core.loaders import loader_options, resolve_workers

        sampler = ScheduleSampler(self.schedule, self.iteration, self.cfg.train.iterations)
        loader = DataLoader(
            self.items,
            batch_sampler=sampler,
            collate_fn=collate_pairs,
            # its own generator: creating the iterator must not consume the global RNG (dropout's)
            generator=torch.Generator().manual_seed(_mix(self.cfg.train.seed, self.iteration)),
            **loader_options(resolve_workers(self.cfg.data.num_workers), self.device, persistent=True),
        )
        return iter(loader)

    def set_lr(self) -> float:
        """Set every group's lr for the current iteration; returns the decoder's."""
        tc = self.cfg.train
        for g in self.optimizer.param_groups:
            g["lr"] = poly_lr(g["base_lr"], self.iteration, tc.iterations, tc.poly_power, tc.min_lr)
        return self.optimizer.param_groups[0]["lr"]

    def step(self) -> torch.Tensor:
        """Run one iteration (forward, loss, backward, SGD step) without waiting for the device.

        The loss stays on the device: it is read, checked for NaN/inf and logged only every
        ``train.log_every`` iterations (and at checkpoints and the end), so a CUDA step never
        syncs with the host outside those iterations.

        Returns:
            The loss of this iteration, a detached 0-d tensor on the device (reading it syncs).

        Raises:
            TrainingDiverged: at a log step, when a loss since the previous one is NaN or infinite.
        """
        if self._batches is None:
            self._batches = self._loader()
        t0 = time.perf_counter()
        try:
            images, labels = next(self._batches)
        except StopIteration:
            self._batches = self._loader()
            images, labels = next(self._batches)
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        lr = self.set_lr()
        self.model.train()
        with autocast(self.device, self.precision):  # the style op inside runs in fp32 (style_in_fp32)
            logits = self.model(images, labels)  # (B, K, H, W)
            loss = F.cross_entropy(
                logits.float(), labels, ignore_index=255, label_smoothing=self.cfg.train.label_smoothing
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.iteration += 1
        self.images_seen += images.shape[0]
        value = loss.detach()
        self._pending.append(value)
        tc = self.cfg.train
        if self.iteration % tc.log_every == 0 or self.iteration == tc.iterations:
            self.read_losses()
            if self.log is not None:
                self.log({"train/loss": sum(self.loss_window) / len(self.loss_window), "train/lr": lr}, self.iteration)
        self.train_seconds += time.perf_counter() - t0
        return value

    def read_losses(self) -> None:
        """Bring the losses of the iterations since the last read to the host (one sync) and check them.

        Raises:
            TrainingDiverged: naming the first iteration whose loss is NaN or infinite.
        """
        if not self._pending:
            return
        values = torch.stack(self._pending).tolist()  # (n,) the one host sync of a log window
        first = self.iteration - len(values) + 1
        self._pending = []
        for i, v in enumerate(values):
            if not math.isfinite(v):
                raise TrainingDiverged(
                    f"loss is {v} at iteration {first + i}; lower train.lr_decoder / train.lr_backbone"
                )
        self.loss_window.extend(values)
        del self.loss_window[: max(0, len(self.loss_window) - self.cfg.train.log_every)]
        self.last_loss = values[-1]

    # -- checkpoints --------------------------------------------------------------------------
    def _rng_state(self) -> dict[str, torch.Tensor]:
        rng = {"torch_cpu": torch.get_rng_state(), **device_rng_state(self.device)}
        if self.style_generator is not None:
            rng["style"] = self.style_generator.get_state()
        return rng

    def _set_rng_state(self, rng: dict[str, torch.Tensor]) -> None:
        torch.set_rng_state(rng["torch_cpu"])
        set_device_rng_state(rng, self.device)
        if self.style_generator is not None and "style" in rng:
            self.style_generator.set_state(rng["style"])

    def save_checkpoint(self) -> Path | None:
        """Checkpoint now (atomically) into ``ckpt_dir``; None when there is no ``ckpt_dir``."""
        if self.ckpt_dir is None:
            return None
        self.read_losses()  # never checkpoint a diverged run; the loss window goes in the checkpoint
        otensors, ometa = optimizer_to_flat(self.optimizer)
        state = CheckpointState(
            iteration=self.iteration,
            model=self.model.state_dict(),
            optimizer=otensors,
            optimizer_meta=ometa,
            rng=self._rng_state(),
            extra={
                "scheduler": {"kind": "poly", "last_iteration": self.iteration, "total": self.cfg.train.iterations},
                "loss_window": self.loss_window,
                "last_loss": self.last_loss,
                "images_seen": self.images_seen,
                "train_seconds": self.train_seconds,
                "source_val": self.source_val.state() if self.source_val is not None else None,
                "training": self.identity,
            },
        )
        return save_checkpoint(self.ckpt_dir, state)

    def resume(self) -> bool:
        """Restore the newest checkpoint of ``ckpt_dir``, if any; returns whether one was loaded.

        Raises:
            WeightsError: the checkpoint is of another training (another config or style bank:
                :attr:`identity` differs), which this run would continue as if it were its own.
        """
        if self.ckpt_dir is None:
            return False
        path = latest_checkpoint(self.ckpt_dir)
        if path is None:
            return False
        st = load_checkpoint(path, self.device)
        theirs = st.extra.get("training")  # absent in checkpoints written before it was recorded
        if theirs is not None and resume_view(theirs) != resume_view(self.identity):
            raise WeightsError(
                f"{self.ckpt_dir}: its checkpoint (iteration {st.iteration}) is of another training "
                f"({identity_differences(resume_view(theirs), resume_view(self.identity))}); write elsewhere, "
                "or delete that folder to train from scratch"
            )
        self.model.load_state_dict(st.model, strict=True)
        optimizer_from_flat(self.optimizer, st.optimizer, st.optimizer_meta)
        self._set_rng_state(st.rng)
        self.iteration = st.iteration
        ex = st.extra
        self.loss_window = list(ex.get("loss_window", []))
        self.last_loss = float(ex.get("last_loss", float("nan")))
        self.images_seen = int(ex.get("images_seen", 0))
        self.train_seconds = float(ex.get("train_seconds", 0.0))
        if self.source_val is not None:
            self.source_val.restore(ex.get("source_val") or {})
        self._pending = []
        self._batches = None
        if self.note is not None:
            self.note(f"resuming from iteration {st.iteration}/{self.cfg.train.iterations} ({path})")
        return True

    def check_out_dir(self, resumed: bool) -> None:
        """Refuse to write over another training's outputs in ``out_dir`` (before any step).

        ``out_dir`` may hold this training's outputs (a rerun finishes it again): ``summary.json``
        records the training it is of (:attr:`identity`), compared as a checkpoint is
        (:func:`~famix_core.identity.resume_view`). Outputs without that record (an older summary, or
        none) are this training's only when ``resumed`` (a checkpoint of it was loaded).

        Raises:
            WeightsError: one line naming ``out_dir``, what it holds and how to go on.
        """
        held = [name for name in OUTPUT_FILES if (self.out_dir / name).exists()]
        if not held:
            return
        theirs = _recorded_training(self.out_dir / "summary.json")
        if theirs is not None and resume_view(theirs) == resume_view(self.identity):
            return
        if theirs is None and resumed:
            return
        if theirs is not None:
            what = f"of another training ({identity_differences(resume_view(theirs), resume_view(self.identity))})"
        else:  # an older summary.json, or none: only a checkpoint of this training says the files are its own
            where = f"in {self.ckpt_dir}" if self.ckpt_dir is not None else "to resume"
            what = f"of an unknown training (no record in summary.json, and no checkpoint of this one {where})"
        files = f"{', '.join(held[:-1])} and {held[-1]}" if len(held) > 1 else held[0]
        raise WeightsError(
            f"{self.out_dir}: holds {files} {what}; write elsewhere (another --out), or delete"
            f" {'them' if len(held) > 1 else 'it'} to train there"
        )

    def validate_if_due(self) -> None:
        """Source validation after the current iteration when ``train.val_every`` says so (see famix_core.source_val)."""
        if self.source_val is not None and self.source_val.due(self.iteration):
            self.source_val.run(self.model, self.device, self.iteration, self.log)

    # -- whole run ----------------------------------------------------------------------------
    def run(self, stop: threading.Event | None = None) -> dict[str, Any]:
        """Resume if possible, train to ``train.iterations`` with periodic checkpoints, write the outputs.

        Args:
            stop: set (by a signal handler, say) to checkpoint at the end of the current iteration and stop.

        Raises:
            TrainingInterrupted: ``stop`` was set; a checkpoint of the iteration just finished is in
                ``ckpt_dir``, and a later run with the same ``ckpt_dir`` resumes there.
        """
        tc = self.cfg.train
        resumed = self.resume()
        self.check_out_dir(resumed)
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        self.validate_if_due()  # a run stopped right after a due iteration validates it now
        while self.iteration < tc.iterations:
            self.step()
            if stop is not None and stop.is_set():  # checkpoint at this boundary, hand control back
                path = self.save_checkpoint()
                raise TrainingInterrupted(self.iteration, str(path) if path else None)
            self.validate_if_due()
            if self.iteration % tc.checkpoint_every == 0 and self.iteration < tc.iterations:
                self.save_checkpoint()
        self._batches = None
        # before the outputs: a rerun after a crash during finalize resumes here (no training) and, having
        # resumed a checkpoint of this training, may write its outputs over half-written ones (check_out_dir)
        self.save_checkpoint()
        return self.finalize()

    def finalize(self) -> dict[str, Any]:
        """Write ``out_dir/model.safetensors`` (official key names) and ``summary.json``; return the summary.

        ``model.safetensors`` holds the weights ``train.select`` picks: the last, or the best on the
        source val split. When source validation ran and the best is not the last, the other one is
        kept too: ``best.safetensors`` (select=last) or ``last.safetensors`` (select=best_source_val).
        ``summary.json`` also records :attr:`identity` under ``training`` (not in the returned dict), so
        that a later training of another config into ``out_dir`` is refused (:meth:`check_out_dir`).
        """
        self.read_losses()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        tc = self.cfg.train
        meta = {"backbone": self.cfg.model.backbone, "output_stride": str(self.cfg.model.output_stride),
                "num_classes": str(self.cfg.model.num_classes), "iterations": str(self.iteration)}
        sv = self.source_val
        selected_iteration = self.iteration
        last, best = self.model.state_dict(), None
        if sv is not None and sv.best_state is not None and sv.best_iteration != self.iteration:
            best = sv.best_state
        if tc.select == "best_source_val" and best is not None:
            selected_iteration = int(sv.best_iteration)  # type: ignore[union-attr]
            save_safetensors_atomic(self.out_dir / "model.safetensors", best, metadata={**meta, "iterations": str(selected_iteration)})
            save_safetensors_atomic(self.out_dir / "last.safetensors", last, metadata=meta)
        else:
            save_safetensors_atomic(self.out_dir / "model.safetensors", last, metadata=meta)
            if best is not None:
                best_meta = {**meta, "iterations": str(sv.best_iteration)}  # type: ignore[union-attr]
                save_safetensors_atomic(self.out_dir / "best.safetensors", best, metadata=best_meta)
        window = self.loss_window or [self.last_loss]
        summary = {
            "iterations": self.iteration,
            "final_loss": sum(window) / len(window),
            "images_per_s": self.images_seen / self.train_seconds if self.train_seconds > 0 else 0.0,
            "peak_mem_mb": _peak_mem_mb(self.device),
            "seconds": self.train_seconds,
            "device": str(self.device),
            "select": tc.select,
            "selected_iteration": selected_iteration,
            "source_val": sv.summary() if sv is not None else None,
            "precision": self.precision,
        }
        # the file also says what training wrote it: a later one of another config is refused (check_out_dir)
        atomic_write_json(self.out_dir / "summary.json", {**summary, "training": self.identity})
        return summary


def _recorded_training(path: Path) -> dict[str, Any] | None:
    """The training identity a ``summary.json`` records, or None (none recorded, or no readable file)."""
    try:
        theirs = json.loads(path.read_text(encoding="utf-8")).get("training")
    except (OSError, ValueError, AttributeError):
        return None
    return theirs if isinstance(theirs, dict) else None


def train(
    cfg: "FamixConfig",
    out_dir: str | Path,
    *,
    bank_dir: str | Path | None = None,
    ckpt_dir: str | Path | None = None,
    log: LogFn | None = None,
    stop: threading.Event | None = None,
    note: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train a segmenter on ``cfg.data.source`` (resuming from ``ckpt_dir`` when it holds a checkpoint
    of this training; one of another is a :class:`~famix_core.errors.WeightsError`, and so are the
    outputs of another training in ``out_dir``: :meth:`Trainer.check_out_dir`).

    Args:
        cfg: the engine config.
        out_dir: receives ``model.safetensors`` and ``summary.json``.
        bank_dir: the mined style bank (when ``cfg.style.needs_bank()``).
        ckpt_dir: periodic atomic checkpoints (every ``train.checkpoint_every`` iterations).
        log: ``log({"train/loss", "train/lr"}, step)`` every ``train.log_every`` iterations, and
            ``log({"source_val/miou": percent}, step)`` at each source validation (``train.val_every``).
        stop: when set (safe from a signal handler), the run checkpoints the iteration it is in and
            raises :class:`~famix_core.errors.TrainingInterrupted` (see :meth:`Trainer.run`).
        note: ``note(line)``: what the run says in words (where it resumes).

    Returns:
        ``{"iterations", "final_loss" (mean of the last log window), "images_per_s", "peak_mem_mb", "seconds", "device",
        "select", "selected_iteration", "source_val" (None, or its mIoU curve and best)}``.
    """
    return Trainer(cfg, out_dir, bank_dir=bank_dir, ckpt_dir=ckpt_dir, log=log, note=note).run(stop)


def identity_differences(old: dict[str, Any], new: dict[str, Any], most: int = 3) -> str:
    """``train.lr_decoder 0.01, here 0.05; …``: the dotted fields in which two training identities
    differ (at most ``most``, then how many more)."""

    def flat(d: Any, prefix: str = "") -> dict[str, Any]:
        if not isinstance(d, dict):
            return {prefix: d}
        return {k: v for key, sub in d.items() for k, v in flat(sub, f"{prefix}.{key}" if prefix else key).items()}

    a, b = flat(old), flat(new)
    keys = [k for k in dict.fromkeys([*a, *b]) if a.get(k, "unset") != b.get(k, "unset")]
    shown = "; ".join(f"{k} {a.get(k, 'unset')}, here {b.get(k, 'unset')}" for k in keys[:most])
    return shown + (f"; {len(keys) - most} more" if len(keys) > most else "")
