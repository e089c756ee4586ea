#!/usr/bin/env bash
# One prepared check of a GPU machine (run it from the repository root, with the project's venv):
#   1. the CUDA tests (pytest -m gpu) and the CPU twins of their rules,
#   2. bench/bench_gpu.py at the paper's shapes (prints numbers; never asserts),
#   3. the cost estimate of the paper ablation on this GPU (famix sweep plan --profile paper --estimate),
#   4. a smoke sweep on CUDA (the 8-row ablation) ending in its table.
# Everything goes to $OUT (default /tmp/gpu-check): one log per step, and a summary.
# Usage: bash scripts/gpu_check.sh [PYTHON]     (default: .venv/bin/python, else python3)
set -u
cd "$(dirname "$0")/.."
PY="${1:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
OUT="${OUT:-/tmp/gpu-check}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
status=0

step() {  # step NAME COMMAND...: run, keep its log, record its exit status
  local name="$1"; shift
  echo "=== $name: $*" | tee -a "$OUT/summary.txt"
  local t0=$SECONDS
  "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  tail -n 25 "$OUT/$name.log"
  echo "--- $name: exit $rc, $((SECONDS - t0)) s" | tee -a "$OUT/summary.txt"
  [ $rc -eq 0 ] || status=1
}

: >"$OUT/summary.txt"
"$PY" -c 'import torch; assert torch.cuda.is_available(), "no CUDA device visible"; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))' \
  | tee -a "$OUT/summary.txt" || { echo "no CUDA: nothing to check here" | tee -a "$OUT/summary.txt"; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >>"$OUT/summary.txt" 2>&1 || true

step gpu-tests "$PY" -m pytest -m gpu -rs -q -s tests/test_gpu.py tests/test_device.py tests/test_train.py tests/test_styles.py
step cpu-twins "$PY" -m pytest -rs -q tests/test_precision.py tests/test_device.py tests/test_evaluate.py -k "not gpu"
step bench-gpu "$PY" bench/bench_gpu.py
step estimate "$PY" -m orchestrator sweep plan ablation.yaml --profile paper --run-dir "$OUT/runs-estimate" --estimate
step smoke-sweep "$PY" -m orchestrator sweep run ablation.yaml --run-dir "$OUT/runs-smoke" train.device=cuda
echo "all logs in $OUT (summary: $OUT/summary.txt); exit $status"
exit $status
