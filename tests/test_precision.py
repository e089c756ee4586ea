"""Precision: the style op under autocast, bf16 training on CPU, precision options of every stage."""

from __future__ import annotations

import pytest
import torch

from famix_core.models.segmenter import style_in_fp32
from famix_core.styles.strategies import MixStyle

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cuda_like_stats(monkeypatch):
    """Make the style op's statistics come out in fp32 for bf16 features, as CUDA autocast's reductions do."""
    from famix_core.styles import strategies

    orig = strategies.centered_stats

    def fp32_reductions(f, grid, eps, *, detach=False):
        centered, mu, sigma = orig(f.float(), grid, eps, detach=detach)
        return centered.to(f.dtype), mu, sigma  # elementwise result in bf16, reductions in fp32

    monkeypatch.setattr(strategies, "centered_stats", fp32_reductions)


def test_style_op_on_bf16_features_with_fp32_statistics_runs_through_the_fp32_guard(monkeypatch):
    """The CUDA situation reproduced on CPU: bf16 features whose statistics come out in fp32.

    Called bare, the Mix step meets fp32 own statistics and bf16 targets and fails; through the
    guard the op runs on fp32 features and returns bf16, equal to the fp32 op up to bf16 rounding.
    """
    g = torch.Generator().manual_seed(0)
    f32 = torch.rand(2, 8, 12, 12, generator=g) * 3
    labels = torch.zeros(2, 48, 48, dtype=torch.long)
    aug = MixStyle(grid=3, eps=1e-5, alpha=0.1).train()
    aug.generator = torch.Generator().manual_seed(1)
    ref = aug(f32, labels)  # plain fp32
    _cuda_like_stats(monkeypatch)
    fb = f32.to(torch.bfloat16)
    with pytest.raises(RuntimeError, match="dtype|Float|BFloat16"):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            aug(fb, labels)
    aug.generator = torch.Generator().manual_seed(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = style_in_fp32(aug, fb, labels)
    assert out.dtype == torch.bfloat16 and out.shape == fb.shape
    # the only difference from the fp32 op is the bf16 rounding of its input and output
    assert torch.allclose(out.float(), ref, rtol=2e-2, atol=2e-2), (out.float() - ref).abs().max()


def test_style_guard_feeds_fp32_with_autocast_off_and_is_a_plain_call_for_fp32():
    seen = {}

    class Spy(torch.nn.Module):
        def forward(self, f, labels):
            seen["dtype"], seen["autocast"] = f.dtype, torch.is_autocast_enabled("cpu")
            seen["same"] = f
            return f * 2

    f = torch.ones(1, 2, 3, 3, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = style_in_fp32(Spy(), f, None)
    assert seen["dtype"] == torch.float32 and seen["autocast"] is False and out.dtype == torch.bfloat16
    f32 = torch.ones(1, 2, 3, 3)
    out = style_in_fp32(Spy(), f32, None)
    assert seen["same"] is f32 and torch.equal(out, f32 * 2)  # fp32 outside autocast: no copy, same numbers


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    from famix_core.config import DataConfig, SynthConfig
    from famix_core.data.synth.benchmark import ensure_synthetic

    root = tmp_path_factory.mktemp("data")
    ensure_synthetic(DataConfig(root=str(root), synthetic=SynthConfig(height=64, width=96, train_images=8, val_images=2)))
    return str(root)


def precision_config(root: str, precision: str, device: str = "cpu", **train):
    """famix-tiny with MixStyle (the style op runs) on the synthetic benchmark."""
    from conftest import mixstyle_tiny_config

    t = dict(iterations=50, batch_size=4, device=device, log_every=10, checkpoint_every=1000, precision=precision)
    return mixstyle_tiny_config(root, 8, **{**t, **train})


def test_bf16_training_on_cpu_tracks_fp32_within_5_percent(synth_root, tmp_path):
    """50 steps on the synthetic benchmark: bf16 autocast (forward + loss) and fp32 end within 5 % in loss."""
    from famix_core.train import train

    curves: dict[str, list[float]] = {"fp32": [], "bf16": []}
    out = {}
    for p in ("fp32", "bf16"):
        out[p] = train(precision_config(synth_root, p), tmp_path / p, log=lambda m, s, p=p: curves[p].append(m["train/loss"]))
    assert out["bf16"]["precision"] == "bf16" and out["fp32"]["precision"] == "fp32"
    assert curves["fp32"] != curves["bf16"]  # bf16 really ran (different rounding)
    assert curves["fp32"][-1] < 0.9 * curves["fp32"][0]  # and both learnt something
    rel = abs(out["bf16"]["final_loss"] - out["fp32"]["final_loss"]) / out["fp32"]["final_loss"]
    assert rel < 0.05, (curves, rel)


def test_bf16_autocast_reaches_the_convolutions(synth_root, tmp_path):
    """Under train.precision=bf16 the backbone's convolutions compute in bf16, the loss in fp32."""
    from famix_core.train import Trainer

    t = Trainer(precision_config(synth_root, "bf16", iterations=2), tmp_path / "o")
    seen = []
    t.model.backbone.layer2.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    loss = t.step()
    assert seen == [torch.bfloat16] and loss.dtype == torch.float32


def test_old_amp_flag_is_read_as_precision_with_a_warning():
    from famix_core.config import load_config
    from famix_core.errors import ConfigError

    with pytest.warns(FutureWarning, match="train.amp is replaced by train.precision"):
        assert load_config(None, ["train.amp=true"]).train.precision == "bf16"
    with pytest.raises(ConfigError, match=r"^command line: train: amp: replaced by train.precision; amp=true contradicts precision=fp32$"):
        load_config(None, ["train.amp=true", "train.precision=fp32"])
    with pytest.raises(ConfigError, match=r"^command line: eval.precision: Input should be 'fp32' or 'bf16' \(got 'fp16'\)$"):
        load_config(None, ["eval.precision=fp16"])


def test_mining_bf16_runs_the_clip_in_bf16_and_learns_like_fp32(tmp_path, monkeypatch):
    from famix_core.config import FamixConfig
    from famix_core.mining import mine_styles
    from famix_core.styles.bank import StyleBank
    import famix_core.mining as mining

    g = torch.Generator().manual_seed(0)
    ds = torch.utils.data.TensorDataset(torch.randn(4, 3, 48, 48, generator=g),
                                        torch.randint(0, 19, (4, 48, 48), generator=g) // 4 * 4)  # fmt: skip
    seen = []
    embed = mining._embed

    def spy(visual, norm, mu, sigma, pool):
        out = embed(visual, norm, mu, sigma, pool)
        seen.append(out.dtype)
        return out

    monkeypatch.setattr(mining, "_embed", spy)
    out = {}
    for p in ("fp32", "bf16"):
        cfg = FamixConfig.model_validate({"model": {"backbone": "famix-tiny", "pretrained": "none"},
                                          "mining": {"steps": 6, "batch_size": 2, "crop_size": 48, "precision": p},
                                          "train": {"device": "cpu"}})  # fmt: skip
        seen.clear()
        out[p] = mine_styles(cfg, tmp_path / p, dataset=ds)
        assert set(seen) == {torch.bfloat16 if p == "bf16" else torch.float32}
        assert StyleBank.load(tmp_path / p).mu.dtype == torch.float32  # styles are stored in fp32
    assert out["bf16"]["n_styles"] == out["fp32"]["n_styles"]
    assert out["bf16"]["final_loss"] < out["bf16"]["initial_loss"]
    assert out["bf16"]["final_loss"] == pytest.approx(out["fp32"]["final_loss"], rel=0.05)


def test_mining_chunk_is_sized_from_free_gpu_memory(monkeypatch):
    """The rule, on CPU: a probe's peak per item and the free memory give the chunk; the CPU keeps its default."""
    from famix_core.device import chunk_for_memory

    assert chunk_for_memory(torch.device("cpu"), lambda k: pytest.fail("no probe on the CPU"), default=64) == 64
    state = {"alloc": 1000, "peak": 0}
    monkeypatch.setattr(torch.cuda, "synchronize", lambda d=None: None)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda d=None: state["alloc"])
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda d=None: state.update(peak=state["alloc"]))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda d=None: state["peak"])
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda d=None: (8 * 2**30, 16 * 2**30))
    probed = []

    def probe(k):  # ~61 MB of activations per patch: about 3.9 GB per chunk of 64 at RN50
        probed.append(k)
        state["peak"] = state["alloc"] + k * 61 * 2**20

    n = chunk_for_memory(torch.device("cuda"), probe, default=64)
    assert probed == [2] and n == int(0.5 * 8 * 2**30 // (61 * 2**20)) == 67
    assert chunk_for_memory(torch.device("cuda"), probe, default=64, cap=32) == 32
