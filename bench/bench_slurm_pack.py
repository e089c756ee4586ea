"""Per-task overhead on Slurm: one trained model evaluated on the smoke profile's 8 domains, packed or not.

Needs a running Slurm cluster (``bash scripts/slurm/local_cluster.sh start``); without one it prints why
it is skipped and exits 0.

The workload is the evaluate wave of the smoke ablation for one trial: famix-tiny at the smoke
profile's data sizes (its synthetic images, 8 per domain: 64x128 until 2026-12-04, 128x256 since), 8 domains. For each setting a fresh run
dir is prepared and its (10-iteration) training runs here, untimed; then ``famix sweep run
--backend slurm`` (the driver, :func:`orchestrator.driver.run_plan`) is timed while it submits the
8 evaluations and waits for them:

  * ``backend.slurm.pack: [evaluate]`` (the default): one job runs the 8 evaluations and loads
    Python, torch and the model once;
  * ``backend.slurm.pack: none``: 8 jobs, each paying its own start-up.

Printed: both wall times, the jobs' own stage time, and the ratio unpacked / packed.

Usage: python bench/bench_slurm_pack.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DOMAINS = ["C", "B", "M", "S", "AN", "AS", "AR", "AF"]
SWEEP = """\
name: bench-pack
description: one trained model evaluated on the smoke profile's 8 domains (bench/bench_slurm_pack.py)
base:
  style: {strategy: famix, augment: false, mix: true}  # MixStyle: no mining stage
  train: {iterations: 10, checkpoint_every: 10, log_every: 10}
grid:
  model.freeze: [paper]
domains: [%s]
backend:
  retries: 0
  resources:
    evaluate: {cpus: 1, gpus: 0, mem_gb: 4, timeout_min: 30}  # the ablation's
  slurm: {pack: %s}
""" % (", ".join(DOMAINS), "%s")


def run_once(work: Path, pack: str) -> dict[str, float]:
    """Prepare a fresh run dir, train here (untimed), then time the driver running the 8 evaluations on Slurm."""
    import os

    from rich.console import Console

    from orchestrator.backends.slurm.cluster import ACTIVE_STATES, query_states
    from orchestrator.driver import RunOptions, prepare, run_plan, stage_tasks
    from orchestrator.execute import execute_stage

    work.mkdir(parents=True)
    sweep = work / "bench-pack.yaml"
    sweep.write_text(SWEEP % pack)
    cwd = os.getcwd()
    os.chdir(work)  # MLflow and the synthetic benchmark stay in the work folder
    try:
        plan = prepare(sweep, run_dir=work / "runs")
        status = plan.status()
        resources = {k: v.model_dump() for k, v in plan.sweep.backend.resources.items()}
        for task in stage_tasks(plan, status, {}, None, resources):
            if task.kind != "evaluate":  # the training (and nothing else): here, untimed
                out = execute_stage(task)
                if out.status != "done":
                    raise SystemExit(f"{task.name}: {out.error}")
        t0 = time.perf_counter()
        res = run_plan(plan, RunOptions(backend="slurm", retries=0), Console(file=io.StringIO(), width=200))
        wall = time.perf_counter() - t0
    finally:
        os.chdir(cwd)
    if res.exit_code != 0:
        raise SystemExit(f"pack {pack}: " + "; ".join(f"{k[:8]}: {o.error}" for k, o in res.outcomes.items() if o.error))
    evals = [o for o in res.outcomes.values() if o.status == "done"]
    if len(evals) != len(DOMAINS):
        raise SystemExit(f"pack {pack}: expected {len(DOMAINS)} evaluations done, got {len(evals)}")
    jobs = json.loads((plan.sweep_dir / "slurm" / "jobs.json").read_text())["stages"]
    ids = {r["job_id"] for r in jobs.values()}
    deadline = time.time() + 60  # the driver is done once every outcome is written; let the jobs exit too
    while any(s in ACTIVE_STATES for s in query_states(ids).values()) and time.time() < deadline:
        time.sleep(0.5)
    return {"wall": wall, "jobs": len(ids), "stage_s": sum(o.seconds for o in evals)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", type=Path, default=None, help="work in DIR and keep it (default: a temp folder, removed)")
    args = ap.parse_args()

    from orchestrator.backends.slurm.cluster import slurm_available

    reason = slurm_available()
    if reason:
        print(f"skipped: no Slurm cluster answers ({reason}); start one with: bash scripts/slurm/local_cluster.sh start")
        return 0
    with tempfile.TemporaryDirectory(prefix="famix-bench-pack-", dir="/tmp") as d:
        work = (args.keep or Path(d)).resolve()
        off = run_once(work / "unpacked", "none")
        on = run_once(work / "packed", "[evaluate]")
    print(f"slurm, {len(DOMAINS)} evaluations of one famix-tiny model (smoke sizes), driver wall time:")
    for name, r in (("pack: none      ", off), ("pack: [evaluate]", on)):
        jobs = f"{r['jobs']} job{'s' if r['jobs'] != 1 else ' '}"
        print(f"  {name}  {jobs}  {r['wall']:6.1f} s  (in the stages, imports and model builds included: {r['stage_s']:.1f} s)")
    ratio = off["wall"] / on["wall"]
    print(f"  unpacked / packed: {ratio:.2f}x")
    print(f"RESULT slurm_unpacked_s={off['wall']:.1f} slurm_packed_s={on['wall']:.1f} ratio={ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
