#!/usr/bin/env bash
# One prepared check of a GPU machine (run it from the repository root, with the project's venv):
#   1. the CUDA tests (pytest -m gpu; their CPU twins run everywhere, in the ordinary suite),
#   2. bench/bench_gpu.py at the paper's shapes (prints numbers; never asserts),
#   3. the cost estimate of the paper ablation on this GPU (famix sweep plan --profile paper --estimate),
#   4. a smoke sweep on CUDA (the 8-row ablation) ending in its table,
#   5. the same sweep twice more with train.deterministic=true, into fresh run dirs: whether their
#      results agree to the digit (printed, with the largest difference; never an error).
# Each step has its own time limit (seconds: TESTS_S, BENCH_S, ESTIMATE_S, SWEEP_S, REPEAT_S), so one slow
# step cannot take the others' time. Logs go to $OUT (default /tmp/gpu-check): one per step and a
# summary; the sweeps' run dirs go to $RUNS (default /tmp/gpu-check-runs).
# Usage: bash scripts/gpu_check.sh [PYTHON]     (default: .venv/bin/python, else python3)
set -u
cd "$(dirname "$0")/.."
PY="${1:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
OUT="${OUT:-/tmp/gpu-check}"
RUNS="${RUNS:-/tmp/gpu-check-runs}"
mkdir -p "$OUT" "$RUNS"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
status=0

step() {  # step NAME SECONDS COMMAND...: run under a time limit, keep its log, record its exit status
  local name="$1" limit="$2"; shift 2
  echo "=== $name (limit ${limit} s): $*" | tee -a "$OUT/summary.txt"
  local t0=$SECONDS
  timeout -k 10 "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  tail -n 40 "$OUT/$name.log"
  echo "--- $name: exit $rc$([ $rc -eq 124 ] && echo ' (time limit)'), $((SECONDS - t0)) s" | tee -a "$OUT/summary.txt"
  [ $rc -eq 0 ] || status=1
}

: >"$OUT/summary.txt"
# captured, not piped: a pipe's status is tee's, and the check ran every step on a machine without CUDA
if ! info=$("$PY" -c 'import torch; assert torch.cuda.is_available(), "no CUDA device visible"; print("torch", torch.__version__, "CUDA", torch.version.cuda, torch.cuda.get_device_name(0))' 2>&1); then
  echo "no CUDA: nothing to check here ($(printf '%s\n' "$info" | tail -n 1))" | tee -a "$OUT/summary.txt"
  exit 2
fi
echo "$info" | tee -a "$OUT/summary.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >>"$OUT/summary.txt" 2>&1 || true
nproc | sed 's/^/CPUs: /' >>"$OUT/summary.txt"

step gpu-tests "${TESTS_S:-180}" "$PY" -m pytest -m gpu -rs -q -s -p no:cacheprovider tests/test_gpu.py tests/test_device.py tests/test_train.py tests/test_styles.py
step bench-gpu "${BENCH_S:-150}" "$PY" bench/bench_gpu.py
step estimate "${ESTIMATE_S:-90}" "$PY" -m orchestrator sweep plan sweeps/ablation.yaml --profile paper --run-dir "$RUNS/estimate" --estimate
step smoke-sweep "${SWEEP_S:-240}" "$PY" -m orchestrator sweep run sweeps/ablation.yaml --run-dir "$RUNS/smoke" train.device=cuda

repeat_deterministic() {  # two deterministic smoke sweeps from scratch; compare their results.csv
  local i
  for i in 1 2; do
    rm -rf "$RUNS/deterministic-$i"
    "$PY" -m orchestrator sweep run sweeps/ablation.yaml --run-dir "$RUNS/deterministic-$i" \
      train.device=cuda train.deterministic=true >"$OUT/deterministic-$i.log" 2>&1 || { echo "sweep $i failed: $OUT/deterministic-$i.log"; return 1; }
    grep -E '^\| [✗✓] ' "$OUT/deterministic-$i.log"
  done
  "$PY" - "$RUNS"/deterministic-{1,2}/ablation/results.csv <<'PYEOF'
import sys

import pandas as pd

a, b = (pd.read_csv(f) for f in sys.argv[1:])
cols = [c for c in a.columns if a[c].dtype.kind == "f"]
gap = (a[cols] - b[cols]).abs().to_numpy().max()
print("deterministic mode: the two sweeps' results are identical" if gap == 0
      else f"deterministic mode: the two sweeps differ by up to {gap:.4f} mIoU points")
PYEOF
}
export -f repeat_deterministic
export PY OUT RUNS
step deterministic-repeat "${REPEAT_S:-200}" bash -c repeat_deterministic
echo "all logs in $OUT (summary: $OUT/summary.txt); exit $status"
exit $status
