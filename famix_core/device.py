"""Choosing the compute device once, from ``train.device`` (``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``)."""

from __future__ import annotations

import torch

from famix_core.errors import FamixError

__all__ = ["pick_device", "DeviceError", "activate", "device_rng_state", "set_device_rng_state"]


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


def activate(device: torch.device) -> torch.device:
    """Make a CUDA device the current one, so that nothing opens a context on GPU 0 behind our back.

    The DataLoader's pin-memory thread, ``torch.cuda.*`` calls without a device and cuBLAS handles
    all use the current device; training on ``cuda:1`` without this pins memory through GPU 0.
    A no-op for the CPU.

    Returns:
        ``device``.
    """
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def _cuda_index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


def device_rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """The RNG state of the device a run uses (``{"cuda": state}``; empty for the CPU).

    Only that device's generator: a run on ``cuda:1`` neither saves nor later overwrites the
    generators of the other visible GPUs (which may belong to another process's run).
    """
    if device.type != "cuda":
        return {}
    return {"cuda": torch.cuda.get_rng_state(device)}


def set_device_rng_state(rng: dict[str, torch.Tensor], device: torch.device) -> None:
    """Restore what :func:`device_rng_state` saved, on ``device`` only.

    Checkpoints written before saved every visible device as ``cuda.<i>``; from those, the entry
    of this device's index is used.
    """
    if device.type != "cuda":
        return
    state = rng.get("cuda")
    if state is None:
        state = rng.get(f"cuda.{_cuda_index(device)}")
    if state is not None:
        torch.cuda.set_rng_state(state, device)
