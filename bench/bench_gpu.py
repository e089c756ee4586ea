"""GPU throughput at the paper's shapes (prints, never asserts): training, style op share, mining, evaluation.

On CUDA (RN50 OS16, batch 8, 768² crops, random weights, FAMix style op with a random bank):

  * training for fp32 / bf16 x channels_last off / on: iterations/s, images/s, peak memory, and the
    style op's share of the step (CUDA events around the op, over the timed iterations);
  * mining: seconds per style when the kept patches of many source batches are optimized together
    (``mining.patches_per_step``) vs one source batch at a time (its ~20 kept patches), same code;
  * evaluation: images/s at 2048x1024 with the ensemble [1.0, 0.5], fp32 and bf16;
  * the cost of ``train.deterministic=true`` (fp32, channels_last) against benchmark mode.

Without CUDA every row runs on the CPU at a reduced shape (printed), channels_last rows are
skipped (the option acts on CUDA only), and the numbers say nothing about a GPU.

    .venv/bin/python bench/bench_gpu.py [--iterations N] [--warmup N] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import tempfile
import time


def _config(precision: str, channels_last: bool, deterministic: bool = False):
    from famix_core.config import FamixConfig

    return FamixConfig.model_validate(
        {
            "model": {"backbone": "RN50", "pretrained": "none", "output_stride": 16, "freeze": "paper"},
            "style": {"strategy": "famix", "augment": True, "mix": True},
            "train": {"precision": precision, "channels_last": channels_last, "deterministic": deterministic},
            "eval": {"precision": precision, "scales": [1.0, 0.5]},
        }
    )


class _StyleTimer:
    """Wall time spent in the style op: CUDA events on the GPU, perf_counter on the CPU."""

    def __init__(self, module, cuda: bool):
        import torch

        self.cuda, self.spans, self.active = cuda, [], False
        self._torch = torch
        module.register_forward_pre_hook(self._start)
        module.register_forward_hook(self._stop)

    def _start(self, *_):
        if not self.active:
            return
        if self.cuda:
            self._t0 = self._torch.cuda.Event(enable_timing=True)
            self._t0.record()
        else:
            self._t0 = time.perf_counter()

    def _stop(self, *_):
        if not self.active:
            return
        if self.cuda:
            t1 = self._torch.cuda.Event(enable_timing=True)
            t1.record()
            self.spans.append((self._t0, t1))
        else:
            self.spans.append(time.perf_counter() - self._t0)

    def seconds(self) -> float:
        if self.cuda:
            self._torch.cuda.synchronize()
            return sum(a.elapsed_time(b) for a, b in self.spans) / 1000
        return sum(self.spans)


def bench_train(
    device, precision: str, channels_last: bool, batch: int, crop: int, warmup: int, iters: int, deterministic: bool = False
) -> dict:
    import torch

    from famix_core.probe import random_trainer

    cuda = device.type == "cuda"
    with tempfile.TemporaryDirectory() as tmp:
        t = random_trainer(_config(precision, channels_last, deterministic), device, batch=batch, crop=crop, iterations=warmup + iters, folder=tmp)
        timer = _StyleTimer(t.model.style_augmenter, cuda)
        for _ in range(warmup):
            t.step()
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        timer.active = True
        t0 = time.perf_counter()
        for _ in range(iters):
            t.step()
        if cuda:
            torch.cuda.synchronize(device)
        dt = time.perf_counter() - t0
        style = timer.seconds()
    import resource

    peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"it_s": iters / dt, "img_s": iters * batch / dt, "peak_mb": peak, "style_share": style / dt}


def bench_mining(device, precision: str, group: int, per_batch: int, steps: int) -> tuple[float, float]:
    """Seconds per style: ``group`` patches optimized together vs ``per_batch`` (one source batch) at a time."""
    from famix_core.device import autocast
    from famix_core.mining import optimize_styles
    from famix_core.probe import random_mining_problem, time_units

    out = []
    for n in (group, per_batch):
        problem = random_mining_problem(_config(precision, False).model_copy(), device, n)

        def run(problem=problem):
            with autocast(device, precision):
                optimize_styles(steps=steps, **problem)

        out.append(time_units(run, device, 1, 1) / n)
    return out[0], out[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iterations", type=int, default=None, help="timed training iterations (default 20 on CUDA, 1 on CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed iterations first (default 5 on CUDA, 1 on CPU)")
    p.add_argument("--device", default=None, help="cuda | cpu (default: CUDA when present)")
    args = p.parse_args(argv)

    import torch

    from famix_core.device import activate
    from famix_core.probe import probe_evaluate

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    activate(device)  # cuda:N made current; plain cuda and the CPU left as they are
    if cuda:
        batch, crop, eval_hw, group, per_batch, steps = 8, 768, (1024, 2048), 256, 20, 10
        warmup, iters = args.warmup or 5, args.iterations or 20
        print(f"{torch.cuda.get_device_name(device)}: RN50 OS16, batch {batch}, crop {crop}, random weights; "
              f"{iters} timed iterations after {warmup} warm-up")  # fmt: skip
    else:
        batch, crop, eval_hw, group, per_batch, steps = 2, 96, (128, 256), 4, 2, 1
        warmup, iters = args.warmup or 1, args.iterations or 1
        print(f"no CUDA: CPU at a REDUCED shape (RN50 OS16, batch {batch}, crop {crop}; evaluation {eval_hw[1]}x{eval_hw[0]}; "
              f"mining {group} vs {per_batch} patches), torch threads {torch.get_num_threads()}: "
              "these numbers say nothing about a GPU")  # fmt: skip

    print(f"{'precision':9} {'ch_last':7} {'it/s':>7} {'img/s':>7} {'peak MB':>8} {'style op':>8}"
          + ("" if cuda else "   (peak: process RSS)"))
    rows: dict[tuple[str, bool], dict] = {}
    for precision in ("fp32", "bf16"):
        for cl in (False, True):
            if cl and not cuda:
                print(f"{precision:9} {'on':7} {'(channels_last acts on CUDA only)':>33}")
                continue
            r = rows[precision, cl] = bench_train(device, precision, cl, batch, crop, warmup, iters)
            print(f"{precision:9} {'on' if cl else 'off':7} {r['it_s']:7.2f} {r['img_s']:7.1f} {r['peak_mb']:8.0f} "
                  f"{100 * r['style_share']:7.1f}%")  # fmt: skip
    if cuda:
        total = 40000 / rows["fp32", True]["it_s"] / 3600
        print(f"a 40k-iteration paper training at fp32/channels_last: about {total:.1f} GPU-hours here")

    for precision in ("fp32", "bf16"):
        together, alone = bench_mining(device, precision, group, per_batch, steps)
        print(f"mining {precision}: {together * 100 / steps:.3f} s/style ({group} patches together) vs "
              f"{alone * 100 / steps:.3f} s/style (one source batch, {per_batch} patches): "
              f"{alone / together:.1f}x (100 steps per style; official code: 16.4 s/style on 2 CPU cores)")  # fmt: skip

    cfg = _config("fp32", True)
    for precision in ("fp32", "bf16"):
        c = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"precision": precision})})
        s = probe_evaluate(c, device, height=eval_hw[0], width=eval_hw[1], warmup=1, iters=2 if cuda else 1)
        print(f"evaluation {precision} at {eval_hw[1]}x{eval_hw[0]}, scales [1.0, 0.5]: {1 / s:.2f} images/s")

    if cuda:  # last: the deterministic flags are process-wide (each Trainer sets them again)
        fast = rows["fp32", True]["it_s"]  # the table's row: the same training in benchmark mode
        det = bench_train(device, "fp32", True, batch, crop, warmup, iters, deterministic=True)["it_s"]
        print(f"train.deterministic=true, fp32 channels_last: {det:.2f} it/s vs {fast:.2f} in benchmark mode "
              f"({fast / det:.2f}x slower)")  # fmt: skip
    else:
        print("train.deterministic: acts on CUDA only (the CPU is bit-exact anyway)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
