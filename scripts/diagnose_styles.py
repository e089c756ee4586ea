"""What a sweep's mined styles do, without training: `python scripts/diagnose_styles.py [options] [key=value ...]`.

Takes the first trial of the sweep (and seed) that mines a bank, with the sweep's profile and
overrides, and prints two Markdown tables:

1. **Prompt words.** The trial's source patches mined once per prompt type (and per extra
   ``--words`` phrase, as the prompt "<words> <class name>", a diagnostic outside the method's
   five types): the mining loss, how far the styles move from the patches' own statistics, and
   the mean cosine between each kept patch's move and its move under the class-name prompt.
   Near 1, the extra words change nothing the class name did not.
2. **Coverage.** The trial's bank (from the run dir's store when mined there, else mined here)
   against each target domain's evaluation images, seen from the source's training images
   (famix_core.styles.diagnostics.style_coverage).

Each bank takes one mining run (about 30 s on 2 CPU cores for the smoke profile). Reads the
run dir's synthetic benchmark (generates it when missing); writes nothing else.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch


def _bank_rows(path: Path) -> torch.Tensor:
    from famix_core.styles.bank import StyleBank
    from famix_core.styles.diagnostics import style_rows

    bank = StyleBank.load(path)
    return style_rows(bank.mu, bank.sigma)


def _mine(cfg: Any, prompt: str, **mining: Any) -> tuple[torch.Tensor, dict[str, Any]]:
    """Mine ``cfg``'s bank with another prompt type (or a registered diagnostic one).

    ``model_copy`` skips validation on purpose: a diagnostic prompt name and the lr-0 start bank
    are not valid engine settings.
    """
    from famix_core.mining import mine_styles

    c = cfg.model_copy(update={"mining": cfg.mining.model_copy(update={"prompt": prompt, **mining})})
    with tempfile.TemporaryDirectory() as out:
        summary = mine_styles(c, out)
        return _bank_rows(Path(out)), summary


def _register_words(words: str) -> str:
    """A prompt "<words> <class name>" under a diagnostic name, outside the method's five types."""
    from famix_core import prompts

    name = f"words:{words}"
    prompts.PROMPT_REGISTRY[name] = lambda cls, rng, w=words: f"{w} {cls}"
    return name


def prompt_table(cfg: Any, extra_words: list[str]) -> tuple[list[str], dict[str, torch.Tensor]]:
    """The table's lines, and the bank rows mined per prompt type (the trial's own among them)."""
    from famix_core.config import PROMPT_TYPES
    from famix_core.styles.diagnostics import move_agreement

    # lr -> 0: one step that moves nothing leaves each kept patch's own statistics, in bank order
    start, _ = _mine(cfg, cfg.mining.prompt, steps=1, lr=1e-12)
    banks = {p: _mine(cfg, p) for p in PROMPT_TYPES}
    for w in extra_words:
        banks[f'"{w} <class>"'] = _mine(cfg, _register_words(w))
    ref = banks["class"][0]
    lines = [
        "| Prompt | Mining loss | Mean move | cos(move, class-name move) |",
        "|:--|--:|--:|--:|",
    ]
    for name, (rows, s) in banks.items():
        move = (rows - start).norm(dim=1).mean()
        agree = "" if name == "class" else f"{move_agreement(start, rows, ref).mean():.3f}"
        lines.append(f"| {name} | {s['initial_loss']:.3f} → {s['final_loss']:.3f} | {move:.3f} | {agree} |")
    lines.append(f"\n{len(start)} kept patches; moves in layer-1 units (mean |[mu, sigma]| of a patch: {start.norm(dim=1).mean():.3f}).")
    return lines, {name: rows for name, (rows, _) in banks.items()}


def coverage_table(cfg: Any, bank: torch.Tensor) -> list[str]:
    from famix_core.data import build_dataset
    from famix_core.models.segmenter import build_segmenter
    from famix_core.styles.diagnostics import layer1_style_rows, style_coverage

    model = build_segmenter(cfg.model).eval()
    layer1 = lambda x: model.backbone.layer1(model.backbone.stem(x))  # noqa: E731

    def rows(domain: str, split: str, n: int | None) -> torch.Tensor:
        ds = build_dataset(cfg.data, domain, split, train=False, max_items=n)
        images = torch.stack([ds[i][0] for i in range(len(ds))])
        return layer1_style_rows(layer1, images, cfg.style.grid, cfg.style.eps, tile=min(cfg.data.crop_size, images.shape[-1]))

    source = rows(cfg.data.source, "train", None)
    lines = [
        "| Domain | Target shift | cos(target shift, bank shift) | Target patches nearer a bank style | To source | To bank |",
        "|:-:|--:|--:|--:|--:|--:|",
    ]
    shift = None
    for col in cfg.eval.domains:
        c = style_coverage(source, bank, rows(col, cfg.eval.split, cfg.eval.max_images))
        shift = c.bank_shift
        lines.append(f"| {col} | {c.target_shift:.2f} | {c.cos:+.2f} | {c.nearer_bank:.2f} | {c.to_source:.2f} | {c.to_bank:.2f} |")
    lines.append(
        f"\n{len(source)} source patches, {len(bank)} bank styles; the bank's mean shift from the source: {shift:.2f}"
        " (distances in units of the source's spread per dimension)."
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sweep", default="sweeps/ablation.yaml", help="sweep file (default: sweeps/ablation.yaml)")
    p.add_argument("--profile", default=None, help="profile (default: the sweep's)")
    p.add_argument("--run-dir", default="runs", help="run dir whose store and benchmark are read (default: runs)")
    p.add_argument("--seed", type=int, default=0, help="the trial's seed (default: 0)")
    p.add_argument("--words", action="append", default=[], help='extra prompt "<WORDS> <class>" (repeatable)')
    p.add_argument("--skip-prompts", action="store_true", help="print only the coverage table")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="engine overrides, as for famix sweep run")
    args = p.parse_args(argv)

    from famix_core.errors import FamixError
    from orchestrator.checks import check_data
    from orchestrator.driver import prepare

    try:
        plan = prepare(args.sweep, profile=args.profile, run_dir=args.run_dir, overrides=args.overrides, writable=False, dry=True,
                       check_data=lambda cfg: None)  # the data is checked (the synthetic benchmark drawn) once a trial is found
        trial = next((t for t in plan.trials if t.seed == args.seed and plan.trial_stages[t.id].mine), None)
        if trial is None:
            seeds = sorted({t.seed for t in plan.trials if plan.trial_stages[t.id].mine})
            which = f"seeds with one: {', '.join(map(str, seeds))}" if seeds else "no trial of the sweep mines one"
            print(f"{p.prog}: error: {args.sweep}: no trial of seed {args.seed} mines a style bank ({which})", file=sys.stderr)
            return 2
        cfg, key = trial.config, plan.trial_stages[trial.id].mine
        check_data(cfg)
        store = plan.store
        print(f"trial {trial.id} ({', '.join(f'{k} {v}' for k, v in trial.labels.items())}), bank {key[:8]}\n")
        mined: dict[str, torch.Tensor] = {}
        if not args.skip_prompts:
            lines, mined = prompt_table(cfg, args.words)
            print("\n".join(lines) + "\n")
        if store.is_done("mine", key):
            bank = _bank_rows(store.path("mine", key))
        else:  # the prompt table mined this very bank already, unless it was skipped
            bank = mined[cfg.mining.prompt] if cfg.mining.prompt in mined else _mine(cfg, cfg.mining.prompt)[0]
        print("\n".join(coverage_table(cfg, bank)))
    except FamixError as e:
        print(f"{p.prog}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
