"""Styles: every vectorized op against a naive per-sample, per-patch loop; bank, strategies, golden tensors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from famix_core.config import STRATEGIES, StyleConfig
from famix_core.errors import FamixError
from famix_core.styles.bank import StyleBank, StyleBankError
from famix_core.styles.ops import apply_styles, dominant_class, mix_stats, patch_stats, sample_beta, stylize
from famix_core.styles.strategies import STRATEGY_REGISTRY, FamixStyle, MixStyle, NoiseStyle, build_style_augmenter

GOLDEN = Path(__file__).parent / "golden" / "style_apply.safetensors"


# ----------------------------------------------------------------------------- naive references


def _bounds(n: int, g: int) -> list[tuple[int, int]]:
    """Patch r covers the rows i with floor(i * g / n) == r (found by scanning, not by formula)."""
    rows = [[i for i in range(n) if (i * g) // n == r] for r in range(g)]
    return [(r[0], r[-1] + 1) for r in rows]


def naive_stats(f: torch.Tensor, g: int, eps: float):
    b, c, h, w = f.shape
    mu = torch.zeros(b, c, g, g, dtype=torch.float64)
    sd = torch.zeros(b, c, g, g, dtype=torch.float64)
    for bi in range(b):
        for r, (r0, r1) in enumerate(_bounds(h, g)):
            for q, (c0, c1) in enumerate(_bounds(w, g)):
                for ch in range(c):
                    p = f[bi, ch, r0:r1, c0:c1].double()
                    mu[bi, ch, r, q] = p.mean()
                    var = p.var(unbiased=True).item() if p.numel() > 1 else 0.0  # official calc_mean_std; 1 px: 0
                    sd[bi, ch, r, q] = math.sqrt(var + eps)
    return mu, sd


def naive_dominant(labels: torch.Tensor, g: int, k: int, ignore: int = 255) -> torch.Tensor:
    b, h, w = labels.shape
    out = torch.zeros(b, g, g, dtype=torch.long)
    for bi in range(b):
        for r, (r0, r1) in enumerate(_bounds(h, g)):
            for q, (c0, c1) in enumerate(_bounds(w, g)):
                counts: dict[int, int] = {}
                for v in labels[bi, r0:r1, c0:c1].reshape(-1).tolist():
                    key = v if 0 <= v < k else ignore
                    counts[key] = counts.get(key, 0) + 1
                best = max(counts.values())
                # tie rule: smallest class id, real classes before ignore
                winners = sorted(c for c, n in counts.items() if n == best and c != ignore)
                out[bi, r, q] = winners[0] if winners else ignore
    return out


def naive_stylize(f, mu_t, sigma_t, g, eps, s):
    b, c, h, w = f.shape
    out = torch.zeros_like(f, dtype=torch.float64)
    mu, sd = naive_stats(f, g, eps)
    for bi in range(b):
        for r, (r0, r1) in enumerate(_bounds(h, g)):
            for q, (c0, c1) in enumerate(_bounds(w, g)):
                for ch in range(c):
                    m, sg = mu[bi, ch, r, q], sd[bi, ch, r, q]
                    mt, st = mu_t[bi, ch, r, q].double(), sigma_t[bi, ch, r, q].double()
                    if s is not None:
                        sv = s[bi, ch, 0, 0].double()
                        mt, st = sv * m + (1 - sv) * mt, sv * sg + (1 - sv) * st
                    p = f[bi, ch, r0:r1, c0:c1].double()
                    out[bi, ch, r0:r1, c0:c1] = torch.relu(st * (p - m) / sg + mt)
    return out


# ----------------------------------------------------------------------------- statistics & dominant class


@pytest.mark.parametrize("shape", [(2, 3, 9, 12), (3, 2, 10, 7), (1, 4, 3, 3)])
@pytest.mark.parametrize("grid", [1, 3])
def test_patch_stats_matches_loop(shape, grid):
    f = torch.randn(*shape, generator=torch.Generator().manual_seed(0)) * 3 + 1
    mu, sigma = patch_stats(f, grid, 1e-5)
    assert mu.shape == sigma.shape == (shape[0], shape[1], grid, grid)
    ref_mu, ref_sd = naive_stats(f, grid, 1e-5)
    torch.testing.assert_close(mu.double(), ref_mu, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sigma.double(), ref_sd, rtol=1e-5, atol=1e-5)


def test_patch_stats_rejects_side_smaller_than_grid():
    with pytest.raises(ValueError, match="cannot be split into 3 patches"):
        patch_stats(torch.zeros(1, 1, 2, 6), 3)


@pytest.mark.parametrize("hw", [(12, 9), (13, 10), (6, 6)])
def test_dominant_class_matches_loop(hw):
    g = torch.Generator().manual_seed(1)
    # few classes on small patches: many ties, and the ignore label plus stray ids
    labels = torch.randint(0, 4, (3, *hw), generator=g)
    labels[labels == 3] = 255
    labels[0, 0, 0] = 77  # a stray id counts as ignore
    got = dominant_class(labels, 3, num_classes=3)
    assert got.dtype == torch.long and got.shape == (3, 3, 3)
    torch.testing.assert_close(got, naive_dominant(labels, 3, 3))


def test_dominant_class_tie_and_ignore_rules():
    # one 2x2 patch (grid 1): two pixels of class 2, two of class 1 -> smallest id wins
    lab = torch.tensor([[[2, 1], [1, 2]]])
    assert dominant_class(lab, 1, 19).item() == 1
    # class vs ignore tie -> the class; ignore majority -> 255
    assert dominant_class(torch.tensor([[[255, 4], [4, 255]]]), 1, 19).item() == 4
    assert dominant_class(torch.tensor([[[255, 255], [4, 255]]]), 1, 19).item() == 255


# ----------------------------------------------------------------------------- bank sampling


def _indexed_bank(cls_ids: list[int], c: int = 3) -> StyleBank:
    """A bank whose entry i has mu = i in every channel, so a sample names its entry."""
    n = len(cls_ids)
    mu = torch.arange(n, dtype=torch.float32)[:, None].repeat(1, c)
    sigma = mu + 100.0
    return StyleBank(mu, sigma, torch.tensor(cls_ids))


def _check_draws(bank: StyleBank, classes: torch.Tensor, expect_bucket) -> None:
    mu_t, sigma_t = bank.sample(classes, torch.Generator().manual_seed(3))
    b, g = classes.shape[0], classes.shape[1]
    assert mu_t.shape == sigma_t.shape == (b, bank.channels, g, g)
    torch.testing.assert_close(sigma_t, mu_t + 100.0)  # mu and sigma come from the same entry
    for bi in range(b):
        for r in range(g):
            for q in range(g):
                entry = int(mu_t[bi, 0, r, q].item())
                assert (mu_t[bi, :, r, q] == entry).all()
                assert entry in expect_bucket(int(classes[bi, r, q]))


def test_sample_draws_from_class_bucket_with_ignore_fallback():
    cls_ids = [0, 0, 2, 255, 5, 255, 2, 2]
    bank = _indexed_bank(cls_ids)
    classes = torch.randint(0, 7, (4, 3, 3), generator=torch.Generator().manual_seed(0))
    classes[0, 0, 0] = 255

    def bucket(k: int) -> set[int]:
        own = {i for i, c in enumerate(cls_ids) if c == k}
        return own or {i for i, c in enumerate(cls_ids) if c == 255}

    _check_draws(bank, classes, bucket)


def test_sample_falls_back_to_whole_bank_without_ignore_bucket():
    cls_ids = [1, 1, 3]
    bank = _indexed_bank(cls_ids)
    classes = torch.tensor([[[0, 1], [3, 255]]])

    def bucket(k: int) -> set[int]:
        own = {i for i, c in enumerate(cls_ids) if c == k}
        return own or set(range(len(cls_ids)))

    _check_draws(bank, classes, bucket)


def test_sample_one_entry_per_class_gives_exactly_its_stats():
    c = 4
    mu = torch.randn(20, c)
    sigma = torch.rand(20, c) + 0.5
    cls = torch.tensor(list(range(19)) + [255])
    bank = StyleBank(mu, sigma, cls)
    classes = torch.tensor([[[0, 5, 18], [255, 3, 3], [7, 10, 255]]])
    mu_t, sigma_t = bank.sample(classes)
    row = torch.where(classes == 255, torch.full_like(classes, 19), classes)  # bank row of each class
    torch.testing.assert_close(mu_t, mu[row].permute(0, 3, 1, 2))
    torch.testing.assert_close(sigma_t, sigma[row].permute(0, 3, 1, 2))


def test_sample_covers_the_bucket_and_is_seeded():
    bank = _indexed_bank([4, 4, 4, 1])
    classes = torch.full((50, 3, 3), 4)
    a, _ = bank.sample(classes, torch.Generator().manual_seed(7))
    b, _ = bank.sample(classes, torch.Generator().manual_seed(7))
    c, _ = bank.sample(classes, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    drawn = torch.bincount(a[:, 0].reshape(-1).long(), minlength=4)
    assert drawn[3] == 0 and (drawn[:3] > 100).all()  # 450 draws, ~150 each for a uniform pick


# ----------------------------------------------------------------------------- mixing & apply


def test_mix_formula():
    g = torch.Generator().manual_seed(2)
    mu, sigma, mu_t, sigma_t = (torch.randn(2, 3, 3, 3, generator=g) for _ in range(4))
    s = torch.rand(2, 3, 1, 1, generator=g)
    m, sd = mix_stats(mu, sigma, mu_t, sigma_t, s)
    torch.testing.assert_close(m, s * mu + (1 - s) * mu_t)
    torch.testing.assert_close(sd, s * sigma + (1 - s) * sigma_t)


@pytest.mark.parametrize("hw", [(9, 12), (10, 8)])
@pytest.mark.parametrize("mix", [True, False])
def test_stylize_matches_loop(hw, mix):
    g = torch.Generator().manual_seed(4)
    f = torch.randn(2, 3, *hw, generator=g).relu()
    mu_t = torch.randn(2, 3, 3, 3, generator=g)
    sigma_t = torch.rand(2, 3, 3, 3, generator=g) + 0.2
    s = torch.rand(2, 3, 1, 1, generator=g) if mix else None
    out = stylize(f, mu_t, sigma_t, 3, 1e-5, s)
    assert out.shape == f.shape
    torch.testing.assert_close(out.double(), naive_stylize(f, mu_t, sigma_t, 3, 1e-5, s), rtol=1e-4, atol=1e-5)


def test_stylize_reaches_target_statistics_and_s_one_is_identity():
    g = torch.Generator().manual_seed(5)
    f = torch.randn(2, 4, 12, 12, generator=g)
    mu_t = torch.full((2, 4, 3, 3), 50.0)  # large mean: ReLU never clips
    sigma_t = torch.rand(2, 4, 3, 3, generator=g) + 0.5
    mu, sd = patch_stats(stylize(f, mu_t, sigma_t, 3, 0.0), 3, 0.0)
    torch.testing.assert_close(mu, mu_t, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(sd, sigma_t, rtol=1e-3, atol=1e-4)
    fp = f.relu() + 0.1
    same = stylize(fp, mu_t, sigma_t, 3, 0.0, torch.ones(2, 4, 1, 1))
    torch.testing.assert_close(same, fp, rtol=1e-4, atol=1e-4)


def test_stylize_channels_last_input():
    g = torch.Generator().manual_seed(12)
    f = torch.randn(2, 4, 9, 6, generator=g).relu()
    mu_t = torch.randn(2, 4, 3, 3, generator=g)
    sigma_t = torch.rand(2, 4, 3, 3, generator=g) + 0.2
    s = torch.rand(2, 4, 1, 1, generator=g)
    ref = stylize(f, mu_t, sigma_t, 3, 1e-5, s)
    out = stylize(f.to(memory_format=torch.channels_last), mu_t, sigma_t, 3, 1e-5, s)
    torch.testing.assert_close(out, ref)


def naive_stylize_graph(f, mu_t, sigma_t, g, eps, s, detach_stats=False):
    """The official op patch by patch, autograd through mean and std (``network/utils.py`` + ``calc_mean_std``)."""
    b, c, h, w = f.shape
    rows = []
    for r, (r0, r1) in enumerate(_bounds(h, g)):
        cols = []
        for q, (c0, c1) in enumerate(_bounds(w, g)):
            p = f[:, :, r0:r1, c0:c1]  # (B, C, ph, pw)
            m = p.mean(dim=(2, 3), keepdim=True)
            sd = (p.reshape(b, c, -1).var(dim=2, unbiased=True) + eps).sqrt()[:, :, None, None]
            if detach_stats:
                m, sd = m.detach(), sd.detach()
            mt, st = mu_t[:, :, r : r + 1, q : q + 1], sigma_t[:, :, r : r + 1, q : q + 1]
            if s is not None:
                mt, st = s * m + (1 - s) * mt, s * sd + (1 - s) * st
            cols.append(torch.relu(st * (p - m) / sd + mt))
        rows.append(torch.cat(cols, dim=3))
    return torch.cat(rows, dim=2)


@pytest.mark.parametrize("hw", [(9, 12), (10, 8)])
@pytest.mark.parametrize("mix", [False, True])
def test_stylize_gradient_flows_through_patch_statistics(hw, mix):
    g = torch.Generator().manual_seed(8)
    f = (torch.randn(2, 3, *hw, generator=g, dtype=torch.float64) + 0.5).requires_grad_(True)
    mu_t = torch.randn(2, 3, 3, 3, generator=g, dtype=torch.float64)
    sigma_t = torch.rand(2, 3, 3, 3, generator=g, dtype=torch.float64) + 0.2
    s = torch.rand(2, 3, 1, 1, generator=g, dtype=torch.float64) if mix else None
    weight = torch.randn(2, 3, *hw, generator=g, dtype=torch.float64)  # a non-uniform upstream gradient
    (grad,) = torch.autograd.grad((stylize(f, mu_t, sigma_t, 3, 1e-5, s) * weight).sum(), f)
    (expect,) = torch.autograd.grad((naive_stylize_graph(f, mu_t, sigma_t, 3, 1e-5, s) * weight).sum(), f)
    torch.testing.assert_close(grad, expect, rtol=1e-7, atol=1e-9)
    # the part through the statistics is not negligible: constant statistics give another gradient
    (const,) = torch.autograd.grad((naive_stylize_graph(f, mu_t, sigma_t, 3, 1e-5, s, True) * weight).sum(), f)
    assert (grad - const).abs().max() > 1e-2


@pytest.mark.parametrize("hw", [(9, 12), (10, 8)])
@pytest.mark.parametrize("strategy", ["mixstyle", "noise"])
def test_detach_stats_passes_the_gradient_of_f_alone(hw, strategy):
    """style.detach_stats: the patch mean and std are constants for autograd (the original MixStyle), on the
    even (reshape) and uneven (segment) paths; the forward is the same, the backward is the constant-statistics
    graph, and the default keeps the gradient through them."""
    g = torch.Generator().manual_seed(4)
    f = (torch.randn(4, 3, *hw, generator=g, dtype=torch.float64) + 0.5).requires_grad_(True)
    weight = torch.randn(4, 3, *hw, generator=g, dtype=torch.float64)
    outs, grads = {}, {}
    for detach in (False, True):
        cfg = StyleConfig(strategy=strategy, detach_stats=detach, mix=True)
        module = build_style_augmenter(cfg, None, 19).train()
        assert module.detach_stats is detach and ("detach_stats=True" in repr(module)) is detach
        module.generator = torch.Generator().manual_seed(1)  # the same permutation / noise and Beta draws
        outs[detach] = module(f)
        (grads[detach],) = torch.autograd.grad((outs[detach] * weight).sum(), f)
    torch.testing.assert_close(outs[True], outs[False], rtol=1e-12, atol=1e-12)
    assert (grads[True] - grads[False]).abs().max() > 1e-2
    # the detached gradient is that of ReLU(sigma' (f - mu) / sigma + mu') with every statistic held constant
    mu, sigma = (t.detach() for t in patch_stats(f, 3))
    torch.manual_seed(0)
    module = build_style_augmenter(StyleConfig(strategy=strategy, mix=True), None, 19).train()
    module.generator = torch.Generator().manual_seed(1)
    mu_t, sigma_t = (t.detach() for t in module.targets(f, None, mu, sigma))
    s = sample_beta((4, 3, 1, 1), 0.1, generator=module.generator, dtype=torch.float64)
    const = naive_stylize_graph(f, mu_t, sigma_t, 3, 1e-5, s, detach_stats=True)
    torch.testing.assert_close(const, outs[True], rtol=1e-10, atol=1e-10)
    (expect,) = torch.autograd.grad((const * weight).sum(), f)
    torch.testing.assert_close(grads[True], expect, rtol=1e-8, atol=1e-10)


def test_apply_styles_seeded_and_no_mix_equals_plain():
    g = torch.Generator().manual_seed(6)
    f = torch.randn(2, 3, 9, 9, generator=g).relu()
    mu_t = torch.randn(2, 3, 3, 3, generator=g)
    sigma_t = torch.rand(2, 3, 3, 3, generator=g) + 0.2
    a = apply_styles(f, mu_t, sigma_t, 3, 0.1, 1e-5, torch.Generator().manual_seed(1))
    b = apply_styles(f, mu_t, sigma_t, 3, 0.1, 1e-5, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    torch.manual_seed(11)
    c = apply_styles(f, mu_t, sigma_t, 3, 0.1, 1e-5, None)
    torch.manual_seed(11)
    d = apply_styles(f, mu_t, sigma_t, 3, 0.1, 1e-5, None)
    assert torch.equal(c, d)
    torch.testing.assert_close(apply_styles(f, mu_t, sigma_t, 3, None), stylize(f, mu_t, sigma_t, 3, 1e-5, None))


@pytest.mark.parametrize("alpha", [0.1, 2.0])
def test_sample_beta_moments_and_seed(alpha):
    x = sample_beta((200_000,), alpha, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(x).all() and (x >= 0).all() and (x <= 1).all()
    var = 1.0 / (4.0 * (2.0 * alpha + 1.0))  # Beta(a, a): mean 1/2, var 1 / (4 (2a + 1))
    assert abs(x.mean().item() - 0.5) < 0.01
    assert abs(x.var().item() - var) < 0.01
    ref = torch.distributions.Beta(torch.tensor(alpha), torch.tensor(alpha)).sample((200_000,))
    qs = torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95])
    torch.testing.assert_close(torch.quantile(x, qs), torch.quantile(ref, qs), atol=0.03, rtol=0)
    y = sample_beta((5,), alpha, generator=torch.Generator().manual_seed(0))
    assert torch.equal(y, sample_beta((5,), alpha, generator=torch.Generator().manual_seed(0)))
    assert not torch.equal(y, sample_beta((5,), alpha, generator=torch.Generator().manual_seed(1)))


def test_golden_style_apply():
    from safetensors.torch import load_file

    gold = load_file(str(GOLDEN))
    f, mu_t, sigma_t, s = gold["f"], gold["mu_t"], gold["sigma_t"], gold["s"]
    mu, sigma = patch_stats(f, 3, 1e-5)
    torch.testing.assert_close(mu, gold["out_mu"])
    torch.testing.assert_close(sigma, gold["out_sigma"])
    torch.testing.assert_close(dominant_class(gold["labels"], 3, 3), gold["out_dominant"])
    torch.testing.assert_close(stylize(f, mu_t, sigma_t, 3, 1e-5, s), gold["out_mixed"])
    torch.testing.assert_close(stylize(f, mu_t, sigma_t, 3, 1e-5, None), gold["out_plain"])
    torch.testing.assert_close(stylize(gold["f_uneven"], mu_t, sigma_t, 3, 1e-5, s), gold["out_uneven"])


# ----------------------------------------------------------------------------- bank persistence


def test_bank_save_load_roundtrip(tmp_path):
    bank = StyleBank(torch.randn(6, 4), torch.rand(6, 4), torch.tensor([0, 0, 3, 255, 18, 3]), meta={"prompt": "class"})
    bank.save(tmp_path / "b")
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["bank.json", "bank.safetensors"]  # no temp files left
    info = json.loads((tmp_path / "b" / "bank.json").read_text())
    assert info["counts"] == {"road": 2, "wall": 2, "bicycle": 1, "ignore": 1}
    assert info["channels"] == 4 and info["n_styles"] == 6 and info["meta"] == {"prompt": "class"}
    back = StyleBank.load(tmp_path / "b", "cpu")
    assert torch.equal(back.mu, bank.mu) and torch.equal(back.sigma, bank.sigma) and torch.equal(back.cls, bank.cls)
    assert back.source.endswith("bank.safetensors")
    classes = torch.tensor([[[0, 3], [255, 18]]])
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    assert torch.equal(back.sample(classes, g1)[0], bank.sample(classes, g2)[0])


def test_bank_load_errors_are_one_line(tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(StyleBankError) as e:
        StyleBank.load(tmp_path / "nope")
    assert "bank.safetensors" in str(e.value) and "\n" not in str(e.value)
    d = tmp_path / "bad"
    d.mkdir()
    save_file({"mu": torch.zeros(3, 4), "sigma": torch.zeros(3, 5), "cls": torch.zeros(3, dtype=torch.long)}, str(d / "bank.safetensors"))
    (d / "bank.json").write_text("{}")
    with pytest.raises(StyleBankError) as e:
        StyleBank.load(d)
    assert "(3, 4)" in str(e.value) and "(3, 5)" in str(e.value) and "\n" not in str(e.value)
    (d / "bank.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(StyleBankError, match="not a readable safetensors"):
        StyleBank.load(d)


def test_a_bank_torn_between_its_two_files_is_refused(tmp_path):
    # A kill between the two atomic writes of a re-mined bank leaves new tensors beside the old JSON.
    import shutil

    StyleBank(torch.randn(3, 4), torch.rand(3, 4), torch.tensor([0, 1, 255])).save(tmp_path / "old")
    StyleBank(torch.randn(5, 4), torch.rand(5, 4), torch.tensor([0, 1, 2, 3, 255])).save(tmp_path / "new")
    shutil.copy(tmp_path / "new" / "bank.safetensors", tmp_path / "old" / "bank.safetensors")
    with pytest.raises(StyleBankError) as e:
        StyleBank.load(tmp_path / "old")
    msg = str(e.value)
    assert "bank.safetensors: does not match bank.json" in msg and "mine the bank again" in msg and "\n" not in msg
    assert len(StyleBank.load(tmp_path / "new")) == 5
    info = json.loads((tmp_path / "old" / "bank.json").read_text())
    del info["tensors_sha256"]  # a bank written before the hash was recorded still loads
    (tmp_path / "old" / "bank.json").write_text(json.dumps(info))
    assert len(StyleBank.load(tmp_path / "old")) == 5


def test_bank_channel_mismatch_refused(tmp_path):
    StyleBank(torch.randn(3, 8), torch.rand(3, 8), torch.tensor([0, 1, 255])).save(tmp_path)
    bank = StyleBank.load(tmp_path)
    with pytest.raises(FamixError) as e:
        bank.expect_channels(256)
    msg = str(e.value)
    assert "bank.safetensors" in msg and "8 channels" in msg and "256" in msg and "\n" not in msg
    aug = build_style_augmenter(StyleConfig(), bank, 19).train()
    with pytest.raises(FamixError, match="8 channels .* have 16"):
        aug(torch.rand(1, 16, 6, 6), torch.zeros(1, 12, 12, dtype=torch.long))


# ----------------------------------------------------------------------------- strategies


def test_registry_matches_config():
    assert set(STRATEGY_REGISTRY) == set(STRATEGIES) - {"none"}  # none builds no module


def test_build_follows_toggles():
    bank = StyleBank(torch.randn(4, 3), torch.rand(4, 3) + 0.1, torch.tensor([0, 1, 2, 255]))
    assert build_style_augmenter(StyleConfig(strategy="none"), bank, 19) is None
    assert build_style_augmenter(StyleConfig(augment=False, mix=False), bank, 19) is None
    assert isinstance(build_style_augmenter(StyleConfig(augment=False, mix=True), None, 19), MixStyle)
    fam = build_style_augmenter(StyleConfig(), bank, 19)
    assert isinstance(fam, FamixStyle) and fam.alpha == 0.1
    assert build_style_augmenter(StyleConfig(mix=False), bank, 19).alpha is None
    assert isinstance(build_style_augmenter(StyleConfig(strategy="noise"), None, 19), NoiseStyle)
    with pytest.raises(FamixError, match="needs a style bank"):
        build_style_augmenter(StyleConfig(), None, 19)
    stray = StyleBank(torch.randn(2, 3), torch.rand(2, 3), torch.tensor([0, 40]))
    with pytest.raises(FamixError, match=r"class ids \[40\]"):
        build_style_augmenter(StyleConfig(), stray, 19)


def test_famix_module_matches_functional_ops_and_is_train_only():
    bank = StyleBank(torch.rand(5, 3) + 1, torch.rand(5, 3) + 0.1, torch.tensor([0, 1, 1, 2, 255]))
    aug = build_style_augmenter(StyleConfig(mix=False), bank, 3)
    feat = torch.rand(2, 3, 6, 9, requires_grad=True)
    labels = torch.randint(0, 4, (2, 24, 36), generator=torch.Generator().manual_seed(0))
    aug.eval()
    assert aug(feat, labels) is feat
    aug.train()
    aug.generator = torch.Generator().manual_seed(9)
    out = aug(feat, labels)
    mu_t, sigma_t = bank.sample(dominant_class(labels, 3, 3), torch.Generator().manual_seed(9))
    torch.testing.assert_close(out, stylize(feat, mu_t, sigma_t, 3, 1e-5, None))
    out.sum().backward()
    assert feat.grad is not None and torch.isfinite(feat.grad).all()
    assert len(aug.state_dict()) == 0  # bank buffers are not persistent
    assert {n for n, _ in aug.named_buffers()} >= {"bank_mu", "bank_sigma"}


def test_mixstyle_and_noise_reduce_to_identity():
    f = torch.rand(1, 4, 9, 9) + 0.1  # positive: ReLU keeps it
    mix = build_style_augmenter(StyleConfig(strategy="mixstyle"), None, 19).train()
    torch.testing.assert_close(mix(f, None), f, rtol=1e-4, atol=1e-4)  # batch of one: the partner is itself
    noise = build_style_augmenter(StyleConfig(strategy="noise", noise_std=0.0, mix=False), None, 19).train()
    f2 = torch.rand(3, 4, 9, 9) + 0.1
    torch.testing.assert_close(noise(f2, None), f2, rtol=1e-4, atol=1e-4)
    noisy = build_style_augmenter(StyleConfig(strategy="noise", noise_std=1.0, mix=False), None, 19).train()
    assert not torch.allclose(noisy(f2, None), f2)


def test_mixstyle_targets_are_permuted_batch_stats():
    f = torch.rand(4, 3, 6, 6)
    mix = MixStyle(3, 1e-5, 0.1)
    mix.generator = torch.Generator().manual_seed(2)
    mu, sigma = patch_stats(f, 3, 1e-5)
    mu_t, sigma_t = mix.targets(f, None, mu, sigma)
    perm = torch.randperm(4, generator=torch.Generator().manual_seed(2))
    assert torch.equal(mu_t, mu[perm]) and torch.equal(sigma_t, sigma[perm])


@pytest.mark.parametrize("strategy", ["famix", "mixstyle", "noise"])
@pytest.mark.parametrize("grad", [False, True], ids=["frozen-input", "trained-input"])
def test_no_host_sync_in_forward(strategy, grad, monkeypatch):
    bank = StyleBank(torch.randn(6, 4), torch.rand(6, 4) + 0.1, torch.tensor([0, 1, 2, 2, 255, 255]))
    aug = build_style_augmenter(StyleConfig(strategy=strategy), bank, 3).train()
    feat = torch.rand(2, 4, 9, 9).requires_grad_(grad)
    labels = torch.randint(0, 4, (2, 36, 36))

    def forbidden(*_a, **_k):
        raise AssertionError("host sync in the style forward")

    for name in ("item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__"):
        monkeypatch.setattr(torch.Tensor, name, forbidden)
    out = aug(feat, labels)
    monkeypatch.undo()
    assert out.shape == feat.shape and torch.isfinite(out).all()
    assert out.requires_grad == grad and (out is not feat)


@pytest.mark.gpu
def test_cuda_matches_cpu():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA (no GPU on this machine)")
    g = torch.Generator().manual_seed(0)
    f = torch.randn(2, 8, 24, 24, generator=g).relu()
    labels = torch.randint(0, 20, (2, 96, 96), generator=g)
    bank = StyleBank(torch.randn(30, 8), torch.rand(30, 8) + 0.1, torch.randint(0, 19, (30,), generator=g))
    mu, sigma = patch_stats(f, 3)
    mu_c, sigma_c = patch_stats(f.cuda(), 3)
    torch.testing.assert_close(mu_c.cpu(), mu, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(sigma_c.cpu(), sigma, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(dominant_class(labels.cuda(), 3, 19).cpu(), dominant_class(labels, 3, 19))
    bank_c = bank.to("cuda")
    cls = dominant_class(labels.cuda(), 3, 19)
    mu_t, sigma_t = bank_c.sample(cls, torch.Generator("cuda").manual_seed(0))
    assert mu_t.device.type == "cuda"
    s = torch.rand(2, 8, 1, 1)
    out = stylize(f.cuda(), mu_t, sigma_t, 3, 1e-5, s.cuda())
    torch.testing.assert_close(out.cpu(), stylize(f, mu_t.cpu(), sigma_t.cpu(), 3, 1e-5, s), rtol=1e-4, atol=1e-4)
    x = sample_beta((1000,), 0.1, generator=torch.Generator("cuda").manual_seed(0), device="cuda")
    assert x.device.type == "cuda" and (x >= 0).all() and (x <= 1).all()


def test_bank_rejects_bad_class_ids(tmp_path):
    with pytest.raises(StyleBankError, match=r"class ids must be in \[0, 256\)"):
        StyleBank(torch.zeros(2, 3), torch.ones(2, 3), torch.tensor([0, 300]))
    with pytest.raises(StyleBankError, match="holds no styles"):
        StyleBank(torch.zeros(0, 3), torch.ones(0, 3), torch.zeros(0, dtype=torch.long))
