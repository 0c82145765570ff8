#!/usr/bin/env bash
# tests/mpi/test_memory.sh: lunar.memory's estimate against the allocator's
# measured peak (tests/mpi/memory_check.lua: model state, step peak and their
# sum within 10% per rank) for the one-rank layouts (fp32, bf16, three
# checkpointing settings, micro-batches, per-block checkpointing) and, under
# mpirun -np 2, data 2, tensor 2 (fp32, bf16, sequence parallel, 4
# micro-batches), pipeline 2 under 1F1B and GPipe, ZeRO stages 1, 2, 3 at data 2
# (stage 3 also with full checkpointing, stages 2 and 3 in bf16), and under -np 4
# hybrid ZeRO-3 (groups of 2), tensor 4
# and tensor 2 x pipeline 2 (8 micro-batches)
# (4 micro-batches) and pipeline 2 with checkpointing (uniform and per block);
# then MEMORY_BUDGET:
# a run over it stops before allocating (exit 1, one message naming the
# components and what to change) on one and on two ranks, a run under it trains.
# Skips the mpirun parts when mpirun is absent or the build has no MPI.
# Ends with "N passed, N failed[, N skipped]".
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
LUNAR=${LUNAR:-$BUILD/lunar}
. tests/fail/lib.sh
export OMP_NUM_THREADS=1

run timeout 120 "$LUNAR" tests/mpi/memory_check.lua
check "memory_check alone: exit 0" [ "$rc" -eq 0 ]
check "memory_check alone: 0 failed" grep -qE '^rank 0: memory_check [0-9]+ passed, 0 failed' <<<"$out"
grep -E 'model state' <<<"$out" | sed 's/^/    /'

TINY=(DATASET=synthetic NUM_SAMPLES=32 BATCH_SIZE=8 IMG_SIZE=16 HIDDEN_SIZE=32 DEPTH=2 NUM_HEADS=2
      MAX_STEPS=2 METRICS_FILE= EVAL_EVERY_EPOCH=false PREFETCH=false)
run timeout 60 "$LUNAR" examples/train_with_engine.lua "${TINY[@]}" MEMORY_BUDGET=64KiB
check "MEMORY_BUDGET under the estimate: exit 1" [ "$rc" -eq 1 ]
check "MEMORY_BUDGET: names the budget and the need" has "$err" "MEMORY_BUDGET 64.0 KiB per rank is less than the"
check "MEMORY_BUDGET: names what to change" has "$err" "activation_checkpointing = {granularity = 'full'}"
check "MEMORY_BUDGET: no traceback" bash -c "! grep -q 'stack traceback' <<<\"\$1\"" _ "$err"
check "MEMORY_BUDGET: stops before training" bash -c "! grep -qE '^step|loss' <<<\"\$1\"" _ "$out"
run timeout 60 "$LUNAR" examples/train_with_engine.lua "${TINY[@]}" MEMORY_BUDGET=1GiB
check "MEMORY_BUDGET=1GiB over the estimate: trains (exit 0)" [ "$rc" -eq 0 ]
run timeout 60 "$LUNAR" examples/train_with_engine.lua "${TINY[@]}" MEMORY_BUDGET=lots
check "MEMORY_BUDGET=lots: a config error naming the key" bash -c '[ "$1" -eq 1 ] && grep -q "MEMORY_BUDGET" <<<"$2"' _ "$rc" "$err"

run "$LUNAR" --version
if has "$out" "MPI: no"; then skp "mpirun tests" "this build has no MPI (NO_MPI=1)"; finish; fi
if ! command -v mpirun >/dev/null; then skp "mpirun tests" "mpirun not found"; finish; fi

run timeout 240 mpirun -np 2 "$LUNAR" tests/mpi/memory_check.lua
check "memory_check -np 2: exit 0" [ "$rc" -eq 0 ]
n_ok=$(grep -cE '^rank [0-9]+: memory_check [0-9]+ passed, 0 failed' <<<"$out")
check "memory_check -np 2: every rank reports 0 failed ($n_ok of 2)" [ "$n_ok" -eq 2 ]
grep -E 'model state' <<<"$out" | sed 's/^/    /'

run timeout 240 mpirun -np 4 "$LUNAR" tests/mpi/memory_check.lua
check "memory_check -np 4: exit 0" [ "$rc" -eq 0 ]
n_ok=$(grep -cE '^rank [0-9]+: memory_check [0-9]+ passed, 0 failed' <<<"$out")
check "memory_check -np 4: every rank reports 0 failed ($n_ok of 4)" [ "$n_ok" -eq 4 ]
grep -E '^tensor.*rank 0' <<<"$out" | sed 's/^/    /'

run timeout 60 mpirun -np 2 "$LUNAR" examples/train_with_engine.lua "${TINY[@]}" MEMORY_BUDGET=64KiB \
  'parallel={pipeline=2}'
check "MEMORY_BUDGET on 2 ranks: exit non-zero" [ "$rc" -ne 0 ]
n_msg=$(grep -c 'MEMORY_BUDGET 64.0 KiB per rank is less than' <<<"$err")
check "MEMORY_BUDGET on 2 ranks: printed once ($n_msg)" [ "$n_msg" -eq 1 ]
check "MEMORY_BUDGET on 2 ranks: names the pipeline stage" has "$err" "pipeline stage"
finish
