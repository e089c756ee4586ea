"""Folder layouts of the datasets and image/label pairing (standard library only, no torch).

One :class:`Layout` per domain says where images and labels live under the
domain's root, how file names pair up, and which label encoding the labels use
(:mod:`famix_core.data.mappings`). :func:`list_pairs` turns (config, domain,
split) into a sorted list of (image, label) paths or raises one clear
:class:`~famix_core.errors.DataError`.

Split rule of the datasets without split folders (GTA5, SYNTHIA): when
``<root>/splits/<split>.txt`` exists (file stems, one per line) it selects the
files; otherwise ``train`` is every file and, for SYNTHIA, ``val`` is the last
30 % by sorted name (``train`` is then the first 70 %). ``data.split_file``
further restricts the source domain's ``train`` split to the listed stems.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from famix_core.domains import Domain, UnknownDomainError, resolve_domain
from famix_core.errors import DataError

if TYPE_CHECKING:
    from famix_core.config import DataConfig

__all__ = ["Layout", "LAYOUTS", "get_layout", "list_pairs", "SPLIT_LIST_DIR"]

SPLIT_LIST_DIR = "splits"
"""``<root>/splits/<split>.txt`` lists the stems of a split for layouts without split folders."""


@dataclass(frozen=True)
class Layout:
    """Where one dataset keeps its images and labels.

    Attributes:
        image_dir: folder of images relative to the root; ``{split}`` and ``{cond}`` are filled in.
        label_dir: folder of labels relative to the root.
        image_suffix: file name ending of images (``_leftImg8bit.png``); the rest is the pairing key.
        label_suffix: file name ending of labels.
        mapping: label encoding, a key of :data:`famix_core.data.mappings.MAPPINGS`.
        depth: sub-folder levels between the folder and the files (city, sequence).
        subdir_name: what those sub-folders are, for messages (``<city>``).
        split_folders: split -> folder name (``val`` -> ``validation``); identity when absent.
        split_in_path: False when all splits share one folder and a split rule picks files.
        holdout: without a split list, the fraction (last files by name) forming ``val``.
        label_first_channel: labels are colour PNGs whose first channel holds the id.
    """

    image_dir: str
    label_dir: str
    image_suffix: str
    label_suffix: str
    mapping: str
    depth: int = 0
    subdir_name: str = ""
    split_folders: Mapping[str, str] = field(default_factory=dict)
    split_in_path: bool = True
    holdout: float = 0.0
    label_first_channel: bool = False

    def folder_split(self, split: str) -> str:
        return self.split_folders.get(split, split)

    def image_folder(self, root: Path, split: str, cond: str | None) -> Path:
        return root / self.image_dir.format(split=self.folder_split(split), cond=cond)

    def label_folder(self, root: Path, split: str, cond: str | None) -> Path:
        return root / self.label_dir.format(split=self.folder_split(split), cond=cond)

    def _pattern(self, folder: str, suffix: str, split: str, cond: str | None) -> str:
        sub = f"{self.subdir_name}/" * self.depth
        return f"{folder.format(split=self.folder_split(split), cond=cond)}/{sub}*{suffix}"

    def image_pattern(self, split: str, cond: str | None = None) -> str:
        """Human-readable pattern of image files, relative to the root."""
        return self._pattern(self.image_dir, self.image_suffix, split, cond)

    def label_pattern(self, split: str, cond: str | None = None) -> str:
        """Human-readable pattern of label files, relative to the root."""
        return self._pattern(self.label_dir, self.label_suffix, split, cond)

    def relative_paths(self, key: str, split: str, cond: str | None = None) -> tuple[str, str]:
        """(image, label) paths relative to the root of the pair with this key (``city/stem``)."""
        img = self.image_dir.format(split=self.folder_split(split), cond=cond)
        lbl = self.label_dir.format(split=self.folder_split(split), cond=cond)
        return f"{img}/{key}{self.image_suffix}", f"{lbl}/{key}{self.label_suffix}"


_ACDC = Layout(
    "rgb_anon/{cond}/{split}", "gt/{cond}/{split}", "_rgb_anon.png", "_gt_labelIds.png",
    "cityscapes_ids", depth=1, subdir_name="<sequence>",
)  # fmt: skip

LAYOUTS: Mapping[str, Layout] = {
    "gta5": Layout("images", "labels", ".png", ".png", "cityscapes_ids", split_in_path=False),
    "synthia": Layout(
        "RGB", "GT/LABELS", ".png", ".png", "synthia", split_in_path=False, holdout=0.3, label_first_channel=True
    ),
    "cityscapes": Layout(
        "leftImg8bit/{split}", "gtFine/{split}", "_leftImg8bit.png", "_gtFine_labelIds.png",
        "cityscapes_ids", depth=1, subdir_name="<city>",
    ),
    "bdd100k": Layout("images/10k/{split}", "labels/sem_seg/masks/{split}", ".jpg", ".png", "train_ids"),
    "mapillary": Layout(
        "{split}/images", "{split}/labels", ".jpg", ".png", "vistas_v12",
        split_folders={"train": "training", "val": "validation"},
    ),
    "acdc_night": _ACDC,
    "acdc_snow": _ACDC,
    "acdc_rain": _ACDC,
    "acdc_fog": _ACDC,
}  # fmt: skip
"""domain name -> :class:`Layout`; holds exactly the names of :data:`famix_core.domains.DOMAINS`."""


def get_layout(domain: str | Domain) -> tuple[Domain, Layout]:
    """Resolve a domain (name or column) and its layout.

    Raises:
        DataError: for an unknown domain, listing the known names and columns.
    """
    try:
        d = domain if isinstance(domain, Domain) else resolve_domain(domain)
    except UnknownDomainError as e:
        raise DataError(str(e)) from None
    return d, LAYOUTS[d.name]


def _scan(folder: Path, suffix: str, depth: int) -> dict[str, Path]:
    """key (relative path without the suffix) -> file, for files ``depth`` levels below ``folder``."""
    out: dict[str, Path] = {}
    for p in folder.glob("*/" * depth + "*" + suffix):
        if p.is_file() and not p.name.startswith("."):
            rel = p.relative_to(folder).as_posix()
            out[rel[: -len(suffix)]] = p
    return out


def _read_stems(path: Path, what: str) -> list[str]:
    try:
        text = path.read_text()
    except OSError as e:
        raise DataError(f"{what}: cannot read split list {path} ({e.strerror})") from None
    stems = [Path(line.strip()).name for line in text.splitlines() if line.strip() and not line.startswith("#")]
    # a line may hold a file name or a stem: drop a known extension
    return [s[: -len(ext)] if (ext := Path(s).suffix) in (".png", ".jpg", ".jpeg") else s for s in stems]


def _select_stems(pairs: list[tuple[str, Path, Path]], stems: list[str], source: Path, what: str):
    by_stem = {key.rsplit("/", 1)[-1]: (key, i, l) for key, i, l in pairs}
    missing = [s for s in stems if s not in by_stem]
    if missing:
        raise DataError(
            f"{what}: {len(missing)} stems of {source} have no image/label pair (first: {missing[0]!r})"
        )
    return [by_stem[s] for s in dict.fromkeys(stems)]


def list_pairs(data_cfg: "DataConfig", domain: str | Domain, split: str) -> list[tuple[Path, Path]]:
    """All (image, label) file pairs of a domain's split, sorted by key.

    Args:
        data_cfg: the data config (roots, source, split_file).
        domain: domain name or table column.
        split: ``train`` or ``val`` (or any split folder the dataset has).

    Returns:
        list of (image path, label path).

    Raises:
        DataError: one line naming the domain, the path and the expected pattern (missing root or folder),
            the count and first file of unpaired images/labels, or a bad split list.
    """
    d, lay = get_layout(domain)
    root = data_cfg.root_of(d.name)
    what = f"{d.name} {split}"
    if not root.is_dir():
        raise DataError(
            f"{what}: data root not found: {root} (expected {lay.image_pattern(split, d.condition)} under it;"
            f" set data.root or data.roots.{d.name})"
        )
    img_dir = lay.image_folder(root, split, d.condition)
    lbl_dir = lay.label_folder(root, split, d.condition)
    for folder, pattern in ((img_dir, lay.image_pattern(split, d.condition)), (lbl_dir, lay.label_pattern(split, d.condition))):
        if not folder.is_dir():
            raise DataError(f"{what}: folder not found: {folder} (expected {root}/{pattern})")
    images = _scan(img_dir, lay.image_suffix, lay.depth)
    labels = _scan(lbl_dir, lay.label_suffix, lay.depth)
    if not images:
        raise DataError(f"{what}: no images in {img_dir} (expected {root}/{lay.image_pattern(split, d.condition)})")
    no_label = sorted(k for k in images if k not in labels)
    if no_label:
        first = images[no_label[0]]
        raise DataError(
            f"{what}: {len(no_label)} images have no label (first: {first}; expected {lbl_dir / (no_label[0] + lay.label_suffix)})"
        )
    no_image = sorted(k for k in labels if k not in images)
    if no_image:
        first = labels[no_image[0]]
        raise DataError(
            f"{what}: {len(no_image)} labels have no image (first: {first}; expected {img_dir / (no_image[0] + lay.image_suffix)})"
        )
    pairs = [(k, images[k], labels[k]) for k in sorted(images)]

    if not lay.split_in_path:
        split_list = root / SPLIT_LIST_DIR / f"{split}.txt"
        if split_list.is_file():
            pairs = _select_stems(pairs, _read_stems(split_list, what), split_list, what)
        elif split == "val" and lay.holdout > 0:
            pairs = pairs[len(pairs) - max(1, round(lay.holdout * len(pairs))) :]
        elif split == "train" and lay.holdout > 0:
            pairs = pairs[: len(pairs) - max(1, round(lay.holdout * len(pairs)))]
        elif split != "train":
            raise DataError(f"{what}: {d.name} has no {split!r} split: add {split_list} (file stems, one per line)")

    if data_cfg.split_file and d.name == data_cfg.source and split == "train":
        split_file = Path(data_cfg.split_file)
        if not split_file.is_file():
            raise DataError(f"data.split_file: file not found: {split_file} (expected file stems, one per line)")
        pairs = _select_stems(pairs, _read_stems(split_file, what), split_file, what)

    if not pairs:
        raise DataError(f"{what}: the split is empty ({root})")
    return [(i, l) for _, i, l in pairs]

