"""CLIP pretraining on the caption corpus: time per step, projected time of the shipped recipe, zero-shot scores.

Prints (2 CPU cores, no GPU):
  * the shipped weights' zero-shot scores on held-out rendered images (style top-1 vs chance,
    class-name R-precision vs chance) and the time the check takes;
  * corpus rendering time per image and training time per step at the shipped recipe's batch size,
    and the projected wall time of the shipped recipe (corpus + steps), next to the time recorded
    when the shipped weights were made (``famix_core/weights/famix-tiny-synth.json``).

    .venv/bin/python bench/bench_pretrain.py [--steps 10]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from importlib import resources


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10, help="timed training steps")
    args = ap.parse_args()

    import torch

    from famix_core.data.captions import build_corpus
    from famix_core.models.clip import create_clip
    from famix_core.pretrain import PretrainConfig, pretrain_clip
    from famix_core.zero_shot import zero_shot

    load = os.getloadavg()[0]
    shipped = json.loads(resources.files("famix_core.weights").joinpath("famix-tiny-synth.json").read_text())
    cfg = PretrainConfig.model_validate(shipped["config"])

    t0 = time.perf_counter()
    z = zero_shot(create_clip(cfg.backbone, "famix-synth"), cfg.backbone, cfg.corpus)
    t_zero = time.perf_counter() - t0
    print(f"zero-shot on the shipped famix-synth weights ({t_zero:.1f} s):")
    print(f"  style top-1 {z['style_top1']:.3f} vs chance {z['style_chance']:.3f}"
          f" ({z['style_top1'] / z['style_chance']:.1f}x; target >= 3x; {z['style_images']} held-out images)")
    print(f"  class-name R-precision {z['class_r_precision']:.3f} vs chance {z['class_chance']:.3f}"
          f" ({z['class_r_precision'] / z['class_chance']:.1f}x; {z['class_patches']} held-out patches)")

    small = cfg.corpus.model_copy(update={"scenes": 25})
    t0 = time.perf_counter()
    build_corpus(small)
    per_image = (time.perf_counter() - t0) / (small.scenes * small.styles_per_scene)
    timed = cfg.model_copy(update={"corpus": small, "steps": args.steps + 2, "warmup": 1, "log_every": 10**6})
    t0 = time.perf_counter()
    pretrain_clip(timed, None, evaluate=False)
    t_total = time.perf_counter() - t0
    per_step = (t_total - per_image * small.scenes * small.styles_per_scene) / timed.steps
    n_images = cfg.corpus.scenes * cfg.corpus.styles_per_scene
    projected = per_image * n_images + per_step * cfg.steps
    print(f"pretraining ({cfg.threads or torch.get_num_threads()} torch thread(s), load {load:.1f} at the start):")
    print(f"  corpus {1000 * per_image:.1f} ms/image, training {per_step:.2f} s/step at batch {cfg.batch_size}")
    print(f"  projected recipe ({n_images} images, {cfg.steps} steps): {projected / 60:.1f} min (target <= 15 min);"
          f" recorded when the shipped weights were made: {shipped['seconds']['total'] / 60:.1f} min"
          f" at load {shipped.get('load', float('nan')):.1f}")


if __name__ == "__main__":
    main()
