"""Datasets of every domain, joint transforms and the built-in synthetic benchmark.

Importing this package imports no torch: :func:`check_domain` and
:func:`famix_core.data.synth.benchmark.ensure_synthetic` run at plan time in the
orchestrator; :func:`build_dataset` imports torch when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from famix_core.data.layouts import LAYOUTS, DomainFiles, get_layout, list_pairs, scan_domain

if TYPE_CHECKING:
    from pathlib import Path

    from famix_core.config import DataConfig, FamixConfig
    from famix_core.data.datasets import SegmentationDataset

__all__ = [
    "build_dataset",
    "check_domain",
    "check_splits",
    "split_errors",
    "inspect_domain",
    "list_pairs",
    "source_val_pairs",
    "source_val_dataset",
    "splits_read",
    "LAYOUTS",
]


def build_dataset(
    data_cfg: "DataConfig",
    domain: str,
    split: str,
    *,
    train: bool,
    crop_size: int | None = None,
    scale: float = 1.0,
    max_items: int | None = None,
) -> "SegmentationDataset":
    """Build the torch Dataset of a domain split; see :func:`famix_core.data.datasets.build_dataset`.

    Returns:
        items (image float32 (3,H,W) CLIP-normalized, label int64 (H,W) train ids, 255 = ignore);
        ``.pairs`` lists the (image, label) files.
    """
    from famix_core.data.datasets import build_dataset as _build

    return _build(data_cfg, domain, split, train=train, crop_size=crop_size, scale=scale, max_items=max_items)


def inspect_domain(data_cfg: "DataConfig", domain: str, split: str) -> DomainFiles:
    """Check a domain split's layout and pairing without torch (generating the synthetic benchmark if configured).

    Args:
        data_cfg: data config.
        domain: domain name or table column.
        split: ``train`` or ``val``.

    Returns:
        the :class:`~famix_core.data.layouts.DomainFiles` found (pairs, layout, split list, skipped files).

    Raises:
        DataError: one line naming the domain, path and expected pattern, or the unreadable first image.
    """
    from famix_core.data.io import image_size

    if data_cfg.synthetic is not None:
        from famix_core.data.synth.benchmark import ensure_synthetic

        ensure_synthetic(data_cfg)
    d, _ = get_layout(domain)
    found = scan_domain(data_cfg, d, split)
    image_size(found.pairs[0][0])  # the first image must at least be readable
    return found


def splits_read(cfg: "FamixConfig") -> list[tuple[str, str]]:
    """The (domain, split) pairs a run of ``cfg`` reads: the source's train split, its val split when
    ``train.val_every`` validates on it, and every evaluation domain's ``eval.split``."""
    splits = [(cfg.data.source, "train")]
    if cfg.train.val_every is not None:
        splits.append((cfg.data.source, "val"))
    return splits + [(d, cfg.eval.split) for d in cfg.eval.domains]


def check_domain(data_cfg: "DataConfig", domain: str, split: str) -> int:
    """The number of (image, label) pairs of a domain split (see :func:`inspect_domain`)."""
    return len(inspect_domain(data_cfg, domain, split).pairs)


def split_errors(data_cfg: "DataConfig", splits: "list[tuple[str, str]]") -> "list[FamixError]":
    """The problems of every (domain, split) of ``splits`` (:func:`inspect_domain`), each said once.

    A domain whose root is not found is one line, however many of its splits are asked for (GTA5's
    train and val: one key fixes them all); domains that share that missing folder (the four ACDC
    conditions) are one line too, naming the key of the folder (``data.roots.acdc``). ``famix
    evaluate`` (:func:`check_splits`) and ``famix sweep plan/run``'s data check say them.
    """
    from famix_core.data.layouts import root_not_found
    from famix_core.domains import resolve_domain
    from famix_core.errors import FamixError

    errors: list[FamixError] = []
    rootless: set[str] = set()  # domains whose root is not found: said once
    missing: dict = {}  # (missing folder, split) -> (its line in errors, its domains)
    for domain, split in splits:
        d = resolve_domain(domain)
        if d.name in rootless:
            continue
        try:
            inspect_domain(data_cfg, d.name, split)
        except FamixError as e:
            root = data_cfg.root_of(d.name)
            if root.is_dir():
                errors.append(e)
                continue
            rootless.add(d.name)
            at, domains = missing.setdefault((root, split), (len(errors), []))
            domains.append(d)
            if len(domains) == 1:
                errors.append(e)
            else:  # a folder of several domains (acdc): one line for them all
                errors[at] = root_not_found(domains, split, root)
    return list({str(e): e for e in errors}.values())


def check_splits(data_cfg: "DataConfig", splits: "list[tuple[str, str]]", action: str = "nothing was read") -> None:
    """Check every (domain, split) of ``splits`` and say every problem at once (:func:`split_errors`).

    Args:
        data_cfg: the data config.
        splits: (domain name or column, split) pairs.
        action: what did not happen, for the message of several problems (``nothing was scored``).

    Raises:
        DataError: the one problem; InputErrors: several, one line each under ``N problems with the domains' data (<action>):``.
    """
    from famix_core.errors import raise_all

    raise_all(split_errors(data_cfg, splits), f"the domains' data ({action})")


def source_val_pairs(data_cfg: "DataConfig") -> "list[tuple[Path, Path]]":
    """The source validation samples: (image, label) files of ``data.source``'s ``val`` split.

    GTA5: the 1,000 images of ``gtav_split_val.txt`` (the official checkpoint-selection set);
    SYNTHIA: ``synthia_split_val.txt``; Cityscapes: its val folder. The synthetic benchmark's own
    lists replace the shipped ones.

    Raises:
        DataError: see :func:`famix_core.data.layouts.scan_domain`.
    """
    if data_cfg.synthetic is not None:
        from famix_core.data.synth.benchmark import ensure_synthetic

        ensure_synthetic(data_cfg)
    return list_pairs(data_cfg, data_cfg.source, "val")


def source_val_dataset(data_cfg: "DataConfig", *, max_items: int | None = None) -> "SegmentationDataset":
    """The source validation set as an evaluation dataset (full images, no augmentation).

    Items are (image (3,H,W) float32 CLIP-normalized, label (H,W) int64 train ids, 255 = ignore) of
    :func:`source_val_pairs`.
    """
    return build_dataset(data_cfg, data_cfg.source, "val", train=False, max_items=max_items)
