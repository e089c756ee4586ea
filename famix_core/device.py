"""Choosing the compute device once, from ``train.device`` (``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``)."""

from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING, Callable

import torch

from famix_core.config import parse_device_spec
from famix_core.errors import FamixError, FamixWarning
from famix_core.text import count

if TYPE_CHECKING:
    from famix_core.config import FamixConfig

__all__ = ["pick_device", "stage_device", "autocast", "chunk_for_memory", "configure_kernels", "CUBLAS_WORKSPACE", "CpuFallbackWarning", "DeviceError", "activate", "device_rng_state", "set_device_rng_state"]


class DeviceError(FamixError):
    """The requested device does not exist on this machine."""


class CpuFallbackWarning(FamixWarning):
    """``train.device=auto`` found no GPU and the stage runs on the CPU."""


NO_GPU_FIX = "give the stage a GPU (backend resources / slurm gpus) or set train.device=cpu"
"""How a stage that ``auto`` without the CPU fallback refused is mended (:func:`pick_device`'s ``fix``)."""


def pick_device(spec: str = "auto", *, cpu_fallback: bool = True, fix: str = NO_GPU_FIX, set_as: str = "train.device=") -> torch.device:
    """Resolve a device spec.

    Args:
        spec: ``auto`` (first CUDA device when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.
        cpu_fallback: what ``auto`` does without a GPU: run on the CPU with a
            :class:`CpuFallbackWarning` (True), or refuse (False; the paper profile, where a stage
            given no GPU by its scheduler would otherwise train for days on the CPU unnoticed).
        fix: what the refusal of ``auto`` without a GPU and without fallback says to do.
        set_as: how the user gives the spec, for the messages: ``train.device=`` (a config key) or an
            option with its space (``--device `` of ``famix report``).

    Returns:
        The torch device.

    Raises:
        DeviceError: CUDA asked for but unavailable, ``auto`` without a GPU and without fallback,
            or a malformed spec.
    """
    try:
        spec = parse_device_spec(spec or "auto")
    except ValueError as e:
        raise DeviceError(f"{set_as.rstrip('= ')}: {e}") from None
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        seen = "no CUDA device visible" + (f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else "")
        if not cpu_fallback:
            raise DeviceError(
                f"{set_as}auto: {seen} and this profile does not fall back to the CPU; {fix}"
            )
        warnings.warn(f"{set_as}auto: {seen}; running on the CPU", CpuFallbackWarning, stacklevel=2)
        return torch.device("cpu")
    dev = torch.device(spec)
    if dev.type == "cpu":
        return dev
    if not torch.cuda.is_available():
        raise DeviceError(f"{set_as}{spec}: CUDA is not available on this machine; use {set_as}auto or cpu")
    n = torch.cuda.device_count()
    if dev.index is not None and dev.index >= n:
        present = "cuda:0" if n == 1 else f"cuda:0 to cuda:{n - 1}"
        raise DeviceError(
            f"{set_as}{spec}: this machine has {count(n, 'CUDA device')} ({present}); "
            f"use {set_as}auto, cpu or {present}"
        )
    return dev


CUBLAS_WORKSPACE = ":4096:8"
"""``CUBLAS_WORKSPACE_CONFIG`` of the deterministic mode (cuBLAS needs it for reproducible GEMMs)."""


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """The autocast context of a stage's precision: bf16 autocast for ``bf16``, a disabled one for ``fp32``."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def configure_kernels(device: torch.device, *, deterministic: bool, benchmark: bool) -> None:
    """Choose CUDA kernels for a stage (a no-op on the CPU, whose runs are bit-exact anyway).

    Args:
        device: the stage's device.
        deterministic: deterministic mode: ``CUBLAS_WORKSPACE_CONFIG`` (set when absent),
            ``torch.use_deterministic_algorithms(True, warn_only=True)``, cuDNN deterministic, no
            benchmark. Kernels without a deterministic CUDA version (bilinear-interpolate and
            adaptive-avg-pool backward, 2-d NLL loss) still run and warn once: see docs/gpu.md.
        benchmark: otherwise, ``cudnn.benchmark`` (True for training's fixed-size crops, False for
            evaluation's varying image sizes, where every new size would be re-tuned).
    """
    if device.type != "cuda":
        return
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    else:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False
        torch.backends.cudnn.benchmark = benchmark


def stage_device(cfg: "FamixConfig") -> torch.device:
    """The device of a stage (``train.device`` / ``train.cpu_fallback``), made current (:func:`activate`)."""
    return activate(pick_device(cfg.train.device, cpu_fallback=cfg.train.cpu_fallback))


def activate(device: torch.device) -> torch.device:
    """Make a CUDA device the current one, so that nothing opens a context on GPU 0 behind our back.

    The DataLoader's pin-memory thread, ``torch.cuda.*`` calls without a device and cuBLAS handles
    all use the current device; training on ``cuda:1`` without this pins memory through GPU 0.
    A no-op for the CPU and for plain ``cuda`` (already the current device; some torch releases
    refuse ``set_device`` without an index).

    Returns:
        ``device``.
    """
    if device.type == "cuda" and device.index is not None:
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


def chunk_for_memory(
    device: torch.device,
    probe: Callable[[int], object],
    *,
    default: int,
    probe_items: int = 2,
    fraction: float = 0.5,
    cap: int = 1024,
) -> int:
    """How many items of a forward/backward fit in the GPU's free memory (``default`` on the CPU).

    On CUDA, ``probe(probe_items)`` runs once (e.g. a forward/backward of two mining patches);
    its peak memory per item sizes the chunk to ``fraction`` of the free memory.

    Args:
        device: where the work runs.
        probe: runs the work for a given number of items.
        default: the chunk on the CPU (and the result's fallback when the probe measures nothing).
        probe_items: items the probe runs.
        fraction: share of the free memory to plan for (the rest: allocator slack, other tensors).
        cap: largest chunk returned.

    Returns:
        Items per chunk, in ``[1, cap]``.
    """
    if device.type != "cuda":
        return default
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    probe(probe_items)
    per_item = (torch.cuda.max_memory_allocated(device) - base) / probe_items
    free, _ = torch.cuda.mem_get_info(device)
    if per_item <= 0:
        return default
    return int(max(1, min(cap, fraction * free // per_item)))
