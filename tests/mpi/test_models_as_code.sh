#!/usr/bin/env bash
# tests/mpi/test_models_as_code.sh: a config that defines its model (MODEL,
# configs/examples/) trains with the examples as they are, on one rank and data
# parallel under mpirun, and refuses tensor/pipeline parallelism with a message
# naming the key.
#   - each example config: examples/train_with_engine.lua, 3 steps, exit 0
#   - meanpool_head on 2 data-parallel ranks (BATCH_SIZE 4 each) = one rank with
#     BATCH_SIZE 8: the same losses (tests/mpi/compare_metrics.lua, 1e-5): the
#     reducer all-reduces the gradients of a composed model
#   - pipeline 2: exit non-zero, the message names MODEL and the config file, once
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

run "$LUNAR" --version
if has "$out" "MPI: no"; then
  skp "mpirun tests" "this build has no MPI (NO_MPI=1)"; finish
fi
if ! command -v mpirun >/dev/null; then
  skp "mpirun tests" "mpirun not found (apt-get install openmpi-bin)"; finish
fi

MAIN=(examples/train_with_engine.lua --config configs/examples/meanpool_head.lua "${SMALL[@]}")
run timeout 120 "$LUNAR" "${MAIN[@]}" BATCH_SIZE=8 METRICS_FILE="$T/one.jsonl"
check "meanpool_head, one rank: exit 0" [ "$rc" -eq 0 ]
run timeout 120 mpirun --oversubscribe -np 2 "$LUNAR" "${MAIN[@]}" BATCH_SIZE=4 METRICS_FILE="$T/dp.jsonl"
check "meanpool_head, dp 2: exit 0" [ "$rc" -eq 0 ]
run "$LUNAR" tests/mpi/compare_metrics.lua -- "$T/one.jsonl" "$T/dp.jsonl" 1e-5
check "meanpool_head, dp 2: the losses of one rank" [ "$rc" -eq 0 ]
echo "    (dp 2: ${out:-$err})"

run timeout 60 mpirun --oversubscribe -np 2 "$LUNAR" "${MAIN[@]}" BATCH_SIZE=4 'parallel={pipeline=2}'
check "MODEL with pipeline 2: exits non-zero" bash -c '[ "$1" -ne 0 ] && [ "$1" -ne 124 ]' _ "$rc"
check "MODEL with pipeline 2: names the key, the file and the layout, once" \
  [ "$(grep -c "configs/examples/meanpool_head.lua:[0-9]*: config key 'MODEL' .*data parallelism only.*parallel.pipeline = 2" <<<"$out$err")" -eq 1 ]
finish
