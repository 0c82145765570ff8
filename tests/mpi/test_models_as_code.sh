#!/usr/bin/env bash
# tests/mpi/test_models_as_code.sh: a config that defines its model (MODEL,
# configs/examples/) trains with the examples as they are, on one rank and data
# tensor and pipeline parallel under mpirun, and refuses sequence parallelism
# with a message naming the key.
#   - each example config: examples/train_with_engine.lua, 3 steps, exit 0
#   - meanpool_head on 2 data-parallel ranks (BATCH_SIZE 4 each), on 2 pipeline
#     stages (1F1B and GPipe, 2 micro-batches), dp 2 x pipeline 2, tensor 2
#     (attention split, the composed MLP and head replicated) and tensor 2 x
#     pipeline 2 = one rank with BATCH_SIZE 8: the same losses
#     (tests/mpi/compare_metrics.lua, 1e-5); 2 pipeline stages with CHECKPOINT
#     = true (each stage's blocks checkpointed) too
#   - sequence parallelism: exit non-zero, the message names MODEL and the
#     config file, once
# Run from the repository root (tests/run_all.sh does). Ends with
# "N passed, N failed[, N skipped]".
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
LUNAR=${LUNAR:-$BUILD/lunar}
. tests/fail/lib.sh
export OMP_NUM_THREADS=1
SMALL=(DATASET=synthetic NUM_SAMPLES=48 HIDDEN_SIZE=16 NUM_HEADS=2 DEPTH=2 MAX_STEPS=3 LOG_EVERY=1
       EVAL_EVERY_EPOCH=false)

for c in meanpool_head postnorm conv_stem vit_composed; do
  run timeout 120 "$LUNAR" examples/train_with_engine.lua --config configs/examples/$c.lua "${SMALL[@]}" BATCH_SIZE=8
  check "$c: trains 3 steps (exit 0)" [ "$rc" -eq 0 ]
  check "$c: logs step 3" has "$out" "step 3/3"
done

need_mpirun

MAIN=(examples/train_with_engine.lua --config configs/examples/meanpool_head.lua "${SMALL[@]}")
run timeout 120 "$LUNAR" "${MAIN[@]}" BATCH_SIZE=8 METRICS_FILE="$T/one.jsonl"
check "meanpool_head, one rank: exit 0" [ "$rc" -eq 0 ]
same_as_one_rank() {   # np, label, overrides...: the job trains the losses of one rank
  local np=$1 label=$2; shift 2
  run timeout 180 mpirun --oversubscribe -np "$np" "$LUNAR" "${MAIN[@]}" METRICS_FILE="$T/par.jsonl" "$@"
  check "meanpool_head, $label: exit 0" [ "$rc" -eq 0 ]
  run "$LUNAR" tests/mpi/compare_metrics.lua -- "$T/one.jsonl" "$T/par.jsonl" 1e-5
  check "meanpool_head, $label: the losses of one rank" [ "$rc" -eq 0 ]
  echo "    ($label: ${out:-$err})"
}
same_as_one_rank 2 "dp 2" BATCH_SIZE=4
same_as_one_rank 2 "pipeline 2, 1f1b, 2 micro-batches" BATCH_SIZE=8 NUM_MICRO_BATCHES=2 'parallel={pipeline=2}'
same_as_one_rank 2 "pipeline 2, gpipe, 2 micro-batches" BATCH_SIZE=8 NUM_MICRO_BATCHES=2 \
  "parallel={pipeline=2, pipeline_schedule='gpipe'}"
same_as_one_rank 4 "dp 2 x pipeline 2" BATCH_SIZE=4 NUM_MICRO_BATCHES=2 'parallel={pipeline=2}'
# activation checkpointing of each stage's blocks (CHECKPOINT: the MODEL's 'blocks', one segment a block)
same_as_one_rank 2 "pipeline 2, CHECKPOINT=true" BATCH_SIZE=8 NUM_MICRO_BATCHES=2 'parallel={pipeline=2}' CHECKPOINT=true

same_as_one_rank 2 "tensor 2" BATCH_SIZE=8 'parallel={tensor={mode="1d", size=2}}'
same_as_one_rank 4 "tensor 2 x pipeline 2" BATCH_SIZE=8 NUM_MICRO_BATCHES=2 \
  'parallel={pipeline=2, tensor={mode="1d", size=2}}'

# FLOP/s of a split MODEL: each rank counts its part, the group sums (tests/mpi/flops_check.lua)
run timeout 120 mpirun --oversubscribe -np 2 "$LUNAR" tests/mpi/flops_check.lua -- 'parallel={pipeline=2}' \
  'parallel={tensor={mode="1d", size=2}}'
check "nn.flops, pipeline 2 and tensor 2: the parts sum to the unsplit count (exit 0)" [ "$rc" -eq 0 ]
echo "    $(grep 'flops_check' <<<"$out" | head -1)"
run timeout 120 mpirun --oversubscribe -np 4 "$LUNAR" tests/mpi/flops_check.lua -- \
  'parallel={pipeline=2, tensor={mode="1d", size=2}}'
check "nn.flops, pipeline 2 x tensor 2: the parts sum to the unsplit count (exit 0)" [ "$rc" -eq 0 ]

run timeout 60 mpirun --oversubscribe -np 2 "$LUNAR" "${MAIN[@]}" BATCH_SIZE=8 \
  'parallel={tensor={mode="1d", size=2}, sequence_parallel=true}'
check "MODEL with sequence parallelism: exits non-zero" bash -c '[ "$1" -ne 0 ] && [ "$1" -ne 124 ]' _ "$rc"
check "MODEL with sequence parallelism: names the key and the config file, once" \
  [ "$(grep -c "configs/examples/meanpool_head.lua:[0-9]*: config key 'MODEL' .*sequence_parallel" <<<"$out$err")" -eq 1 ]
finish
