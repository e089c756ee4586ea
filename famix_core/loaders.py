"""Input pipelines: worker counts from the allocation, DataLoader options, a loader benchmark.

Decoding the source images is CPU work (8 GTA5 PNGs of 1914x1052 per step at paper scale),
so training and evaluation read through DataLoader workers:

  * ``data.num_workers`` unset: the running stage's ``resources.<kind>.cpus`` (:func:`stage_cpus`),
    else ``SLURM_CPUS_PER_TASK`` (the job's allocation), else the CPUs this process may run on
    (``os.sched_getaffinity``), minus one for the main process, capped at :data:`MAX_AUTO_WORKERS`;
  * training: ``persistent_workers`` (no re-spawn when the loader restarts), ``prefetch_factor``
    batches per worker, ``pin_memory`` on CUDA; batches do not depend on the worker count
    (``famix_core.train.SeededItems``), so ``data.num_workers`` is no part of any stage key;
  * evaluation: one full-resolution image at a time (sizes differ), pinned on CUDA.

Style mining reads its source batches in the main process: its crops come from the global RNG
stream seeded by ``mining.seed``, which workers would split differently.
"""

from __future__ import annotations

import functools
import os
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator

from famix_core.text import count

if TYPE_CHECKING:
    import torch

    from famix_core.config import FamixConfig

__all__ = ["MAX_AUTO_WORKERS", "PREFETCH_FACTOR", "allocated_cpus", "stage_cpus", "resolve_workers", "loader_options", "bench_loaders"]

MAX_AUTO_WORKERS = 16
"""Cap of the automatic worker count (more rarely helps one GPU and costs host memory)."""

PREFETCH_FACTOR = 2
"""Batches each worker prepares ahead."""


_STAGE_CPUS: list[int] = []  # innermost stage_cpus() block last


@contextmanager
def stage_cpus(cpus: int | None) -> Iterator[None]:
    """Within the block, :func:`allocated_cpus` is ``cpus`` (None or 0: unchanged).

    The orchestrator runs each stage under its ``resources.<kind>.cpus``: a 1-CPU stage running
    beside another one on the same machine loads its batches in its own process instead of
    starting a DataLoader worker that competes for the other stage's core.
    """
    if not cpus:
        yield
        return
    _STAGE_CPUS.append(int(cpus))
    try:
        yield
    finally:
        _STAGE_CPUS.pop()


def allocated_cpus() -> int:
    """CPUs this process may use: the running stage's (:func:`stage_cpus`), else ``SLURM_CPUS_PER_TASK``
    when set (a job's allocation), else its affinity mask."""
    if _STAGE_CPUS:
        return _STAGE_CPUS[-1]
    raw = os.environ.get("SLURM_CPUS_PER_TASK", "").strip()
    if raw.isdigit() and int(raw) > 0:
        return int(raw)
    if raw:
        _unreadable_allocation(raw)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@functools.lru_cache(maxsize=None)
def _unreadable_allocation(raw: str) -> None:
    """One notice per value: a ``SLURM_CPUS_PER_TASK`` that is no CPU count was ignored in silence."""
    import warnings

    from famix_core.errors import FamixWarning

    warnings.warn(f"SLURM_CPUS_PER_TASK={raw!r} is not a positive CPU count; ignored (using the CPUs this process may run on)", FamixWarning, stacklevel=3)


def resolve_workers(num_workers: int | None) -> int:
    """``data.num_workers``, or when unset (None) the allocation's CPUs minus one, capped at :data:`MAX_AUTO_WORKERS`."""
    if num_workers is not None:
        return num_workers
    return max(0, min(MAX_AUTO_WORKERS, allocated_cpus() - 1))


def loader_options(num_workers: int, device: "torch.device", *, persistent: bool) -> dict[str, Any]:
    """DataLoader keyword arguments for a worker count and a device.

    Args:
        num_workers: worker processes (0: load in the main process).
        device: where the batches go (pinned host memory for CUDA, so the copy is asynchronous).
        persistent: keep the workers alive between epochs / loader restarts (training).

    Returns:
        ``num_workers``, ``pin_memory``, ``persistent_workers``, ``prefetch_factor``.
    """
    return {
        "num_workers": num_workers,
        "pin_memory": device.type == "cuda",
        "persistent_workers": persistent and num_workers > 0,
        "prefetch_factor": PREFETCH_FACTOR if num_workers > 0 else None,
    }


def _rate(loader, batches: int, warmup: int) -> tuple[float, int]:
    """Images per second over ``batches`` batches after ``warmup`` (worker start-up excluded)."""
    it = iter(loader)
    for _ in range(warmup):
        next(it)
    n, t0 = 0, time.perf_counter()
    for _ in range(batches):
        try:
            images = next(it)[0]
        except StopIteration:
            break
        n += images.shape[0] if hasattr(images, "shape") else len(images)
    return n / max(time.perf_counter() - t0, 1e-9), n


def bench_loaders(cfg: "FamixConfig", *, batches: int = 20, warmup: int = 2, print_fn=print) -> dict[str, float]:
    """Measure the loaders alone (no model): training batches of the source, full-resolution evaluation images.

    Args:
        cfg: the engine config (``data.*``, ``train.batch_size``, ``eval.domains``).
        batches: timed batches per loader.
        warmup: untimed batches first (workers start, caches fill).
        print_fn: where the lines go.

    Returns:
        ``{"train_img_s", "eval_img_s", "workers"}``.
    """
    import torch
    from torch.utils.data import DataLoader

    from famix_core.data import build_dataset
    from famix_core.train import BatchSchedule, ScheduleSampler, SeededItems, collate_pairs

    workers = resolve_workers(cfg.data.num_workers)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dc, tc = cfg.data, cfg.train
    ds = build_dataset(dc, dc.source, "train", train=True, crop_size=dc.crop_size)
    sampler = ScheduleSampler(BatchSchedule(len(ds), tc.batch_size, tc.seed), 0, warmup + batches)
    train_loader = DataLoader(SeededItems(ds, tc.seed), batch_sampler=sampler, collate_fn=collate_pairs,
                              **loader_options(workers, device, persistent=False))  # fmt: skip
    train_rate, n = _rate(train_loader, batches, warmup)
    print_fn(f"train loader: {dc.source}, batch {tc.batch_size}, crop {dc.crop_size}, {workers} workers: "
             f"{train_rate:.1f} images/s ({count(n, 'image')} timed)")  # fmt: skip
    domain = cfg.eval.domains[0]
    eds = build_dataset(dc, domain, cfg.eval.split, train=False, max_items=warmup + batches)
    eval_loader = DataLoader(eds, batch_size=1, **loader_options(workers, device, persistent=False))
    eval_rate, n = _rate(eval_loader, batches, min(warmup, max(0, len(eds) - 1)))
    print_fn(f"eval loader:  {domain}, full resolution, one image at a time, {workers} workers: "
             f"{eval_rate:.1f} images/s ({count(n, 'image')} timed)")  # fmt: skip
    return {"train_img_s": train_rate, "eval_img_s": eval_rate, "workers": float(workers)}
