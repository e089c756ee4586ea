"""Timing shared by the benchmarks: callables measured in turns, median of each."""

from __future__ import annotations

import statistics
import time
from typing import Callable, Sequence

import torch

__all__ = ["time_all"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_all(fns: Sequence[Callable[[], object]], device: torch.device, repeats: int) -> list[float]:
    """Median seconds of each callable, run in turns (a shared machine's load hits all alike)."""
    for fn in fns:  # warm-up
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, acc in zip(fns, times):
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            acc.append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]
