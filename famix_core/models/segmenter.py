"""The FAMix segmenter: dilated CLIP ModifiedResNet + DeepLabv3+ head.

State-dict keys equal the official FAMix checkpoints: ``backbone.<CLIP visual key>``
(``backbone.layer4.2.conv3.weight``) and ``classifier.{project,aspp,classifier}.*``.
The style augmenter is a child module whose buffers are non-persistent, so it never adds keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from famix_core.errors import WeightsError
from famix_core.models.clip import create_visual, get_backbone_spec, read_state_dict, stage_channels
from famix_core.models.deeplab import DeepLabHeadV3Plus, aspp_rates
from famix_core.models.freeze import frozen_modules

if TYPE_CHECKING:
    from famix_core.config import ModelConfig

__all__ = [
    "style_in_fp32",
    "Segmenter",
    "build_segmenter",
    "load_strict",
    "load_official_checkpoint",
    "dilate_backbone",
    "stage_dilations",
]

# output stride -> new dilation of layer3, layer4 (1 = the stage keeps CLIP's stride 2)
_STAGE_DILATION: dict[int, tuple[int, int]] = {32: (1, 1), 16: (1, 2), 8: (2, 4)}


def stage_dilations(output_stride: int) -> dict[str, int]:
    """Dilation each dilated stage takes for an output stride (stages absent keep their stride)."""
    try:
        d3, d4 = _STAGE_DILATION[output_stride]
    except KeyError:
        raise ValueError(f"output_stride must be one of {sorted(_STAGE_DILATION)}, got {output_stride}") from None
    return {name: d for name, d in (("layer3", d3), ("layer4", d4)) if d > 1}


def _dilate_stage(stage: nn.Sequential, dilation: int, previous: int) -> None:
    """Turn a strided stage into a dilated one, in place, in the official FAMix pattern.

    Every block gets stride 1 (its anti-aliasing avg-pools become identities); block 0 keeps
    dilation 1, middle blocks take ``previous`` (the dilation of the stage before), and the
    last block takes ``dilation`` (a one-block stage therefore takes ``dilation``).
    Padding equals the dilation, so spatial size is preserved.
    """
    n = len(stage)
    for i, block in enumerate(stage):
        block.avgpool = nn.Identity()
        block.stride = 1
        if block.downsample is not None and "-1" in block.downsample._modules:
            block.downsample._modules["-1"] = nn.Identity()  # keeps the "-1", "0", "1" key layout
        d = dilation if i == n - 1 else (1 if i == 0 else previous)
        block.conv2.dilation = (d, d)
        block.conv2.padding = (d, d)


def dilate_backbone(visual: nn.Module, output_stride: int) -> nn.Module:
    """Dilate layer3/layer4 of a ModifiedResNet in place for an output stride (8, 16 or 32).

    Returns:
        The same module (RN50 at OS 16: layer4 blocks dilate 1, 1, 2).
    """
    previous = 1
    for name, d in stage_dilations(output_stride).items():
        _dilate_stage(getattr(visual, name), d, previous)
        previous = d
    return visual


def style_in_fp32(augmenter: nn.Module, f: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Run the style op on fp32 features with autocast off, and give its output ``f``'s dtype back.

    Under CUDA bf16 autocast, reductions such as ``sum`` come out in fp32 while elementwise ops
    stay in bf16, so the op's own statistics and its target statistics would disagree in dtype
    (``torch.lerp`` refuses). Statistics are computed in fp32 whatever the training precision.
    For fp32 features outside autocast this is the plain call (no copy).

    Args:
        augmenter: ``module(feat (B,C,H,W), labels (B,Hl,Wl)) -> feat``.
        f: layer-1 features (B, C, H, W), any float dtype.
        labels: (B, Hl, Wl) train ids.

    Returns:
        Stylized features (B, C, H, W) in ``f.dtype``.
    """
    with torch.autocast(device_type=f.device.type, enabled=False):
        return augmenter(f.float(), labels).to(f.dtype)


class Segmenter(nn.Module):
    """CLIP-ResNet DeepLabv3+ with feature styling after layer 1 (training only).

    Args:
        backbone: an open_clip ModifiedResNet with ``attnpool`` removed, already dilated.
        num_classes: output classes.
        output_stride: 8, 16 or 32 (drives the ASPP rates).
        aspp_channels: ASPP / decoder width.
        low_level_channels: low-level projection width.
        aspp_dropout: ASPP dropout.
        style_augmenter: ``module(feat (B,C,H,W), labels (B,H,W)) -> feat`` or None; a child module
            that adds no state-dict keys (its buffers, such as a style bank, are non-persistent).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int = 19,
        output_stride: int = 16,
        aspp_channels: int = 256,
        low_level_channels: int = 48,
        aspp_dropout: float = 0.1,
        style_augmenter: nn.Module | None = None,
    ):
        super().__init__()
        self.backbone = backbone
        ch = stage_channels(backbone)
        self.output_stride = output_stride
        self.num_classes = num_classes
        self.classifier = DeepLabHeadV3Plus(
            ch["layer4"],
            ch["layer1"],
            num_classes,
            rates=aspp_rates(output_stride),
            aspp_channels=aspp_channels,
            low_level_channels=low_level_channels,
            dropout=aspp_dropout,
        )
        self.style_augmenter = style_augmenter
        self._frozen: list[nn.Module] = []  # backbone modules kept in eval mode (see freeze)

    # -- freezing -----------------------------------------------------------------------------
    def freeze(self, policy: str, source: str = "gta5") -> list[nn.Module]:
        """Freeze backbone modules by stage boundary (``none``, ``layer3``, ``paper``, ``all``).

        ``paper`` depends on the training ``source`` (:mod:`famix_core.models.freeze`).

        Frozen parameters get ``requires_grad=False`` and frozen modules stay in eval mode
        (BatchNorm statistics fixed) even after ``.train()``. Replaces any previous policy.

        Returns:
            The frozen modules.
        """
        mods = frozen_modules(self.backbone, policy, source)
        for p in self.backbone.parameters():
            p.requires_grad_(True)
        for m in mods:
            for p in m.parameters():
                p.requires_grad_(False)
        self._frozen = mods
        self.train(self.training)
        return mods

    def train(self, mode: bool = True) -> "Segmenter":
        super().train(mode)
        for m in self._frozen:
            m.eval()
        return self

    def param_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """Trainable parameters split as (decoder, backbone)."""
        dec = [p for p in self.classifier.parameters() if p.requires_grad]
        bb = [p for p in self.backbone.parameters() if p.requires_grad]
        return dec, bb

    # -- forward ------------------------------------------------------------------------------
    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """3-conv stem + avg-pool: (B, 3, H, W) -> (B, C0, H/4, W/4)."""
        return self.backbone.stem(x)

    def features(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Every stage's output; layer-1 features are stylized when training with an augmenter and labels.

        Args:
            x: images (B, 3, H, W).
            labels: train ids (B, H, W) or None.

        Returns:
            ``{"stem", "layer1", "layer2", "layer3", "layer4"}``; ``layer1`` is the (stylized)
            feature that both layer2 and the decoder's low-level branch consume.
            Sizes: layer1 H/4; layer4 H/OS.
        """
        bb = self.backbone
        out: dict[str, torch.Tensor] = {"stem": bb.stem(x)}
        f = bb.layer1(out["stem"])
        if self.training and self.style_augmenter is not None and labels is not None:
            f = style_in_fp32(self.style_augmenter, f, labels)
        out["layer1"] = f
        out["layer2"] = bb.layer2(f)
        out["layer3"] = bb.layer3(out["layer2"])
        out["layer4"] = bb.layer4(out["layer3"])
        return out

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Segment images.

        Args:
            x: images (B, 3, H, W), CLIP-normalized.
            labels: train ids (B, H, W) for the style augmenter (training only), or None.

        Returns:
            Logits (B, num_classes, H, W).
        """
        feats = self.features(x, labels)
        logits = self.classifier(feats["layer1"], feats["layer4"])  # (B, K, H/4, W/4)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _head_widths(backbone: str) -> dict[str, int]:
    spec = get_backbone_spec(backbone)
    return {"aspp_channels": spec.aspp_channels, "low_level_channels": spec.low_level_channels}


def _is_segmenter_state(sd: dict[str, Any]) -> bool:
    return any(k.startswith("classifier.") for k in sd) and any(k.startswith("backbone.") for k in sd)


def load_strict(model: Segmenter, sd: dict[str, torch.Tensor], path: str | Path, backbone: str) -> None:
    """Load a segmenter state dict strictly (``backbone.attnpool.*`` keys dropped: unused in segmentation).

    Args:
        model: the segmenter to fill.
        sd: its state dict (official key names).
        path: where ``sd`` came from (named in the error).
        backbone: the model's backbone (named in the error).

    Raises:
        WeightsError: one line with the first missing, unexpected or mis-shaped keys; for a training
            checkpoint's ``tensors.safetensors``, one saying so and naming the file to pass instead.
    """
    sd = {k: v for k, v in sd.items() if not k.startswith("backbone.attnpool.")}  # dropped in segmentation
    own = model.state_dict()
    if _is_training_checkpoint(sd, own):
        raise WeightsError(_training_checkpoint_message(Path(path)))
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in own if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
            if items:
                more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
                parts.append(f"{label} {items[:3]}{more}")
        raise WeightsError(f"{path}: checkpoint does not fit a {backbone} segmenter: {'; '.join(parts)}")
    model.load_state_dict(sd, strict=True)


def _is_training_checkpoint(sd: dict[str, Any], own: dict[str, Any]) -> bool:
    """Whether ``sd`` is a training checkpoint's ``tensors.safetensors`` (:func:`famix_core.checkpoint.save_checkpoint`):
    the model under ``model.``, beside the optimizer's ``optim.*`` and the RNGs' ``rng.*``."""
    return (
        any(k.startswith("model.") for k in sd)
        and all(k.startswith(("model.", "optim.", "rng.")) for k in sd)
        and not any(k.startswith("model.") for k in own)
    )


def _training_checkpoint_message(path: Path) -> str:
    """What to pass instead of a training checkpoint: its training's ``model.safetensors``, named where it is
    the default place (``--ckpt`` left at ``OUT/checkpoints``: ``OUT/checkpoints/iter-N/tensors.safetensors``)."""
    from famix_core.checkpoint import checkpoint_iteration

    try:
        at = f" of iteration {checkpoint_iteration(path.parent)}"
    except (OSError, ValueError, KeyError, TypeError):
        at = ""
    out = path.parent.parent.parent
    model = out / "model.safetensors"
    if path.parent.parent.name == "checkpoints" and model.is_file():
        instead = f"pass the training's model.safetensors ({model})"
    else:
        instead = "pass the training's OUT/model.safetensors (written when it finishes)"
    return f"{path}: a training checkpoint{at} (model, optimizer and RNG state), not a model's weights file; {instead}"


def build_segmenter(
    model_cfg: "ModelConfig",
    style_augmenter: nn.Module | None = None,
    device: torch.device | str | None = None,
    source: str = "gta5",
) -> Segmenter:
    """Build the segmenter of a model config, weights loaded and freeze policy applied.

    ``model.pretrained`` may be ``none``, an open_clip tag, a CLIP state dict (image encoder
    weights are used) or a FAMix segmenter checkpoint (loaded whole, strictly).

    Args:
        model_cfg: :class:`famix_core.config.ModelConfig`.
        style_augmenter: optional training-time layer-1 augmenter.
        device: target device (default CPU).
        source: the training source (``data.source``): ``model.freeze=paper`` follows it.

    Returns:
        A Segmenter in train mode (frozen modules in eval mode).
    """
    pretrained = model_cfg.pretrained
    full_sd: dict[str, torch.Tensor] | None = None
    if pretrained not in ("none", "") and Path(pretrained).expanduser().is_file():
        sd = read_state_dict(Path(pretrained).expanduser())
        if _is_segmenter_state(sd):
            full_sd, pretrained = sd, "none"
    visual = create_visual(model_cfg.backbone, pretrained, cache_dir=model_cfg.cache_dir)
    visual.attnpool = None  # dropped: segmentation uses the spatial features
    dilate_backbone(visual, model_cfg.output_stride)
    model = Segmenter(
        visual,
        num_classes=model_cfg.num_classes,
        output_stride=model_cfg.output_stride,
        aspp_dropout=model_cfg.aspp_dropout,
        style_augmenter=style_augmenter,
        **_head_widths(model_cfg.backbone),
    )
    if full_sd is not None:
        load_strict(model, full_sd, model_cfg.pretrained, model_cfg.backbone)
    model.freeze(model_cfg.freeze, source)
    model.train()
    if device is not None:
        model = model.to(torch.device(device))
    return model


def load_official_checkpoint(
    path: str | Path,
    backbone: str = "RN50",
    output_stride: int = 16,
    num_classes: int = 19,
    device: torch.device | str | None = None,
) -> Segmenter:
    """Load an official FAMix checkpoint (``{"model_state": ...}``, a raw state dict or ``.safetensors``).

    Args:
        path: the checkpoint file.
        backbone: its backbone (``RN50`` or ``RN101`` for the released ones).
        output_stride: the stride it was trained at (16 in the paper).
        num_classes: its classes (19).
        device: target device (default CPU).

    Returns:
        The Segmenter in eval mode.

    Raises:
        WeightsError: missing file, or a checkpoint of another architecture (first mismatched keys named).
    """
    from famix_core.config import ModelConfig

    sd = read_state_dict(path)
    cfg = ModelConfig(backbone=backbone, pretrained="none", output_stride=output_stride, num_classes=num_classes, freeze="none")
    model = build_segmenter(cfg)
    load_strict(model, sd, path, backbone)
    model.eval()
    if device is not None:
        model = model.to(torch.device(device))
    return model
