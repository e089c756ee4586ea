"""DeepLabv3+ decoder with the official FAMix / VainF state-dict layout.

Keys (under the segmenter's ``classifier.`` prefix):
  * ``project.{0,1}``: low-level 1x1 conv (C_low -> 48) + BN (+ ReLU at index 2);
  * ``aspp.convs.{0..4}``: 1x1, three 3x3 atrous convs, image pooling (pool, conv ``.1``, BN ``.2``);
  * ``aspp.project.{0,1}``: 1x1 (5*256 -> 256) + BN (+ ReLU, Dropout);
  * ``classifier.{0,1,3}``: 3x3 conv (48+256 -> 256) + BN (+ ReLU at 2) + 1x1 to classes.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

__all__ = ["ASPP", "AtrousConv2d", "DeepLabHeadV3Plus", "aspp_rates"]

_ASPP_RATES: dict[int, tuple[int, int, int]] = {
    8: (12, 24, 36),
    16: (6, 12, 18),
    32: (6, 12, 18),  # CLIP's own stride: no dilation in the backbone, the OS-16 rates are kept
}


def aspp_rates(output_stride: int) -> tuple[int, int, int]:
    """Atrous rates of the three 3x3 ASPP branches for an output stride (8, 16 or 32)."""
    try:
        return _ASPP_RATES[output_stride]
    except KeyError:
        raise ValueError(f"output_stride must be one of {sorted(_ASPP_RATES)}, got {output_stride}") from None


class _CentreTapBackward(torch.autograd.Function):
    """A 3x3 conv (padding = dilation) whose off-centre taps read only padding: the usual forward,
    the backward of the 1x1 conv by the centre tap (the off-centre taps get exact zeros)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, dilation: int) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return F.conv2d(x, weight, None, 1, dilation, dilation)

    @staticmethod
    @once_differentiable  # a second derivative through it raises instead of being silently wrong
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        centre = weight[:, :, 1:2, 1:2]  # (C_out, C_in, 1, 1)
        grad_x, grad_centre, _ = torch.ops.aten.convolution_backward(
            grad, x, centre, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1, [need_x, need_w, False]
        )
        grad_w = None
        if need_w:
            grad_w = torch.zeros_like(weight)
            grad_w[:, :, 1:2, 1:2] = grad_centre
        return grad_x, grad_w, None


class AtrousConv2d(nn.Conv2d):
    """A 3x3 atrous conv (padding = dilation, no bias; an ``nn.Conv2d``, same state dict).

    On a feature map no larger than the dilation (famix-tiny's 8x8 at crop 128 and output stride
    16, under rates 12 and 18), each output's eight off-centre taps read only zero padding. The
    forward stays the usual conv; on the CPU, without autocast, the backward then runs as the 1x1
    conv of the centre tap: the same gradients (bit for bit in the smoke ablation's eight
    trainings, whose stored weights matched those of the plain path; tests/test_model.py checks
    them to 1e-5), and the ASPP's forward + backward 1.4 to 1.6x faster (``make bench``). Larger
    maps (every paper profile: 48x48 at crop 768) and other devices take the plain path.
    """

    def __init__(self, cin: int, cout: int, dilation: int):
        super().__init__(cin, cout, 3, padding=dilation, dilation=dilation, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.dilation[0]
        h, w = x.shape[-2:]
        if (
            h <= d
            and w <= d
            and x.device.type == "cpu"
            and not torch.is_autocast_enabled("cpu")
            and torch.is_grad_enabled()
            and (x.requires_grad or self.weight.requires_grad)
        ):
            return _CentreTapBackward.apply(x, self.weight, d)
        return super().forward(x)


def _conv_bn_relu(cin: int, cout: int, kernel: int, dilation: int = 1) -> nn.Sequential:
    if kernel == 3 and dilation > 1:
        conv: nn.Conv2d = AtrousConv2d(cin, cout, dilation)
    else:
        conv = nn.Conv2d(cin, cout, kernel, padding=dilation if kernel == 3 else 0, dilation=dilation, bias=False)
    return nn.Sequential(
        conv,
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class _ASPPPooling(nn.Sequential):
    """Image-level branch: global average pool -> 1x1 conv -> BN -> ReLU, broadcast back."""

    def __init__(self, cin: int, cout: int):
        super().__init__(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(cin, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        y = super().forward(x)  # (B, C, 1, 1)
        return F.interpolate(y, size=size, mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (1x1, three 3x3 atrous, image pooling; concat -> 1x1 -> BN -> ReLU -> Dropout).

    Args:
        in_channels: channels of the deepest backbone feature.
        rates: dilation of the three 3x3 branches.
        out_channels: width of every branch and of the output (256 in the paper).
        dropout: dropout after the projection (0.1 in the paper).
    """

    def __init__(self, in_channels: int, rates: Sequence[int], out_channels: int = 256, dropout: float = 0.1):
        super().__init__()
        branches: list[nn.Module] = [_conv_bn_relu(in_channels, out_channels, 1)]
        branches += [_conv_bn_relu(in_channels, out_channels, 3, dilation=r) for r in rates]
        branches.append(_ASPPPooling(in_channels, out_channels))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(
            nn.Conv2d(len(branches) * out_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, C_in, h, w). Returns: (B, out_channels, h, w)."""
        return self.project(torch.cat([conv(x) for conv in self.convs], dim=1))  # (B, 5*C, h, w) -> (B, C, h, w)


class DeepLabHeadV3Plus(nn.Module):
    """DeepLabv3+ decoder: ASPP on the deep feature, fused with the projected low-level feature.

    Args:
        in_channels: channels of the deep feature (layer4; 2048 for RN50).
        low_level_in: channels of the low-level feature (layer1; 256 for RN50).
        num_classes: output classes.
        rates: ASPP atrous rates (see :func:`aspp_rates`).
        aspp_channels: ASPP / decoder width (256 in the paper).
        low_level_channels: low-level projection width (48 in the paper).
        dropout: ASPP dropout.
    """

    def __init__(
        self,
        in_channels: int,
        low_level_in: int,
        num_classes: int,
        rates: Sequence[int] = (6, 12, 18),
        aspp_channels: int = 256,
        low_level_channels: int = 48,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.project = _conv_bn_relu(low_level_in, low_level_channels, 1)
        self.aspp = ASPP(in_channels, rates, aspp_channels, dropout)
        self.classifier = nn.Sequential(
            nn.Conv2d(low_level_channels + aspp_channels, aspp_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(aspp_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(aspp_channels, num_classes, 1),
        )
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, low_level: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Decode.

        Args:
            low_level: layer-1 feature (B, C_low, H/4, W/4).
            out: deepest feature (B, C_in, H/OS, W/OS).

        Returns:
            Logits (B, num_classes, H/4, W/4).
        """
        low = self.project(low_level)  # (B, 48, H/4, W/4)
        deep = self.aspp(out)  # (B, 256, H/OS, W/OS)
        deep = F.interpolate(deep, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(torch.cat([low, deep], dim=1))  # (B, 304, H/4, W/4) -> (B, K, H/4, W/4)
