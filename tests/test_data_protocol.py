"""The paper's data protocol (official FAMix code): split lists, SYNTHIA val, Mapillary crop, SYNTHIA-source
transform, freeze by source, the official README's folder layouts. Inputs are tiny trees built here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from famix_core.config import DataConfig
from famix_core.data import build_dataset, check_domain, list_pairs, source_val_pairs
from famix_core.data.layouts import split_list_path
from famix_core.errors import DataError

SPLITS = Path(__file__).resolve().parents[1] / "famix_core" / "data" / "splits"


def _touch_pairs(img_dir: Path, lbl_dir: Path, names: list[str]) -> None:
    """Empty image/label files (pairing reads names only)."""
    img_dir.mkdir(parents=True, exist_ok=True)
    lbl_dir.mkdir(parents=True, exist_ok=True)
    for n in names:
        (img_dir / n).touch()
        (lbl_dir / n).touch()


def _lines(name: str) -> list[str]:
    return (SPLITS / name).read_text().split()


# ----------------------------------------------------------------------------- 7: GTA5 lists


def test_shipped_lists_are_package_data_with_the_official_sizes(tmp_path):
    train, val, s_val = _lines("gtav_split_train.txt"), _lines("gtav_split_val.txt"), _lines("synthia_split_val.txt")
    assert (len(train), len(val), len(s_val)) == (12382, 1000, 2820)
    assert len(set(train)) == 12382 and not set(train) & set(val)
    assert split_list_path(tmp_path, "gtav_split_train.txt").read_text().split() == train
    import tomllib

    pkg = tomllib.loads((SPLITS.parents[2] / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "data/splits/*.txt" in pkg["famix_core"]


def test_gta5_val_is_the_official_list_and_never_all_files(tmp_path):
    train, val = _lines("gtav_split_train.txt"), _lines("gtav_split_val.txt")
    extra = ["24999.png", "24998.png"]  # on disk but in neither list (the real root holds 24,966 files)
    _touch_pairs(tmp_path / "gta5" / "images", tmp_path / "gta5" / "labels", val + extra + train[:3])
    cfg = DataConfig(root=str(tmp_path))
    pairs = source_val_pairs(cfg)
    assert [p[0].name for p in pairs] == val  # list order, the 1,000 listed images only
    assert all(p[1] == tmp_path / "gta5" / "labels" / p[0].name for p in pairs)
    with pytest.raises(DataError, match=r"gta5 train: 12379 of the 12382 files listed in "):
        list_pairs(cfg, "gta5", "train")  # 1,005 files on disk: still no fallback to them


def test_a_root_missing_listed_files_names_the_first_and_the_count(tmp_path):
    train = _lines("gtav_split_train.txt")
    _touch_pairs(tmp_path / "gta5" / "images", tmp_path / "gta5" / "labels", train[:3] + ["99999.png"])
    (tmp_path / "gta5" / "labels" / train[1]).unlink()  # an image whose label is missing counts too
    with pytest.raises(DataError) as e:
        list_pairs(DataConfig(root=str(tmp_path)), "gta5", "train")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("gta5 train: 12380 of the 12382 files listed in ")
    assert "gtav_split_train.txt" in msg and f"(first: {tmp_path / 'gta5' / 'labels' / train[1]})" in msg


def test_a_list_beside_the_data_replaces_the_shipped_one_and_feeds_mining(tmp_path):
    from famix_core.config import FamixConfig
    from famix_core.mining import mining_dataset
    from test_data import make_tree

    make_tree(tmp_path, "gta5", "train", [f"{i:05d}" for i in range(1, 6)])
    (tmp_path / "gta5" / "gtav_split_train.txt").write_text("00004.png\n00002.png\n")
    (tmp_path / "gta5" / "gtav_split_val.txt").write_text("00005.png\n")
    cfg = FamixConfig.model_validate({"data": {"root": str(tmp_path)}, "mining": {"crop_size": 12}})
    assert [p[0].name for p in mining_dataset(cfg).pairs] == ["00004.png", "00002.png"]
    assert [p[0].name for p in build_dataset(cfg.data, "gta5", "train", train=True, crop_size=8).pairs] == [
        "00004.png", "00002.png"]  # fmt: skip
    assert [p[0].name for p in source_val_pairs(cfg.data)] == ["00005.png"]
    assert check_domain(cfg.data, "gta5", "val") == 1


def test_the_synthetic_benchmark_writes_official_style_lists(tmp_path):
    from famix_core.config import SynthConfig
    from famix_core.data.synth.benchmark import generate

    syn = SynthConfig(height=32, width=64, train_images=3, val_images=2)
    generate(tmp_path / "d", syn)
    gta = tmp_path / "d" / "gta5"
    assert (gta / "gtav_split_train.txt").read_text() == "00001.png\n00002.png\n00003.png\n"
    assert (gta / "gtav_split_val.txt").read_text() == "00004.png\n00005.png\n"
    assert (tmp_path / "d" / "synthia" / "synthia_split_val.txt").read_text() == "0000003.png\n0000004.png\n"
    cfg = DataConfig(root=str(tmp_path / "d"), synthetic=syn)
    assert [p[0].name for p in list_pairs(cfg, "gta5", "train")] == ["00001.png", "00002.png", "00003.png"]
    assert len(source_val_pairs(cfg)) == 2


# ----------------------------------------------------------------------------- 8: SYNTHIA val


def test_synthia_val_is_the_robustnet_list_and_train_the_rest(tmp_path):
    s_val = _lines("synthia_split_val.txt")
    others = sorted({f"{i:07d}.png" for i in range(40)} - set(s_val))  # a few train images
    assert len(others) > 10 and len(set(s_val)) == 2820
    _touch_pairs(tmp_path / "synthia" / "RGB", tmp_path / "synthia" / "GT" / "LABELS", s_val + others)
    cfg = DataConfig(root=str(tmp_path))
    val = list_pairs(cfg, "S", "val")
    train = list_pairs(cfg, "synthia", "train")
    assert [p[0].name for p in val] == s_val  # 2,820 listed images, not the last 30 % by name
    assert [p[0].name for p in train] == others  # every image not in the val list
    assert val[0][1] == tmp_path / "synthia" / "GT" / "LABELS" / s_val[0]


# ----------------------------------------------------------------------------- 9: Mapillary


def test_vistas_map_is_exactly_the_official_one():
    from famix_core.data.mappings import MAPPINGS, VISTAS_ID_TO_TRAIN_ID, VISTAS_V12_CLASSES

    official = {  # datasets/mapillary.py of the official code: Vistas v1.2 id -> train id
        13: 0, 24: 0, 41: 0, 2: 1, 15: 1, 17: 2, 6: 3, 3: 4, 45: 5, 47: 5, 48: 6, 50: 7, 30: 8, 29: 9,
        27: 10, 19: 11, 20: 12, 21: 12, 22: 12, 55: 13, 61: 14, 54: 15, 58: 16, 57: 17, 52: 18,
    }  # fmt: skip
    assert dict(VISTAS_ID_TO_TRAIN_ID) == official
    dropped = ["construction--flat--bike-lane", "construction--flat--crosswalk-plain", "construction--flat--curb-cut",
               "construction--flat--pedestrian-area", "construction--flat--service-lane", "marking--crosswalk-zebra",
               "nature--mountain", "nature--sand", "object--pothole", "object--street-light",
               "object--support--traffic-sign-frame"]  # fmt: skip
    lut = MAPPINGS["vistas_v12"].tables().lut
    assert [int(lut[VISTAS_V12_CLASSES.index(n)]) for n in dropped] == [255] * 11


def _reference_crop_pad(a: np.ndarray, size: int) -> np.ndarray:
    """The official CenterCropPad geometry replayed with PIL: pad both sides of a short axis by the
    shortfall, then crop at round((n - size) / 2) of the *unpadded* n (PIL fills outside with 0)."""
    from PIL import ImageOps

    im = Image.fromarray(a)
    w, h = im.size
    dx, dy = max(size - w, 0), max(size - h, 0)
    if dx or dy:
        im = ImageOps.expand(im, border=(dx, dy, dx, dy), fill=0)
    left, top = int(round((w - size) / 2.0)), int(round((h - size) / 2.0))
    return np.asarray(im.crop((left, top, left + size, top + size)))


@pytest.mark.parametrize("shape", [(32, 64), (32, 16), (32, 9), (32, 33), (20, 40), (40, 20), (31, 31), (32, 8)])
def test_center_crop_pad_follows_the_official_geometry(shape):
    from famix_core.data.transforms import center_crop_pad

    a = (np.arange(shape[0] * shape[1]).reshape(shape) % 250 + 1).astype(np.uint8)  # content is never 0
    ref = _reference_crop_pad(a, 32)
    assert np.array_equal(center_crop_pad(a, 32, 0), ref)
    assert np.array_equal(center_crop_pad(a, 32, 255), np.where(ref > 0, ref, 255))  # ignore_pad
    rgb = np.stack([a, a // 2, a // 3], -1)
    assert np.array_equal(center_crop_pad(rgb, 32, 0), _reference_crop_pad(rgb, 32))


def _mapillary_pair(root: Path, key: str, raw: np.ndarray) -> None:
    """An image whose red channel is 10 * train id (to check alignment) and its Vistas label."""
    from famix_core.data.mappings import VISTAS_ID_TO_TRAIN_ID

    img_dir, lbl_dir = root / "mapillary" / "validation" / "images", root / "mapillary" / "validation" / "labels"
    img_dir.mkdir(parents=True, exist_ok=True)
    lbl_dir.mkdir(parents=True, exist_ok=True)
    tid = np.vectorize(lambda v: VISTAS_ID_TO_TRAIN_ID.get(int(v), 25))(raw)
    rgb = np.stack([tid * 10, np.full_like(tid, 128), np.full_like(tid, 128)], -1).astype(np.uint8)
    Image.fromarray(rgb).save(img_dir / f"{key}.jpg", quality=100)
    Image.fromarray(raw.astype(np.uint8), mode="L").save(lbl_dir / f"{key}.png")


def _portrait_and_landscape(root: Path) -> None:
    land = np.zeros((32, 64), np.uint8)
    land[:, :32], land[:, 32:] = 13, 55  # road | car
    port = np.zeros((48, 24), np.uint8)
    port[:24], port[24:] = 27, 30  # sky over vegetation
    _mapillary_pair(root, "landscape", land)
    _mapillary_pair(root, "portrait", port)


def test_the_vistas_2_download_is_named_with_its_fix(tmp_path):
    """Vistas 2.0 keeps the v1.2 labels in validation/v1.2/labels: the missing labels folder says so."""
    _portrait_and_landscape(tmp_path)
    val = tmp_path / "mapillary" / "validation"
    (val / "v1.2").mkdir()
    (val / "labels").rename(val / "v1.2" / "labels")
    (val / "v2.0" / "labels").mkdir(parents=True)
    with pytest.raises(DataError) as e:
        check_domain(DataConfig(root=str(tmp_path)), "M", "val")
    assert str(e.value).startswith(f"mapillary val: folder not found: {val / 'labels'} (expected ")
    assert str(e.value).endswith(f"; this is the Vistas 2.0 download: link {val / 'v1.2' / 'labels'} as {val / 'labels'} (v1.2 labels))")
    (val / "labels").symlink_to(val / "v1.2" / "labels")  # as docs/data.md says
    assert check_domain(DataConfig(root=str(tmp_path)), "M", "val") == 2


def test_mapillary_items_are_resized_to_the_height_and_centre_cropped(tmp_path):
    _portrait_and_landscape(tmp_path)
    cfg = DataConfig(root=str(tmp_path), mapillary_size=32)
    ds = build_dataset(cfg, "M", "val", train=False)
    (img_l, lbl_l), (img_p, lbl_p) = ds[0], ds[1]
    assert lbl_l.shape == lbl_p.shape == (32, 32) and img_l.shape == img_p.shape == (3, 32, 32)
    # landscape 32x64: the centre 32 columns, 16 of road then 16 of car
    assert (lbl_l[:, :16] == 0).all() and (lbl_l[:, 16:] == 13).all()
    # portrait 48x24 -> 32x16, padded: its first 8 columns land at columns 24..31; the rest is label 0
    assert (lbl_p[:, :24] == 0).all()
    assert (lbl_p[:16, 24:] == 10).all() and (lbl_p[16:, 24:] == 8).all()
    from famix_core.data.transforms import CLIP_MEAN, CLIP_STD

    red = img_p[0] * CLIP_STD[0] + CLIP_MEAN[0]  # back to [0, 1]
    assert float(red[:, :24].abs().max()) < 1e-6  # the image pad is black
    assert abs(float(red[2, 28]) - 100 / 255) < 0.03 and abs(float(red[30, 28]) - 80 / 255) < 0.03  # aligned
    ignore = build_dataset(cfg.model_copy(update={"mapillary_protocol": "ignore_pad"}), "M", "val", train=False)
    _, lbl_i = ignore[1]
    assert (lbl_i[:, :24] == 255).all() and torch.equal(lbl_i[:, 24:], lbl_p[:, 24:])


def test_famix_evaluate_on_mapillary_golden_confusion(tmp_path, capsys):
    """`famix evaluate` on a Mapillary layout with a portrait and a landscape image: a model that says
    "building" everywhere gets, in the building column, each class's pixel count after crop and pad."""
    import json

    import yaml

    from famix_core.checkpoint import save_safetensors_atomic
    from orchestrator.__main__ import main
    from famix_core.config import FamixConfig
    from famix_core.models.segmenter import build_segmenter

    _portrait_and_landscape(tmp_path / "data")
    cfg = FamixConfig.model_validate({
        "model": {"backbone": "famix-tiny", "pretrained": "none", "freeze": "none"},
        "data": {"root": str(tmp_path / "data"), "mapillary_size": 32},
        "train": {"device": "cpu"}, "eval": {"domains": ["M"]},
    })  # fmt: skip
    model = build_segmenter(cfg.model)
    last = [m for m in model.classifier.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.nn.functional.one_hot(torch.tensor(2), 19).float())  # always "building"
    save_safetensors_atomic(tmp_path / "w" / "model.safetensors", model.state_dict())
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    golden = {  # train id -> pixels: official crop (landscape) and pad (portrait, label 0 = road)
        "official": {0: 16 * 32 + 24 * 32, 13: 16 * 32, 10: 8 * 16, 8: 8 * 16},
        "ignore_pad": {0: 16 * 32, 13: 16 * 32, 10: 8 * 16, 8: 8 * 16},
    }
    for protocol, counts in golden.items():
        out = tmp_path / protocol
        rc = main(["evaluate", "--config", str(tmp_path / "cfg.yaml"), "--out", str(out), "--weights",
                   str(tmp_path / "w" / "model.safetensors"), f"data.mapillary_protocol={protocol}"])  # fmt: skip
        assert rc == 0, capsys.readouterr().err
        conf = np.array(json.loads((out / "M" / "confusion.json").read_text())["matrix"])
        want = np.zeros((19, 19), np.int64)
        for tid, n in counts.items():
            want[tid, 2] = n
        assert np.array_equal(conf, want), protocol


def test_the_protocols_are_part_of_the_stage_keys():
    from famix_core.config import FamixConfig
    from orchestrator.keys import evaluate_inputs, stage_key, train_inputs

    cfg = FamixConfig()
    other = cfg.model_copy(update={"data": cfg.data.model_copy(update={"mapillary_protocol": "ignore_pad"})})
    assert stage_key(evaluate_inputs(cfg, "t", "M")) != stage_key(evaluate_inputs(other, "t", "M"))
    assert stage_key(evaluate_inputs(cfg, "t", "C")) == stage_key(evaluate_inputs(other, "t", "C"))
    syn = cfg.model_copy(update={"data": cfg.data.model_copy(update={"source": "synthia"})})
    syn_pad = syn.model_copy(update={"data": syn.data.model_copy(update={"synthia_protocol": "ignore_pad"})})
    assert stage_key(train_inputs(syn, None)) != stage_key(train_inputs(syn_pad, None))
    gta_pad = cfg.model_copy(update={"data": cfg.data.model_copy(update={"synthia_protocol": "ignore_pad"})})
    assert stage_key(train_inputs(cfg, None)) == stage_key(train_inputs(gta_pad, None))  # unused by a GTA5 source


# ----------------------------------------------------------------------------- 10, 13: SYNTHIA as a source


def test_random_scale_crop_geometry_by_hand(monkeypatch):
    """Scale 0.5 of a 40x64 car label -> 20x32, padded by (60 - n) // 2 + 1 = 21 rows / 15 columns on
    both sides (label 0), crop 60 at (0, 2), resize to 64 nearest."""
    from famix_core.data.transforms import RandomScaleCrop

    offsets = iter([0, 2])
    monkeypatch.setattr(torch, "rand", lambda *a, **k: torch.tensor(0.0))  # s = scale_min
    monkeypatch.setattr(torch, "randint", lambda lo, hi, size, **k: torch.tensor(next(offsets)))
    image = np.full((40, 64, 3), 200, np.uint8)
    label = np.full((40, 64), 13, np.uint8)
    img, lbl = RandomScaleCrop(crop=60, size=64, scale_min=0.5, scale_max=2.0, label_fill=0)(image, label)
    want = np.zeros((60, 60), np.uint8)
    want[21:41, 13:45] = 13  # content rows 21..40 and columns 15..46 of the padded 62x62, minus the offset 2
    want = np.asarray(Image.fromarray(want).resize((64, 64), Image.NEAREST))
    assert lbl.shape == (64, 64) and np.array_equal(lbl, want)
    assert img.shape == (64, 64, 3) and (img[lbl == 0] < 100).mean() > 0.9 and (img[lbl == 13] > 100).mean() > 0.9
    assert (img[30:34, 25:40] == 200).all()  # inside the block: the image, aligned with its label


def _synthia_source_tree(root: Path) -> None:
    from famix_core.data.io import write_png16

    img_dir, lbl_dir = root / "synthia" / "RGB", root / "synthia" / "GT" / "LABELS"
    img_dir.mkdir(parents=True)
    lbl_dir.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((40, 64, 3), 200, np.uint8)).save(img_dir / f"s{i}.png")
        raw = np.zeros((40, 64, 3), np.uint16)
        raw[..., 0] = 8  # car everywhere: any 0 in a training label is the pad
        write_png16(lbl_dir / f"s{i}.png", raw)


def test_synthia_source_uses_the_random_size_and_crop_with_label_pad_0(tmp_path):
    _synthia_source_tree(tmp_path)
    cfg = DataConfig(root=str(tmp_path), source="synthia", crop_size=64, synthia_crop=60, jitter=(0, 0, 0), hflip=False)
    official = build_dataset(cfg, "synthia", "train", train=True)
    ignore = build_dataset(cfg.model_copy(update={"synthia_protocol": "ignore_pad"}), "synthia", "train", train=True)
    padded = unpadded = 0
    for seed in range(16):
        torch.manual_seed(seed)
        img, lbl = official[0]
        torch.manual_seed(seed)
        _, lbl_i = ignore[0]
        assert img.shape == (3, 64, 64) and lbl.shape == (64, 64)
        assert set(lbl.unique().tolist()) <= {0, 13}  # the pad is road in the official protocol
        assert torch.equal(lbl_i, torch.where(lbl == 0, 255, lbl))  # ... and ignored with ignore_pad
        padded += bool((lbl == 0).any())
        unpadded += bool((lbl == 13).all())
    assert padded and unpadded  # scales below 60/40 pad, larger ones do not


# ----------------------------------------------------------------------------- 11: freeze by source


@pytest.mark.parametrize(
    "source, trainable", [("gta5", {"layer4.2"}), ("synthia", {"layer4.2"}), ("cityscapes", {"layer4.0", "layer4.1", "layer4.2"})]
)
def test_paper_freeze_follows_the_source(source, trainable):
    from famix_core.config import ModelConfig
    from famix_core.models.segmenter import build_segmenter

    model = build_segmenter(ModelConfig(backbone="RN50", pretrained="none", freeze="paper"), source=source)
    got = {".".join(n.split(".")[:2]) for n, p in model.backbone.named_parameters() if p.requires_grad}
    assert got == trainable
    model.train()
    assert model.backbone.layer4[0].training == (source == "cityscapes") and model.backbone.layer4[2].training
    assert not model.backbone.layer3.training


def test_training_builds_the_model_for_its_source(monkeypatch, tmp_path):
    import famix_core.models.segmenter as seg
    from famix_core.config import FamixConfig
    from famix_core.train import Trainer

    seen = {}

    class Stop(Exception):
        pass

    def spy(model_cfg, style_augmenter=None, device=None, source="gta5"):
        seen["source"] = source
        raise Stop

    monkeypatch.setattr(seg, "build_segmenter", spy)
    cfg = FamixConfig.model_validate({"data": {"source": "cityscapes"}, "style": {"strategy": "none"},
                                      "train": {"device": "cpu"}})  # fmt: skip
    with pytest.raises(Stop):
        Trainer(cfg, tmp_path, dataset=[])
    assert seen == {"source": "cityscapes"}


# ----------------------------------------------------------------------------- 12: the official README's layouts


def _official_readme_trees(root: Path) -> None:
    """BDD100K as images/<split> + labels/<split>; SYNTHIA split into RGB/{train,val} + GT/LABELS/{train,val}."""
    from famix_core.data.io import write_png16

    for split, names in (("val", ["b1", "b2"]),):
        for n in names:
            (root / "bdd100k" / "images" / split).mkdir(parents=True, exist_ok=True)
            (root / "bdd100k" / "labels" / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((6, 8, 3), 90, np.uint8)).save(root / "bdd100k" / "images" / split / f"{n}.jpg")
            Image.fromarray(np.full((6, 8), 13, np.uint8), mode="L").save(root / "bdd100k" / "labels" / split / f"{n}.png")
    for split, names in (("train", ["0000001", "0000002"]), ("val", ["0000000", "0000003", "0000004"])):
        for n in names:
            (root / "synthia" / "RGB" / split).mkdir(parents=True, exist_ok=True)
            (root / "synthia" / "GT" / "LABELS" / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((6, 8, 3), 90, np.uint8)).save(root / "synthia" / "RGB" / split / f"{n}.png")
            raw = np.zeros((6, 8, 3), np.uint16)
            raw[..., 0] = 8  # car
            write_png16(root / "synthia" / "GT" / "LABELS" / split / f"{n}.png", raw)
    (root / "synthia" / "synthia_split_val.txt").write_text("0000000.png\n0000003.png\n")  # the val folder holds 3


def test_the_official_readme_layouts_are_detected_and_read(tmp_path):
    from famix_core.data import inspect_domain

    _official_readme_trees(tmp_path)
    cfg = DataConfig(root=str(tmp_path))
    b = inspect_domain(cfg, "B", "val")
    assert b.layout.name == "official README" and [p[0].name for p in b.pairs] == ["b1.jpg", "b2.jpg"]
    s_train, s_val = inspect_domain(cfg, "synthia", "train"), inspect_domain(cfg, "S", "val")
    assert s_train.layout.name == s_val.layout.name == "pre-split (official README)"
    assert [p[0].name for p in s_train.pairs] == ["0000001.png", "0000002.png"]
    assert [p[0].name for p in s_val.pairs] == ["0000000.png", "0000003.png"]  # the list still picks the val images
    assert s_val.pairs[0][0].parent == tmp_path / "synthia" / "RGB" / "val"
    _, label = build_dataset(cfg, "S", "val", train=False)[0]
    assert (label == 13).all()
    _, label = build_dataset(cfg, "B", "val", train=False)[0]
    assert (label == 13).all()


def test_data_check_names_the_layout_found(tmp_path, capsys):
    from orchestrator.__main__ import main

    _official_readme_trees(tmp_path)
    rc = main(["data", "check", f"data.root={tmp_path}", "data.source=synthia", "eval.domains=[B,S]"])
    out = capsys.readouterr().out.splitlines()
    assert rc == 0, out
    assert out[0].startswith("synthia") and "train 2 pairs (layout 'pre-split (official README)'" in out[0]
    assert "val   2 pairs (layout 'official README')" in out[1]
    assert "val   2 pairs (layout 'pre-split (official README)'; list " in out[2] and "synthia_split_val.txt" in out[2]
    # validating during training reads the source's val split: checked too (a root without GTA5's 1,000
    # val images passed here, then `sweep plan --profile paper` refused it)
    rc = main(["data", "check", f"data.root={tmp_path}", "data.source=synthia", "eval.domains=[B]", "train.val_every=10"])
    out = capsys.readouterr().out.splitlines()
    assert rc == 0 and [x.split()[:3] for x in out] == [["synthia", "(S)", "train"], ["synthia", "(S)", "val"], ["bdd100k", "(B)", "val"]], out
    (tmp_path / "synthia" / "RGB" / "val" / "0000003.png").unlink()
    assert main(["data", "check", f"data.root={tmp_path}", "data.source=synthia", "eval.domains=[B]", "train.val_every=10"]) == 2
    assert "val   error: " in capsys.readouterr().out.splitlines()[1]


def test_a_few_unpaired_files_warn_more_are_an_error(tmp_path, capsys):
    from orchestrator.__main__ import main
    from famix_core.data.layouts import UnpairedFilesWarning

    img_dir, lbl_dir = tmp_path / "bdd100k" / "images" / "10k" / "val", tmp_path / "bdd100k" / "labels" / "sem_seg" / "masks" / "val"
    names = [f"p{i:03d}" for i in range(400)]
    _touch_pairs(img_dir, lbl_dir, [])
    for n in names:
        (img_dir / f"{n}.jpg").touch()
        (lbl_dir / f"{n}.png").touch()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(img_dir / "p000.jpg")  # data check reads the first header
    for n in ("x1", "x2", "x3"):
        (img_dir / f"{n}.jpg").touch()  # older BDD100K archives: a few images without labels
    (lbl_dir / "y1.png").touch()
    cfg = DataConfig(root=str(tmp_path))
    with pytest.warns(UnpairedFilesWarning, match=r"bdd100k val: 4 files without a partner skipped \(first: .*x1.jpg"):
        pairs = list_pairs(cfg, "B", "val")
    assert len(pairs) == 400
    rc = main(["data", "check", f"data.root={tmp_path}", "eval.domains=[B]"])
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("bdd100k")][0]
    assert rc == 2 and "400 pairs" in line and "4 unpaired files skipped (first: " in line  # rc 2: no gta5 here
    for i in range(7):
        (img_dir / f"z{i}.jpg").touch()  # 11 unpaired: above the tolerance
    with pytest.raises(DataError, match=r"bdd100k val: 10 images have no label \(first: .*x1.jpg"):
        list_pairs(cfg, "B", "val")


def test_a_root_in_neither_layout_names_both(tmp_path):
    (tmp_path / "bdd100k" / "images").mkdir(parents=True)
    with pytest.raises(DataError) as e:
        check_domain(DataConfig(root=str(tmp_path)), "B", "val")
    msg = str(e.value)
    assert "\n" not in msg and f"expected {tmp_path}/bdd100k/images/10k/val/*.jpg" in msg
    assert f"or the official README layout: {tmp_path}/bdd100k/images/val/*.jpg" in msg


def test_the_smoke_profile_scales_the_official_crops_to_its_images():
    from famix_core.config import FamixConfig
    from orchestrator.sweep import BUILTIN_PROFILES

    cfg = FamixConfig.model_validate(BUILTIN_PROFILES["smoke"]["base"])
    syn = cfg.data.synthetic
    assert cfg.data.mapillary_size == syn.height < syn.width  # Mapillary: the centre square, no pad, of every image
    assert cfg.data.synthia_crop / cfg.data.crop_size == pytest.approx(720 / 768, abs=0.01)
    paper = FamixConfig.model_validate(BUILTIN_PROFILES["paper"]["base"])
    assert (paper.data.mapillary_size, paper.data.synthia_crop, paper.data.crop_size) == (1536, 720, 768)
