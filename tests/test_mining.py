"""Prompts, text targets and prompt-driven style mining on the famix-tiny CLIP and tiny crops."""

from __future__ import annotations

import importlib.util
import json
import random
import re

import pytest
import torch

from famix_core.classes import CLASS_NAMES
from famix_core.config import PROMPT_TYPES, FamixConfig
from famix_core.errors import FamixError
from famix_core.mining import mine_styles, optimize_styles, select_patches
from famix_core.prompts import PROMPT_REGISTRY, STYLE_NAMES, TextTargets, build_prompt, imagenet_templates
from famix_core.styles import StyleBank, build_style_augmenter, patch_stats

BLOCK_CLASSES = (0, 2, 8, 13, 255)


class BlockScenes(torch.utils.data.Dataset):
    """In-memory stand-in for a source dataset: random images, labels in uniform 3x3 blocks."""

    def __init__(self, n: int = 4, size: int = 48, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randn(n, 3, size, size, generator=g)
        pick = torch.randint(0, len(BLOCK_CLASSES), (n, 3, 3), generator=g)
        blocks = torch.tensor(BLOCK_CLASSES)[pick]  # (n, 3, 3)
        rep = size // 3
        self.labels = blocks.repeat_interleave(rep, 1).repeat_interleave(rep, 2)  # (n, size, size)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], self.labels[i]


def _cfg(seed: int = 0, **mining) -> FamixConfig:
    m = {"steps": 8, "batch_size": 2, "crop_size": 48, "seed": seed, "prompt": "style_class"}
    m.update(mining)
    return FamixConfig.model_validate(
        {"model": {"backbone": "famix-tiny", "pretrained": "none"}, "mining": m, "train": {"device": "cpu"}}
    )


@pytest.fixture(scope="module")
def tiny_clip():
    from famix_core.models.clip import create_clip, get_tokenizer

    torch.manual_seed(0)
    return create_clip("famix-tiny", "none", None, "cpu"), get_tokenizer("famix-tiny")


@pytest.fixture(scope="module")
def mined(tmp_path_factory):
    out = tmp_path_factory.mktemp("mined")
    logs: list[tuple[int | None, dict]] = []
    ds = BlockScenes()
    summary = mine_styles(_cfg(), out, log=lambda m, step: logs.append((step, m)), dataset=ds)
    return out, summary, logs, ds


# ----------------------------------------------------------------------------- prompts


def test_prompt_registry_matches_config():
    assert set(PROMPT_REGISTRY) == set(PROMPT_TYPES)
    assert len(STYLE_NAMES) == 20 and "Galactic Fantasy" in STYLE_NAMES


def test_prompt_formats_and_ignore():
    styles = "|".join(re.escape(s) for s in STYLE_NAMES)
    patterns = {
        "class": r"traffic sign",
        "chars": r"[a-z]{9} style",
        "style": rf"({styles}) style",
        "chars_class": r"[a-z]{9} style traffic sign",
        "style_class": rf"({styles}) style traffic sign",
    }
    for kind, pat in patterns.items():
        rng = random.Random(0)
        for _ in range(20):
            assert re.fullmatch(pat, build_prompt(kind, 7, rng)), kind
        assert build_prompt(kind, 255, rng) == "photo"


def test_prompts_are_seeded_not_global():
    def draw(seed: int) -> list[str]:
        rng = random.Random(seed)
        return [build_prompt("chars_class", k, rng) for k in range(19)]

    random.seed(1)
    a = draw(3)
    random.seed(2)  # the global RNG plays no part
    assert draw(3) == a and draw(4) != a
    assert [p.split(" style ")[1] for p in a] == list(CLASS_NAMES)


def test_unknown_prompt_type_lists_known():
    with pytest.raises(FamixError, match="known: class, chars, style, chars_class, style_class"):
        build_prompt("emoji", 0, random.Random(0))


def test_text_targets_average_templates_and_cache(tiny_clip):
    model, tok = tiny_clip
    calls = []

    class Counting(torch.nn.Module):
        def encode_text(self, tokens):
            calls.append(tokens.shape[0])
            return model.encode_text(tokens)

    tt = TextTargets(Counting(), tok, "cpu")
    out = tt(["road", "photo", "road"])
    assert out.shape == (3, model.text_projection.shape[1])
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(3))
    assert torch.equal(out[0], out[2]) and sum(calls) == 2 * 80  # each distinct prompt encoded once
    tt(["photo"])
    assert sum(calls) == 2 * 80  # cached
    templates = imagenet_templates()
    assert len(templates) == 80
    with torch.no_grad():
        e = model.encode_text(tok([t("road") for t in templates]))
    e = e / e.norm(dim=-1, keepdim=True)
    ref = e.mean(0) / e.mean(0).norm()
    torch.testing.assert_close(out[0], ref, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- patch selection & optimization


def test_select_patches_keeps_first_of_each_class():
    feats = torch.rand(2, 4, 10, 10) * 2  # uneven 3x3 split: patches of 4/3/3 rows
    labels = torch.tensor([[[1, 1, 255], [1, 5, 5], [1, 1, 1]], [[5, 7, 7], [1, 1, 1], [1, 1, 1]]])
    labels = labels.repeat_interleave(4, 1).repeat_interleave(4, 2)  # (2, 12, 12)
    kept = select_patches(
        feats, labels, grid=3, num_classes=19, eps=1e-5, size=(4, 4), prompt_type="class",
        rng=random.Random(0), class_names=CLASS_NAMES,
    )
    assert [k.cls for k in kept] == [1, 255, 5, 7]
    assert [k.prompt for k in kept] == ["sidewalk", "photo", "pole", "traffic sign"]
    mu, sigma = patch_stats(feats, 3, 1e-5)
    torch.testing.assert_close(kept[1].mu, mu[0, :, 0, 2])  # 255 first seen in sample 0, patch (0, 2)
    torch.testing.assert_close(kept[3].sigma, sigma[1, :, 0, 1])  # 7 first seen in sample 1, patch (0, 1)
    assert all(k.norm.shape == (4, 4, 4) for k in kept)
    # patch (0, 0) has 4x4 pixels: no pooling, exactly normalized
    torch.testing.assert_close(kept[0].norm.mean(dim=(1, 2)), torch.zeros(4), atol=1e-5, rtol=0)


def test_batched_optimization_equals_one_patch_at_a_time(tiny_clip):
    model, _ = tiny_clip
    visual = model.visual.requires_grad_(False).eval()
    g = torch.Generator().manual_seed(0)
    norm = torch.randn(3, 64, 8, 8, generator=g)
    mu0 = torch.rand(3, 64, generator=g)
    sigma0 = torch.rand(3, 64, generator=g) + 0.5
    target = torch.nn.functional.normalize(torch.randn(3, 64, generator=g), dim=-1)
    kw = dict(steps=4, lr=1.0, momentum=0.9, weight_decay=1e-4, pool=16)
    mu, sigma, init, final = optimize_styles(visual, norm, mu0, sigma0, target, chunk=2, **kw)
    assert not torch.equal(mu, mu0)
    for i in range(3):
        mi, si, ii, fi = optimize_styles(visual, norm[i : i + 1], mu0[i : i + 1], sigma0[i : i + 1], target[i : i + 1], **kw)
        torch.testing.assert_close(mu[i], mi[0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(sigma[i], si[0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(init[i], ii[0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(final[i], fi[0], rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- mine_styles


def test_mining_writes_bank_and_summary(mined):
    out, summary, logs, ds = mined
    assert {p.name for p in out.iterdir()} == {"bank.safetensors", "bank.json", "summary.json"}
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["n_styles"] == summary["n_styles"] and on_disk["prompt"] == "style_class"
    assert set(on_disk) >= {"styles_per_class", "initial_loss", "final_loss", "prompt", "n_styles", "seconds"}
    bank = StyleBank.load(out)
    assert len(bank) == summary["n_styles"] == sum(summary["styles_per_class"].values())
    assert bank.channels == 64 and bank.meta["backbone"] == "famix-tiny"
    assert logs and all(set(m) == {"mine/loss"} for _, m in logs)
    assert logs[-1][0] > logs[0][0]


def test_mining_loss_decreases(mined):
    _, summary, logs, _ = mined
    assert summary["final_loss"] < summary["initial_loss"]
    assert logs[-1][1]["mine/loss"] < logs[0][1]["mine/loss"]


def test_bank_covers_every_class_seen(mined):
    out, summary, _, ds = mined
    bank = StyleBank.load(out)
    seen = set(ds.labels.unique().tolist())
    assert set(bank.cls.tolist()) == seen
    # each batch of 2 keeps one patch per distinct class it contains
    per_batch = [len(set(ds.labels[i : i + 2].unique().tolist())) for i in range(0, len(ds), 2)]
    assert len(bank) == sum(per_batch)
    names = {CLASS_NAMES[k] if k != 255 else "ignore" for k in seen}
    assert set(summary["styles_per_class"]) == names


def test_mining_is_deterministic(mined, tmp_path):
    out, *_ = mined
    mine_styles(_cfg(), tmp_path / "again", dataset=BlockScenes())
    a, b = StyleBank.load(out), StyleBank.load(tmp_path / "again")
    assert torch.equal(a.mu, b.mu) and torch.equal(a.sigma, b.sigma) and torch.equal(a.cls, b.cls)


def test_mined_bank_refused_by_wider_backbone(mined):
    out, *_ = mined
    bank = StyleBank.load(out)
    with pytest.raises(FamixError) as e:
        bank.expect_channels(256)
    msg = str(e.value)
    assert "\n" not in msg and str(out / "bank.safetensors") in msg and "64 channels" in msg and "256" in msg
    aug = build_style_augmenter(_cfg().style, bank, 19).train()
    out_feat = aug(torch.rand(2, 64, 12, 12), BlockScenes(2).labels)  # the right width works
    assert out_feat.shape == (2, 64, 12, 12)
    with pytest.raises(FamixError, match="64 channels"):
        aug(torch.rand(2, 256, 12, 12), BlockScenes(2).labels)


def test_mining_empty_dataset_is_a_user_error(tmp_path):
    with pytest.raises(FamixError, match="empty"):
        mine_styles(_cfg(), tmp_path, dataset=BlockScenes(n=0))


@pytest.mark.skipif(importlib.util.find_spec("famix_core.data.synth") is None, reason="famix_core.data not available yet")
def test_mining_on_synthetic_source(tmp_path):
    cfg = FamixConfig.model_validate(
        {
            "model": {"backbone": "famix-tiny", "pretrained": "none"},
            "mining": {"steps": 3, "batch_size": 2, "crop_size": 64, "max_batches": 2},
            "data": {"root": str(tmp_path / "data"), "synthetic": {"train_images": 4, "val_images": 1, "height": 64, "width": 96}},
            "train": {"device": "cpu"},
        }
    )
    summary = mine_styles(cfg, tmp_path / "bank")  # build_dataset generates the benchmark
    bank = StyleBank.load(tmp_path / "bank")
    assert summary["n_styles"] == len(bank) >= 1 and bank.channels == 64
    assert set(bank.cls.tolist()) <= set(range(19)) | {255}
    assert summary["final_loss"] < summary["initial_loss"]
