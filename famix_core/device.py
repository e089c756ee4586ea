"""Choosing the compute device once, from ``train.device`` (``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``)."""

from __future__ import annotations

import torch

from famix_core.errors import FamixError

__all__ = ["pick_device", "DeviceError"]


class DeviceError(FamixError):
    """The requested device does not exist on this machine."""


def pick_device(spec: str = "auto") -> torch.device:
    """Resolve a device spec.

    Args:
        spec: ``auto`` (first CUDA device when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.

    Returns:
        The torch device.

    Raises:
        DeviceError: CUDA asked for but unavailable, or a malformed spec.
    """
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise DeviceError(f"train.device: unknown device {spec!r} (expected auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise DeviceError(f"train.device: unsupported device {spec!r} (expected auto, cpu, cuda or cuda:N)")
    if not torch.cuda.is_available():
        raise DeviceError(f"train.device={spec}: CUDA is not available on this machine; use train.device=auto or cpu")
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise DeviceError(
            f"train.device={spec}: only {torch.cuda.device_count()} CUDA device(s) present"
        )
    return dev
