"""Source validation during training and checkpoint selection (train.select / val_every / val_crop)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torchvision.transforms.v2 import functional as TF

from famix_core.config import FamixConfig, load_config
from famix_core.errors import ConfigError
from famix_core.source_val import CentreCrop, SourceValidation, source_val_dataset
from famix_core.train import Trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    from famix_core.config import DataConfig, SynthConfig
    from famix_core.data.synth.benchmark import ensure_synthetic

    root = tmp_path_factory.mktemp("data")
    ensure_synthetic(DataConfig(root=str(root), synthetic=SynthConfig(height=64, width=96, train_images=4, val_images=2)))
    return str(root)


def _cfg(root: str, **train) -> FamixConfig:
    from conftest import mixstyle_tiny_config

    t = dict(iterations=6, batch_size=2, device="cpu", log_every=1, checkpoint_every=2, lr_decoder=0.05,
             lr_backbone=0.005, val_every=2, val_crop=[60, 90])  # fmt: skip
    return mixstyle_tiny_config(root, 4, **{**t, **train})


def test_select_best_needs_source_validation():
    with pytest.raises(ConfigError, match=r"train.*select=best_source_val needs val_every"):
        load_config(None, ["train.select=best_source_val"])
    with pytest.raises(ConfigError, match=r"train.select"):
        load_config(None, ["train.select=best"])
    cfg = load_config(None, ["train.select=best_source_val", "train.val_every=750"])
    assert cfg.train.val_crop == (1046, 1914) and FamixConfig().train.select == "last"


def test_centre_crop_offsets_as_torchvision_and_label_pad_is_ignore():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (7, 10, 3), dtype=np.uint8)
    label = rng.integers(0, 19, (7, 10), dtype=np.uint8)
    crop = CentreCrop((4, 5), lambda i, l: (i, l))
    img, lbl = crop(image, label)
    ref = TF.center_crop(torch.from_numpy(image).permute(2, 0, 1), [4, 5]).permute(1, 2, 0).numpy()
    assert np.array_equal(img, ref)
    assert np.array_equal(lbl, label[2:6, 2:7])  # top = round(3 / 2) = 2, left = round(5 / 2) = 2
    img, lbl = CentreCrop((9, 12), lambda i, l: (i, l))(image, label)  # larger than the image: padded
    assert img.shape == (9, 12, 3) and lbl.shape == (9, 12)
    ref = TF.center_crop(torch.from_numpy(image).permute(2, 0, 1), [9, 12]).permute(1, 2, 0).numpy()
    assert np.array_equal(img, ref)  # image pad 0, as torchvision
    assert np.array_equal(lbl[1:8, 1:11], label) and (lbl[0] == 255).all() and (lbl[:, 0] == 255).all()


def test_source_val_dataset_is_the_source_val_split_centre_cropped(synth_root):
    from famix_core.data import build_dataset

    cfg = _cfg(synth_root)
    ds = source_val_dataset(cfg)
    full = build_dataset(cfg.data, "gta5", "val", train=False)
    assert ds.pairs == full.pairs and len(ds) == 2
    img, lbl = ds[0]
    ref_img, ref_lbl = full[0]
    assert img.shape == (3, 60, 90) and lbl.shape == (60, 90)
    assert torch.equal(img, ref_img[:, 2:62, 3:93]) and torch.equal(lbl, ref_lbl[2:62, 3:93])


def test_source_val_curve_is_logged_and_leaves_training_unchanged(synth_root, tmp_path):
    from famix_core.evaluate import evaluate_model, load_segmenter, metrics_from_confusion

    logs: list[tuple[int | None, dict]] = []
    with_val = Trainer(_cfg(synth_root, iterations=5), tmp_path / "a", log=lambda m, s: logs.append((s, m))).run()
    without = Trainer(_cfg(synth_root, iterations=5, val_every=None), tmp_path / "b").run()
    a, b = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert [k for k in a if not torch.equal(a[k], b[k])] == []  # select=last: validation changes no weight
    val_logs = [(s, m["source_val/miou"]) for s, m in logs if "source_val/miou" in m]
    assert [s for s, _ in val_logs] == [2, 4, 5]  # every 2 iterations and at the last
    curve = with_val["source_val"]["miou_curve"]
    assert [i for i, _ in curve] == [2, 4, 5] and [100 * m for _, m in curve] == [v for _, v in val_logs]
    assert with_val["select"] == "last" and with_val["selected_iteration"] == 5 and without["source_val"] is None
    # the last point is the mIoU of the output weights on the cropped source val split
    cfg = _cfg(synth_root, iterations=5)
    model = load_segmenter(cfg, tmp_path / "a" / "model.safetensors")
    conf, n = evaluate_model(model, source_val_dataset(cfg), 19, torch.device("cpu"))
    assert n == 2 and metrics_from_confusion(conf)["miou"] == pytest.approx(curve[-1][1], abs=1e-12)


SCRIPTED = {2: 0.30, 4: 0.50, 6: 0.40}  # the best is at iteration 4


def _scripted(monkeypatch, holder: dict) -> None:
    monkeypatch.setattr(SourceValidation, "score", lambda self, model, device: SCRIPTED[holder["t"].iteration])


def _snapshot_at(monkeypatch, iteration: int, into: dict) -> None:
    step = Trainer.step

    def spy(self):
        loss = step(self)
        if self.iteration == iteration:
            into.update({k: v.detach().clone() for k, v in self.model.state_dict().items()})
        return loss

    monkeypatch.setattr(Trainer, "step", spy)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("select", ["best_source_val", "last"])
def test_select_picks_the_best_or_the_last_and_keeps_the_other(synth_root, tmp_path, monkeypatch, select):
    holder: dict = {}
    at4: dict = {}
    _scripted(monkeypatch, holder)
    _snapshot_at(monkeypatch, 4, at4)
    t = holder["t"] = Trainer(_cfg(synth_root, select=select), tmp_path / "out", ckpt_dir=tmp_path / "ckpt")
    summary = t.run()
    last = {k: v.detach() for k, v in t.model.state_dict().items()}
    assert not _same(at4, last)
    out = tmp_path / "out"
    assert summary["source_val"]["best_iteration"] == 4 and summary["source_val"]["best_miou"] == 0.5
    assert summary["select"] == select
    if select == "best_source_val":
        assert summary["selected_iteration"] == 4
        assert _same(load_file(str(out / "model.safetensors")), at4)
        assert _same(load_file(str(out / "last.safetensors")), last)
    else:
        assert summary["selected_iteration"] == 6
        assert _same(load_file(str(out / "model.safetensors")), last)
        assert _same(load_file(str(out / "best.safetensors")), at4)
    assert json.loads((tmp_path / "ckpt" / "best.json").read_text()) == {"iteration": 4, "miou": 0.5}


class _Crash(Exception):
    pass


def test_resume_keeps_the_curve_and_the_best_weights(synth_root, tmp_path, monkeypatch):
    holder: dict = {}
    _scripted(monkeypatch, holder)
    cfg = _cfg(synth_root, select="best_source_val")
    t = holder["t"] = Trainer(cfg, tmp_path / "a")
    straight = t.run()

    def crash_at_5(metrics, step):
        if step == 5 and "train/loss" in metrics:
            raise _Crash()

    t = holder["t"] = Trainer(cfg, tmp_path / "b", ckpt_dir=tmp_path / "ckpt", log=crash_at_5)
    with pytest.raises(_Crash):  # dies in iteration 5: checkpoint and best are at 4
        t.run()
    t = holder["t"] = Trainer(cfg, tmp_path / "b", ckpt_dir=tmp_path / "ckpt")
    resumed = t.run()
    assert resumed["source_val"] == straight["source_val"] and resumed["selected_iteration"] == 4
    for name in ("model.safetensors", "last.safetensors"):
        assert _same(load_file(str(tmp_path / "a" / name)), load_file(str(tmp_path / "b" / name))), name


def test_plan_time_check_covers_the_source_val_split(synth_root, tmp_path):
    import shutil

    from famix_core.errors import DataError
    from orchestrator.checks import check_data

    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    (root / "gta5" / "gtav_split_val.txt").unlink()  # then the shipped official list: its files are missing
    cfg = _cfg(str(root)).model_copy(update={"data": _cfg(str(root)).data.model_copy(update={"synthetic": None})})
    check_data(cfg.model_copy(update={"train": cfg.train.model_copy(update={"val_every": None})}))  # not needed: fine
    with pytest.raises(DataError, match=r"gta5 val"):
        check_data(cfg)


def test_plan_time_check_names_a_missing_root_once(synth_root, tmp_path):
    """The source's root, read for its train and its val split, is one line when it is missing (one key
    fixes both); another domain's missing root is a second line."""
    import shutil

    from famix_core.errors import DataError
    from orchestrator.checks import check_data
    from orchestrator.errors import InputErrors

    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    cfg = _cfg(str(root)).model_copy(update={"data": _cfg(str(root)).data.model_copy(update={"synthetic": None})})
    assert cfg.train.val_every is not None  # the val split is needed too
    shutil.rmtree(root / "gta5")
    with pytest.raises(DataError) as e:  # the error itself, not a report of two
        check_data(cfg)
    assert str(e.value).startswith(f"gta5 train: data root not found: {root / 'gta5'} (expected ")
    assert str(e.value).endswith("; set data.root or data.roots.gta5)")
    inner = _cfg(str(root / "gta5")).data.model_copy(update={"synthetic": None})  # a dataset's folder given as data.root
    with pytest.raises(InputErrors) as e:
        check_data(cfg.model_copy(update={"data": inner}))
    assert str(e.value).splitlines()[1].endswith(f"; set data.root or data.roots.gta5; data.root is the folder that holds gta5/, here {root})")
    shutil.rmtree(root / "cityscapes")
    with pytest.raises(InputErrors) as e:
        check_data(cfg)
    lines = str(e.value).splitlines()
    assert lines[0] == "2 problems with the sweep's inputs (nothing was run):", lines
    assert lines[1].startswith(f"  gta5 train: data root not found: {root / 'gta5'} "), lines
    assert lines[2].startswith(f"  cityscapes val: data root not found: {root / 'cityscapes'} "), lines


def test_train_stage_logs_the_source_val_curve_to_mlflow(tmp_path):
    """Through the orchestrator's stage runner: the curve reaches the trial's MLflow run, the result says the choice."""
    from conftest import plain_tiny_config
    from orchestrator.stages import StageTask
    from orchestrator.execute import execute_stage
    from orchestrator.tracking import Tracker, default_uri

    run_dir = (tmp_path / "runs").absolute()
    run_dir.mkdir()
    tr = Tracker(default_uri(run_dir), "exp", artifact_location=(run_dir / "mlartifacts").as_uri())
    rid, _ = tr.ensure_run({"famix.sweep": "s", "famix.role": "trial", "famix.trial": "t"}, {}, name="t")
    cfg = plain_tiny_config(tmp_path / "data", iterations=4, val_every=3, val_crop=[60, 90], select="best_source_val")
    task = StageTask(
        kind="train", key="v" * 64, config=cfg.to_dict(), store=str(tmp_path / "store"), name="train",
        log_path=str(tmp_path / "train.log"), tracking={"uri": tr.uri, "run_ids": [rid]},
    )  # fmt: skip
    out = execute_stage(task)
    assert out.status == "done", out.error
    history = tr.client.get_metric_history(rid, "source_val/miou")
    assert sorted(m.step for m in history) == [3, 4]
    curve = out.result["source_val"]["miou_curve"]
    assert sorted((m.step, m.value) for m in history) == [(i, pytest.approx(100 * v)) for i, v in curve]
    assert out.result["select"] == "best_source_val" and out.result["selected_iteration"] in (3, 4)
