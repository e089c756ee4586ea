"""``famix pretrain-clip --out DIR [--config FILE] [key=value ...]``: CLIP pretraining on the caption corpus (lazy imports)."""

from __future__ import annotations

import argparse
import sys
import threading
from typing import Any

__all__ = ["register", "load_pretrain_config"]


def load_pretrain_config(path: str | None, overrides: list[str]):
    """A :class:`famix_core.pretrain.PretrainConfig` from an optional YAML file and dotted overrides.

    Raises:
        ConfigError: one line naming the file (or ``config``), the field and what was expected.
    """
    from famix_core.config import load_config
    from famix_core.pretrain import PretrainConfig

    return load_config(path, overrides, schema=PretrainConfig)


_STOP_NOTICES = {  # what a first Ctrl-C does in each stage of pretrain_clip (on_stage)
    "corpus": "[pretrain] stopping once the corpus is rendered, before any step is trained (Ctrl-C again: stop now)",
    "train": "[pretrain] stopping at the next step, with a checkpoint of the steps done (Ctrl-C again: stop now)",
    "finish": "[pretrain] the training is finished and checkpointed: the zero-shot checks end in seconds, then its"
    " weights are written (Ctrl-C again: stop now; the same command then resumes at the checks)",
}


def register(subparsers: Any) -> None:
    """Add ``pretrain-clip`` to the ``famix`` parser."""
    p = subparsers.add_parser(
        "pretrain-clip", help="pretrain famix-tiny CLIP contrastively on the synthetic caption corpus (CPU, minutes)"
    )
    p.add_argument("--out", required=True, help="output folder: weights.safetensors (fp16) and pretrain.json")
    p.add_argument("--config", default=None, help="YAML pretraining config (default: the one the shipped weights used)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. steps=100 corpus.scenes=200")
    p.set_defaults(func=_pretrain)


def _pretrain(args: argparse.Namespace) -> int:
    from famix_core.io import check_out_dir

    cfg = load_pretrain_config(args.config, args.overrides or [])
    check_out_dir(args.out)
    from famix_core.errors import TrainingInterrupted
    from famix_core.interrupts import stop_on_signals
    from famix_core.pretrain import SUMMARY_FILE, WEIGHTS_FILE, pretrain_clip

    stop, stage = threading.Event(), "corpus"

    def enter(name: str) -> None:  # the stage the run is in: what the next Ctrl-C's notice says
        nonlocal stage
        stage = name

    def log(line: str) -> None:
        print(f"[pretrain] {line}", file=sys.stderr, flush=True)

    with stop_on_signals(stop, lambda: _STOP_NOTICES[stage]):
        try:
            # other files in --out, or another config's weights, are refused before the corpus renders
            _, summary = pretrain_clip(cfg, args.out, log=log, stop=stop, on_stage=enter, option="--out")
        except TrainingInterrupted as e:  # a checkpoint is written and logged, or nothing was trained
            if e.checkpoint is None:
                print("famix: interrupted before the first step: nothing to keep; the same command starts over", file=sys.stderr)
            else:
                print(f"famix: interrupted at step {e.iteration}; the same command resumes from its checkpoint", file=sys.stderr)
            return 130
    z = summary.get("zero_shot", {})
    print(
        f"wrote {args.out}/{WEIGHTS_FILE} and {SUMMARY_FILE}: {summary['seconds']['total']:.0f} s;"
        f" style top-1 {z.get('style_top1', float('nan')):.3f} (chance {z.get('style_chance', float('nan')):.3f}),"
        f" class R-precision {z.get('class_r_precision', float('nan')):.3f} (chance {z.get('class_chance', float('nan')):.3f})"
    )
    return 0
