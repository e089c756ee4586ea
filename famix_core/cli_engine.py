"""``famix mine-styles | train | evaluate --config FILE --out DIR [key=value ...]`` (imports stay lazy)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

__all__ = ["register"]


def _load(args: argparse.Namespace):
    """The engine config, then ``--out`` checked: a mistake in either is reported before any work."""
    from famix_core.config import load_config
    from famix_core.io import check_out_dir

    cfg = load_config(args.config, args.overrides or [])
    check_out_dir(args.out)
    return cfg


def _check_weights(cfg) -> None:
    """``model.pretrained`` is usable, checked before the stage picks its device (whose CPU notice
    would otherwise come first) or reads any data: a weights mistake is the one line printed."""
    from famix_core.models.clip import locate_weights

    locate_weights(cfg.model.backbone, cfg.model.pretrained, cfg.model.cache_dir)


def _printer(prefix: str):
    def log(metrics: dict[str, float], step: int | None = None) -> None:
        shown = " ".join(f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
        print(f"[{prefix}] step={step} {shown}", file=sys.stderr, flush=True)

    return log


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="YAML/JSON engine config (default: built-in defaults)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help="dotted overrides: key=value, +key=value, ~key (e.g. data.root=/datasets)"
    )


def register(subparsers: Any) -> None:
    """Add ``mine-styles``, ``train`` and ``evaluate`` to the ``famix`` parser."""
    p = subparsers.add_parser("mine-styles", help="mine a style bank from the source domain with language prompts")
    _common(p)
    p.set_defaults(func=_mine)

    p = subparsers.add_parser("train", help="train a segmenter (resumes from --ckpt when it holds a checkpoint)")
    _common(p)
    p.add_argument("--bank", default=None, help="style bank folder (from mine-styles), needed by style.strategy=famix with style.augment=true")
    p.add_argument("--ckpt", default=None, help="checkpoint folder (default: OUT/checkpoints)")
    p.set_defaults(func=_train)

    p = subparsers.add_parser("evaluate", help="evaluate trained weights on target domains (mIoU)")
    _common(p)
    p.add_argument("--weights", required=True, help="model.safetensors of a training run, or an official FAMix checkpoint")
    p.add_argument("--domains", default=None, help="comma-separated names or columns (default: eval.domains)")
    p.set_defaults(func=_evaluate)


def _mine(args: argparse.Namespace) -> int:
    from famix_core.mining import mine_styles

    cfg = _load(args)
    _check_weights(cfg)
    summary = mine_styles(cfg, args.out, log=_printer("mine"))
    print(json.dumps(summary, indent=1, default=str))
    return 0


def _train(args: argparse.Namespace) -> int:
    from pathlib import Path

    import threading

    from famix_core.errors import ConfigError, TrainingInterrupted
    from famix_core.interrupts import stop_on_signals
    from famix_core.io import check_out_dir
    from famix_core.train import train

    cfg = _load(args)
    if args.ckpt is not None:
        check_out_dir(args.ckpt, "--ckpt")
    if cfg.style.needs_bank() and args.bank is None:  # the library's message would name its bank_dir argument
        raise ConfigError(
            "command line: --bank: style.strategy=famix with style.augment=true needs a style bank:"
            " pass --bank DIR (mine styles first: famix mine-styles --out DIR)"
        )
    if args.bank is not None and not cfg.style.needs_bank():  # it was ignored: a training without styles, unsaid
        raise ConfigError(
            f"command line: --bank {args.bank}: not used by this training (style strategy"
            f" {cfg.style.effective_strategy()} mines no styles); drop it, or set style.strategy=famix style.augment=true"
        )
    if cfg.style.needs_bank():
        from famix_core.styles.bank import bank_files

        bank_files(args.bank)  # before the device notice: a wrong --bank is the one line
    _check_weights(cfg)
    ckpt = args.ckpt if args.ckpt is not None else str(Path(args.out) / "checkpoints")
    stop = threading.Event()
    with stop_on_signals(stop, "[train] stopping after this iteration's checkpoint (Ctrl-C again stops at once)"):
        try:
            summary = train(cfg, args.out, bank_dir=args.bank, ckpt_dir=ckpt, log=_printer("train"), stop=stop,
                            note=lambda line: print(f"[train] {line}", file=sys.stderr, flush=True))  # fmt: skip
        except TrainingInterrupted as e:
            print(f"famix: interrupted at iteration {e.iteration}; the same command resumes from its checkpoint", file=sys.stderr)
            return 130
    print(json.dumps(summary, indent=1))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from famix_core.evaluate import evaluate

    cfg = _load(args)
    domains = [d.strip() for d in args.domains.split(",") if d.strip()] if args.domains else None
    if domains:
        from famix_core.domains import UnknownDomainError, repeated_domain
        from famix_core.errors import ConfigError

        try:
            twice = repeated_domain(domains)
        except UnknownDomainError as e:
            raise ConfigError(f"command line: --domains: {e}") from None
        if twice is not None:  # as eval.domains refuses it (it was scored once, quietly)
            col, (first, again, *_) = twice
            raise ConfigError(f"command line: --domains: {domains[again]} is {domains[first]} again (column {col}); give each domain once")
    names = domains or cfg.eval.domains

    last = [time.monotonic()]  # when the last line was printed

    def done(metrics: dict[str, float], i: int | None) -> None:
        key, value = next(iter(metrics.items()))  # {"miou/<column>": percent}
        print(f"[evaluate] {key.removeprefix('miou/')} mIoU {value:.2f} ({(i or 0) + 1}/{len(names)} domains)", file=sys.stderr, flush=True)
        last[0] = time.monotonic()

    def going(col: str, n: int, total: int | None) -> None:  # a line every 10 s on a long domain
        if time.monotonic() - last[0] >= 10.0 and n != total:
            last[0] = time.monotonic()
            print(f"[evaluate] {col}: image {n}" + (f"/{total}" if total else ""), file=sys.stderr, flush=True)

    results = evaluate(cfg, args.weights, domains, out_dir=args.out, log=done, progress=going)
    from famix_core.checkpoint import atomic_write_json

    atomic_write_json(f"{args.out}/results.json", results)
    for col, r in results.items():
        print(f"{col:>4}  mIoU {100 * r['miou']:6.2f}  pixel acc {100 * r['pixel_acc']:6.2f}  ({r['n_images']} images)")
    if len(results) > 1:
        mean = sum(r["miou"] for r in results.values()) / len(results)
        print(f"mean  mIoU {100 * mean:6.2f}")
    return 0
