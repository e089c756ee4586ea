"""The style bank: mined per-class styles, their sampling index, and their safetensors + JSON files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from famix_core.classes import CLASS_NAMES, IGNORE_INDEX
from famix_core.errors import FamixError
from famix_core.io import atomic_write_bytes, atomic_write_json

__all__ = ["StyleBank", "StyleBankError", "bank_files", "draw_styles", "BANK_TENSORS", "BANK_JSON", "BANK_FORMAT"]

BANK_TENSORS = "bank.safetensors"
BANK_JSON = "bank.json"
BANK_FORMAT = 1
_LOOKUP = 256  # class-id lookup tables cover ids 0..255 (train ids and the ignore label 255)


class StyleBankError(FamixError):
    """A style bank on disk is missing, unreadable, or does not fit the model."""


def bank_files(directory: str | Path) -> tuple[Path, Path]:
    """The tensor and JSON files of the bank in ``directory``, checked to be there (nothing is read).

    Raises:
        StyleBankError: ``directory`` is a file, or a bank file is missing.
    """
    d = Path(directory)
    if d.is_file():  # a bank is the folder mine-styles wrote, not one of its files
        raise StyleBankError(f"{d}: a file; expected the style bank's folder (it holds {BANK_TENSORS} and {BANK_JSON})")
    for p in (d / BANK_TENSORS, d / BANK_JSON):
        if not p.is_file():
            raise StyleBankError(f"{p}: style bank file not found (mine styles first: famix mine-styles)")
    return d / BANK_TENSORS, d / BANK_JSON


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


def draw_styles(
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
        return draw_styles(classes, self.mu, self.sigma, self._order, self._offset, self._count, generator)

    # -- persistence
    def save(self, directory: str | Path) -> Path:
        """Write ``bank.safetensors`` (mu, sigma, cls) and ``bank.json`` into ``directory``, atomically.

        Each file is replaced atomically, the pair is not: ``bank.json`` records the SHA-256 of the
        tensor file, so :meth:`load` refuses a pair torn by a kill between the two writes.

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
        data = save(tensors, metadata={"format": str(BANK_FORMAT)})
        atomic_write_bytes(d / BANK_TENSORS, data)
        info = {
            "format": BANK_FORMAT,
            "tensors_sha256": hashlib.sha256(data).hexdigest(),
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
        from safetensors.torch import load

        tpath, jpath = bank_files(directory)
        try:
            info = json.loads(jpath.read_text())
        except (OSError, ValueError) as e:
            raise StyleBankError(f"{jpath}: not a readable JSON file ({e})") from None
        if not isinstance(info, dict):
            raise StyleBankError(f"{jpath}: expected a JSON object")
        try:
            data = tpath.read_bytes()
        except OSError as e:
            raise StyleBankError(f"{tpath}: not readable ({e.strerror})") from None
        expected = info.get("tensors_sha256")  # absent from banks written before it was recorded
        if expected is not None and hashlib.sha256(data).hexdigest() != expected:
            raise StyleBankError(
                f"{tpath}: does not match {jpath.name} (its tensors_sha256 is of another file: the two were"
                " written by different runs, or one was cut off); mine the bank again"
            )
        try:
            t = {k: v.to(torch.device(device)) for k, v in load(data).items()}
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

