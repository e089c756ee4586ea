"""Orchestrator overheads, printed as ratios (never asserted in tests).

1. Scheduling efficiency on Ray: 32 stages of a fixed CPU-bound loop (the ``synthetic`` stage
   kind, run through the real RayBackend + execute_stage + store commit) on N slots.
   ratio = wall time / (sum of the stage times measured inside the workers / N). Target <= 1.2.
   Ray start-up (ray.init) is reported separately and not part of the wall time.
2. The same 32 stages on the local backend's worker processes (``backend.local.workers``): wall time
   from the call, worker start-up (spawn, imports) included, over the same ideal. Target <= 1.2.
3. Rerun of a finished sweep: ``famix sweep run`` in a fresh Python process (validate, plan,
   data checks, store lookups, results table) on the 8-trial ablation whose 73 stages are all
   done (stand-in stages). Target <= 5 s. Also printed: the same with the "MLflow complete"
   marker removed, i.e. with MLflow lookups and finalize.

Usage: python bench/bench_orchestrator.py [--stages 32] [--seconds 0.5] [--slots 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def bench_ray(n_stages: int, seconds: float, slots: int, work: Path) -> float:
    from orchestrator.backends.ray_backend import RayBackend
    from orchestrator.stages import StageTask

    tasks = _synthetic_tasks(n_stages, seconds, work)
    backend = RayBackend(work / "sw", {"ray": {"num_cpus": slots}}, log=lambda s: None)
    t0 = time.perf_counter()
    backend._ensure_ray()
    start_s = time.perf_counter() - t0
    # warm the worker pool (imports) so the measurement is the scheduling, not Python start-up
    warm = [StageTask(kind="synthetic", key=f"warm-{i}", config={"seconds": 0.05}, store=str(work / "warm"), log_path=str(work / "w.log")) for i in range(slots)]  # type: ignore[arg-type]
    backend.run(warm, max_parallel=slots, retries=0, on_event=lambda *a: None)
    t0 = time.perf_counter()
    outcomes = backend.run(tasks, max_parallel=slots, retries=0, on_event=lambda *a: None)
    wall = time.perf_counter() - t0
    backend.close()
    print(f"ray: ray.init {start_s:.1f}s (not counted); {n_stages} stages x {seconds}s on {slots} slots")
    return _ratio("ray", outcomes, wall, slots)


def _ratio(name: str, outcomes: dict, wall: float, slots: int) -> float:
    """Wall time over the ideal (the stages' own times spread evenly over the slots), printed."""
    assert all(o.status == "done" for o in outcomes.values()), outcomes
    busy = sum(o.seconds for o in outcomes.values())
    ideal = busy / slots
    ratio = wall / ideal
    print(f"{name}: wall {wall:.2f}s, sum of stage times {busy:.2f}s, ideal {ideal:.2f}s -> ratio {ratio:.3f} (target <= 1.2)")
    return ratio


def _synthetic_tasks(n_stages: int, seconds: float, work: Path) -> list:
    from orchestrator.stages import StageTask

    return [
        StageTask(
            kind="synthetic",  # type: ignore[arg-type]
            key=f"bench-{i:03d}",
            config={"seconds": seconds, "value": i},
            deps={"synthetic": "bench-000"} if 0 < i < 4 else {},  # a few dependencies, as in a real DAG
            store=str(work / "store"),
            log_path=str(work / "logs" / f"{i}.log"),
            name=f"bench {i}",
        )
        for i in range(n_stages)
    ]


def bench_local(n_stages: int, seconds: float, slots: int, work: Path) -> float:
    from orchestrator.backends.local import LocalBackend

    tasks = _synthetic_tasks(n_stages, seconds, work)
    t0 = time.perf_counter()
    outcomes = LocalBackend(cpus=slots).run(tasks, max_parallel=slots, retries=0, on_event=lambda *a: None)
    wall = time.perf_counter() - t0
    print(f"local workers: {n_stages} stages x {seconds}s on {slots} worker processes (start-up counted)")
    return _ratio("local workers", outcomes, wall, slots)


def bench_rerun(work: Path) -> float:
    """Build a finished 8-trial x 8-domain sweep with stand-in stages, then time a real CLI rerun."""
    sweep = work / "sweeps" / "rerun.yaml"
    sweep.parent.mkdir(parents=True)
    text = (REPO / "sweeps" / "ablation.yaml").read_text().replace("name: ablation", "name: rerun").replace("experiment: ablation", "experiment: rerun")
    sweep.write_text(text)
    fill = f"""
import sys
sys.path.insert(0, {str(REPO)!r})
from orchestrator import execute
def mine(ctx): return {{}}
def train(ctx):
    (ctx.tmp / "model.safetensors").write_bytes(b"w"); return {{}}
def ev(ctx): return {{"miou": 0.25, "iou": {{}}, "pixel_acc": 0.5}}
execute.STAGE_RUNNERS.update(mine=mine, train=train, evaluate=ev)
from orchestrator.__main__ import main
sys.exit(main(["sweep", "run", {str(sweep)!r}, "--run-dir", {str(work / 'runs')!r}]))
"""
    r = subprocess.run([sys.executable, "-c", fill], cwd=work, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"first run failed: {r.stderr[-2000:]}")
    def rerun(expect: str) -> float:
        t0 = time.perf_counter()
        r = subprocess.run(
            [sys.executable, "-m", "orchestrator", "sweep", "run", str(sweep), "--run-dir", str(work / "runs")],
            cwd=work,
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - t0
        if r.returncode != 0 or expect not in r.stdout:
            raise SystemExit(f"rerun did not find the sweep finished: {r.stdout[-1500:]} {r.stderr[-1500:]}")
        return seconds

    fast = rerun("73 stages, all done; MLflow complete")
    (work / "runs" / "rerun" / "finalized.json").unlink()  # force the full path: MLflow lookups + finalize
    full = rerun("73 done, 0 to run")
    print(f"rerun of a finished 73-stage sweep (fresh process, CLI): {fast:.2f}s (target <= 5 s)")
    print(f"  same without the finalized marker (opens MLflow, checks all 8 trial runs): {full:.2f}s")
    return fast


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stages", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=0.5)
    ap.add_argument("--slots", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    with tempfile.TemporaryDirectory(prefix="famix-bench-", dir="/tmp") as d:
        work = Path(d)
        ratio = bench_ray(args.stages, args.seconds, args.slots, work / "ray")
        local = bench_local(args.stages, args.seconds, args.slots, work / "local")
        rerun = bench_rerun(work / "rerun")
    print(f"RESULT ray_overhead_ratio={ratio:.3f} local_workers_ratio={local:.3f} rerun_seconds={rerun:.2f}")


if __name__ == "__main__":
    main()
