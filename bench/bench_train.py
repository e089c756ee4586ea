"""Training throughput at smoke scale: famix-tiny, batch 4, crop 128, synthetic 128x256 scenes.

Prints iterations/s, images/s and peak memory per (device, freeze policy, style strategy),
plus the ratio of each row to the first one of its device. CPU always; CUDA when present.
Then the two CPU shortcuts of a training step, each against the path it replaces (same
results): the ASPP's atrous backward on famix-tiny's 8x8 map, and the decoded-split cache.

    .venv/bin/python bench/bench_train.py [--iterations 40] [--warmup 5] [--data synthetic|random]
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import tempfile
import time
from pathlib import Path


class _Random:
    """Random (image, label) pairs of a fixed size (no decoding cost): the model's own throughput."""

    def __init__(self, n: int, size: int, seed: int = 0):
        import torch

        g = torch.Generator().manual_seed(seed)
        self.images = torch.randn(n, 3, size, size, generator=g)
        self.labels = torch.randint(0, 19, (n, size, size), generator=g)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], self.labels[i]


def _config(root: str, device: str, freeze: str, strategy: str, iterations: int, batch: int, crop: int):
    from famix_core.config import FamixConfig

    style = {"strategy": strategy} if strategy != "mixstyle" else {"strategy": "famix", "augment": False, "mix": True}
    return FamixConfig.model_validate(
        {
            "model": {"backbone": "famix-tiny", "pretrained": "none", "freeze": freeze},
            "style": style,
            "data": {"root": root, "crop_size": crop,
                     "synthetic": {"height": 128, "width": 256, "train_images": 16, "val_images": 2}},
            "train": {"iterations": iterations, "batch_size": batch, "device": device,
                      "checkpoint_every": 10**6, "log_every": 10**6},
        }
    )


def _peak_mb(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_one(root: str, device: str, freeze: str, strategy: str, args, dataset=None) -> dict:
    """Time ``args.iterations`` training steps after ``args.warmup`` untimed ones."""
    import torch

    from famix_core.train import Trainer

    total = args.warmup + args.iterations
    cfg = _config(root, device, freeze, strategy, total, args.batch, args.crop)
    with tempfile.TemporaryDirectory() as out:
        t = Trainer(cfg, out, dataset=dataset)
        for _ in range(args.warmup):
            t.step()
        if t.device.type == "cuda":
            torch.cuda.synchronize(t.device)
            torch.cuda.reset_peak_memory_stats(t.device)
        t0 = time.perf_counter()
        for _ in range(args.iterations):
            t.step()
        if t.device.type == "cuda":
            torch.cuda.synchronize(t.device)
        dt = time.perf_counter() - t0
    return {"it_s": args.iterations / dt, "img_s": args.iterations * args.batch / dt, "peak_mb": _peak_mb(t.device)}


@contextlib.contextmanager
def _plain_atrous():
    """Run the ASPP's atrous branches as plain ``nn.Conv2d`` (the path the shortcut replaces)."""
    from torch import nn

    from famix_core.models import deeplab

    fast = deeplab.AtrousConv2d.forward
    deeplab.AtrousConv2d.forward = nn.Conv2d.forward  # type: ignore[method-assign]
    try:
        yield
    finally:
        deeplab.AtrousConv2d.forward = fast  # type: ignore[method-assign]


def bench_shortcuts(root: str, batch: int, crop: int, reps: int = 15) -> None:
    """Median ms of the shortcut and of the path it replaces, measured alternately (same load)."""
    import torch

    from famix_core import data
    from famix_core.config import DataConfig, ModelConfig, SynthConfig
    from famix_core.models.segmenter import build_segmenter
    from famix_core.train import Trainer
    from timing import time_all  # bench/timing.py, beside this script

    # the ASPP alone, on famix-tiny's deepest feature at this crop
    model = build_segmenter(ModelConfig(backbone="famix-tiny", pretrained="none", freeze="none"))
    aspp = model.classifier.aspp.train()
    with torch.no_grad():
        deep = model.features(torch.randn(batch, 3, crop, crop))["layer4"]  # (B, C, crop/16, crop/16)
    x = deep.clone().requires_grad_()

    def aspp_step():
        aspp(x).sum().backward()

    def aspp_plain():
        with _plain_atrous():
            aspp_step()

    # reading the synthetic source: from memory, or decoded on every read
    dc = DataConfig(root=root, crop_size=crop, synthetic=SynthConfig(height=128, width=256, train_images=16, val_images=2))
    cached = data.build_dataset(dc, dc.source, "train", train=True)
    plain = data.build_dataset(dc, dc.source, "train", train=True)
    plain._cache = None
    n = len(cached)
    [cached[i] for i in range(n)]  # fill the cache

    def read(ds):
        return lambda: [ds[i] for i in range(n)]

    # a whole training step with both shortcuts, or neither; batches loaded in this process, as a
    # 1-CPU stage of the shipped sweeps does (so the cache toggled here is the one it reads)
    cfg = _config(root, "cpu", "paper", "mixstyle", 10**6, batch, crop)  # the frozen MixStyle row
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"num_workers": 0})})
    trainer = Trainer(cfg, Path(root).parent / "shortcut-train")  # inside the benchmark's temporary dir
    cache: dict = {}
    trainer.dataset._cache = cache
    [trainer.step() for _ in range(3)]  # warm-up, fills the cache

    def step_fast():
        trainer.dataset._cache = cache
        trainer.step()

    def step_plain():
        trainer.dataset._cache = None
        with _plain_atrous():
            trainer.step()

    rows = [(f"ASPP forward+backward, batch {batch}, {tuple(deep.shape[1:])}", aspp_step, aspp_plain, 1),
            (f"training item, {dc.synthetic.height}x{dc.synthetic.width} source, crop {crop}", read(cached), read(plain), n),
            (f"training step, frozen MixStyle, batch {batch}", step_fast, step_plain, 1)]
    print(f"\nCPU shortcuts (median of {reps}, alternating; same results as the path they replace)")
    print(f"{'':48} {'shortcut ms':>11} {'plain ms':>9} {'speed-up':>8}")
    for name, fast_fn, plain_fn, per in rows:
        fast_s, plain_s = time_all([fast_fn, plain_fn], torch.device("cpu"), reps)
        fast_ms, plain_ms = fast_s * 1000, plain_s * 1000
        print(f"{name:48} {fast_ms / per:11.2f} {plain_ms / per:9.2f} {plain_ms / fast_ms:7.2f}x")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iterations", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--data", choices=("synthetic", "random"), default="synthetic")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = p.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = [("paper", "none"), ("paper", "mixstyle"), ("none", "none")]
    with tempfile.TemporaryDirectory() as tmp:
        root = str(Path(tmp) / "data")
        dataset = _Random(16, args.crop) if args.data == "random" else None
        if dataset is None:
            from famix_core.config import DataConfig, SynthConfig
            from famix_core.data.synth.benchmark import ensure_synthetic

            t0 = time.perf_counter()
            ensure_synthetic(DataConfig(root=root, synthetic=SynthConfig(height=128, width=256, train_images=16, val_images=2)))
            print(f"synthetic benchmark generated in {time.perf_counter() - t0:.1f} s")
        print(f"famix-tiny, batch {args.batch}, crop {args.crop}, data {args.data}, "
              f"{args.iterations} timed iterations after {args.warmup} warm-up, torch threads {torch.get_num_threads()}")
        print(f"{'device':6} {'freeze':6} {'style':9} {'it/s':>7} {'img/s':>7} {'peak MB':>8} {'vs first':>8}")
        for dev in devices:
            first = None
            for freeze, strategy in rows:
                r = bench_one(root, dev, freeze, strategy, args, dataset)
                first = first or r["it_s"]
                print(f"{dev:6} {freeze:6} {strategy:9} {r['it_s']:7.2f} {r['img_s']:7.1f} {r['peak_mb']:8.0f} {r['it_s'] / first:7.2f}x")
        print("300 iterations at the first row's speed take about "
              f"{300 / first:.0f} s on {devices[-1]}")
        bench_shortcuts(root, 8, args.crop)  # the smoke profile's batch
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
