#!/usr/bin/env bash
# One prepared check for a lent GPU machine (issue 21): the reference parity on CUDA (float32, TF32 off),
# then the speed benchmark. Everything lands under $OUT (JSON + logs). Run from the repository root in
# one `run` call (carry [".whl"], timeout_s 540), after fetching the wheels named in gpu_speed.py's
# docstring (the device image lacks diffusers, open_clip, omegaconf):
#   bash benchmarks/device_check.sh            # parity (~1 min) then gpu_speed.py (~5 min)
#   SKIP_SPEED=1 bash benchmarks/device_check.sh   # parity only
set -u
OUT=${OUT:-./device_check_out}
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; lscpu | head -20; } > "$OUT/machine.txt" 2>&1
start=$(date +%s)
python3 -m odise_pl.cli verify-reference --device cuda -v --json "$OUT/verify_reference_cuda.json" \
  > "$OUT/verify_reference_cuda.log" 2>&1
echo "verify-reference --device cuda: exit $? in $(( $(date +%s) - start )) s" | tee "$OUT/summary.txt"
grep -E "passed|FAIL|error" "$OUT/verify_reference_cuda.log" | tee -a "$OUT/summary.txt"
if [ -z "${SKIP_SPEED:-}" ]; then
  python3 benchmarks/gpu_speed.py --device cuda --out "$OUT/gpu_speed.json" > "$OUT/gpu_speed.log" 2>&1
  echo "gpu_speed.py: exit $?" | tee -a "$OUT/summary.txt"
fi
