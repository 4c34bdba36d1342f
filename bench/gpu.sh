#!/usr/bin/env bash
# The GPU half of bench/README.md, unattended, in under 8 minutes on one H100/H200: every step has its own
# timeout (they add up to 7.5 minutes), so a slow one costs its own table, not the run. Output: the tables on
# stdout and in $OUT (default runs/bench-gpu).
#   bash bench/gpu.sh            (in an environment with spnir installed and a CUDA build of torch)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${OUT:-runs/bench-gpu}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
# 1. fp32 side by side with the reference recipe, EDSR-baseline and NAFNet at the paper's batch and patch,
#    N = 1 and 4, with the compute floor; one process (GPU memory has its own caching allocator)
timeout 100 "$PY" bench/spn_step.py --device cuda --configs edsr-baseline,nafnet-width32 \
    --negatives 1,4 --reps 5 --allocator kept --floor | tee "$OUT/spn_step_fp32.txt"
# 2. spnir train's step (Trainer.train_step) against the plain L1 step and the SPN object: fp32, K=2
#    accumulation, bf16, bf16 + compile, bf16 + compile + channels_last, channels_last alone; step time and
#    peak GPU memory (compile time is in the warm-up). The issue's goal: bf16+compile+channels_last at most
#    1.5x the plain fp32 step at N = 1 for EDSR-baseline x4 (batch 16, 48 px)
timeout 130 "$PY" bench/loop_overhead.py --device cuda --variants --configs edsr-baseline,nafnet-width32 \
    --negatives 1,4 --reps 5 | tee "$OUT/loop_variants.txt"
# 3. the demo's SPN training in float16 (GradScaler) and in bfloat16; each must end finite (a NaN/Inf stops spnir
#    train with a non-zero exit); scalars.csv keeps the curve and amp/skipped_steps
for AMP in fp16 bf16; do
    timeout 80 "$PY" -m spnir train -c configs/demo/sr_x2_tiny_spn.yml --out "$OUT/demo_$AMP" \
        --set spn.vgg_weights=random --set train.amp=$AMP --set train.device=cuda --set log.progress=false \
        > "$OUT/demo_$AMP.log" 2>&1
    echo "demo SPN training, train.amp=$AMP: exit $? (0: finished finite; 124: ran out of its 80 s)" \
        | tee -a "$OUT/demo_amp.txt"
    tail -n 2 "$OUT/demo_$AMP.log" | tee -a "$OUT/demo_amp.txt"
done
# 4. restore throughput, and the peak memory of tiled restore
timeout 40 "$PY" bench/restore_speed.py --device cuda --reps 5 | tee "$OUT/restore.txt"
timeout 20 "$PY" bench/restore_speed.py --device cuda --peak-memory dehazeformer-t --tile 256 512 \
    | tee -a "$OUT/restore.txt"
