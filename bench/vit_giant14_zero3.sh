#!/usr/bin/env bash
# bench/vit_giant14_zero3.sh: the showcase of issue 11. ViT-g/14
# (configs/models/vit_giant14.lua: 1.01B parameters, width 1408, depth 40,
# 16 heads, MLP 6144, patch 14) trains 3 AdamW steps on 4 ranks of one
# machine under ZeRO-3 (parallel.zero = 3) with full activation
# checkpointing (every block), where plain data parallelism (stage 0) cannot
# allocate: its 16 bytes per parameter (15.1 GiB per rank, 60 GiB for 4
# ranks) exceed the machine. Not part of `make test`.
#
#   bash bench/vit_giant14_zero3.sh [IMG_SIZE (default 56)] [MEMORY_BUDGET per rank (default 5GiB)]
#
# 1. lunar.memory's estimate per rank for stages 0 and 3 (lunar config show).
# 2. stage 0 under MEMORY_BUDGET: the run stops before allocating anything
#    (exit 1, the message naming what to change), on the 4 ranks.
# 3. stage 3 + full checkpointing under the same budget: bench/memory.lua
#    (1 warm-up step + 2 timed steps: 3 steps; per-rank model state and step
#    peak as the allocator counts them, the step time), each rank wrapped in
#    /usr/bin/time for its peak resident set (the process, not only tensors).
# Batch 1 per rank, synthetic images, 1 thread per rank. IMG_SIZE 56 (17
# tokens) keeps the step cheap on a small shared machine; 224 (257 tokens)
# works the same, only slower. Refuses to start unless MemAvailable is at
# least 4.5 x the per-rank estimate plus 2 GiB (other jobs share the machine).
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
LUNAR=${LUNAR:-$BUILD/lunar}
IMG=${1:-56}
BUDGET=${2:-5GiB}
export OMP_NUM_THREADS=1
CFG=(--config configs/models/vit_giant14.lua DATASET=synthetic NUM_SAMPLES=8 BATCH_SIZE=1 IMG_SIZE="$IMG"
     METRICS_FILE= PREFETCH=false)

echo "== 1. the estimate per rank (4 ranks)"
"$LUNAR" config show configs/models/vit_giant14.lua --world 4 BATCH_SIZE=1 IMG_SIZE="$IMG" DATASET=synthetic \
  | grep -E '^-- (parameters|memory per rank|  every rank)'
"$LUNAR" config show configs/models/vit_giant14.lua --world 4 BATCH_SIZE=1 IMG_SIZE="$IMG" DATASET=synthetic \
  'parallel={zero=3}' CHECKPOINT=true | grep -E '^-- (memory per rank|  every rank)'

echo "== 2. stage 0 under MEMORY_BUDGET=$BUDGET per rank"
mpirun --oversubscribe -np 4 "$LUNAR" bench/memory.lua "${CFG[@]}" MEMORY_BUDGET="$BUDGET" -- stages=0 ckpt=1 \
  2>&1 | grep -vE '^\[|^-----|MPI_ABORT|^$' | head -8
echo "exit status ${PIPESTATUS[0]}"

echo "== 3. stage 3 + full checkpointing under MEMORY_BUDGET=$BUDGET per rank: 3 steps"
need_kib=$(( 45 * 4256 * 1024 / 10 + 2 * 1024 * 1024 ))   # 4.5 x ~4.2 GiB + 2 GiB
avail_kib=$(awk '/MemAvailable/ {print $2}' /proc/meminfo)
if [ "$avail_kib" -lt "$need_kib" ]; then
  echo "not started: MemAvailable $((avail_kib / 1024)) MiB < $((need_kib / 1024)) MiB (other jobs hold the memory)"
  exit 2
fi
t0=$(date +%s)
mpirun --oversubscribe -np 4 /usr/bin/time -f 'rank process peak RSS %M KiB, wall %e s' \
  "$LUNAR" bench/memory.lua "${CFG[@]}" MEMORY_BUDGET="$BUDGET" BENCH_WARMUP=1 BENCH_STEPS=2 -- stages=3 ckpt=1
echo "exit status $?; job wall $(( $(date +%s) - t0 )) s (start-up and sharded init included)"
