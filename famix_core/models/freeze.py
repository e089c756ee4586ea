"""Freeze policies: which backbone modules stay fixed, named by a stage boundary.

A policy maps a ModifiedResNet (and the training source) to the list of its
submodules that are frozen (parameters without gradient, kept in eval mode so
BatchNorm statistics do not move). The registry holds exactly
:data:`famix_core.config.FREEZE_POLICIES`.

``paper`` follows the source as the official FAMix ``main.py`` does
(``utils/freeze.py``): GTA5 and SYNTHIA freeze up to ``layer4[1]``
(``freeze_1_2_3_p4``: everything but the last block of layer4), Cityscapes up to
``layer3`` (``freeze_1_2_3``: all of layer4 trains).
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from famix_core.errors import FamixError

__all__ = ["FREEZE_REGISTRY", "frozen_modules", "stem_modules"]

_STEM = ("conv1", "bn1", "act1", "conv2", "bn2", "act2", "conv3", "bn3", "act3", "avgpool")


def stem_modules(backbone: nn.Module) -> list[nn.Module]:
    """The 3-conv stem of a ModifiedResNet (conv1..bn3 and its avg-pool)."""
    return [getattr(backbone, n) for n in _STEM if getattr(backbone, n, None) is not None]


def _none(backbone: nn.Module, source: str) -> list[nn.Module]:
    return []


def _up_to_layer3(backbone: nn.Module, source: str) -> list[nn.Module]:
    return stem_modules(backbone) + [backbone.layer1, backbone.layer2, backbone.layer3]


def _paper(backbone: nn.Module, source: str) -> list[nn.Module]:
    if source == "cityscapes":  # a real source: the official code trains all of layer4
        return _up_to_layer3(backbone, source)
    # GTA5 / SYNTHIA: everything but the last bottleneck of layer4 (layer4[2] for RN50)
    return _up_to_layer3(backbone, source) + list(backbone.layer4)[:-1]


def _all(backbone: nn.Module, source: str) -> list[nn.Module]:
    return [backbone]


FREEZE_REGISTRY: dict[str, Callable[[nn.Module, str], list[nn.Module]]] = {
    "none": _none,
    "layer3": _up_to_layer3,
    "paper": _paper,
    "all": _all,
}
"""Policy name -> function(backbone, source) -> frozen modules."""


def frozen_modules(backbone: nn.Module, policy: str, source: str = "gta5") -> list[nn.Module]:
    """The backbone modules a policy freezes when training on ``source`` (``gta5``, ``synthia``, ``cityscapes``).

    Raises:
        FamixError: an unknown policy; the message lists the known ones.
    """
    try:
        fn = FREEZE_REGISTRY[policy]
    except KeyError:
        raise FamixError(f"model.freeze: unknown freeze policy {policy!r} (known: {', '.join(FREEZE_REGISTRY)})") from None
    return fn(backbone, source)
