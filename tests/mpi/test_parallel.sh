#!/usr/bin/env bash
# tests/mpi/test_parallel.sh: every parallel layout trains the same model as
# one rank (DESIGN.md), under mpirun --oversubscribe, one thread per rank.
#   - tests/mpi/mappings_check.lua under mpirun -np 2 and 4: each mapping
#     (copy/reduce, scatter/gather/reduce_scatter along tokens) forward and
#     backward on rank-dependent values; Column/Row parallel linear against
#     nn.Linear on the same full weights (with and without sequence parallel)
#   - tests/mpi/parallel_check.lua alone (micro-batches, accumulation) and
#     under mpirun -np 2, 4 and 8: each job loops over the issue's layouts
#     (dp, tp, pp) whose product is its size, both schedules, 1/2/4
#     micro-batches, sequence parallelism, gradient accumulation, uneven
#     splits, a repeat run; losses, gradient norms and gathered parameters
#     against the single-rank reference each rank computes itself (see the
#     script's header for the tolerances)
#   - examples/train_with_engine.lua (unchanged) on a tiny synthetic setup,
#     one rank against four layouts (one of them ZeRO-3: its evaluation
#     forward gathers and frees the units too): the metrics files agree (losses within
#     1e-5 relative, test accuracies equal), the grid is printed once
# Skips the mpirun parts when mpirun is absent or the build has no MPI.
# Run from the repository root (tests/run_all.sh does). Ends with
# "N passed, N failed[, N skipped]".
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
LUNAR=${LUNAR:-$BUILD/lunar}
. tests/fail/lib.sh
export OMP_NUM_THREADS=1

# --- one rank -------------------------------------------------------------------------------
run timeout 120 "$LUNAR" tests/mpi/parallel_check.lua
check "parallel_check alone: exit 0" [ "$rc" -eq 0 ]
check "parallel_check alone: 0 failed" grep -qE '^rank 0: parallel_check [0-9]+ passed, 0 failed' <<<"$out"
grep -E '^world' <<<"$out" | sed 's/^/    /'

need_mpirun

# --- the mappings and parallel linear layers, rank-dependent inputs -------------------------------
for np in 2 4; do
  run timeout 60 mpirun -np $np "$LUNAR" tests/mpi/mappings_check.lua
  check "mappings_check -np $np: exit 0" [ "$rc" -eq 0 ]
  n_ok=$(grep -cE '^rank [0-9]+: mappings_check [0-9]+ passed, 0 failed' <<<"$out")
  check "mappings_check -np $np: every rank reports 0 failed ($n_ok of $np)" [ "$n_ok" -eq $np ]
  [ "$rc" -ne 0 ] && { grep -E 'FAIL' <<<"$out$err" | head -n 10 | sed 's/^/    /'; }
done

# --- every layout, one job per world size ----------------------------------------------------
for np in 2 4 8; do
  t0=$SECONDS
  run timeout 240 mpirun -np $np "$LUNAR" tests/mpi/parallel_check.lua
  check "parallel_check -np $np: exit 0" [ "$rc" -eq 0 ]
  n_ok=$(grep -cE '^rank [0-9]+: parallel_check [0-9]+ passed, 0 failed' <<<"$out")
  check "parallel_check -np $np: every rank reports 0 failed ($n_ok of $np)" [ "$n_ok" -eq $np ]
  check "parallel_check -np $np: runs configurations" grep -qE "^world $np: [1-9][0-9]* configurations" <<<"$out"
  check "parallel_check -np $np: the repeat is bitwise identical" grep -q 'repeated: bitwise identical' <<<"$out"
  echo "    ($(grep -E "^world" <<<"$out"); job $((SECONDS - t0)) s)"
  [ "$rc" -ne 0 ] && { grep -E 'FAIL' <<<"$out$err" | head -n 10 | sed 's/^/    /'; }
done

# --- the example, unchanged, on one rank and under mpirun ------------------------------------------
MAIN=(examples/train_with_engine.lua --config configs/vit_fmnist.lua DATASET=synthetic NUM_SAMPLES=40
      IMG_SIZE=12 PATCH_SIZE=4 IN_CHANS=2 NUM_CLASSES=5 HIDDEN_SIZE=16 DEPTH=4 NUM_HEADS=4 NUM_EPOCHS=2
      WARMUP_EPOCHS=0.5 LOG_EVERY=1 clip_grad_norm=1.0)
run timeout 60 "$LUNAR" "${MAIN[@]}" BATCH_SIZE=8 METRICS_FILE="$T/one.jsonl"
check "example on one rank: exit 0" [ "$rc" -eq 0 ]
check "example on one rank: no grid table" eval '! has "$out" "process grid"'

example_layout() {   # np, label, overrides...
  local np=$1 label=$2; shift 2
  run timeout 120 mpirun -np "$np" "$LUNAR" "${MAIN[@]}" METRICS_FILE="$T/par.jsonl" "$@"
  check "example, $label: exit 0" [ "$rc" -eq 0 ]
  check "example, $label: the grid is printed once" [ "$(grep -c '^process grid' <<<"$out")" -eq 1 ]
  check "example, $label: test accuracy reported" has "$out" "test accuracy"
  local o=$out e=$err r=$rc
  run "$LUNAR" tests/mpi/compare_metrics.lua -- "$T/one.jsonl" "$T/par.jsonl" 1e-5
  check "example, $label: losses and accuracies match one rank" [ "$rc" -eq 0 ]
  echo "    ($label: ${out:-$err})"
  out=$o err=$e rc=$r
}
example_layout 2 "dp 2" BATCH_SIZE=4
example_layout 2 "dp 2, ZeRO-3" BATCH_SIZE=4 'parallel={zero=3}'
example_layout 4 "tp 2 x pp 2, sequence parallel, gpipe, 4 micro-batches" BATCH_SIZE=8 \
  'parallel={pipeline=2, tensor={mode="1d", size=2}, sequence_parallel=true, pipeline_schedule="gpipe"}' NUM_MICRO_BATCHES=4
example_layout 8 "dp 2 x pp 2 x tp 2, 1f1b, 2 micro-batches" BATCH_SIZE=4 \
  'parallel={pipeline=2, tensor={mode="1d", size=2}}' NUM_MICRO_BATCHES=2
check "example dp 2 x pp 2 x tp 2: the grid table names every rank" \
  bash -c 'grep -qF "stage 0 (blocks 0-1): dp 0: [0 1]  dp 1: [2 3]" <<<"$1" && grep -qF "stage 1 (blocks 2-3): dp 0: [4 5]  dp 1: [6 7]" <<<"$1"' _ "$out"

finish
