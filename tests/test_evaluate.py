"""Evaluation: confusion / mIoU math, device vs naive loop, test-time scales, domain evaluation, CLI errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from famix_core.classes import CLASS_NAMES
from famix_core.evaluate import (
    ConfusionMatrix,
    check_scales,
    confusion_update,
    evaluate,
    evaluate_domain,
    metrics_from_confusion,
    predict,
    scaled_logits,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_confusion_and_miou_by_hand():
    # 3 classes; 255 ignored; class 2 never in the ground truth but predicted once
    gt = torch.tensor([[0, 0, 1, 1], [1, 255, 0, 1]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 0, 1]])
    conf = confusion_update(torch.zeros(3, 3, dtype=torch.int64), pred, gt)
    # rows = gt, cols = pred
    assert conf.tolist() == [[2, 1, 0], [0, 3, 1], [0, 0, 0]]
    m = metrics_from_confusion(conf, ["a", "b", "c"])
    # IoU a = 2 / (3 + 2 - 2) = 2/3 ; b = 3 / (4 + 4 - 3) = 3/5 ; c = 0 / (0 + 1 - 0) = 0
    assert m["iou"]["a"] == pytest.approx(2 / 3)
    assert m["iou"]["b"] == pytest.approx(3 / 5)
    assert m["iou"]["c"] == 0.0
    assert m["miou"] == pytest.approx((2 / 3 + 3 / 5 + 0) / 3)
    assert m["pixel_acc"] == pytest.approx(5 / 7)


def test_classes_with_empty_union_are_none_and_excluded():
    gt = torch.tensor([0, 0, 1, 255])
    pred = torch.tensor([0, 0, 1, 2])  # the 2 falls on an ignored pixel: class 2 has union 0
    cm = ConfusionMatrix(3)
    cm.update(pred, gt)
    m = cm.metrics(["a", "b", "c"])
    assert m["iou"] == {"a": 1.0, "b": 1.0, "c": None}
    assert m["miou"] == 1.0
    assert metrics_from_confusion(torch.zeros(19, 19, dtype=torch.int64))["iou"][CLASS_NAMES[0]] is None


def test_device_confusion_equals_naive_numpy_loop():
    g = torch.Generator().manual_seed(0)
    k = 19
    conf = ConfusionMatrix(k)
    naive = np.zeros((k, k), dtype=np.int64)
    for _ in range(3):
        gt = torch.randint(0, k, (2, 17, 23), generator=g)
        gt[torch.rand(gt.shape, generator=g) < 0.2] = 255
        pred = torch.randint(0, k, (2, 17, 23), generator=g)
        conf.update(pred, gt)
        for t, p in zip(gt.flatten().tolist(), pred.flatten().tolist()):
            if t != 255:
                naive[t, p] += 1
    assert np.array_equal(conf.mat.numpy(), naive)
    m = conf.metrics()
    ious = []
    for c in range(k):
        union = naive[c, :].sum() + naive[:, c].sum() - naive[c, c]
        if union:
            ious.append(naive[c, c] / union)
    assert m["miou"] == pytest.approx(float(np.mean(ious)))
    assert m["pixel_acc"] == pytest.approx(np.trace(naive) / naive.sum())


class _Colour(nn.Module):
    """A stand-in segmenter: logits are a fixed 1x1 conv of the image (so scales change the result)."""

    def __init__(self, k: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(3, k, 3, padding=1)
        torch.manual_seed(0)
        nn.init.normal_(self.conv.weight)

    def forward(self, x):
        return self.conv(x)


def _official_validate_logits(model, x, label_size, scale, ensemble):
    """Official main.py::validate: bilinear align_corners=True down and up; ensemble = mean of LOGITS."""
    up = nn.functional.interpolate
    with torch.no_grad():
        out = model(up(x, scale_factor=scale, mode="bilinear", align_corners=True))
        out = up(out, size=label_size, mode="bilinear", align_corners=True)
        if ensemble:
            out = (out + model(x)) / 2
    return out


def test_predict_with_scales_and_ensemble():
    model = _Colour().eval()
    x = torch.randn(2, 3, 17, 25)  # odd sizes: scale_factor 0.5 gives floor(8.5) x floor(12.5) = 8 x 12
    single = predict(model, x, (17, 25), [1.0])
    assert torch.equal(single, model(x).argmax(1))
    half = scaled_logits(model, x, (17, 25), [0.5])
    ref_half = _official_validate_logits(model, x, (17, 25), 0.5, ensemble=False)
    torch.testing.assert_close(half, ref_half, rtol=0, atol=1e-6)
    assert torch.equal(predict(model, x, (17, 25), [0.5]), ref_half.argmax(1))
    # align_corners=False (the previous behaviour) gives other logits
    xs = nn.functional.interpolate(x, size=(8, 12), mode="bilinear", align_corners=False)
    with torch.no_grad():
        other = nn.functional.interpolate(model(xs), size=(17, 25), mode="bilinear", align_corners=False)
    assert (other - ref_half).abs().max() > 1e-2
    ens = scaled_logits(model, x, (17, 25), [1.0, 0.5])
    ref_ens = _official_validate_logits(model, x, (17, 25), 0.5, ensemble=True)
    torch.testing.assert_close(ens, ref_ens, rtol=0, atol=1e-6)  # the mean of logits, not of probabilities
    assert torch.equal(predict(model, x, (17, 25), [1.0, 0.5]), ref_ens.argmax(1))
    with torch.no_grad():
        probs = (model(x).softmax(1) + ref_half.softmax(1)) / 2
    assert (ens.softmax(1) - probs).abs().max() > 1e-3


def test_scale_one_logits_resized_to_a_larger_label_with_align_corners():
    model = _Colour().eval()
    x = torch.randn(1, 3, 9, 13)
    out = scaled_logits(model, x, (17, 25), [1.0])
    with torch.no_grad():
        ref = nn.functional.interpolate(model(x), size=(17, 25), mode="bilinear", align_corners=True)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def synth_setup(tmp_path_factory):
    """Tiny synthetic benchmark + random-init famix-tiny weights saved like a training run."""
    from famix_core.checkpoint import save_safetensors_atomic
    from famix_core.config import FamixConfig
    from famix_core.data.synth.benchmark import ensure_synthetic
    from famix_core.models.segmenter import build_segmenter

    root = tmp_path_factory.mktemp("evaldata")
    cfg = FamixConfig.model_validate(
        {
            "model": {"backbone": "famix-tiny", "pretrained": "none"},
            "data": {"root": str(root / "data"), "synthetic": {"height": 64, "width": 96, "train_images": 2, "val_images": 3}},
            "train": {"device": "cpu"},
            "eval": {"domains": ["C", "AN"], "scales": [1.0]},
        }
    )
    ensure_synthetic(cfg.data)
    torch.manual_seed(0)
    model = build_segmenter(cfg.model).eval()
    weights = root / "run" / "model.safetensors"
    save_safetensors_atomic(weights, model.state_dict())
    return cfg, weights, model


def test_evaluate_domain_writes_metrics_and_confusion(synth_setup, tmp_path):
    from famix_core.data import build_dataset

    cfg, weights, model = synth_setup
    res = evaluate_domain(cfg, weights, "C", tmp_path / "out")
    assert set(res) == {"miou", "iou", "pixel_acc", "n_images"}
    assert res["n_images"] == 3 and 0.0 <= res["miou"] <= 1.0
    assert list(res["iou"]) == list(CLASS_NAMES)
    record = json.loads((tmp_path / "out" / "confusion.json").read_text())
    assert {k: v for k, v in record.items() if k != "matrix"} == {"classes": list(CLASS_NAMES), "rows": "ground truth", "columns": "prediction"}
    conf = record["matrix"]
    assert len(conf) == 19 and all(len(r) == 19 and all(isinstance(v, int) for v in r) for r in conf)
    ds = build_dataset(cfg.data, "C", "val", train=False)
    valid = sum(int((ds[i][1] != 255).sum()) for i in range(len(ds)))
    assert sum(map(sum, conf)) == valid
    # the same predictions counted by hand
    conf_ref = torch.zeros(19, 19, dtype=torch.int64)
    with torch.no_grad():
        for i in range(len(ds)):
            x, y = ds[i]
            confusion_update(conf_ref, model(x[None]).argmax(1), y[None])
    assert conf_ref.tolist() == conf
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["miou"] == pytest.approx(res["miou"]) and metrics["column"] == "C"


def test_evaluate_several_domains_and_scales(synth_setup):
    cfg, weights, _ = synth_setup
    logged = []
    results = evaluate(cfg, weights, log=lambda m, s: logged.append(m))
    assert list(results) == ["C", "AN"]
    assert [list(m) for m in logged] == [["miou/C"], ["miou/AN"]]
    assert logged[0]["miou/C"] == pytest.approx(100 * results["C"]["miou"])
    cfg2 = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"scales": [1.0, 0.5], "max_images": 2, "batch_size": 2})})
    res = evaluate_domain(cfg2, weights, "acdc_night")
    assert res["n_images"] == 2 and 0.0 <= res["pixel_acc"] <= 1.0


def test_a_scale_that_shrinks_the_images_below_what_the_backbone_takes_is_a_user_error(synth_setup):
    """`eval.scales=[0.001]` passed the plan, then every evaluation failed in a pooling layer ("Output size
    is too small"), a RuntimeError, so the sweep retried it as a fault of the machine."""
    from famix_core.errors import ConfigError
    from orchestrator.execute import retryable

    cfg, weights, _ = synth_setup
    cfg2 = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"scales": [1.0, 0.001], "max_images": 2, "batch_size": 2})})
    with pytest.raises(ConfigError) as e:
        evaluate_domain(cfg2, weights, "C")
    h, w = cfg.data.synthetic.height, cfg.data.synthetic.width
    assert str(e.value).startswith(f"eval.scales: 0.001 shrinks a {h}×{w} image to 0×0 pixels; the backbone needs at least 16 on each side")
    assert not retryable(e.value)
    check_scales([0.125], (128, 256))  # 16×32: the smallest that runs
    with pytest.raises(ConfigError, match=r"to 15×31 pixels; .* \(expected a scale of at least 0.13\)$"):
        check_scales([0.124], (128, 256))


def test_evaluate_missing_weights_is_one_line(synth_setup, tmp_path):
    from famix_core.errors import WeightsError

    cfg, _, _ = synth_setup
    with pytest.raises(WeightsError, match="not found"):
        evaluate_domain(cfg, tmp_path / "none" / "model.safetensors", "C")


def test_keep_loaded_model_loads_the_weights_once_with_the_same_numbers(synth_setup, tmp_path, monkeypatch):
    """Consecutive evaluations of one model inside keep_loaded_model build and load it once (a Slurm pack);
    their metrics and confusion matrices equal those of evaluations that each load the weights."""
    import os
    import shutil

    from famix_core import evaluate as ev

    cfg, weights, _ = synth_setup
    loads: list[str] = []
    real = ev.load_segmenter

    def counting(*args, **kwargs):
        loads.append(str(args[1]))
        return real(*args, **kwargs)

    monkeypatch.setattr(ev, "load_segmenter", counting)
    fresh = {d: evaluate_domain(cfg, weights, d, tmp_path / "fresh" / d) for d in ("C", "AN", "C")}
    assert len(loads) == 3  # outside the block every evaluation loads

    loads.clear()
    with ev.keep_loaded_model():
        kept = {d: evaluate_domain(cfg, weights, d, tmp_path / "kept" / d) for d in ("C", "AN", "C")}
        assert len(loads) == 1
        # other weights (a copy with another modification time) load afresh, and replace the kept model
        other = tmp_path / "other" / "model.safetensors"
        other.parent.mkdir()
        shutil.copy(weights, other)
        os.utime(other, ns=(1, 1))
        assert evaluate_domain(cfg, other, "C") == fresh["C"]
        assert len(loads) == 2
    assert ev._kept["model"] is None  # nothing outlives the block
    assert kept == fresh
    for d in ("C", "AN"):
        for name in ("confusion.json", "metrics.json"):
            a = json.loads((tmp_path / "fresh" / d / name).read_text())
            b = json.loads((tmp_path / "kept" / d / name).read_text())
            if name == "metrics.json":
                a.pop("seconds"), b.pop("seconds")
            assert a == b, (d, name)


# ----------------------------------------------------------------------------- CLI


def test_cli_errors_are_one_line_exit_2(tmp_path, capsys):
    from orchestrator.__main__ import main

    rc = main(["train", "--config", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("famix: error:") and "missing.yaml" in err and "\n" not in err
    rc = main(["evaluate", "--out", str(tmp_path / "o"), "--weights", str(tmp_path / "w.safetensors"), "model.freeze=sometimes"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "model.freeze" in err and "\n" not in err
    rc = main(["evaluate", "--out", str(tmp_path / "o"), "--weights", str(tmp_path / "w.safetensors"), "--domains", "X"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "--domains" in err
    # a domain given twice was scored once, quietly, where eval.domains refuses it
    rc = main(["evaluate", "--out", str(tmp_path / "o"), "--weights", str(tmp_path / "w.safetensors"), "--domains", "C,AN,cityscapes"])
    err = capsys.readouterr().err
    assert rc == 2 and err == "famix: error: command line: --domains: cityscapes is C again (column C); give each domain once\n"
    assert not (tmp_path / "o").exists()


def test_cli_evaluate_runs(synth_setup, tmp_path, capsys):
    from orchestrator.__main__ import main

    cfg, weights, _ = synth_setup
    import yaml

    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg.to_dict()))
    rc = main(["evaluate", "--config", str(cfg_file), "--out", str(tmp_path / "ev"), "--weights", str(weights),
               "--domains", "C", "eval.scales=[1.0,0.5]"])
    out = capsys.readouterr().out
    assert rc == 0 and "mIoU" in out
    assert (tmp_path / "ev" / "C" / "metrics.json").is_file()
    assert "C" in json.loads((tmp_path / "ev" / "results.json").read_text())


def test_cli_evaluate_checks_every_domain_first_and_says_each_score_as_it_comes(synth_setup, tmp_path, capsys):
    """A missing root for the second domain was found after the first was scored, whose score was
    never shown (nor results.json written); and the scores came only at the end, all at once."""
    import yaml

    from orchestrator.__main__ import main

    cfg, weights, _ = synth_setup
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg.to_dict()))
    run = ["evaluate", "--config", str(cfg_file), "--out", str(tmp_path / "ev"), "--weights", str(weights), "--domains", "C,AN"]
    assert main([*run, f"data.roots.acdc_night={tmp_path / 'nowhere'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"famix: error: acdc_night val: data root not found: {tmp_path / 'nowhere'}") and err.count("\n") == 1, err
    assert not (tmp_path / "ev").exists()
    assert main(run) == 0
    err = capsys.readouterr().err.splitlines()
    scored = [line for line in err if line.startswith("[evaluate]")]
    assert [line.split(" mIoU ")[0] for line in scored] == ["[evaluate] C", "[evaluate] AN"], err
    assert scored[1].endswith("(2/2 domains)")


def test_cli_evaluate_says_how_far_a_long_domain_is(synth_setup, tmp_path, capsys, monkeypatch):
    """A real domain's 500 to 2,000 images left the command silent for minutes: a line every 10 s
    says which image it is at (here every call of the clock is 11 s later)."""
    import itertools

    import yaml

    from famix_core import cli_engine
    from orchestrator.__main__ import main

    cfg, weights, _ = synth_setup
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg.to_dict()))
    clock = itertools.count(0.0, 11.0)
    monkeypatch.setattr(cli_engine.time, "monotonic", lambda: next(clock))
    assert main(["evaluate", "--config", str(cfg_file), "--out", str(tmp_path / "ev"), "--weights", str(weights), "--domains", "C,AN"]) == 0
    said = [line.split(" mIoU ")[0] for line in capsys.readouterr().err.splitlines() if line.startswith("[evaluate]")]
    assert said == ["[evaluate] C: image 1/3", "[evaluate] C: image 2/3", "[evaluate] C",
                    "[evaluate] AN: image 1/3", "[evaluate] AN: image 2/3", "[evaluate] AN"], said  # fmt: skip


class _AtenLog:
    """Records the aten ops run inside it (a CPU stand-in for CUDA's sync debug mode)."""

    def __enter__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        ops = self.ops = []

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                ops.append(func.overloadpacket.__name__)
                return func(*args, **(kwargs or {}))

        self._mode = Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        self._mode.__exit__(*exc)


# ops whose output size depends on the data, or that read a value back: each one a host sync on CUDA
_SYNCING = {"nonzero", "masked_select", "bincount", "_local_scalar_dense", "unique", "_unique2", "index"}


def test_confusion_update_uses_only_fixed_size_ops():
    g = torch.Generator().manual_seed(1)
    gt = torch.randint(0, 19, (2, 9, 11), generator=g)
    gt[0, 0] = 255
    pred = torch.randint(0, 19, (2, 9, 11), generator=g)
    conf = torch.zeros(19, 19, dtype=torch.int64)
    with _AtenLog() as log:
        confusion_update(conf, pred, gt)
    assert not _SYNCING & set(log.ops), log.ops
    assert int(conf.sum()) == 2 * 9 * 11 - 11  # the ignored row of sample 0 is not counted
    ref = np.zeros((19, 19), dtype=np.int64)
    np.add.at(ref, (gt[gt != 255].numpy(), pred[gt != 255].numpy()), 1)
    assert np.array_equal(conf.numpy(), ref)


def test_evaluation_through_workers_and_bf16(synth_setup):
    """The DataLoader path gives the same confusion with 0 or 2 workers; bf16 autocast runs the convs in bf16."""
    from famix_core.data import build_dataset
    from famix_core.evaluate import evaluate_model

    cfg, _, model = synth_setup
    ds = build_dataset(cfg.data, "C", "val", train=False)
    cpu = torch.device("cpu")
    c0, n0 = evaluate_model(model, ds, 19, cpu, [1.0, 0.5])
    c2, n2 = evaluate_model(model, ds, 19, cpu, [1.0, 0.5], num_workers=2)
    assert n0 == n2 == 3 and torch.equal(c0, c2) and int(c0.sum()) > 0
    seen = []
    h = model.backbone.layer2.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    cb, nb = evaluate_model(model, ds, 19, cpu, [1.0], precision="bf16")
    h.remove()
    assert seen == [torch.bfloat16] * 3 and nb == 3 and int(cb.sum()) == int(c0.sum())
