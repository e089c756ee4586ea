"""Score a finished sweep's trained models on more target images: `python scripts/reevaluate.py --images N [options]`.

The smoke profile evaluates each target domain on a few images (``eval.max_images``, 8 by
default), where a model's mIoU moves by points with which images were drawn. This script takes
the sweep's trainings from the run dir's store, as they are, and evaluates each on ``N`` images
per target domain of the same synthetic benchmark (the same generator and seed; its first
``data.synthetic.val_images`` images are the sweep's own). Nothing is trained, and the sweep's
results are not touched: a benchmark with more val images than the sweep's goes to
``<run dir>/data/<benchmark>-val<N>``, the scores to ``<run dir>/<sweep>/reeval-<N>/``
(``results.csv``, in the layout of the sweep's, and a report: ``table.md``, ``table.tex``, …),
and the table is printed. A trial whose training is not in the store is skipped, with a line.

About 0.05 s an image on one CPU core at 128x256: 24 trainings x 8 domains x 128 images take
about half an hour.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def reevaluate_config(cfg: Any, images: int) -> Any:
    """``cfg`` evaluating ``images`` images per target domain.

    Up to the sweep's own ``data.synthetic.val_images`` its benchmark serves; more need a benchmark
    with that many val images, beside it at ``<root>-val<images>``.
    """
    syn, root = cfg.data.synthetic, Path(cfg.data.root)
    if images > syn.val_images:
        syn, root = syn.model_copy(update={"val_images": images}), root.parent / f"{root.name}-val{images}"
    data = cfg.data.model_copy(update={"root": str(root), "synthetic": syn})
    return cfg.model_copy(update={"data": data, "eval": cfg.eval.model_copy(update={"max_images": images})})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sweep", default="sweeps/ablation.yaml", help="sweep file (default: sweeps/ablation.yaml)")
    p.add_argument("--profile", default=None, help="profile (default: the sweep's)")
    p.add_argument("--run-dir", default="runs", help="run dir whose store is read (default: runs)")
    p.add_argument("--images", type=int, required=True, help="images per target domain")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="the sweep's overrides, as given to famix sweep run")
    args = p.parse_args(argv)
    if args.images < 1:
        print(f"{p.prog}: error: --images: expected an integer >= 1, got {args.images}", file=sys.stderr)
        return 2

    import pandas as pd
    import torch

    from famix_core.data.synth.benchmark import ensure_synthetic
    from famix_core.errors import FamixError
    from famix_core.evaluate import evaluate
    from famix_core.io import atomic_write_text
    from orchestrator.cli import report_sweep_info
    from orchestrator.driver import prepare
    from reports.collect import collect_csv
    from reports.report import apply_sweep_order, write_report

    try:
        # nothing is checked or drawn before the requests are known to be doable (each trial's data is drawn below)
        plan = prepare(args.sweep, profile=args.profile, run_dir=args.run_dir, overrides=args.overrides, writable=False, dry=True,
                       check_data=lambda cfg: None, check_weights=lambda cfg: None)  # fmt: skip
        if plan.trials[0].config.data.synthetic is None:
            print(f"{p.prog}: error: {args.sweep}: data.synthetic is not set: this script re-scores the synthetic benchmark only", file=sys.stderr)
            return 2
        store, out = plan.store, plan.sweep_dir / f"reeval-{args.images}"
        done = [t for t in plan.trials if store.is_done("train", plan.trial_stages[t.id].train)]
        if not done:
            print(f"{p.prog}: error: {args.sweep}: no trained model in {args.run_dir}: run the sweep first", file=sys.stderr)
            return 2
        for t in plan.trials:
            if t not in done:
                print(f"skipped: trial {t.id} ({', '.join(t.labels.values())}, seed {t.seed}): its training is not in {store.root}")
        torch.set_num_threads(1)  # as the sweep's 1-CPU evaluate stages: the same digits
        rows = []
        for i, t in enumerate(done, 1):
            cfg = reevaluate_config(t.config, args.images)
            ensure_synthetic(cfg.data)
            weights = store.path("train", plan.trial_stages[t.id].train) / "model.safetensors"
            scores = evaluate(cfg, weights, plan.sweep.domains)
            rows.append({**t.labels, "seed": t.seed, "status": "done", "trial": t.id, **{c: 100 * r["miou"] for c, r in scores.items()}})
            mean = sum(r["miou"] for r in scores.values()) / len(scores)
            print(f"[{i}/{len(done)}] {', '.join(t.labels.values())} seed {t.seed}: Mean {100 * mean:.2f}", flush=True)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "results.csv", pd.DataFrame(rows).to_csv(index=False))
        info = report_sweep_info(args.sweep, args.profile, None, args.overrides)  # domains and labels as the plan's
        title = f"{info.name}, {args.images} images per target domain"  # not the sweep's own 8-image report
        results = apply_sweep_order(collect_csv(out / "results.csv", units="percent", domains=info.domains, sweep=title), info)
        files = write_report(results, out / "report", figures=False)
        print(f"\n{args.images} images per target domain:\n\n{files.markdown}", end="")
        print(f"\nresults: {out / 'results.csv'}; report: {files.out_dir}")
    except FamixError as e:
        print(f"{p.prog}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
