"""Dataset loaders, label mappings, joint transforms and bad-data messages (tiny hand-made trees)."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from famix_core.classes import CITYSCAPES_ID_TO_TRAIN_ID, CLASS_NAMES, PALETTE
from famix_core.config import DataConfig
from famix_core.data import LAYOUTS, build_dataset, check_domain
from famix_core.data.datasets import SizeMismatchWarning, UnknownLabelWarning
from famix_core.data.io import read_label, write_png16
from famix_core.data.mappings import (
    MAPPINGS,
    SYNTHIA_CLASSES,
    SYNTHIA_ID_TO_TRAIN_ID,
    VISTAS_ID_TO_TRAIN_ID,
    VISTAS_V12_CLASSES,
    get_mapping,
)
from famix_core.data.transforms import CLIP_MEAN, CLIP_STD, build_transform
from famix_core.domains import DOMAINS
from famix_core.errors import DataError

# One 2x2 block of raw ids per encoding, all meaning [[road, car], [ignore, bicycle]].
RAW_BLOCKS = {
    "cityscapes_ids": [[7, 26], [0, 33]],
    "train_ids": [[0, 13], [255, 18]],
    "synthia": [[3, 8], [0, 11]],
    "vistas_v12": [[13, 55], [65, 52]],
}
EXPECTED_BLOCK = np.array([[0, 13], [255, 18]])
H, W = 6, 8  # tiny images: the 2x2 block tiled 3x4


def _write_label(path: Path, raw: np.ndarray, domain: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lay = LAYOUTS[domain]
    if lay.label_first_channel:  # SYNTHIA: 16-bit RGB, class id in channel 0, instance id in channel 1
        rgb = np.zeros((*raw.shape, 3), np.uint16)
        rgb[..., 0] = raw
        rgb[..., 1] = 300  # an instance id above 255 must not leak into the class channel
        write_png16(path, rgb)
    elif domain in ("gta5", "mapillary"):  # palette PNGs, like the real files
        im = Image.frombytes("P", raw.shape[::-1], raw.astype(np.uint8).tobytes())
        im.putpalette([v for i in range(256) for v in (i, 255 - i, 0)])
        im.save(path)
    else:
        Image.fromarray(raw.astype(np.uint8), mode="L").save(path)


def make_tree(root: Path, domain: str, split: str, keys: list[str], raw: np.ndarray | None = None) -> list[Path]:
    """Write image/label pairs of a domain under ``root/<folder>``; returns the image paths."""
    lay = LAYOUTS[domain]
    if raw is None:
        raw = np.kron(np.array(RAW_BLOCKS[lay.mapping]), np.ones((H // 2, W // 2), dtype=np.int64))
    cond = DOMAINS[domain].condition
    base = root / DOMAINS[domain].folder
    images = []
    for i, key in enumerate(keys):
        img_rel, lbl_rel = lay.relative_paths(key, split, cond)
        img = base / img_rel
        img.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((*raw.shape, 3), 40 + i, np.uint8)).save(img)
        _write_label(base / lbl_rel, raw, domain)
        images.append(img)
    if split in lay.split_lists:  # gta5 / synthia: a list beside the data, like the synthetic benchmark's
        with open(base / lay.split_lists[split], "a") as f:
            f.write("".join(f"{k}{lay.image_suffix}\n" for k in keys))
    return images


def _key(domain: str, i: int) -> str:
    lay = LAYOUTS[domain]
    return f"seq/seq_{i:03d}" if lay.depth else f"{i:05d}"


# ----------------------------------------------------------------------------- mappings


def test_layouts_cover_exactly_the_registered_domains():
    assert set(LAYOUTS) == set(DOMAINS)


def test_cityscapes_tables_match_torchvision():
    from torchvision.datasets import Cityscapes

    lut = get_mapping("cityscapes_ids").tables().lut
    train_classes = [c for c in Cityscapes.classes if 0 <= c.train_id < 255]
    assert len(train_classes) == len(CLASS_NAMES) == 19
    for c in Cityscapes.classes:
        if c.id < 0:
            continue
        expected = c.train_id if 0 <= c.train_id < 255 else 255
        assert lut[c.id] == expected, c.name
        if expected != 255:
            assert CLASS_NAMES[c.train_id] == c.name
            assert CITYSCAPES_ID_TO_TRAIN_ID[c.id] == c.train_id
            assert PALETTE[c.train_id] == tuple(c.color)


def test_synthia_and_vistas_tables_name_the_same_classes():
    synthia_alias = {"pedestrian": "person"}
    for raw, tid in SYNTHIA_ID_TO_TRAIN_ID.items():
        assert synthia_alias.get(SYNTHIA_CLASSES[raw], SYNTHIA_CLASSES[raw]) == CLASS_NAMES[tid]
    assert set(SYNTHIA_ID_TO_TRAIN_ID.values()) == set(range(19))
    assert len(VISTAS_V12_CLASSES) == 66 and VISTAS_V12_CLASSES[13] == "construction--flat--road"
    assert set(VISTAS_ID_TO_TRAIN_ID.values()) == set(range(19))
    vistas_alias = {"bicyclist": "rider", "on-rails": "train", "front": "traffic sign", "support--pole": "pole"}
    for raw, tid in VISTAS_ID_TO_TRAIN_ID.items():
        name = VISTAS_V12_CLASSES[raw]
        leaf = name.split("--", 1)[1].replace("vehicle--", "")
        if leaf.replace("-", " ") == CLASS_NAMES[tid] or leaf.split("--")[-1].replace("-", " ") == CLASS_NAMES[tid]:
            continue
        alias = vistas_alias.get(leaf, vistas_alias.get(leaf.split("--")[-1]))
        if alias is not None:  # a Vistas name for a Cityscapes class: exactly that class
            assert CLASS_NAMES[tid] == alias, name
            continue
        # mapped under the DGSS merge rules (road markings -> road, ...): only these merges are allowed
        assert tid in (0, 1, 5, 9, 12, 16, 7), name
    for raw in range(66):
        if raw not in VISTAS_ID_TO_TRAIN_ID:
            assert get_mapping("vistas_v12").tables().lut[raw] == 255


def test_lookup_tables_map_8_and_16_bit_labels_and_count_unknown_values():
    tables = MAPPINGS["synthia"].tables()
    raw16 = np.array([[3, 8], [40000, 23]], dtype=np.uint16)
    train, unknown = tables.apply(raw16)
    assert train.dtype == np.uint8
    assert train.tolist() == [[0, 13], [255, 255]]
    assert unknown == {23: 1, 40000: 1}
    train8, unknown8 = MAPPINGS["cityscapes_ids"].tables().apply(np.array([[7, 7, 99]], np.uint8))
    assert train8.tolist() == [[0, 0, 255]] and unknown8 == {99: 1}


def test_sixteen_bit_rgb_label_first_channel_is_read_exactly(tmp_path):
    rgb = np.zeros((3, 4, 3), np.uint16)
    rgb[..., 0] = np.arange(12).reshape(3, 4) * 700  # values above 255 need both bytes
    rgb[..., 1] = 65535
    write_png16(tmp_path / "l.png", rgb)
    assert Image.open(tmp_path / "l.png").mode == "RGB"  # PIL alone only sees high bytes
    assert np.array_equal(read_label(tmp_path / "l.png", first_channel=True), rgb[..., 0])
    with pytest.raises(DataError, match="single-channel"):
        read_label(tmp_path / "l.png")


# ----------------------------------------------------------------------------- loaders


@pytest.mark.parametrize("domain", sorted(DOMAINS))
def test_every_loader_returns_train_ids_on_known_pixels(tmp_path, domain):
    make_tree(tmp_path, domain, "val", [_key(domain, i) for i in range(3)])
    listed = "val" in LAYOUTS[domain].split_lists
    if listed:  # gta5 / synthia: a split list beside the data picks the val files
        lst = tmp_path / DOMAINS[domain].folder / LAYOUTS[domain].split_lists["val"]
        lst.write_text(f"{_key(domain, 1)}.png\n{_key(domain, 2)}.png\n")
    cfg = DataConfig(root=str(tmp_path), mapillary_size=H)  # Mapillary: the centre H x H crop (columns 1..6)
    expected_n = 2 if listed else 3
    assert check_domain(cfg, domain, "val") == expected_n
    ds = build_dataset(cfg, DOMAINS[domain].short_name, "val", train=False)
    assert len(ds) == len(ds.pairs) == expected_n
    assert all(p[0].is_file() and p[1].is_file() for p in ds.pairs)
    image, label = ds[0]
    w = H if domain == "mapillary" else W
    assert image.dtype == torch.float32 and image.shape == (3, H, w)
    assert label.dtype == torch.int64 and label.shape == (H, w)
    assert np.array_equal(label[:2 * (H // 2):H // 2, :2 * (w // 2):w // 2].numpy(), EXPECTED_BLOCK)
    assert torch.equal(torch.unique(label), torch.tensor([0, 13, 18, 255]))
    # image: constant grey 40+i, CLIP-normalized
    v = 41 / 255 if expected_n == 2 else 40 / 255
    want = (torch.tensor(v) - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    tol = 0.05 if LAYOUTS[domain].image_suffix == ".jpg" else 1e-5
    assert torch.allclose(image.mean(dim=(1, 2)), want, atol=tol)


def test_dataset_works_in_dataloader_workers(tmp_path):
    make_tree(tmp_path, "gta5", "train", [f"{i:05d}" for i in range(4)])
    ds = build_dataset(DataConfig(root=str(tmp_path), crop_size=8), "gta5", "train", train=True)
    import pickle

    clone = pickle.loads(pickle.dumps(ds))  # spawn / forkserver workers pickle the dataset
    assert clone.pairs == ds.pairs and clone.mapping == "cityscapes_ids"
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1)
    images, labels = next(iter(loader))
    assert images.shape == (2, 3, 8, 8) and labels.shape == (2, 8, 8) and labels.dtype == torch.int64


def test_training_items_are_cropped_and_max_items_limits(tmp_path):
    make_tree(tmp_path, "cityscapes", "train", [f"c/c_{i}" for i in range(4)])
    cfg = DataConfig(root=str(tmp_path), crop_size=10)
    ds = build_dataset(cfg, "cityscapes", "train", train=True, crop_size=4, max_items=2)
    assert len(ds) == 2
    image, label = ds[1]
    assert image.shape == (3, 4, 4) and label.shape == (4, 4)
    ds_big = build_dataset(cfg, "C", "train", train=True)  # data.crop_size, larger than the image
    image, label = ds_big[0]
    assert image.shape == (3, 10, 10)
    assert (label == 255).sum() >= 10 * 10 - H * W  # padding is ignore


def test_a_small_training_split_is_decoded_once_and_gives_the_same_items(tmp_path, monkeypatch):
    make_tree(tmp_path, "gta5", "train", [f"{i:05d}" for i in range(3)])
    cfg = DataConfig(root=str(tmp_path), crop_size=8)
    cached = build_dataset(cfg, "gta5", "train", train=True)
    plain = build_dataset(cfg, "gta5", "train", train=True)
    plain._cache = None  # the same split, decoded on every read
    reads: list[int] = []
    load_raw = type(cached).load_raw
    monkeypatch.setattr(type(cached), "load_raw", lambda self, i: (reads.append(i), load_raw(self, i))[1])
    for rep in range(2):
        for i in range(3):
            torch.manual_seed(rep * 10 + i)  # the random crop / jitter / flip of this read
            a = cached[i]
            torch.manual_seed(rep * 10 + i)
            b = plain[i]
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])

    def scribble(image, label):  # a transform that writes into the arrays it is given
        out = torch.from_numpy(image.copy()), torch.from_numpy(label.copy())
        image[...], label[...] = 0, 0
        return out

    cached.transform = scribble
    first, second = cached[0], cached[0]
    assert first[0].any() and torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert sorted(set(reads)) == [0, 1, 2]
    assert reads.count(0) == 1 + 2  # the cached split decoded image 0 once in four reads; the plain one, twice in two


def test_a_split_too_large_for_the_cache_decodes_every_read(tmp_path, monkeypatch):
    make_tree(tmp_path, "gta5", "train", [f"{i:05d}" for i in range(3)])
    ds = build_dataset(DataConfig(root=str(tmp_path), crop_size=8), "gta5", "train", train=True)
    ds.cache_bytes = 3 * (H * W * 3 + H * W) - 1  # one byte short of the three decoded pairs
    ds._cache = {}
    reads: list[int] = []
    load_raw = type(ds).load_raw
    monkeypatch.setattr(type(ds), "load_raw", lambda self, i: (reads.append(i), load_raw(self, i))[1])
    ds[0], ds[0], ds[1]
    assert reads == [0, 0, 1] and ds._cache is None
    ev = build_dataset(DataConfig(root=str(tmp_path)), "gta5", "train", train=False)
    assert ev._cache is None  # evaluation reads each image once: nothing to keep


def test_eval_scale_resizes_the_image_only(tmp_path):
    make_tree(tmp_path, "bdd100k", "val", ["a"])
    ds = build_dataset(DataConfig(root=str(tmp_path)), "B", "val", train=False, scale=0.5)
    image, label = ds[0]
    assert image.shape == (3, H // 2, W // 2) and label.shape == (H, W)


def test_source_split_file_selects_stems(tmp_path):
    make_tree(tmp_path, "gta5", "train", [f"{i:05d}" for i in range(5)])
    split = tmp_path / "gta5_list.txt"
    split.write_text("00001\n00003.png\n")
    cfg = DataConfig(root=str(tmp_path), split_file=str(split))
    ds = build_dataset(cfg, "gta5", "train", train=False)
    assert [p[0].name for p in ds.pairs] == ["00001.png", "00003.png"]
    split.write_text("00001\n00042\n")
    with pytest.raises(DataError) as e:
        check_domain(cfg, "gta5", "train")
    assert "1 stems" in str(e.value) and "00042" in str(e.value) and str(split) in str(e.value)
    with pytest.raises(DataError, match="data.split_file: file not found"):
        check_domain(DataConfig(root=str(tmp_path), split_file=str(tmp_path / "nope.txt")), "gta5", "train")
    # an empty list said "the split is empty (<root>)" of a folder holding every file: the list is named
    split.write_text("# no stem yet\n")
    with pytest.raises(DataError) as e:
        check_domain(cfg, "gta5", "train")
    assert str(e.value) == f"data.split_file: {split} lists no file stem (expected one per line)"
    (tmp_path / "gta5" / "gtav_split_train.txt").write_text("")  # the dataset's own list, beside its folders
    with pytest.raises(DataError) as e:
        check_domain(DataConfig(root=str(tmp_path)), "gta5", "train")
    assert str(e.value) == f"gta5 train: the split is empty ({tmp_path / 'gta5'}; the list {tmp_path / 'gta5' / 'gtav_split_train.txt'} names no file)"
    split.write_bytes(b"00001\n\xff\xfe\n")  # e.g. a UTF-16 or Latin-1 list: one line, not a UnicodeDecodeError
    with pytest.raises(DataError, match=r"split list .*gta5_list.txt is not UTF-8 text \(byte 6\); expected one file name per line"):
        check_domain(cfg, "gta5", "train")


def test_mapillary_val_reads_the_validation_folder(tmp_path):
    make_tree(tmp_path, "mapillary", "val", ["m1"])
    assert (tmp_path / "mapillary" / "validation" / "images" / "m1.jpg").is_file()
    assert check_domain(DataConfig(root=str(tmp_path)), "M", "val") == 1


def test_roots_override_the_data_root(tmp_path):
    make_tree(tmp_path / "elsewhere", "bdd100k", "val", ["a", "b"])
    cfg = DataConfig(root=str(tmp_path / "none"), roots={"B": str(tmp_path / "elsewhere" / "bdd100k")})
    assert check_domain(cfg, "bdd100k", "val") == 2


# ----------------------------------------------------------------------------- bad data


def test_a_dataset_folder_of_several_domains_sets_each_root_and_a_domains_own_key_wins(tmp_path):
    """ACDC's four conditions live in one acdc/ folder; data.roots.acdc was refused (unknown domain), so
    a dataset outside data.root took four keys. It now sets the four; a condition's own key beats it in
    either order, and the config keeps the same per-domain roots (and so the same stage keys)."""
    acdc, night = str(tmp_path / "acdc"), str(tmp_path / "night")
    want = {"acdc_night": night, "acdc_snow": acdc, "acdc_rain": acdc, "acdc_fog": acdc}
    assert DataConfig(roots={"acdc": acdc, "AN": night}).roots == want
    assert DataConfig(roots={"AN": night, "acdc": acdc}).roots == want
    assert DataConfig(roots={"acdc": acdc}).root_of("AF") == Path(acdc)
    with pytest.raises(ValueError, match=r"unknown domain 'acd' \(known: .*; or a dataset folder of several: acdc\)"):
        DataConfig(roots={"acd": acdc})
    with pytest.raises(DataError, match=r"set data.root or data.roots.acdc_snow \(data.roots.acdc: all of acdc/\)"):
        check_domain(DataConfig(root=str(tmp_path / "missing")), "AS", "val")


def test_missing_root_names_domain_path_and_pattern(tmp_path):
    cfg = DataConfig(root=str(tmp_path / "missing"))
    with pytest.raises(DataError) as e:
        check_domain(cfg, "AN", "val")
    msg = str(e.value)
    assert "\n" not in msg
    assert "acdc_night" in msg and str(tmp_path / "missing" / "acdc") in msg
    assert "rgb_anon/night/val/<sequence>/*_rgb_anon.png" in msg
    with pytest.raises(DataError) as e:  # a dataset read in either of two layouts: both are named
        check_domain(cfg, "S", "val")
    assert "(expected RGB/*.png, or RGB/val/*.png (pre-split (official README) layout) under it;" in str(e.value)


def test_missing_label_folder_names_folder_and_pattern(tmp_path):
    make_tree(tmp_path, "cityscapes", "val", ["x/x_1"])
    import shutil

    shutil.rmtree(tmp_path / "cityscapes" / "gtFine")
    with pytest.raises(DataError) as e:
        build_dataset(DataConfig(root=str(tmp_path)), "C", "val", train=False)
    msg = str(e.value)
    assert "cityscapes val: folder not found" in msg and str(tmp_path / "cityscapes" / "gtFine" / "val") in msg
    assert "gtFine/val/<city>/*_gtFine_labelIds.png" in msg


def test_images_without_labels_and_labels_without_images(tmp_path):
    imgs = make_tree(tmp_path, "acdc_fog", "val", [f"s/s_{i}" for i in range(4)])
    lbl_dir = tmp_path / "acdc" / "gt" / "fog" / "val" / "s"
    (lbl_dir / "s_1_gt_labelIds.png").unlink()
    (lbl_dir / "s_2_gt_labelIds.png").unlink()
    with pytest.raises(DataError) as e:
        check_domain(DataConfig(root=str(tmp_path)), "AF", "val")
    msg = str(e.value)
    assert "acdc_fog val: 2 images have no label" in msg and str(imgs[1]) in msg
    assert "s_1_gt_labelIds.png" in msg
    imgs[1].unlink()
    imgs[2].unlink()
    imgs[3].unlink()
    with pytest.raises(DataError) as e:
        check_domain(DataConfig(root=str(tmp_path)), "AF", "val")
    assert "1 labels have no image" in str(e.value) and "s_3_gt_labelIds.png" in str(e.value)


def test_unreadable_image_names_its_path(tmp_path):
    imgs = make_tree(tmp_path, "bdd100k", "val", ["a", "b"])
    imgs[1].write_bytes(b"not a jpeg")
    ds = build_dataset(DataConfig(root=str(tmp_path)), "B", "val", train=False)
    ds[0]
    with pytest.raises(DataError) as e:
        ds[1]
    assert "unreadable image" in str(e.value) and str(imgs[1]) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(DataError, match="unreadable image"):  # check_domain reads the first header
        imgs[0].write_bytes(b"")
        check_domain(DataConfig(root=str(tmp_path)), "B", "val")


def test_label_values_outside_the_mapping_warn_once_and_become_ignore(tmp_path):
    raw = np.array([[7, 99], [120, 99]])
    make_tree(tmp_path, "cityscapes", "val", ["c/c_1", "c/c_2"], raw=raw)
    ds = build_dataset(DataConfig(root=str(tmp_path)), "C", "val", train=False)
    with pytest.warns(UnknownLabelWarning) as rec:
        _, label = ds[0]
    assert label.tolist() == [[0, 255], [255, 255]]
    msg = str(rec[0].message)
    assert "[99, 120]" in msg and "3 pixels" in msg and "cityscapes val" in msg
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds[1]  # counted, not warned again
    assert ds.unknown_labels == {99: 4, 120: 2}


def test_image_of_another_size_than_its_label_is_resized_with_a_warning(tmp_path):
    make_tree(tmp_path, "bdd100k", "val", ["a", "b"])
    for name in ("a", "b"):
        Image.fromarray(np.full((4, 4), 13, np.uint8)).save(tmp_path / f"bdd100k/labels/sem_seg/masks/val/{name}.png")
    ds = build_dataset(DataConfig(root=str(tmp_path)), "B", "val", train=False)
    with pytest.warns(SizeMismatchWarning, match=r"is 8x6 but its label .*a.png is 4x4"):
        image, label = ds[0]
    assert image.shape == (3, 4, 4) and label.shape == (4, 4) and (label == 13).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds[1]  # warned once per dataset


def test_unknown_domain_lists_the_known_ones(tmp_path):
    with pytest.raises(DataError, match="unknown domain 'kitti'.*cityscapes"):
        check_domain(DataConfig(root=str(tmp_path)), "kitti", "val")


def test_check_domain_imports_no_torch(tmp_path):
    code = (
        "import sys\n"
        "from famix_core.config import DataConfig, SynthConfig\n"
        "from famix_core.data import check_domain\n"
        f"cfg = DataConfig(root={str(tmp_path / 'd')!r}, synthetic=SynthConfig(height=32, width=64, train_images=2, val_images=1))\n"
        "n = check_domain(cfg, 'C', 'val')\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "print(n)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"


# ----------------------------------------------------------------------------- transforms


def _pair(h=6, w=8):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8), rng.integers(0, 19, (h, w), dtype=np.uint8)


def test_crop_pads_labels_with_ignore_and_images_with_zero():
    image, label = _pair()
    t = build_transform(train=True, crop_size=10, jitter=(0, 0, 0), hflip=False)
    img, lbl = t(image, label)
    assert img.shape == (3, 10, 10) and lbl.shape == (10, 10)
    pad = lbl == 255
    assert pad.sum() == 100 - 6 * 8
    zero = (torch.zeros(3) - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    assert torch.allclose(img.permute(1, 2, 0)[pad], zero.expand(int(pad.sum()), 3), atol=1e-6)
    kept = lbl[~pad].reshape(6, 8)  # the original label, shifted but intact
    assert np.array_equal(kept.numpy(), label)


def test_jitter_changes_the_image_and_leaves_labels_untouched():
    image, label = _pair()
    torch.manual_seed(0)
    t = build_transform(train=True, crop_size=None, jitter=(0.8, 0.8, 0.8), hflip=False)
    plain = build_transform(train=False)
    img, lbl = t(image, label)
    ref, _ = plain(image, label)
    assert np.array_equal(lbl.numpy(), label)
    assert not torch.allclose(img, ref)


def test_flip_flips_image_and_label_together():
    image, label = _pair()
    t = build_transform(train=True, crop_size=None, jitter=(0, 0, 0), hflip=True)
    ref, _ = build_transform(train=False)(image, label)
    flipped = 0
    for seed in range(12):
        torch.manual_seed(seed)
        img, lbl = t(image, label)
        if np.array_equal(lbl.numpy(), label[:, ::-1]):
            flipped += 1
            assert torch.allclose(img, ref.flip(-1))
        else:
            assert np.array_equal(lbl.numpy(), label) and torch.allclose(img, ref)
    assert 0 < flipped < 12


def test_eval_normalization_is_clip():
    image = np.full((2, 3, 3), 255, np.uint8)
    img, lbl = build_transform(train=False)(image, np.zeros((2, 3), np.uint8))
    want = (1.0 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    assert torch.allclose(img[:, 0, 0], want) and lbl.dtype == torch.int64
