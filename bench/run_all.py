"""Run every benchmark (``make bench``); each prints its own numbers and ratios.

Benchmarks run one after another in fresh processes so one's threads, caches and
Ray/MLflow state do not colour the next. A benchmark that fails does not stop
the others; the exit status says whether all of them ran.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

BENCHES = (
    "bench_styles.py",
    "bench_train.py",
    "bench_gpu.py",
    "bench_pretrain.py",
    "bench_orchestrator.py",
    "bench_slurm_pack.py",
    "bench_reports.py",
)


def main() -> int:
    here = Path(__file__).resolve().parent
    failed = []
    for name in BENCHES:
        path = here / name
        print(f"\n=== {name} ===", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call([sys.executable, str(path)], cwd=here.parent)
        print(f"--- {name}: exit {rc}, {time.perf_counter() - t0:.1f} s", flush=True)
        if rc != 0:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
        return 1
    print("\nall benchmarks ran")
    return 0


if __name__ == "__main__":
    sys.exit(main())
