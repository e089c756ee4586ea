"""The benchmark tree: every domain's files in its dataset's folder layout, written atomically, with a manifest."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from famix_core.data.io import write_png16
from famix_core.data.layouts import LAYOUTS
from famix_core.data.synth.appearance import render
from famix_core.data.synth.labels import encode_label, palette_image
from famix_core.data.synth.scene import Scene, make_scene
from famix_core.domains import DOMAINS
from famix_core.errors import DataError
from famix_core.io import CommitFailed, building_dir, refuse_other_files

if TYPE_CHECKING:
    from famix_core.config import DataConfig, SynthConfig

__all__ = ["FORMAT_VERSION", "MANIFEST_NAME", "scene_ids", "generate", "ensure_synthetic"]

FORMAT_VERSION = 2
"""Bump when the generator's output changes: existing trees are then regenerated."""

MANIFEST_NAME = "famix_synthetic.json"


def scene_ids(cfg: "SynthConfig") -> dict[str, range]:
    """Scene ids per split: train ``0..train_images-1``, val the next ``val_images``."""
    return {"train": range(cfg.train_images), "val": range(cfg.train_images, cfg.train_images + cfg.val_images)}


def _key(domain: str, split: str, k: int) -> str:
    """Pairing key (relative path without suffix) of scene k in a domain, shaped like the real file names."""
    if domain == "gta5":
        return f"{k + 1:05d}"
    if domain == "synthia":
        return f"{k:07d}"
    if domain == "cityscapes":
        city = "aachen" if split == "train" else "frankfurt"
        return f"{city}/{city}_{k:06d}_000019"
    if domain == "bdd100k":
        return f"{0x7D2F0000 + k:08x}-synth"
    if domain == "mapillary":
        return f"synth{k:08d}x{k * 7919 % 10007:05d}"
    seq = {"night": "GOPR0351", "snow": "GOPR0122", "rain": "GOPR0400", "fog": "GOPR0475"}[DOMAINS[domain].condition]
    return f"{seq}/{seq}_frame_{k:06d}"


def synthetic_splits(domain: str) -> tuple[str, ...]:
    """The splits the benchmark writes of a domain (canonical name): train and val of the three
    sources, val of the others."""
    return ("train", "val") if domain in ("gta5", "synthia", "cityscapes") else ("val",)


def _plan(cfg: "SynthConfig") -> dict[str, dict[str, range]]:
    """domain -> split -> scene ids written."""
    ids = scene_ids(cfg)
    n_city = max(1, cfg.train_images // 4)  # Cityscapes as a source: a smaller train split
    return {
        name: {s: range(n_city) if (name, s) == ("cityscapes", "train") else ids[s] for s in synthetic_splits(name)}
        for name in DOMAINS
    }


def _write_pair(root: Path, domain: str, split: str, k: int, scene: Scene, seed: int) -> None:
    lay = LAYOUTS[domain]
    img_rel, lbl_rel = lay.relative_paths(_key(domain, split, k), split, DOMAINS[domain].condition)
    img_path, lbl_path = root / _folder(domain) / img_rel, root / _folder(domain) / lbl_rel
    img_path.parent.mkdir(parents=True, exist_ok=True)
    lbl_path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(render(scene, domain, seed, k))
    if img_path.suffix == ".jpg":
        image.save(img_path, quality=92)
    else:
        image.save(img_path, compress_level=1)
    raw = encode_label(scene, domain)
    if raw.ndim == 3:
        write_png16(lbl_path, raw)
    elif domain in ("gta5", "mapillary"):
        palette_image(raw, lay.mapping).save(lbl_path, compress_level=1)
    else:
        Image.fromarray(raw, mode="L").save(lbl_path, compress_level=1)


def _folder(domain: str) -> str:
    """Folder of a domain under the benchmark root (``acdc`` for the four conditions)."""
    return DOMAINS[domain].folder


def _write_tree(root: Path, cfg: "SynthConfig") -> dict[str, dict[str, int]]:
    plan = _plan(cfg)
    all_ids = sorted({k for splits in plan.values() for r in splits.values() for k in r})
    counts: dict[str, dict[str, int]] = {d: {s: len(r) for s, r in splits.items()} for d, splits in plan.items()}
    for k in all_ids:
        scene = make_scene(cfg.seed, k, cfg.height, cfg.width)
        for domain, splits in plan.items():
            for split, ids in splits.items():
                if k in ids:
                    _write_pair(root, domain, split, k, scene, cfg.seed)
    for domain in ("gta5", "synthia"):  # one folder for all splits: lists like the official ones select the files
        lay = LAYOUTS[domain]
        for split, list_name in lay.split_lists.items():
            names = (_key(domain, split, k) + lay.image_suffix for k in plan[domain][split])
            (root / _folder(domain) / list_name).write_text("".join(n + "\n" for n in names))
    return counts


def _manifest(cfg: "SynthConfig") -> dict:
    return {"format_version": FORMAT_VERSION, "synthetic": cfg.model_dump(mode="json")}


def _matches(root: Path, cfg: "SynthConfig") -> bool:
    try:
        data = json.loads((root / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return False
    want = _manifest(cfg)
    return all(data.get(k) == v for k, v in want.items())


def generate(root: str | Path, cfg: "SynthConfig", option: str | None = None) -> Path:
    """Generate the benchmark at ``root`` unless a tree with the same settings is already there.

    Written into a temporary sibling folder, then renamed into place: a killed run leaves no half tree,
    and when two processes race the loser keeps the winner's tree. A tree made with other settings
    (manifest mismatch) is replaced; a non-empty folder without a manifest is refused.

    Args:
        root: benchmark root (``data.root``): it receives one folder per dataset.
        cfg: sizes and seed.
        option: the command-line option that named ``root``, for the message (default: ``data.root``).

    Returns:
        the root path.

    Raises:
        DataError: root holds other files (not a synthetic benchmark).
    """
    root = Path(root)
    if _matches(root, cfg):
        return root
    hint = "" if option else " (or unset data.synthetic to use real datasets there)"
    refuse_other_files(root, MANIFEST_NAME, f"the synthetic benchmark needs a new or empty folder{hint}",
                       f"command line: {option}" if option else "data.root")  # fmt: skip
    try:  # a benchmark another process finished meanwhile is kept; an empty folder or a stale benchmark is replaced
        with building_dir(root, is_complete=lambda r: _matches(r, cfg)) as tmp:
            t0 = time.perf_counter()
            counts = _write_tree(tmp, cfg)
            manifest = _manifest(cfg) | {"domains": counts, "seconds": round(time.perf_counter() - t0, 2)}
            (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    except CommitFailed:
        raise DataError(f"data.root: could not move the generated benchmark into {root}") from None
    return root


def ensure_synthetic(data_cfg: "DataConfig") -> Path:
    """Generate the synthetic benchmark under ``data_cfg.root`` when ``data.synthetic`` is set and it is missing/stale.

    Args:
        data_cfg: data config; nothing is generated when ``data_cfg.synthetic`` is None.

    Returns:
        the data root.
    """
    root = Path(data_cfg.root)
    if data_cfg.synthetic is None:
        return root
    return generate(root, data_cfg.synthetic)
