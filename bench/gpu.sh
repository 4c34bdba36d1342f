#!/usr/bin/env bash
# The GPU half of bench/README.md, unattended, in under 8 minutes on one H100/H200: every step has a timeout,
# so a slow one costs its own table, not the run. Output: the tables on stdout and in $OUT (default runs/bench-gpu).
#   bash bench/gpu.sh            (in an environment with spnir installed and a CUDA build of torch)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${OUT:-runs/bench-gpu}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
# fp32 side by side with the reference recipe, every configuration of the issue, N = 1 and 4, with the
# compute floor; one process (GPU memory has its own caching allocator, the CPU setting hardly matters there)
timeout 240 "$PY" bench/spn_step.py --device cuda --configs edsr-baseline,swinir-light,ffanet,nafnet-width32 \
    --negatives 1,4 --reps 5 --allocator kept --floor | tee "$OUT/spn_step_fp32.txt"
# bf16 autocast and bf16 + torch.compile against the same fp32 reference (compile time is in the warm-up)
timeout 150 "$PY" bench/spn_step.py --device cuda --gpu-variants --configs edsr-baseline --negatives 1,4 \
    --reps 5 --allocator kept | tee "$OUT/spn_step_bf16_compile.txt"
timeout 60 "$PY" bench/restore_speed.py --device cuda --reps 5 | tee "$OUT/restore.txt"
timeout 30 "$PY" bench/restore_speed.py --device cuda --peak-memory dehazeformer-t --tile 256 512 \
    | tee -a "$OUT/restore.txt"
