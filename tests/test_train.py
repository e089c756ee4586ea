"""Training: schedule, batch order, outputs, logging, divergence, bit-exact resume, overfitting."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from famix_core.config import FamixConfig
from famix_core.errors import TrainingDiverged
from famix_core.evaluate import evaluate_model, metrics_from_confusion
from famix_core.train import BatchSchedule, Trainer, poly_lr, train


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    """The built-in synthetic benchmark at a tiny size, generated once for the module."""
    from famix_core.config import DataConfig, SynthConfig
    from famix_core.data.synth.benchmark import ensure_synthetic

    root = tmp_path_factory.mktemp("data")
    dc = DataConfig(root=str(root), synthetic=SynthConfig(height=64, width=96, train_images=4, val_images=2), crop_size=64)
    ensure_synthetic(dc)
    return str(root)


def tiny_config(root: str, **train_kw) -> FamixConfig:
    t = dict(iterations=6, batch_size=2, device="cpu", log_every=1, checkpoint_every=2, lr_decoder=0.05, lr_backbone=0.005)
    t.update(train_kw)
    return FamixConfig.model_validate(
        {
            "model": {"backbone": "famix-tiny", "pretrained": "none", "freeze": "none"},
            "style": {"strategy": "famix", "augment": False, "mix": True},  # MixStyle: random, no bank needed
            "data": {"root": root, "crop_size": 48,
                     "synthetic": {"height": 64, "width": 96, "train_images": 4, "val_images": 2}},
            "train": t,
        }
    )


def test_poly_lr_schedule():
    assert poly_lr(0.1, 0, 100) == pytest.approx(0.1)
    assert poly_lr(0.1, 50, 100) == pytest.approx(0.1 * 0.5**0.9)
    assert poly_lr(0.1, 100, 100, min_lr=1e-6) == pytest.approx(1e-6)
    lrs = [poly_lr(0.1, i, 100) for i in range(101)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_batch_schedule_is_a_pure_function_of_the_iteration():
    a, b = BatchSchedule(5, 3, seed=7), BatchSchedule(5, 3, seed=7)
    seq = [a.batch(i) for i in range(10)]
    assert [b.batch(i) for i in reversed(range(10))] == list(reversed(seq))  # any order, same answer
    flat = [idx for batch in seq for (_, _, idx) in batch]
    for e in range(6):  # every epoch is a permutation of the dataset
        assert sorted(flat[5 * e : 5 * e + 5]) == list(range(5))
    assert flat[:5] != [idx for batch in (BatchSchedule(5, 3, 8).batch(i) for i in range(2)) for (_, _, idx) in batch][:5]


def test_train_writes_official_weights_summary_and_logs(synth_root, tmp_path):
    cfg = tiny_config(synth_root, iterations=4, log_every=2)
    logged = []
    summary = train(cfg, tmp_path / "out", ckpt_dir=tmp_path / "ckpt", log=lambda m, s: logged.append((s, m)))
    assert summary["iterations"] == 4 and summary["images_per_s"] > 0 and summary["peak_mem_mb"] > 0
    assert set(summary) >= {"iterations", "final_loss", "images_per_s", "peak_mem_mb", "seconds"}
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["iterations"] == 4
    sd = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert "classifier.classifier.3.bias" in sd and "backbone.layer4.0.conv3.weight" in sd
    assert [s for s, _ in logged] == [2, 4]
    assert all(set(m) == {"train/loss", "train/lr"} for _, m in logged)
    assert logged[1][1]["train/lr"] < logged[0][1]["train/lr"]
    assert summary["final_loss"] == pytest.approx(logged[-1][1]["train/loss"])
    assert (tmp_path / "ckpt" / "latest.json").is_file()
    # a rerun finds the final checkpoint and trains nothing more
    again = train(cfg, tmp_path / "out2", ckpt_dir=tmp_path / "ckpt")
    assert again["iterations"] == 4
    sd2 = load_file(str(tmp_path / "out2" / "model.safetensors"))
    assert all(torch.equal(sd[k], sd2[k]) for k in sd)


class _Crash(Exception):
    pass


def test_stop_request_checkpoints_at_the_current_iteration_and_resume_loses_nothing(synth_root, tmp_path):
    """Setting ``stop`` (what a preemption signal's handler does) ends the run at an iteration boundary
    with a checkpoint there, between periodic ones; resuming from it ends with the uninterrupted weights."""
    import threading

    from famix_core.errors import TrainingInterrupted

    cfg = tiny_config(synth_root, iterations=6, checkpoint_every=4, log_every=1)
    stop = threading.Event()
    straight = train(cfg, tmp_path / "a", stop=stop)  # never set: runs to the end

    steps = []

    def stop_during_3(metrics, step):  # runs inside step 3, as a signal handler would
        steps.append(step)
        if step == 3:
            stop.set()

    with pytest.raises(TrainingInterrupted) as info:
        train(cfg, tmp_path / "b", ckpt_dir=tmp_path / "ckpt", log=stop_during_3, stop=stop)
    assert info.value.iteration == 3 and steps == [1, 2, 3]
    assert json.loads((tmp_path / "ckpt" / "latest.json").read_text())["iteration"] == 3  # periodic: 4
    assert not (tmp_path / "b" / "model.safetensors").exists()

    summary = train(cfg, tmp_path / "b", ckpt_dir=tmp_path / "ckpt", log=lambda m, s: steps.append(s))
    assert steps == [1, 2, 3, 4, 5, 6] and summary["iterations"] == 6
    a = load_file(str(tmp_path / "a" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "model.safetensors"))
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    assert summary["final_loss"] == straight["final_loss"]


def test_resume_is_bit_exact_after_a_crash(synth_root, tmp_path):
    cfg = tiny_config(synth_root, iterations=6, checkpoint_every=2, log_every=1)
    straight = train(cfg, tmp_path / "a")

    def crash_at_5(metrics, step):
        if step == 5:
            raise _Crash()

    with pytest.raises(_Crash):  # dies after iteration 5; the last checkpoint is at 4
        train(cfg, tmp_path / "b", ckpt_dir=tmp_path / "ckpt", log=crash_at_5)
    assert json.loads((tmp_path / "ckpt" / "latest.json").read_text())["iteration"] == 4
    torch.manual_seed(12345)  # a "new process": the global RNG is anywhere
    torch.rand(100)
    resumed = Trainer(cfg, tmp_path / "b", ckpt_dir=tmp_path / "ckpt")
    assert resumed.resume() and resumed.iteration == 4
    summary = resumed.run()
    assert summary["iterations"] == 6
    a = load_file(str(tmp_path / "a" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "model.safetensors"))
    assert a.keys() == b.keys()
    differing = [k for k in a if not torch.equal(a[k], b[k])]
    assert differing == []
    assert summary["final_loss"] == straight["final_loss"]
    # the same file, byte for byte: its metadata does not come out in a different order each time
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()


def test_saved_weights_are_the_same_bytes_each_time(tmp_path):
    from safetensors import safe_open

    from famix_core.checkpoint import save_safetensors_atomic
    from famix_core.io import safetensors_problem

    tensors = {"b.weight": torch.arange(6.0).reshape(2, 3), "a.bias": torch.ones(3, dtype=torch.float16)}
    meta = {"backbone": "famix-tiny", "output_stride": "16", "num_classes": "19", "iterations": "400", "note": "été"}
    blobs = set()
    for i in range(8):  # safetensors' own metadata order changes from one save to the next
        path = tmp_path / f"w{i}.safetensors"
        save_safetensors_atomic(path, tensors, metadata=dict(reversed(meta.items())) if i % 2 else meta)
        blobs.add(path.read_bytes())
    assert len(blobs) == 1
    path = tmp_path / "w0.safetensors"
    assert safetensors_problem(path) is None and (8 + int.from_bytes(path.read_bytes()[:8], "little")) % 8 == 0
    with safe_open(str(path), framework="pt") as fh:
        assert fh.metadata() == meta
        assert all(torch.equal(fh.get_tensor(k), v) for k, v in tensors.items())


def test_on_demand_checkpoint_and_step(synth_root, tmp_path):
    cfg = tiny_config(synth_root, iterations=10, checkpoint_every=100)
    t = Trainer(cfg, tmp_path / "o", ckpt_dir=tmp_path / "ck")
    losses = [t.step() for _ in range(3)]
    assert t.iteration == 3 and bool(torch.isfinite(torch.stack(losses)).all())
    path = t.save_checkpoint()
    assert path is not None and path.name == "iter-00000003"
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["iter-00000003", "latest.json"]
    other = Trainer(cfg, tmp_path / "o", ckpt_dir=tmp_path / "ck")
    assert other.resume() and other.iteration == 3
    for k, v in t.model.state_dict().items():
        assert torch.equal(v, other.model.state_dict()[k]), k
    # momentum buffers restored too
    s1, s2 = t.optimizer.state_dict()["state"], other.optimizer.state_dict()["state"]
    assert s1.keys() == s2.keys() and all(torch.equal(s1[i]["momentum_buffer"], s2[i]["momentum_buffer"]) for i in s1)


class _Fixed(torch.utils.data.Dataset):
    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], self.labels[i]


def test_nan_loss_raises_training_diverged(synth_root, tmp_path):
    cfg = tiny_config(synth_root)
    images = torch.full((2, 3, 32, 32), float("nan"))
    labels = torch.zeros(2, 32, 32, dtype=torch.long)
    t = Trainer(cfg, tmp_path / "o", dataset=_Fixed(images, labels))
    with pytest.raises(TrainingDiverged, match="loss is nan at iteration 1"):
        t.step()


def test_tiny_model_overfits_synthetic_images(synth_root, tmp_path):
    """No augmentation, two fixed source images: the loss collapses and most pixels are learnt.

    (Thin classes of 64x96 synthetic scenes, a few pixels wide, are below the decoder's 1/4
    resolution, so per-class IoU is checked on the block-label test below.)
    """
    from famix_core.data import build_dataset

    cfg = tiny_config(synth_root, iterations=120, batch_size=2, log_every=20, checkpoint_every=1000,
                      lr_decoder=0.05, lr_backbone=0.05, label_smoothing=0.0)
    cfg = cfg.model_copy(update={"style": cfg.style.model_copy(update={"augment": False, "mix": False})})
    plain = build_dataset(cfg.data, "gta5", "train", train=False, max_items=2)  # full images, no randomness
    items = [plain[i] for i in range(2)]
    ds = _Fixed(torch.stack([x for x, _ in items]), torch.stack([y for _, y in items]))
    losses = []
    t = Trainer(cfg, tmp_path / "o", dataset=ds, log=lambda m, s: losses.append(m["train/loss"]))
    t.run()
    conf, n = evaluate_model(t.model, ds, 19, torch.device("cpu"))
    m = metrics_from_confusion(conf)
    assert n == 2
    assert losses[-1] < 0.3 * losses[0], losses
    assert m["pixel_acc"] > 0.85, m


def test_tiny_model_overfits_block_images_to_high_miou(synth_root, tmp_path):
    """A handful of images whose colour encodes the class in 8x8 blocks: train mIoU > 0.9."""
    g = torch.Generator().manual_seed(0)
    palette = torch.rand(19, 3, generator=g) * 4 - 2  # (K, 3) in CLIP-normalized units
    classes = torch.tensor([0, 2, 8, 10, 13])
    blocks = classes[torch.randint(0, len(classes), (4, 4, 4), generator=g)]  # (N, 4, 4)
    labels = blocks.repeat_interleave(8, 1).repeat_interleave(8, 2)  # (N, 32, 32)
    images = palette[labels].permute(0, 3, 1, 2) + 0.1 * torch.randn(4, 3, 32, 32, generator=g)  # (N, 3, 32, 32)
    cfg = tiny_config(synth_root, iterations=150, batch_size=2, log_every=150, checkpoint_every=1000,
                      lr_decoder=0.05, lr_backbone=0.05, label_smoothing=0.0)
    cfg = cfg.model_copy(update={"style": cfg.style.model_copy(update={"augment": False, "mix": False})})
    ds = _Fixed(images, labels)
    t = Trainer(cfg, tmp_path / "o", dataset=ds)
    t.run()
    conf, _ = evaluate_model(t.model, ds, 19, torch.device("cpu"))
    m = metrics_from_confusion(conf)
    assert m["miou"] > 0.9, m
    assert sum(v is not None for v in m["iou"].values()) >= 5


def test_famix_strategy_trains_with_a_style_bank(synth_root, tmp_path):
    from famix_core.errors import FamixError
    from famix_core.styles.bank import StyleBank

    g = torch.Generator().manual_seed(0)
    n, c = 12, 64  # famix-tiny layer-1 channels
    bank = StyleBank(torch.randn(n, c, generator=g), torch.rand(n, c, generator=g) + 0.5,
                     torch.tensor([0, 0, 2, 2, 8, 8, 10, 10, 13, 13, 255, 255]))
    bank.save(tmp_path / "bank")
    cfg = tiny_config(synth_root, iterations=2, checkpoint_every=100)
    cfg = cfg.model_copy(update={"style": cfg.style.model_copy(update={"augment": True, "mix": True})})
    assert cfg.style.needs_bank()
    with pytest.raises(FamixError, match="style bank"):
        Trainer(cfg, tmp_path / "o")
    t = Trainer(cfg, tmp_path / "o", bank_dir=tmp_path / "bank")
    assert t.model.style_augmenter is not None and t.style_generator is not None
    before = t.style_generator.get_state().clone()
    loss = t.step()
    assert torch.isfinite(loss)
    assert not torch.equal(before, t.style_generator.get_state())  # styles were drawn from our generator
    assert not any(k.startswith("style") for k in t.model.state_dict())


def test_cli_train_writes_outputs(synth_root, tmp_path, capsys):
    import yaml

    from orchestrator.__main__ import main

    cfg = tiny_config(synth_root, iterations=2)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    rc = main(["train", "--config", str(tmp_path / "cfg.yaml"), "--out", str(tmp_path / "run"), "train.iterations=3"])
    assert rc == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["iterations"] == 3
    assert (tmp_path / "run" / "checkpoints" / "latest.json").is_file()
    assert '"iterations": 3' in capsys.readouterr().out


def test_cli_train_resumes_only_its_own_training_and_says_so(synth_root, tmp_path, capsys):
    """`famix train --out DIR` where DIR held a finished training of another config loaded that
    training's last checkpoint without a word and wrote its model as the new one (same bytes for
    train.lr_decoder=0.05); a checkpoint of another shape was a traceback. Its checkpoints now record
    what training they are of; another one is one line, and nothing is written."""
    import yaml

    from orchestrator.__main__ import main

    cfg = tiny_config(synth_root, iterations=2)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    run = ["train", "--config", str(tmp_path / "cfg.yaml"), "--out", str(tmp_path / "run")]
    assert main(run) == 0
    weights = (tmp_path / "run" / "model.safetensors").read_bytes()
    capsys.readouterr()
    for words, differs in [
        (["train.lr_decoder=0.01"], "train.lr_decoder 0.05, here 0.01"),
        (["train.iterations=3"], "train.iterations 2, here 3"),
        (["model.output_stride=8", "model.freeze=paper"], "model.output_stride 16, here 8; model.freeze none, here paper"),
        (["style.mix=false"], "style.strategy mixstyle, here none; style.grid 3, here unset; style.eps"),
    ]:
        assert main([*run, *words]) == 2, words
        err = capsys.readouterr().err
        assert err.startswith(f"famix: error: {tmp_path / 'run' / 'checkpoints'}: its checkpoint (iteration 2) is of another training ({differs}"), err
        assert err.endswith("; write elsewhere, or delete that folder to train from scratch\n") and err.count("\n") == 1, err
        assert (tmp_path / "run" / "model.safetensors").read_bytes() == weights
    # fields that do not change the weights, and where the files lie: the data moved (the synthetic
    # benchmark is the same settings anywhere), the same training from another folder
    moved = ["train.log_every=2", "train.checkpoint_every=1", f"data.root={tmp_path / 'elsewhere'}"]
    assert main([*run, *moved]) == 0
    err = capsys.readouterr().err
    assert f"[train] resuming from iteration 2/2 ({tmp_path / 'run' / 'checkpoints' / 'iter-00000002'})" in err, err
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == weights


def test_a_training_resumes_where_only_its_files_places_or_its_gpu_changed(tmp_path):
    """The identity a stage key hashes holds the data's absolute root, the weights' and split list's
    paths and the device: a moved dataset, a relative data.root from another folder or another GPU
    index refused a resume of the very same training. The resume compares what the weights depend on."""
    from famix_core.identity import resume_view, training_identity

    def identity(**over):
        base = {"model": {"backbone": "famix-tiny", "pretrained": "/a/clip.safetensors"},
                "data": {"root": "/datasets", "split_file": "/a/train.txt"}, "train": {"device": "cuda:0", "lr_decoder": 0.01}}  # fmt: skip
        for dotted, value in over.items():
            section, key = dotted.split("__")
            base[section][key] = value
        return resume_view(training_identity(FamixConfig.model_validate(base)))

    assert identity() == identity(data__root="/scratch/datasets", train__device="cuda:1",
                                  model__pretrained="/b/clip.safetensors", data__split_file="/b/train.txt")  # fmt: skip
    assert identity() != identity(train__lr_decoder=0.02)
    assert identity() != identity(model__pretrained="/a/other.safetensors")


def test_a_checkpoint_of_another_style_bank_is_not_resumed_and_an_older_one_is(synth_root, tmp_path):
    """The bank counts by how it was mined (its meta), not where it lies; a checkpoint written
    before checkpoints recorded their training resumes as it did."""
    from famix_core.checkpoint import latest_checkpoint
    from famix_core.errors import WeightsError
    from famix_core.styles.bank import StyleBank

    g = torch.Generator().manual_seed(0)
    mu, sigma, cls = torch.randn(4, 64, generator=g), torch.rand(4, 64, generator=g) + 0.5, torch.tensor([0, 2, 8, 13])
    StyleBank(mu, sigma, cls, meta={"prompt": "style_class"}).save(tmp_path / "bank")
    StyleBank(mu, sigma, cls, meta={"prompt": "style_class"}).save(tmp_path / "moved")
    StyleBank(mu, sigma, cls, meta={"prompt": "style_only"}).save(tmp_path / "other")
    cfg = tiny_config(synth_root, iterations=2, checkpoint_every=1)
    cfg = cfg.model_copy(update={"style": cfg.style.model_copy(update={"augment": True, "mix": True})})
    train(cfg, tmp_path / "o", bank_dir=tmp_path / "bank", ckpt_dir=tmp_path / "ck")
    with pytest.raises(WeightsError, match="bank.prompt style_class, here style_only"):
        Trainer(cfg, tmp_path / "o", bank_dir=tmp_path / "other", ckpt_dir=tmp_path / "ck").resume()
    assert Trainer(cfg, tmp_path / "o", bank_dir=tmp_path / "moved", ckpt_dir=tmp_path / "ck").resume()
    state = latest_checkpoint(tmp_path / "ck") / "state.json"
    older = json.loads(state.read_text())
    del older["extra"]["training"]
    state.write_text(json.dumps(older))
    t = Trainer(cfg, tmp_path / "o", bank_dir=tmp_path / "other", ckpt_dir=tmp_path / "ck")
    assert t.resume() and t.iteration == 2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (bf16 autocast + channels_last path)")
def test_cuda_bf16_channels_last_step_and_resume(synth_root, tmp_path):
    cfg = tiny_config(synth_root, iterations=4, checkpoint_every=2, device="cuda", precision="bf16", channels_last=True)
    t = Trainer(cfg, tmp_path / "o", ckpt_dir=tmp_path / "ck")
    assert t.device.type == "cuda" and t.precision == "bf16" and t.channels_last
    summary = t.run()
    assert summary["iterations"] == 4 and summary["peak_mem_mb"] > 0 and summary["device"].startswith("cuda")
    sd = load_file(str(tmp_path / "o" / "model.safetensors"))
    assert all(torch.isfinite(v.float()).all() for v in sd.values())
    other = Trainer(cfg, tmp_path / "o2", ckpt_dir=tmp_path / "ck")
    assert other.resume() and other.iteration == 4


def test_pick_device():
    from famix_core.device import DeviceError, pick_device

    assert pick_device("cpu") == torch.device("cpu")
    if torch.cuda.is_available():
        assert pick_device("auto").type == "cuda"
    else:
        with pytest.warns(UserWarning, match="running on the CPU"):
            assert pick_device("auto").type == "cpu"
    with pytest.raises(DeviceError, match="train.device"):
        pick_device("tpu:0")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            pick_device("cuda:0")


def test_step_never_syncs_with_the_host_outside_log_steps(synth_root, tmp_path, monkeypatch):
    """Between log steps, a training step reads nothing back from the device (no item/tolist/bool ...)."""
    cfg = tiny_config(synth_root, iterations=20, log_every=5, checkpoint_every=1000)
    cfg = cfg.model_copy(update={"style": cfg.style.model_copy(update={"augment": True, "mix": True, "strategy": "noise"})})
    g = torch.Generator().manual_seed(0)
    ds = _Fixed(torch.randn(40, 3, 32, 32, generator=g), torch.randint(0, 19, (40, 32, 32), generator=g))
    logged = []
    t = Trainer(cfg, tmp_path / "o", dataset=ds, log=lambda m, s: logged.append(s))
    t.step()  # builds the loader (the batch order is host-side index work, once per epoch)

    def forbidden(*_a, **_k):
        raise AssertionError("host sync in a training step")

    for name in ("item", "tolist", "numpy", "__bool__", "__int__", "__float__", "nonzero"):
        monkeypatch.setattr(torch.Tensor, name, forbidden)
    losses = [t.step() for _ in range(3)]  # iterations 2..4: no log step
    monkeypatch.undo()
    assert logged == [] and all(isinstance(x, torch.Tensor) and x.ndim == 0 for x in losses)
    t.step()  # iteration 5 reads the window: 5 losses, their mean logged
    assert logged == [5] and len(t.loss_window) == 5
    assert t.loss_window[1:4] == [float(x) for x in losses] and t.last_loss == t.loss_window[-1]


def test_divergence_found_at_the_log_step_names_the_first_bad_iteration(synth_root, tmp_path):
    cfg = tiny_config(synth_root, iterations=20, log_every=4, checkpoint_every=1000)
    images = torch.randn(4, 3, 32, 32)
    images[2:] = float("nan")  # slots of iteration 2
    t = Trainer(cfg, tmp_path / "o", dataset=_Fixed(images, torch.zeros(4, 32, 32, dtype=torch.long)))
    t.schedule.batch = lambda i: [(i, k, (2 * i + k) % 4) for k in range(2)]  # iteration i reads items 2i, 2i+1
    t.step()
    assert torch.isfinite(t.step()).item() is False  # iteration 2 diverges, nothing raised yet (no sync)
    t.step()
    with pytest.raises(TrainingDiverged, match="loss is nan at iteration 2"):
        t.step()  # iteration 4 is a log step


def test_per_item_seeding_touches_only_the_cpu_generator(monkeypatch):
    """Items are seeded on the CPU generator only: re-seeding CUDA (dropout's RNG) per item would make
    results depend on data.num_workers. The CPU stream is the one torch.manual_seed(s) would give."""
    from famix_core.train import SeededItems

    calls = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: calls.append(seed))
    monkeypatch.setattr(torch.cuda, "manual_seed", lambda seed: calls.append(seed))

    class Draw(torch.utils.data.Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return torch.rand(4)

    items = SeededItems(Draw(), seed=3)
    torch.manual_seed(99)
    calls.clear()
    before = torch.get_rng_state()
    a = items[(5, 1, 2)]
    assert torch.equal(torch.get_rng_state(), before)  # restored afterwards
    assert calls == []  # no CUDA generator was touched
    assert torch.equal(a, items[(5, 1, 2)]) and not torch.equal(a, items[(5, 0, 2)])


def test_weights_do_not_depend_on_the_number_of_loader_workers(synth_root, tmp_path):
    """data.num_workers is no part of the train key: 0 and 2 workers must give bit-identical weights."""
    out = {}
    for nw in (0, 2):
        cfg = tiny_config(synth_root, iterations=4, checkpoint_every=100)
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"num_workers": nw})})
        out[nw] = (train(cfg, tmp_path / f"w{nw}"), load_file(str(tmp_path / f"w{nw}" / "model.safetensors")))
    assert out[0][0]["final_loss"] == out[2][0]["final_loss"]
    assert [k for k in out[0][1] if not torch.equal(out[0][1][k], out[2][1][k])] == []


def test_worker_count_follows_the_allocation(monkeypatch):
    from famix_core.loaders import MAX_AUTO_WORKERS, loader_options, resolve_workers

    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "8")
    assert resolve_workers(None) == 7 and resolve_workers(3) == 3 and resolve_workers(0) == 0
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "64")
    assert resolve_workers(None) == MAX_AUTO_WORKERS
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2})
    assert resolve_workers(None) == 2
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "abc")  # not a count: the affinity, and one notice saying so
    from famix_core.errors import FamixWarning

    with pytest.warns(FamixWarning, match=r"SLURM_CPUS_PER_TASK='abc' is not a positive CPU count; ignored"):
        assert resolve_workers(None) == 2
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0})
    assert resolve_workers(None) == 0
    # a stage the orchestrator runs with resources.<kind>.cpus: its CPUs, whatever the machine has
    from famix_core.loaders import stage_cpus

    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "8")
    with stage_cpus(1):
        assert resolve_workers(None) == 0
        with stage_cpus(4):
            assert resolve_workers(None) == 3
        assert resolve_workers(None) == 0
    with stage_cpus(None):
        assert resolve_workers(None) == 7
    assert resolve_workers(None) == 7
    opts = loader_options(3, torch.device("cuda"), persistent=True)
    assert opts == {"num_workers": 3, "pin_memory": True, "persistent_workers": True, "prefetch_factor": 2}
    assert loader_options(0, torch.device("cpu"), persistent=True) == {
        "num_workers": 0, "pin_memory": False, "persistent_workers": False, "prefetch_factor": None}


def test_data_bench_prints_loader_images_per_second(synth_root, tmp_path, capsys):
    import re

    import yaml

    from orchestrator.__main__ import main

    cfg = tiny_config(synth_root)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    assert main(["data", "bench", "--config", str(tmp_path / "cfg.yaml"), "--batches", "3", "data.num_workers=1"]) == 0
    out = capsys.readouterr().out
    train_rate = re.search(r"train loader: gta5, batch 2, crop 48, 1 workers: ([\d.]+) images/s \(6 images timed\)", out)
    eval_rate = re.search(r"eval loader:  C, full resolution, one image at a time, 1 workers: ([\d.]+) images/s", out)
    assert train_rate and eval_rate and float(train_rate.group(1)) > 0 and float(eval_rate.group(1)) > 0, out
    assert main(["data", "bench", "--config", str(tmp_path / "cfg.yaml"), "--batches", "0"]) == 2
    assert capsys.readouterr().err == "famix: error: command line: --batches: expected >= 1, got 0\n"  # as every command says an option


@pytest.mark.parametrize("damage", ["truncate_tensors", "garble_state", "both_checkpoints"])
def test_corrupt_checkpoint_is_named_set_aside_and_training_falls_back(synth_root, tmp_path, capsys, damage):
    """A corrupt newest checkpoint: one warning naming the file, resume from the previous sound one
    (or from the start), and the same final weights as an uninterrupted run; never the same failure again."""
    cfg = tiny_config(synth_root, iterations=6, checkpoint_every=2, log_every=1)
    straight = train(cfg, tmp_path / "a")

    def crash_at_5(metrics, step):
        if step == 5:
            raise _Crash()

    ckpt = tmp_path / "ckpt"
    with pytest.raises(_Crash):
        train(cfg, tmp_path / "b", ckpt_dir=ckpt, log=crash_at_5)
    assert sorted(p.name for p in ckpt.glob("iter-*")) == ["iter-00000002", "iter-00000004"]  # the newest two are kept
    newest = ckpt / "iter-00000004"
    if damage in ("truncate_tensors", "both_checkpoints"):
        data = (newest / "tensors.safetensors").read_bytes()
        (newest / "tensors.safetensors").write_bytes(data[: len(data) // 2])
    if damage in ("garble_state", "both_checkpoints"):
        target = newest if damage == "garble_state" else ckpt / "iter-00000002"
        (target / "state.json").write_text('{"iteration": 4, "optim')
    capsys.readouterr()
    resumed = Trainer(cfg, tmp_path / "b", ckpt_dir=ckpt)
    assert resumed.resume() is (damage != "both_checkpoints")
    assert resumed.iteration == (0 if damage == "both_checkpoints" else 2)
    err = capsys.readouterr().err
    bad_file = "tensors.safetensors" if damage != "garble_state" else "state.json"
    assert f"corrupt checkpoint {newest / bad_file}" in err, err
    assert ("training starts over" if damage == "both_checkpoints" else "resuming from iter-00000002 instead") in err.splitlines()[0]
    assert (ckpt / "corrupt-iter-00000004").is_dir() and not newest.exists()
    summary = resumed.run()
    assert summary["final_loss"] == straight["final_loss"]
    a = load_file(str(tmp_path / "a" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "model.safetensors"))
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    again = Trainer(cfg, tmp_path / "c", ckpt_dir=ckpt)  # a third run finds a sound checkpoint, no new warning
    assert again.resume() and again.iteration == 6 and capsys.readouterr().err == ""
