"""Prompts, text targets and prompt-driven style mining on the famix-tiny CLIP and tiny crops."""

from __future__ import annotations

import json
import math
import random
import re

import pytest
import torch

from famix_core.classes import CLASS_NAMES
from famix_core.config import PROMPT_TYPES, FamixConfig
from famix_core.errors import FamixError
from famix_core.mining import mine_styles, optimize_styles, select_patches
from famix_core.prompts import PROMPT_REGISTRY, STYLE_NAMES, TextTargets, build_prompt, imagenet_templates
from famix_core.styles.bank import StyleBank
from famix_core.styles.ops import patch_stats
from famix_core.styles.strategies import build_style_augmenter

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
    ref = e.mean(0) / e.mean(0).norm()  # raw embeddings averaged, then normalized
    torch.testing.assert_close(out[0], ref, rtol=1e-4, atol=1e-5)


def test_text_targets_average_raw_embeddings_then_normalize():
    """Official order (patch_PIN.py): mean of the raw template embeddings, then L2 normalization."""

    class StubEncoder(torch.nn.Module):
        # template 0 -> (10, 0), template 1 -> (0, 1), whatever the prompt: very different norms
        def encode_text(self, tokens):
            rows = [[10.0, 0.0] if t[0] == 0 else [0.0, 1.0] for t in tokens.tolist()]
            return torch.tensor(rows)

    def tokenizer(texts):
        return torch.tensor([[0 if t.startswith("a ") else 1] for t in texts])

    templates = (lambda c: f"a {c}.", lambda c: f"the {c}.")
    out = TextTargets(StubEncoder(), tokenizer, "cpu", templates=templates)(["road", "photo"])
    expect = torch.tensor([5.0, 0.5]) / math.hypot(5.0, 0.5)  # normalize-then-average would give (0.707, 0.707)
    torch.testing.assert_close(out, expect.expand(2, 2), rtol=0, atol=1e-7)


# ----------------------------------------------------------------------------- patch selection & optimization


def test_select_patches_walks_patch_major():
    """Official order (patch_PIN.py: unfold + permute(-1, 0, 1)): for each patch position, over the batch."""
    feats = torch.rand(2, 4, 10, 10) * 2  # uneven 3x3 split: patches of 4/3/3 rows
    labels = torch.tensor([[[1, 1, 255], [1, 5, 5], [1, 1, 1]], [[5, 7, 7], [1, 1, 1], [1, 1, 1]]])
    labels = labels.repeat_interleave(4, 1).repeat_interleave(4, 2)  # (2, 12, 12)
    kept = select_patches(
        feats, labels, grid=3, num_classes=19, eps=1e-5, size=(4, 4), prompt_type="class",
        rng=random.Random(0), class_names=CLASS_NAMES,
    )
    # patch (0,0): sample 0 -> 1, sample 1 -> 5; patch (0,1): sample 1 -> 7; patch (0,2): sample 0 -> 255
    assert [k.cls for k in kept] == [1, 5, 7, 255]
    assert [k.prompt for k in kept] == ["sidewalk", "pole", "traffic sign", "photo"]
    mu, sigma = patch_stats(feats, 3, 1e-5)
    origin = [(0, 0, 0), (1, 0, 0), (1, 0, 1), (0, 0, 2)]  # (sample, row, column) of each kept patch
    for k, (bi, r, q) in zip(kept, origin):
        torch.testing.assert_close(k.mu, mu[bi, :, r, q])
        torch.testing.assert_close(k.sigma, sigma[bi, :, r, q])
    # sample-major would keep class 5 from sample 0, patch (1, 1): its statistics differ
    assert not torch.allclose(kept[1].mu, mu[0, :, 1, 1])
    assert all(k.norm.shape == (4, 4, 4) for k in kept)
    assert [k.weight for k in kept] == [0.25] * 4  # 1 / N_b, N_b = 4 kept from this batch
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


def _official_batch_mining(visual, norm, mu0, sigma0, target, *, steps, lr, momentum, weight_decay, pool):
    """One source batch as the official patch_PIN.py optimizes it: loss = MEAN over its kept patches."""
    mu = mu0.clone().requires_grad_(True)
    sigma = sigma0.clone().requires_grad_(True)
    opt = torch.optim.SGD([mu, sigma], lr=lr, momentum=momentum, weight_decay=weight_decay)
    for _ in range(steps):
        opt.zero_grad()
        x = torch.relu(sigma[:, :, None, None] * norm + mu[:, :, None, None])
        x = torch.nn.functional.adaptive_avg_pool2d(x, pool)
        emb = visual.attnpool(visual.layer4(visual.layer3(visual.layer2(x))))
        (1 - torch.cosine_similarity(target, emb, dim=1)).mean().backward()
        opt.step()
    return mu.detach(), sigma.detach()


def test_batched_weighted_optimization_equals_one_batch_at_a_time(tiny_clip):
    """Two source batches (N_b = 3 and 5) in one batched problem, weights 1/N_b == the official per-batch means."""
    model, _ = tiny_clip
    visual = model.visual.requires_grad_(False).eval()
    g = torch.Generator().manual_seed(0)
    sizes = (3, 5)
    n = sum(sizes)
    norm = torch.randn(n, 64, 8, 8, generator=g)
    mu0 = torch.rand(n, 64, generator=g)
    sigma0 = torch.rand(n, 64, generator=g) + 0.5
    target = torch.nn.functional.normalize(torch.randn(n, 64, generator=g), dim=-1)
    weights = torch.tensor([1 / 3] * 3 + [1 / 5] * 5)
    kw = dict(steps=5, lr=1.0, momentum=0.9, weight_decay=1e-4, pool=16)
    mu, sigma, _, _ = optimize_styles(visual, norm, mu0, sigma0, target, weights=weights, chunk=3, **kw)
    start = 0
    for nb in sizes:
        sl = slice(start, start + nb)
        ref_mu, ref_sigma = _official_batch_mining(visual, norm[sl], mu0[sl], sigma0[sl], target[sl], **kw)
        torch.testing.assert_close(mu[sl], ref_mu, rtol=0, atol=1e-6)
        torch.testing.assert_close(sigma[sl], ref_sigma, rtol=0, atol=1e-6)
        start += nb
    # unweighted (the sum) moves the styles N_b times further: visibly different
    mu_sum, _, _, _ = optimize_styles(visual, norm, mu0, sigma0, target, **kw)
    assert (mu_sum - mu).abs().max() > 1e-3


def test_mine_styles_equals_one_batch_at_a_time(tmp_path):
    """The whole mining stage, several source batches per batched problem, against the official per-batch loop."""
    from famix_core.models.clip import create_clip, get_tokenizer

    cfg = _cfg(steps=4, batch_size=2, patches_per_step=1000, lr=1.0)  # both batches in one problem
    ds = BlockScenes(n=4)
    mine_styles(cfg, tmp_path / "bank", dataset=ds)
    bank = StyleBank.load(tmp_path / "bank")

    torch.manual_seed(cfg.mining.seed)  # as mine_styles: the same random CLIP, loader order and prompts
    rng = random.Random(cfg.mining.seed)
    clip = create_clip("famix-tiny", "none", None, "cpu").requires_grad_(False).eval()
    visual = clip.visual
    texts = TextTargets(clip, get_tokenizer("famix-tiny"), "cpu")
    loader = torch.utils.data.DataLoader(
        ds, batch_size=2, shuffle=True, generator=torch.Generator().manual_seed(cfg.mining.seed), drop_last=True
    )
    mus, classes = [], []
    for images, labels in loader:
        with torch.no_grad():
            feats = visual.layer1(visual.stem(images))
        kept = select_patches(
            feats, labels, grid=3, num_classes=19, eps=1e-5, size=(4, 4), prompt_type="style_class",
            rng=rng, class_names=CLASS_NAMES,
        )
        mu, _ = _official_batch_mining(
            visual, torch.stack([k.norm for k in kept]), torch.stack([k.mu for k in kept]),
            torch.stack([k.sigma for k in kept]), texts([k.prompt for k in kept]),
            steps=4, lr=1.0, momentum=0.9, weight_decay=1e-4, pool=16,
        )
        mus.append(mu)
        classes += [k.cls for k in kept]
    assert bank.cls.tolist() == classes and len(mus) == 2
    torch.testing.assert_close(bank.mu, torch.cat(mus), rtol=0, atol=1e-6)


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


def test_mining_drops_the_incomplete_last_batch(tmp_path):
    """Official loader: batch_size with drop_last=True; 5 images in batches of 2 give 2 batches."""
    summary = mine_styles(_cfg(steps=1), tmp_path / "b", dataset=BlockScenes(n=5))
    assert summary["batches"] == 2
    with pytest.raises(FamixError, match=r"mining.batch_size=2.*dropped"):
        mine_styles(_cfg(steps=1), tmp_path / "c", dataset=BlockScenes(n=1))


def test_mining_tells_its_steps_of_a_total_estimated_from_the_batches_read(tmp_path):
    """The display's progress for the mining stage: optimization steps of a total that the patches kept
    per batch so far estimate (the groups depend on the classes each batch holds), exact once every
    batch is read. A group of 4 patches; 3 batches of 2 images (9 blocks each, some of them ignored)."""
    told: list[tuple[int, int]] = []
    summary = mine_styles(_cfg(steps=3, patches_per_step=4), tmp_path / "b", dataset=BlockScenes(n=6), progress=lambda *a: told.append(a))
    groups = math.ceil(summary["n_styles"] / 4)
    assert groups > 2 and len(told) == groups * 3  # every step of every group
    assert [done for done, _ in told] == list(range(1, groups * 3 + 1))
    assert all(done <= total for done, total in told) and told[-1] == (groups * 3, groups * 3)
    # the first group's steps, with one batch read of 3: its patches counted three times over (alike
    # scenes: the estimate is the count), not once (2 groups)
    assert [total for done, total in told if done <= 3] == [groups * 3] * 3


def test_mining_epochs_read_the_source_again_with_new_prompts(tmp_path):
    """mining.epochs=2: every batch of a new shuffle is read again; its patches get new prompts, new styles."""
    one = mine_styles(_cfg(steps=2), tmp_path / "one", dataset=BlockScenes(n=5))
    two = mine_styles(_cfg(steps=2, epochs=2), tmp_path / "two", dataset=BlockScenes(n=5))
    capped = mine_styles(_cfg(steps=2, epochs=2, max_batches=3), tmp_path / "capped", dataset=BlockScenes(n=5))
    assert (one["batches"], two["batches"], capped["batches"]) == (2, 4, 3)  # drop_last in each epoch; the cap in all
    a, b = StyleBank.load(tmp_path / "one"), StyleBank.load(tmp_path / "two")
    assert len(b) > len(a) == one["n_styles"]
    # the first epoch is the one-epoch bank; the second adds styles of its own
    assert b.cls[: len(a)].tolist() == a.cls.tolist()
    torch.testing.assert_close(b.mu[: len(a)], a.mu, rtol=0, atol=1e-6)
    second = b.mu[len(a) :]
    assert any(not any(torch.allclose(m, first, atol=1e-3) for first in a.mu) for m in second)


def test_mining_reads_random_crops_without_jitter_or_flip(tmp_path):
    """Official mining runs without --data_aug: random crop only, even when training jitters and flips."""
    from famix_core.data import build_dataset
    from famix_core.mining import mining_dataset

    cfg = FamixConfig.model_validate(
        {
            "model": {"backbone": "famix-tiny", "pretrained": "none"},
            "mining": {"crop_size": 32},
            "data": {"root": str(tmp_path / "data"), "jitter": [0.8, 0.8, 0.8], "hflip": True,
                     "synthetic": {"train_images": 6, "val_images": 1, "height": 40, "width": 64}},
        }
    )
    ds = mining_dataset(cfg)
    full = build_dataset(cfg.data, "gta5", "train", train=False)  # the same files, untouched
    assert [p for p in ds.pairs] == [p for p in full.pairs]
    corners = set()
    for i in range(len(ds)):
        torch.manual_seed(100 + i)
        img, lbl = ds[i]
        ref_img, ref_lbl = full[i]
        assert img.shape == (3, 32, 32) and lbl.shape == (32, 32)
        at = [
            (y, x)
            for y in range(ref_img.shape[1] - 31)
            for x in range(ref_img.shape[2] - 31)
            if torch.equal(ref_img[:, y : y + 32, x : x + 32], img)
        ]
        assert len(at) == 1, f"item {i}: the crop is not an unjittered, unflipped window of the image"
        y, x = at[0]
        assert torch.equal(ref_lbl[y : y + 32, x : x + 32], lbl)
        corners.add(at[0])
    assert len(corners) > 1  # random crops


def test_mining_empty_dataset_is_a_user_error(tmp_path):
    with pytest.raises(FamixError, match="empty"):
        mine_styles(_cfg(), tmp_path, dataset=BlockScenes(n=0))


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
