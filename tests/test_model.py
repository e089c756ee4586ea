"""Models: CLIP registry and weights, dilated backbone, DeepLabv3+ keys, freeze policies, official checkpoints."""

from __future__ import annotations

import socket

import pytest
import torch
from torch import nn

from famix_core.config import BACKBONES, FREEZE_POLICIES, ModelConfig
from famix_core.errors import WeightsError
from famix_core.models.clip import BACKBONE_REGISTRY, create_clip, get_tokenizer, stage_channels
from famix_core.models.freeze import FREEZE_REGISTRY
from famix_core.models.segmenter import build_segmenter, load_official_checkpoint, stage_dilations


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_cfg(**kw) -> ModelConfig:
    base = dict(backbone="famix-tiny", pretrained="none", output_stride=16, freeze="none")
    base.update(kw)
    return ModelConfig(**base)


# ----------------------------------------------------------------------------- CLIP


def test_registries_hold_exactly_the_config_names():
    assert tuple(BACKBONE_REGISTRY) == BACKBONES
    assert tuple(FREEZE_REGISTRY) == FREEZE_POLICIES


def test_unknown_backbone_lists_known_ones():
    with pytest.raises(WeightsError, match="famix-tiny") as e:
        create_clip("RN18")
    assert "RN50" in str(e.value) and "\n" not in str(e.value)


def test_tiny_clip_has_both_towers_and_reads_channels_from_modules():
    clip = create_clip("famix-tiny")
    assert not clip.training
    assert stage_channels(clip.visual) == {"stem": 16, "layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512}
    tokens = get_tokenizer("famix-tiny")(["a photo of a road", "sky"])
    with torch.no_grad():
        text = clip.encode_text(tokens)
        image = clip.encode_image(torch.randn(2, 3, 64, 64))
    assert text.shape == (2, 64) and image.shape == (2, 64)
    assert torch.isfinite(text).all() and torch.isfinite(image).all()


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_clip_loads_a_local_state_dict(tmp_path, suffix):
    torch.manual_seed(0)
    src = create_clip("famix-tiny")
    sd = {k: v.clone() for k, v in src.state_dict().items()}
    path = tmp_path / f"clip{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        torch.save({"state_dict": sd}, path)
    torch.manual_seed(1)
    loaded = create_clip("famix-tiny", str(path))
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, sd[k]), k


def test_mining_weights_of_a_famix_segmenter_say_the_text_encoder_is_random(tmp_path):
    """A FAMix segmenter's model.safetensors fills the image encoder only: mining from it matched
    styles against a random text encoder without a word. Whoever reads the text encoder is told."""
    import warnings

    from safetensors.torch import save_file

    from famix_core.errors import FamixWarning

    segmenter = build_segmenter(ModelConfig(backbone="famix-tiny", pretrained="none", freeze="none"))
    famix = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in segmenter.state_dict().items()}, str(famix))
    clip = tmp_path / "clip.safetensors"
    save_file({k: v.contiguous() for k, v in create_clip("famix-tiny").state_dict().items()}, str(clip))
    with pytest.warns(FamixWarning, match=f"model.pretrained={famix}: a FAMix segmenter checkpoint holds the image encoder only"):
        create_clip("famix-tiny", str(famix), needs_text=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        create_clip("famix-tiny", str(famix))  # the image encoder is all a segmenter reads
        create_clip("famix-tiny", str(clip), needs_text=True)


def test_clip_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nope" / "clip.pt"
    with pytest.raises(WeightsError, match=str(missing)):
        create_clip("famix-tiny", str(missing))


def test_clip_state_dict_of_another_architecture_is_one_clear_line(tmp_path):
    from safetensors.torch import save_file

    sd = create_clip("famix-tiny").state_dict()
    sd = {k: v.contiguous() for k, v in sd.items() if not k.startswith("visual.layer4")}
    path = tmp_path / "partial.safetensors"
    save_file(sd, str(path))
    with pytest.raises(WeightsError) as e:
        create_clip("famix-tiny", str(path))
    msg = str(e.value)
    assert str(path) in msg and "missing" in msg and "visual.layer4" in msg and "\n" not in msg


def test_openai_tag_offline_fails_fast_with_one_line(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", offline)
    cache = tmp_path / "cache"
    with pytest.raises(WeightsError) as e:
        create_clip("RN50", "openai", cache_dir=str(cache))
    msg = str(e.value)
    assert msg.startswith(f"model.pretrained=openai: RN50 weights are not in {cache} and ")
    assert "does not resolve: this machine is offline; copy RN50.pt (from https://" in msg  # what to fetch, by hand
    assert f"into {cache} on a machine with internet, or pass model.pretrained=<path to the file>" in msg
    assert "\n" not in msg


def test_tiny_has_no_pretrained_tag():
    with pytest.raises(WeightsError, match="unknown weights 'openai' for backbone famix-tiny"):
        create_clip("famix-tiny", "openai")


# ----------------------------------------------------------------------------- segmenter


@pytest.mark.parametrize("output_stride", [8, 16, 32])
@pytest.mark.parametrize("backbone", BACKBONES)
def test_forward_backward_every_backbone_and_stride(backbone, output_stride):
    torch.manual_seed(0)
    model = build_segmenter(ModelConfig(backbone=backbone, pretrained="none", output_stride=output_stride, freeze="none"))
    x = torch.randn(2, 3, 64, 64)
    feats = model.features(x)
    assert feats["layer1"].shape[-2:] == (16, 16)
    assert feats["layer4"].shape[-2:] == (64 // output_stride, 64 // output_stride)
    ch = stage_channels(model.backbone)
    assert feats["layer4"].shape[1] == ch["layer4"] and feats["layer1"].shape[1] == ch["layer1"]
    logits = model(x)
    assert logits.shape == (2, 19, 64, 64)
    loss = nn.functional.cross_entropy(logits, torch.randint(0, 19, (2, 64, 64)))
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.classifier.classifier[3].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("size, dilation, fast", [((8, 8), 12, True), ((8, 16), 18, True), ((8, 16), 12, False), ((8, 8), 6, False)])
def test_atrous_conv_gives_the_plain_conv_gradients(size, dilation, fast, monkeypatch):
    from famix_core.models.deeplab import AtrousConv2d, _CentreTapBackward

    torch.manual_seed(0)
    conv = AtrousConv2d(32, 16, dilation)
    ref = nn.Conv2d(32, 16, 3, padding=dilation, dilation=dilation, bias=False)
    ref.load_state_dict(conv.state_dict())  # the same keys as nn.Conv2d
    x = torch.randn(2, 32, *size)
    g = torch.randn(2, 16, *size)
    calls = []
    apply = _CentreTapBackward.apply
    monkeypatch.setattr(_CentreTapBackward, "apply", lambda *a: (calls.append(a[2]), apply(*a))[1])
    outs = []
    for m in (conv, ref):
        xi = x.clone().requires_grad_()
        y = m(xi)
        y.backward(g)
        outs.append((y.detach(), xi.grad, m.weight.grad))
    assert calls == ([dilation] if fast else [])  # the centre-tap backward only where the map fits in the dilation
    (y, gx, gw), (ry, rgx, rgw) = outs
    assert torch.equal(y, ry)  # the forward is the plain conv's
    torch.testing.assert_close(gx, rgx, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gw, rgw, rtol=1e-5, atol=1e-5)
    if fast:
        off = gw.clone()
        off[:, :, 1, 1] = 0
        assert not off.any() and gw[:, :, 1, 1].abs().sum() > 0  # off-centre taps read padding only
    with torch.no_grad():
        conv(x)
    assert len(calls) == (1 if fast else 0)  # no autograd, no custom function


def _conv2_dilations(stage):
    return [blk.conv2.dilation[0] for blk in stage]


def test_official_dilation_pattern_rn50():
    m16 = build_segmenter(ModelConfig(backbone="RN50", pretrained="none", output_stride=16, freeze="none"))
    assert _conv2_dilations(m16.backbone.layer4) == [1, 1, 2]
    assert [b.conv2.padding[0] for b in m16.backbone.layer4] == [1, 1, 2]
    assert _conv2_dilations(m16.backbone.layer3) == [1] * 6
    assert isinstance(m16.backbone.layer4[0].avgpool, nn.Identity)
    assert isinstance(m16.backbone.layer4[0].downsample._modules["-1"], nn.Identity)
    assert isinstance(m16.backbone.layer3[0].avgpool, nn.AvgPool2d)  # layer3 keeps its stride at OS 16
    m8 = build_segmenter(ModelConfig(backbone="RN50", pretrained="none", output_stride=8, freeze="none"))
    assert _conv2_dilations(m8.backbone.layer3) == [1, 1, 1, 1, 1, 2]
    assert _conv2_dilations(m8.backbone.layer4) == [1, 2, 4]
    assert stage_dilations(32) == {}
    aspp = [m8.classifier.aspp.convs[i][0].dilation[0] for i in (1, 2, 3)]
    assert aspp == [12, 24, 36]
    assert [m16.classifier.aspp.convs[i][0].dilation[0] for i in (1, 2, 3)] == [6, 12, 18]


OFFICIAL_KEYS = [
    "backbone.conv1.weight",
    "backbone.bn3.running_var",
    "backbone.layer1.0.downsample.0.weight",
    "backbone.layer4.0.downsample.1.running_mean",
    "backbone.layer4.2.conv3.weight",
    "backbone.layer4.2.bn3.bias",
    "classifier.project.0.weight",
    "classifier.project.1.running_mean",
    "classifier.aspp.convs.0.0.weight",
    "classifier.aspp.convs.3.1.weight",
    "classifier.aspp.convs.4.1.weight",
    "classifier.aspp.convs.4.2.bias",
    "classifier.aspp.project.0.weight",
    "classifier.aspp.project.1.num_batches_tracked",
    "classifier.classifier.0.weight",
    "classifier.classifier.1.weight",
    "classifier.classifier.3.weight",
    "classifier.classifier.3.bias",
]


@pytest.fixture(scope="module")
def rn50_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = build_segmenter(ModelConfig(backbone="RN50", pretrained="none", freeze="none"))
    with torch.no_grad():  # non-trivial BN statistics and residual branches
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
    model.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
    path = tmp_path_factory.mktemp("official") / "best_deeplabv3plus_resnet_clip_gta5.pth"
    torch.save({"model_state": model.state_dict(), "cur_itrs": 40000}, path)
    return path, model.state_dict(), x, ref


def test_state_dict_uses_the_official_key_names(rn50_checkpoint):
    _, sd, _, _ = rn50_checkpoint
    for key in OFFICIAL_KEYS:
        assert key in sd, key
    assert sd["classifier.project.0.weight"].shape == (48, 256, 1, 1)
    assert sd["classifier.aspp.project.0.weight"].shape == (256, 5 * 256, 1, 1)
    assert sd["classifier.classifier.0.weight"].shape == (256, 304, 3, 3)
    assert sd["classifier.classifier.3.weight"].shape == (19, 256, 1, 1)
    assert not any(k.startswith("backbone.attnpool") for k in sd)
    assert all(k.startswith(("backbone.", "classifier.")) for k in sd)


def test_load_official_checkpoint_reproduces_logits(rn50_checkpoint, tmp_path):
    path, sd, x, ref = rn50_checkpoint
    model = load_official_checkpoint(path)
    assert not model.training
    with torch.no_grad():
        out = model(x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)  # thread count may differ from the fixture
    from safetensors.torch import save_file

    st = tmp_path / "ckpt.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(st))
    with torch.no_grad():
        torch.testing.assert_close(load_official_checkpoint(st)(x), ref, rtol=1e-5, atol=1e-6)


def test_checkpoint_of_another_architecture_names_file_and_keys(tmp_path):
    tiny = build_segmenter(tiny_cfg())
    path = tmp_path / "tiny.pth"
    torch.save({"model_state": tiny.state_dict()}, path)
    with pytest.raises(WeightsError) as e:
        load_official_checkpoint(path, backbone="RN50")
    msg = str(e.value)
    assert str(path) in msg and "\n" not in msg
    assert "shape mismatch" in msg or "missing" in msg
    with pytest.raises(WeightsError, match="not found"):
        load_official_checkpoint(tmp_path / "absent.pth")


def test_build_segmenter_from_a_famix_checkpoint_path(tmp_path):
    torch.manual_seed(3)
    src = build_segmenter(tiny_cfg()).eval()
    path = tmp_path / "famix.pth"
    torch.save({"model_state": src.state_dict()}, path)
    model = build_segmenter(tiny_cfg(pretrained=str(path))).eval()
    for k, v in model.state_dict().items():
        assert torch.equal(v, src.state_dict()[k]), k


# ----------------------------------------------------------------------------- freezing


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("policy", FREEZE_POLICIES)
def test_freeze_keeps_weights_and_bn_stats_bit_identical(policy):
    torch.manual_seed(0)
    model = build_segmenter(tiny_cfg(freeze=policy))
    bb = model.backbone
    frozen_prefixes = {
        "none": (),
        "layer3": ("conv", "bn", "layer1.", "layer2.", "layer3."),
        # famix-tiny has one layer4 block, which is the last one: the paper policy trains it
        "paper": ("conv", "bn", "layer1.", "layer2.", "layer3."),
        "all": ("",),
    }[policy]
    before = _snapshot(bb)
    model.train()
    for m in bb.modules():
        if any(m is f for f in model._frozen):
            assert not m.training
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        x = torch.randn(2, 3, 64, 64, generator=g)
        y = torch.randint(0, 19, (2, 64, 64), generator=g)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = bb.state_dict()
    for k, v in before.items():
        frozen = bool(frozen_prefixes) and k.startswith(frozen_prefixes)
        if frozen:
            assert torch.equal(after[k], v), f"{policy}: frozen {k} changed"
        elif k.endswith(("weight", "running_mean")) and "bn3.weight" not in k:
            assert not torch.equal(after[k], v), f"{policy}: trainable {k} did not change"


def test_paper_policy_trains_only_the_last_layer4_block():
    model = build_segmenter(ModelConfig(backbone="RN50", pretrained="none", freeze="paper"))
    trainable = {n.split(".")[0] + "." + n.split(".")[1] for n, p in model.backbone.named_parameters() if p.requires_grad}
    assert trainable == {"layer4.2"}
    model.train()
    assert model.backbone.layer4[2].training and not model.backbone.layer4[1].training
    assert not model.backbone.bn1.training and model.classifier.training
    dec, bb = model.param_groups()
    assert len(bb) == len(list(model.backbone.layer4[2].parameters()))
    assert len(dec) == len(list(model.classifier.parameters()))


# ----------------------------------------------------------------------------- style hook


class _Recorder(nn.Module):
    """Stand-in augmenter: zeroes the features and records the label shape it saw."""

    def __init__(self):
        super().__init__()
        self.register_buffer("scale", torch.zeros(1), persistent=False)
        self.calls: list[tuple[int, ...]] = []

    def forward(self, feat, labels):
        self.calls.append(tuple(labels.shape))
        return feat * self.scale


def test_style_augmenter_acts_on_layer1_in_training_only():
    aug = _Recorder()
    model = build_segmenter(tiny_cfg(), style_augmenter=aug)
    assert not any("scale" in k for k in model.state_dict())  # no extra keys in checkpoints
    x = torch.randn(2, 3, 64, 64)
    y = torch.randint(0, 19, (2, 64, 64))
    model.train()
    feats = model.features(x, y)
    assert aug.calls == [(2, 64, 64)]
    assert torch.count_nonzero(feats["layer1"]) == 0  # both decoder and layer2 see the stylized map
    model.features(x)  # no labels: no styling
    model.eval()
    with torch.no_grad():
        feats = model.features(x, y)
    assert len(aug.calls) == 1 and torch.count_nonzero(feats["layer1"]) > 0


def test_the_style_augmenter_is_a_child_that_adds_no_checkpoint_keys():
    """The famix augmenter (bank buffers) is a child module: it follows .to()/.train() with the model,
    and checkpoints keep the plain segmenter's keys both ways (old ones load into a styled model)."""
    from famix_core.config import StyleConfig
    from famix_core.styles.bank import StyleBank
    from famix_core.styles.strategies import build_style_augmenter

    bank = StyleBank(torch.randn(5, 64), torch.rand(5, 64) + 0.1, torch.tensor([0, 1, 1, 2, 255]))
    aug = build_style_augmenter(StyleConfig(), bank, 19)
    torch.manual_seed(0)
    styled = build_segmenter(tiny_cfg(), style_augmenter=aug)
    plain = build_segmenter(tiny_cfg())
    assert styled.style_augmenter is aug and any(m is aug for m in styled.children())
    assert list(styled.state_dict()) == list(plain.state_dict())  # same keys, same order
    styled.load_state_dict(plain.state_dict(), strict=True)
    plain.load_state_dict(styled.state_dict(), strict=True)
    styled.eval()
    assert not aug.training
    styled.train()
    assert aug.training
    styled.to(torch.float64)
    assert aug.bank_mu.dtype == torch.float64  # buffers move with the model
