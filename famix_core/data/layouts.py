"""Folder layouts of the datasets, split lists and image/label pairing (standard library only, no torch).

One :class:`Layout` per domain says where images and labels live under the
domain's root, how file names pair up, and which label encoding the labels use
(:mod:`famix_core.data.mappings`). Some datasets come in a second folder layout
(the official FAMix README's, :data:`LAYOUT_VARIANTS`); :func:`detect_layout`
picks the one a root holds. :func:`scan_domain` turns (config, domain, split)
into a :class:`DomainFiles` (the sorted (image, label) pairs, the layout and the
split list used) or raises one clear :class:`~famix_core.errors.DataError`.

Splits of the datasets without split folders follow the official lists
(package data in ``famix_core/data/splits/``, see its README): GTA5 ``train`` is
``gtav_split_train.txt`` (12,382 images) and ``val`` is ``gtav_split_val.txt``
(1,000); SYNTHIA ``val`` is ``synthia_split_val.txt`` (2,820) and ``train`` is
every other image. A list of the same name in the domain's root replaces the
shipped one (the synthetic benchmark writes its own). A listed file that is
missing is an error naming the first one and the count, never a fallback to
"all files".
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from famix_core.domains import SHARED_FOLDERS, Domain, UnknownDomainError, resolve_domain
from famix_core.errors import DataError

if TYPE_CHECKING:
    from famix_core.config import DataConfig

__all__ = [
    "Layout",
    "LAYOUTS",
    "LAYOUT_VARIANTS",
    "DomainFiles",
    "UnpairedFilesWarning",
    "UNPAIRED_MAX",
    "SHIPPED_SPLITS",
    "get_layout",
    "detect_layout",
    "split_list_path",
    "scan_domain",
    "root_not_found",
    "list_pairs",
]

log = logging.getLogger(__name__)

UNPAIRED_MAX = 10
"""At most this many unpaired files (and at most 1 % of the images) are skipped with a warning; more is an error."""
_UNPAIRED_FRACTION = 0.01


SHIPPED_SPLITS = Path(__file__).resolve().parent / "splits"
"""The official split lists, package data (see its README.md)."""


class UnpairedFilesWarning(UserWarning):
    """A few images without labels (or labels without images) were skipped."""


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
        split_lists: split -> name of the list of its files (``gtav_split_train.txt``).
        complement: split -> split whose list it excludes (SYNTHIA ``train`` = all but the ``val`` list).
        label_first_channel: labels are colour PNGs whose first channel holds the id.
        name: how ``famix data check`` names this layout.
    """

    image_dir: str
    label_dir: str
    image_suffix: str
    label_suffix: str
    mapping: str
    depth: int = 0
    subdir_name: str = ""
    split_folders: Mapping[str, str] = field(default_factory=dict)
    split_lists: Mapping[str, str] = field(default_factory=dict)
    complement: Mapping[str, str] = field(default_factory=dict)
    label_first_channel: bool = False
    name: str = "default"

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
_SYNTHIA_VAL = {"val": "synthia_split_val.txt"}

LAYOUTS: Mapping[str, Layout] = {
    "gta5": Layout(
        "images", "labels", ".png", ".png", "cityscapes_ids",
        split_lists={"train": "gtav_split_train.txt", "val": "gtav_split_val.txt"},
    ),
    "synthia": Layout(
        "RGB", "GT/LABELS", ".png", ".png", "synthia",
        split_lists=_SYNTHIA_VAL, complement={"train": "val"}, label_first_channel=True, name="flat",
    ),
    "cityscapes": Layout(
        "leftImg8bit/{split}", "gtFine/{split}", "_leftImg8bit.png", "_gtFine_labelIds.png",
        "cityscapes_ids", depth=1, subdir_name="<city>",
    ),
    "bdd100k": Layout(
        "images/10k/{split}", "labels/sem_seg/masks/{split}", ".jpg", ".png", "train_ids", name="10k archive"
    ),
    "mapillary": Layout(
        "{split}/images", "{split}/labels", ".jpg", ".png", "vistas_v12",
        split_folders={"train": "training", "val": "validation"},
    ),
    "acdc_night": _ACDC,
    "acdc_snow": _ACDC,
    "acdc_rain": _ACDC,
    "acdc_fog": _ACDC,
}  # fmt: skip
"""domain name -> its main :class:`Layout` (the one the synthetic benchmark writes); holds exactly
the names of :data:`famix_core.domains.DOMAINS`."""

LAYOUT_VARIANTS: Mapping[str, tuple[Layout, ...]] = {
    "bdd100k": (
        LAYOUTS["bdd100k"],
        Layout("images/{split}", "labels/{split}", ".jpg", ".png", "train_ids", name="official README"),
    ),
    "synthia": (
        LAYOUTS["synthia"],
        Layout(
            "RGB/{split}", "GT/LABELS/{split}", ".png", ".png", "synthia",
            split_lists=_SYNTHIA_VAL, label_first_channel=True, name="pre-split (official README)",
        ),
    ),
}  # fmt: skip
"""domain name -> every layout accepted for it, the main one first (domains not listed have one)."""


@dataclass(frozen=True)
class DomainFiles:
    """What :func:`scan_domain` found for one domain split.

    Attributes:
        domain: domain name.
        split: split name.
        root: the domain's root folder.
        layout: the layout found there.
        pairs: (image path, label path), sorted by key (list order for listed splits).
        split_list: the list file that selected the split (or whose files it excludes), if any.
        unpaired: files skipped because their partner is missing (a few are tolerated).
    """

    domain: str
    split: str
    root: Path
    layout: Layout
    pairs: list[tuple[Path, Path]]
    split_list: Path | None = None
    unpaired: tuple[Path, ...] = ()

    def describe(self) -> str:
        """One line for ``famix data check``: layout, split list and skipped files."""
        parts = [f"layout {self.layout.name!r}"]
        if self.split_list is not None:
            parts.append(f"list {self.split_list}")
        if self.unpaired:
            parts.append(f"{len(self.unpaired)} unpaired files skipped (first: {', '.join(map(str, self.unpaired[:3]))})")
        return "; ".join(parts)


def get_layout(domain: str | Domain) -> tuple[Domain, Layout]:
    """Resolve a domain (name or column) and its main layout.

    Raises:
        DataError: for an unknown domain, listing the known names and columns.
    """
    try:
        d = domain if isinstance(domain, Domain) else resolve_domain(domain)
    except UnknownDomainError as e:
        raise DataError(str(e)) from None
    return d, LAYOUTS[d.name]


def detect_layout(domain: str | Domain, root: Path, split: str) -> Layout:
    """The layout a domain root holds for a split (the main one when none is found, for its messages).

    Variants are tried most specific first (``RGB/val`` before ``RGB``): the first whose image
    folder exists wins.
    """
    d, main = get_layout(domain)
    variants = sorted(LAYOUT_VARIANTS.get(d.name, (main,)), key=lambda lay: -lay.image_dir.count("/"))
    for lay in variants:
        if lay.image_folder(root, split, d.condition).is_dir():
            return lay
    return main


def split_list_path(root: Path, name: str) -> Path:
    """A split list: ``<root>/<name>`` when present (the synthetic benchmark's), else the shipped one."""
    local = root / name
    return local if local.is_file() else SHIPPED_SPLITS / name


def _scan(folder: Path, suffix: str, depth: int) -> dict[str, Path]:
    """key (relative path without the suffix) -> file, for files ``depth`` levels below ``folder``."""
    out: dict[str, Path] = {}
    for p in folder.glob("*/" * depth + "*" + suffix):
        if p.is_file() and not p.name.startswith("."):
            rel = p.relative_to(folder).as_posix()
            out[rel[: -len(suffix)]] = p
    return out


def _read_names(path: Path, what: str) -> list[str]:
    """File names of a list (one per line; ``#`` comments and blank lines skipped), duplicates dropped."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise DataError(f"{what}: cannot read split list {path} ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{what}: split list {path} is not UTF-8 text (byte {e.start}); expected one file name per line") from None
    return list(dict.fromkeys(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")))


def _read_stems(path: Path, what: str) -> list[str]:
    # a line may hold a file name or a stem: drop a known extension
    stems = [Path(s).name for s in _read_names(path, what)]
    return [s[: -len(ext)] if (ext := Path(s).suffix) in (".png", ".jpg", ".jpeg") else s for s in stems]


def _files_in(folder: Path) -> set[str]:
    with os.scandir(folder) as it:
        return {e.name for e in it}


def _listed_pairs(lay: Layout, img_dir: Path, lbl_dir: Path, lst: Path, what: str) -> list[tuple[str, Path, Path]]:
    """The pairs a list names (file names of images; labels by the layout's suffixes), all present."""
    names = _read_names(lst, what)
    images, labels = _files_in(img_dir), _files_in(lbl_dir)
    pairs, missing = [], []
    for name in names:
        key = name[: -len(lay.image_suffix)] if name.endswith(lay.image_suffix) else name
        img, lbl = img_dir / (key + lay.image_suffix), lbl_dir / (key + lay.label_suffix)
        if img.name not in images:
            missing.append(img)
        elif lbl.name not in labels:
            missing.append(lbl)
        else:
            pairs.append((key, img, lbl))
    if missing:
        raise DataError(
            f"{what}: {len(missing)} of the {len(names)} files listed in {lst} are missing (first: {missing[0]})"
        )
    return pairs


def _pair_up(lay: Layout, img_dir: Path, lbl_dir: Path, what: str, where: str) -> tuple[list[tuple[str, Path, Path]], list[Path]]:
    """Pairs of scanned folders by key, and the few unpaired files tolerated (more is an error)."""
    images = _scan(img_dir, lay.image_suffix, lay.depth)
    labels = _scan(lbl_dir, lay.label_suffix, lay.depth)
    if not images:
        raise DataError(f"{what}: no images in {img_dir} (expected {where})")
    no_label = sorted(k for k in images if k not in labels)
    no_image = sorted(k for k in labels if k not in images)
    n_bad = len(no_label) + len(no_image)
    if n_bad > UNPAIRED_MAX or n_bad > _UNPAIRED_FRACTION * len(images):
        if no_label:
            raise DataError(
                f"{what}: {len(no_label)} images have no label (first: {images[no_label[0]]};"
                f" expected {lbl_dir / (no_label[0] + lay.label_suffix)})"
            )
        raise DataError(
            f"{what}: {len(no_image)} labels have no image (first: {labels[no_image[0]]};"
            f" expected {img_dir / (no_image[0] + lay.image_suffix)})"
        )
    unpaired = [images[k] for k in no_label] + [labels[k] for k in no_image]
    return [(k, images[k], labels[k]) for k in sorted(images) if k in labels], unpaired


def split_file_not_found(path: str | Path) -> DataError:
    """The one line for a ``data.split_file`` that is not a file."""
    return DataError(f"data.split_file: file not found: {path} (expected file stems, one per line)")


def root_not_found(domains: list[Domain], split: str, root: Path) -> DataError:
    """The one line for a missing ``root`` of ``domains``' ``split``: one domain, or several that share the
    folder (ACDC's conditions, then named by the folder's key, ``data.roots.acdc``), with the pattern
    expected under it in each layout the dataset is read in."""
    d, main = get_layout(domains[0])
    cond = d.condition if len(domains) == 1 else "{" + ",".join(x.condition or "" for x in domains) + "}"
    alt = "".join(f", or {v.image_pattern(split, cond)} ({v.name} layout)" for v in LAYOUT_VARIANTS.get(d.name, ()) if v is not main)
    if len(domains) > 1:
        key = f"data.roots.{d.folder}"
    else:
        key = f"data.roots.{d.name}" + (f" (data.roots.{d.folder}: all of {d.folder}/)" if d.folder in SHARED_FOLDERS else "")
    # data.root=/datasets/gta5 looks for /datasets/gta5/gta5: data.root is the folder above the datasets'
    above = f"; data.root is the folder that holds {d.folder}/, here {root.parent.parent}" if root.parent.name == d.folder else ""
    return DataError(
        f"{', '.join(x.name for x in domains)} {split}: data root not found: {root} (expected {main.image_pattern(split, cond)}{alt} "
        f"under it; set data.root or {key}{above})"
    )


def scan_domain(data_cfg: "DataConfig", domain: str | Domain, split: str) -> DomainFiles:
    """Find the (image, label) pairs of a domain's split, the layout the root holds and the split list used.

    Args:
        data_cfg: the data config (roots, source, split_file).
        domain: domain name or table column.
        split: ``train`` or ``val`` (or any split folder the dataset has).

    Returns:
        a :class:`DomainFiles`.

    Raises:
        DataError: one line naming the domain, the path and the expected pattern (missing root or folder),
            the count and first file of unpaired images/labels (above the tolerance), of files a split
            list names but the root lacks, or a bad split list.
    """
    d, main = get_layout(domain)
    root = data_cfg.root_of(d.name)
    what = f"{d.name} {split}"
    if not root.is_dir():
        raise root_not_found([d], split, root)
    lay = detect_layout(d, root, split)
    img_dir = lay.image_folder(root, split, d.condition)
    lbl_dir = lay.label_folder(root, split, d.condition)
    for folder, pattern in ((img_dir, lay.image_pattern(split, d.condition)), (lbl_dir, lay.label_pattern(split, d.condition))):
        if not folder.is_dir():
            others = [v for v in LAYOUT_VARIANTS.get(d.name, ()) if v is not lay]
            alt = "".join(f", or the {v.name} layout: {root}/{v.image_pattern(split, d.condition)}" for v in others)
            if folder.name == "labels" and (folder.parent / "v1.2" / "labels").is_dir():  # the Vistas 2.0 download
                alt += f"; this is the Vistas 2.0 download: link {folder.parent / 'v1.2' / 'labels'} as {folder} (v1.2 labels)"
            raise DataError(f"{what}: folder not found: {folder} (expected {root}/{pattern}{alt})")

    split_list, unpaired = None, []
    if split in lay.split_lists:
        split_list = split_list_path(root, lay.split_lists[split])
        pairs = _listed_pairs(lay, img_dir, lbl_dir, split_list, what)
    else:
        pairs, unpaired = _pair_up(lay, img_dir, lbl_dir, what, f"{root}/{lay.image_pattern(split, d.condition)}")
        if split in lay.complement:
            split_list = split_list_path(root, lay.split_lists[lay.complement[split]])
            excluded = {Path(n).name for n in _read_names(split_list, what)}
            pairs = [p for p in pairs if p[1].name not in excluded]

    if data_cfg.split_file and d.name == data_cfg.source and split == "train":
        split_file = Path(data_cfg.split_file)
        if not split_file.is_file():
            raise split_file_not_found(split_file)
        by_stem = {key.rsplit("/", 1)[-1]: (key, i, l) for key, i, l in pairs}
        stems = _read_stems(split_file, what)
        missing = [s for s in stems if s not in by_stem]
        if missing:
            raise DataError(
                f"{what}: {len(missing)} stems of {split_file} have no image/label pair (first: {missing[0]!r})"
            )
        pairs = [by_stem[s] for s in dict.fromkeys(stems)]
        if not pairs:
            raise DataError(f"data.split_file: {split_file} lists no file stem (expected one per line)")

    if not pairs:
        # a split list that names nothing is said as such: the folder may hold every file
        empty_list = split in lay.split_lists and split_list is not None and not _read_names(split_list, what)
        listed = f"; the list {split_list} names no file" if empty_list else ""
        raise DataError(f"{what}: the split is empty ({root}{listed})")
    return DomainFiles(d.name, split, root, lay, [(i, l) for _, i, l in pairs], split_list, tuple(unpaired))


def list_pairs(data_cfg: "DataConfig", domain: str | Domain, split: str) -> list[tuple[Path, Path]]:
    """All (image, label) file pairs of a domain's split (see :func:`scan_domain`).

    A few skipped unpaired files give one :class:`UnpairedFilesWarning` (also logged) with their count
    and first names.

    Returns:
        list of (image path, label path).

    Raises:
        DataError: see :func:`scan_domain`.
    """
    found = scan_domain(data_cfg, domain, split)
    if found.unpaired:
        msg = (
            f"{found.domain} {split}: {len(found.unpaired)} files without a partner skipped"
            f" (first: {', '.join(map(str, found.unpaired[:3]))})"
        )
        log.warning(msg)
        warnings.warn(msg, UnpairedFilesWarning, stacklevel=2)
    return found.pairs
