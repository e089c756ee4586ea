"""The paper's data protocol (official FAMix code): split lists, SYNTHIA val, Mapillary crop, SYNTHIA-source
transform, freeze by source, the official README's folder layouts. Inputs are tiny trees built here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
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
    from famix_core.mining import _source_dataset
    from test_data import make_tree

    make_tree(tmp_path, "gta5", "train", [f"{i:05d}" for i in range(1, 6)])
    (tmp_path / "gta5" / "gtav_split_train.txt").write_text("00004.png\n00002.png\n")
    (tmp_path / "gta5" / "gtav_split_val.txt").write_text("00005.png\n")
    cfg = FamixConfig.model_validate({"data": {"root": str(tmp_path)}, "mining": {"crop_size": 8}})
    assert [p[0].name for p in _source_dataset(cfg).pairs] == ["00004.png", "00002.png"]
    assert [p[0].name for p in build_dataset(cfg.data, "gta5", "train", train=True, crop_size=8).pairs] == [
        "00004.png", "00002.png"]  # fmt: skip
    assert [p[0].name for p in source_val_pairs(cfg.data)] == ["00005.png"]
    assert check_domain(cfg.data, "gta5", "val") == 1


def test_the_synthetic_benchmark_writes_official_style_lists(tmp_path):
    from famix_core.config import SynthConfig
    from famix_core.data.synth import generate

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
