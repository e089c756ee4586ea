"""``famix data synth``, ``famix data check`` (no torch imported) and ``famix data bench``.

``famix data synth --out DIR`` writes the synthetic benchmark (all nine domains in
their real layouts) and ``DIR/contact_sheet.png``. ``famix data check --config
FILE [key=value ...]`` lists the image/label pairs of the source's train split
(and val split, with ``train.val_every``) and of every evaluation domain with the folder layout and split list found, or
the one-line problem of each. ``famix data bench
--config FILE`` times the loaders alone (``famix_core.loaders.bench_loaders``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``data synth``, ``synth-captions``, ``check`` and ``bench`` to the ``famix`` command."""
    data = subparsers.add_parser(
        "data", help="datasets: generate the synthetic benchmark or the caption corpus, check dataset roots, time the loaders"
    )
    sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    data.set_defaults(func=lambda args: (data.print_help(), 2)[1])

    synth = sub.add_parser("synth", help="generate the synthetic benchmark (nine domains, real folder layouts)")
    synth.add_argument("--out", required=True, help="benchmark root (use it as data.root)")
    synth.add_argument("--seed", type=int, default=0, help="generator seed (default: 0)")
    synth.add_argument("--height", type=int, default=128, help="image height in pixels (default: 128)")
    synth.add_argument("--width", type=int, default=256, help="image width in pixels (default: 256)")
    synth.add_argument("--train", type=int, default=64, help="source (train split) images (default: 64)")
    synth.add_argument("--val", type=int, default=16, help="images per target val split (default: 16)")
    synth.set_defaults(func=_synth)

    caps = sub.add_parser("synth-captions", help="write the synthetic image-text corpus (styled scenes + captions)")
    caps.add_argument("--out", required=True, help="folder: images/, labels/, captions.jsonl, corpus.json")
    caps.add_argument("--seed", type=int, default=0, help="corpus seed (default: 0)")
    caps.add_argument("--scenes", type=int, default=1200, help="distinct scenes, ids from 1,000,000 up (default: 1200)")
    caps.add_argument("--styles-per-scene", type=int, default=4, help="styled renderings of each scene (default: 4)")
    caps.set_defaults(func=_synth_captions)

    check = sub.add_parser("check", help="count image/label pairs of the source and evaluation domains")
    check.add_argument("--config", default=None, help="engine config YAML (default: built-in defaults)")
    check.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides: key=value, +key=value, ~key")
    check.set_defaults(func=_check)

    bench = sub.add_parser("bench", help="images/s of the training and evaluation loaders alone (is the loader the bottleneck?)")
    bench.add_argument("--config", default=None, help="engine config YAML (default: built-in defaults)")
    bench.add_argument("--batches", type=int, default=20, help="timed batches per loader (default: 20)")
    bench.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides: key=value, +key=value, ~key")
    bench.set_defaults(func=_bench)


def _from_options(schema: type, args: argparse.Namespace, options: dict[str, str]):
    """``schema`` from command-line options (``{"--train": "train_images"}``); an error names the option, not the field."""
    from famix_core.config_io import validate

    fields = {field: getattr(args, option[2:].replace("-", "_")) for option, field in options.items()}
    return validate(schema, fields, "command line", names={field: option for option, field in options.items()})


def _synth(args: argparse.Namespace) -> int:
    from famix_core.config import SynthConfig
    from famix_core.data.synth.benchmark import generate
    from famix_core.data.synth.preview import contact_sheet
    from famix_core.io import check_out_dir

    options = {"--seed": "seed", "--height": "height", "--width": "width", "--train": "train_images", "--val": "val_images"}
    cfg = _from_options(SynthConfig, args, options)
    check_out_dir(args.out)
    out = Path(args.out)
    t0 = time.perf_counter()
    generate(out, cfg, option="--out")
    seconds = time.perf_counter() - t0
    sheet = out / "contact_sheet.png"
    tmp = sheet.with_name(f".{sheet.name}.tmp")
    contact_sheet(cfg).save(tmp, format="PNG")
    tmp.replace(sheet)
    print(f"synthetic benchmark at {out} ({seconds:.1f} s); contact sheet {sheet}")
    return 0


def _synth_captions(args: argparse.Namespace) -> int:
    from famix_core.data.captions import CorpusConfig, build_corpus, check_corpus_dir, write_corpus
    from famix_core.io import check_out_dir

    options = {"--seed": "seed", "--scenes": "scenes", "--styles-per-scene": "styles_per_scene"}
    cfg = _from_options(CorpusConfig, args, options)
    check_out_dir(args.out)
    check_corpus_dir(args.out, "--out")  # before the corpus renders
    t0 = time.perf_counter()
    out = write_corpus(build_corpus(cfg), cfg, args.out, option="--out")
    print(f"caption corpus at {out}: {cfg.scenes * cfg.styles_per_scene} images ({time.perf_counter() - t0:.1f} s)")
    return 0


def _check(args: argparse.Namespace) -> int:
    from famix_core.config import load_config
    from famix_core.data import inspect_domain, splits_read
    from famix_core.domains import resolve_domain
    from famix_core.errors import FamixError

    cfg = load_config(args.config, args.overrides)
    jobs = splits_read(cfg)  # the source's val split too where training validates on it
    failed = 0
    for domain, split in jobs:
        d = resolve_domain(domain)
        name = f"{d.name}" + (f" ({d.column})" if d.column else "")
        try:
            found = inspect_domain(cfg.data, d.name, split)
        except FamixError as e:
            failed += 1
            print(f"{name:20s} {split:5s} error: {e}")
        else:
            print(f"{name:20s} {split:5s} {len(found.pairs)} pairs ({found.describe()})")
    if failed:
        print(f"famix: error: {failed} of {len(jobs)} domain splits are not usable", file=sys.stderr)
        return 2
    return 0


def _bench(args: argparse.Namespace) -> int:
    from famix_core.config import load_config
    from famix_core.errors import ConfigError
    from famix_core.loaders import bench_loaders

    if args.batches < 1:
        raise ConfigError(f"command line: --batches: expected >= 1, got {args.batches}")
    cfg = load_config(args.config, args.overrides)
    bench_loaders(cfg, batches=args.batches)
    return 0
