"""The synthetic benchmark: geometry, per-domain encodings, determinism, atomic generation, CLI."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from PIL import Image

from famix_core.classes import NUM_CLASSES
from famix_core.config import DataConfig, SynthConfig
from famix_core.data import LAYOUTS, build_dataset, check_domain
from famix_core.data.io import read_label
from famix_core.data.synth.appearance import STYLES, render
from famix_core.data.synth.benchmark import MANIFEST_NAME, ensure_synthetic, generate, scene_ids
from famix_core.data.synth.labels import encode_label
from famix_core.data.synth.preview import contact_sheet
from famix_core.data.synth.scene import make_scene
from famix_core.domains import DOMAINS
from famix_core.errors import DataError

TINY = SynthConfig(height=64, width=128, train_images=4, val_images=2)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "data"
    generate(root, TINY)
    return root


def test_styles_cover_every_domain():
    assert set(STYLES) == set(DOMAINS)


def test_tree_has_every_domain_in_its_layout(tiny_root):
    cfg = DataConfig(root=str(tiny_root))
    manifest = json.loads((tiny_root / MANIFEST_NAME).read_text())
    assert manifest["synthetic"] == TINY.model_dump(mode="json")
    for name in DOMAINS:
        assert check_domain(cfg, name, "val") == TINY.val_images
    assert check_domain(cfg, "gta5", "train") == TINY.train_images
    assert check_domain(cfg, "synthia", "train") == TINY.train_images
    assert 1 <= check_domain(cfg, "cityscapes", "train") <= TINY.train_images
    # real encodings: 16-bit RGB labels for SYNTHIA, palette PNGs for GTA5 / Mapillary, JPEG images for BDD
    synthia_label = next((tiny_root / "synthia" / "GT" / "LABELS").glob("*.png"))
    with Image.open(synthia_label) as im:
        assert im.mode == "RGB" and im.tile[0][3] == "RGB;16B"
    with Image.open(next((tiny_root / "gta5" / "labels").glob("*.png"))) as im:
        assert im.mode == "P"
    assert next((tiny_root / "bdd100k" / "images" / "10k" / "val").glob("*.jpg")).is_file()


def test_train_and_val_scene_ids_are_disjoint(tiny_root):
    ids = scene_ids(TINY)
    assert not set(ids["train"]) & set(ids["val"])
    cfg = DataConfig(root=str(tiny_root))
    train = {p[0].name for p in build_dataset(cfg, "gta5", "train", train=False).pairs}
    val = {p[0].name for p in build_dataset(cfg, "gta5", "val", train=False).pairs}
    assert len(train) == TINY.train_images and not train & val


def test_every_domain_decodes_to_the_generators_train_ids(tiny_root):
    cfg = DataConfig(root=str(tiny_root), mapillary_size=TINY.height)
    val_ids = list(scene_ids(TINY)["val"])
    scenes = {k: make_scene(TINY.seed, k, TINY.height, TINY.width) for k in val_ids}
    x0 = round((TINY.width - TINY.height) / 2)  # Mapillary's protocol: the centre square of a landscape image
    images = {}
    for name in DOMAINS:
        ds = build_dataset(cfg, name, "val", train=False)
        cols = slice(x0, x0 + TINY.height) if name == "mapillary" else slice(None)
        for k, i in zip(val_ids, range(len(ds))):
            image, label = ds[i]
            want = scenes[k].labels[:, cols]
            assert label.shape == want.shape and image.shape == (3, *want.shape)
            assert np.array_equal(label.numpy(), want), (name, k)
            images[(name, k)] = image if name == "mapillary" else image[..., x0 : x0 + TINY.height]  # same region
    # same scene, same labels in nine domains, nine different appearances
    for k in val_ids:
        names = list(DOMAINS)
        for a in range(len(names)):
            for b in range(a + 1, len(names)):
                diff = (images[(names[a], k)] - images[(names[b], k)]).abs().mean()
                assert diff > 0.1, (names[a], names[b], float(diff))


def test_raw_label_files_hold_each_datasets_own_ids(tiny_root):
    k = list(scene_ids(TINY)["val"])[0]
    scene = make_scene(TINY.seed, k, TINY.height, TINY.width)
    road = scene.labels == 0
    checks = {
        "cityscapes": (tiny_root / "cityscapes/gtFine/val/frankfurt", 7),  # Cityscapes id of road
        "bdd100k": (tiny_root / "bdd100k/labels/sem_seg/masks/val", 0),  # BDD: train ids
        "mapillary": (tiny_root / "mapillary/validation/labels", 13),  # Vistas: construction--flat--road
        "synthia": (tiny_root / "synthia/GT/LABELS", 3),  # SYNTHIA: road = 3
    }
    for domain, (folder, road_id) in checks.items():
        files = sorted(folder.glob("*.png"))
        raw = read_label(files[-TINY.val_images], first_channel=LAYOUTS[domain].label_first_channel)
        assert np.array_equal(raw, encode_label(scene, domain)[..., 0] if domain == "synthia" else encode_label(scene, domain))
        on_road = raw[road & ~scene.markings]
        assert on_road.size and (on_road == road_id).all(), domain
    vistas = encode_label(scene, "mapillary")
    assert (vistas[scene.markings] == 24).all()  # lane markings: marking--general, still road in train ids


def test_scenes_are_deterministic_and_plausible():
    a = make_scene(3, 5, 64, 128)
    b = make_scene(3, 5, 64, 128)
    c = make_scene(4, 5, 64, 128)
    assert np.array_equal(a.labels, b.labels) and not np.array_equal(a.labels, c.labels)
    assert np.array_equal(render(a, "acdc_fog", 3, 5), render(b, "acdc_fog", 3, 5))
    seen = np.zeros(256, bool)
    for k in range(24):
        s = make_scene(0, k, 64, 128)
        rows = np.arange(64)[:, None].repeat(128, 1)
        assert (s.labels == 0).any() and (s.labels == 10).any()
        assert rows[s.labels == 10].mean() < s.horizon < rows[s.labels == 0].mean()  # sky above, road below
        assert s.depth[s.labels == 10].min() > s.depth[s.labels == 0].max()
        seen[np.unique(s.labels)] = True
    assert seen[:NUM_CLASSES].sum() >= 17


def test_condition_effects_shift_appearance_the_expected_way():
    s = make_scene(0, 7, 64, 128)
    base = render(s, "cityscapes", 0, 7).astype(float)
    night = render(s, "acdc_night", 0, 7).astype(float)
    snow = render(s, "acdc_snow", 0, 7).astype(float)
    fog = render(s, "acdc_fog", 0, 7).astype(float)
    assert night.mean() < 0.5 * base.mean()
    assert snow.mean() > base.mean()
    far = s.depth > 60
    assert fog[far].std() < base[far].std()  # haze flattens distant contrast


def test_ensure_synthetic_reuses_regenerates_and_refuses_foreign_folders(tmp_path):
    cfg = DataConfig(root=str(tmp_path / "d"), synthetic=SynthConfig(height=32, width=64, train_images=2, val_images=1))
    root = ensure_synthetic(cfg)
    manifest = root / MANIFEST_NAME
    stamp = manifest.stat().st_mtime_ns
    assert ensure_synthetic(cfg) == root and manifest.stat().st_mtime_ns == stamp  # reused
    bigger = cfg.model_copy(update={"synthetic": SynthConfig(height=32, width=64, train_images=3, val_images=1)})
    ensure_synthetic(bigger)
    assert json.loads(manifest.read_text())["synthetic"]["train_images"] == 3
    assert check_domain(bigger, "gta5", "train") == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp or stale trees left
    foreign = tmp_path / "real"
    (foreign / "cityscapes").mkdir(parents=True)
    with pytest.raises(DataError, match=rf"data.root: {foreign} holds files but no {MANIFEST_NAME}"):
        ensure_synthetic(DataConfig(root=str(foreign), synthetic=SynthConfig()))
    assert ensure_synthetic(DataConfig(root=str(foreign))) == foreign  # not synthetic: nothing happens


def test_concurrent_generation_leaves_one_complete_tree(tmp_path):
    cfg = SynthConfig(height=32, width=64, train_images=2, val_images=1)
    root = tmp_path / "race"
    results, errors = [], []

    def worker():
        try:
            results.append(generate(root, cfg))
        except Exception as e:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == [root, root]
    assert check_domain(DataConfig(root=str(root)), "AR", "val") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["race"]


def test_contact_sheet_has_a_row_per_domain():
    sheet = contact_sheet(TINY, n_scenes=1)
    assert sheet.height >= len(DOMAINS) * TINY.height
    assert sheet.width >= 2 * TINY.width


def test_cli_synth_and_check(tmp_path, capsys):
    from orchestrator.__main__ import main

    out = tmp_path / "bench"
    rc = main(["data", "synth", "--out", str(out), "--height", "32", "--width", "64", "--train", "2", "--val", "1"])
    assert rc == 0 and (out / "contact_sheet.png").is_file() and (out / MANIFEST_NAME).is_file()
    capsys.readouterr()
    assert main(["data", "check", f"data.root={out}"]) == 0
    text = capsys.readouterr().out
    assert "gta5" in text and "acdc_fog (AF)" in text and "2 pairs" in text and "1 pairs" in text
    assert main(["data", "check", f"data.root={tmp_path / 'nothing'}"]) == 2
    captured = capsys.readouterr()
    assert "data root not found" in captured.out and "9 of 9" in captured.err
