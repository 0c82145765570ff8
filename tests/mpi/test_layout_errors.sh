#!/usr/bin/env bash
# tests/mpi/test_layout_errors.sh: a `parallel` layout that does not fit is a
# configuration error: found before any collective, printed ONCE (by rank 0,
# not by every rank), naming what does not divide what, and every rank ends
# non-zero at once (examples/train_with_engine.lua under mpirun; the job is
# torn down by the host's MPI_Abort after rank 0 has printed).
#   - tests/mpi/grid_check.lua alone: grid.validate's messages, splits, rank order
#   - each bad layout under mpirun: exit non-zero within 10 s, the message
#     exactly once, no traceback, nothing after the check ran (no training line)
#   - a bad layout on one rank (no mpirun): exit 1 with the message
# Run from the repository root (tests/run_all.sh does). Ends with
# "N passed, N failed[, N skipped]".
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
LUNAR=${LUNAR:-$BUILD/lunar}
. tests/fail/lib.sh
export OMP_NUM_THREADS=1
MAIN=(examples/train_with_engine.lua --config configs/vit_fmnist.lua METRICS_FILE="$T/m.jsonl")

run timeout 60 "$LUNAR" tests/mpi/grid_check.lua
check "grid_check.lua: exit 0" [ "$rc" -eq 0 ]
check "grid_check.lua: 0 failed" grep -qE '^[0-9]+ passed, 0 failed' <<<"$out"
[ "$rc" -ne 0 ] && grep FAIL <<<"$out" | sed 's/^/    /'

run "$LUNAR" "${MAIN[@]}" 'parallel={pipeline=2}'
check "one rank, pipeline 2: exit 1" [ "$rc" -eq 1 ]
check "one rank, pipeline 2: names world size and pipeline x tensor" \
  has "$err" "world size 1 is not divisible by pipeline (2) x tensor (1) = 2"

need_mpirun

bad_layout() {   # np, name, expected message (fixed string), overrides...
  local np=$1 name=$2 msg=$3; shift 3
  local t0; t0=$(date +%s%N)
  run timeout 30 mpirun -np "$np" "$LUNAR" "${MAIN[@]}" "$@"
  local ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  local n; n=$(grep -cF -- "$msg" <<<"$out$err")
  echo "    ($name: rc=$rc, ${ms} ms, message printed $n time(s))"
  check "$name: exits non-zero (no hang)" bash -c '[ "$1" -ne 0 ] && [ "$1" -ne 124 ]' _ "$rc"
  check "$name: within 10 s" [ "$ms" -lt 10000 ]
  check "$name: the message, exactly once: $msg" [ "$n" -eq 1 ]
  check "$name: only rank 0 speaks (no [rank R] prefix, no traceback)" \
    eval '! grep -qE "lunar: \[rank [0-9]+\]|stack traceback" <<<"$out$err"'
  check "$name: found before training started" eval '! has "$out" "params," && ! has "$out" "process grid"'
}

bad_layout 3 "world 3, pipeline 2" "parallel: world size 3 is not divisible by pipeline (2) x tensor (1) = 2" \
  'parallel={pipeline=2}'
bad_layout 4 "world 4, pipeline 2 x tensor 4" "world size 4 is not divisible by pipeline (2) x tensor (4) = 8" \
  'parallel={pipeline=2, tensor={mode="1d", size=4}}'
bad_layout 4 "data 3 on 4 ranks" "data (3) x pipeline (2) x tensor (1) = 6 does not equal the world size 4" \
  'parallel={data=3, pipeline=2}'
bad_layout 2 "3 heads over tensor 2" "NUM_HEADS 3 is not divisible by the tensor parallel size 2" \
  'parallel={tensor={mode="1d", size=2}}'
bad_layout 4 "HIDDEN_SIZE 6 over tensor 4" "HIDDEN_SIZE 6 is not divisible by the tensor parallel size 4" \
  HIDDEN_SIZE=6 NUM_HEADS=3 'parallel={tensor={mode="1d", size=4}}'
bad_layout 2 "MLP hidden 9 over tensor 2" "the MLP hidden size 9 (HIDDEN_SIZE 8 x MLP_RATIO 1.125) is not divisible by the tensor parallel size 2" \
  HIDDEN_SIZE=8 NUM_HEADS=2 MLP_RATIO=1.125 'parallel={tensor={mode="1d", size=2}}'
bad_layout 4 "DEPTH 2 over pipeline 4" "DEPTH 2 is fewer blocks than the 4 pipeline stages" \
  DEPTH=2 'parallel={pipeline=4}'
bad_layout 2 "pipeline_split sums to 5 with DEPTH 6" "pipeline_split {2, 3} sums to 5 blocks, not DEPTH 6" \
  'parallel={pipeline=2, pipeline_split={2, 3}}'
bad_layout 2 "pipeline_split with an empty stage" "pipeline_split {6, 0} gives stage 1 0 blocks" \
  'parallel={pipeline=2, pipeline_split={6, 0}}'
bad_layout 2 "BATCH_SIZE 6 over 4 micro-batches" "BATCH_SIZE 6 (per data-parallel rank) is not divisible by NUM_MICRO_BATCHES 4" \
  BATCH_SIZE=6 NUM_MICRO_BATCHES=4 'parallel={pipeline=2}'
bad_layout 2 "tensor size 2 with mode none" "tensor parallel size 2 needs tensor mode '1d'" \
  'parallel={tensor={mode="none", size=2}}'
bad_layout 2 "sequence parallel, 5 tokens over tensor 2" "the 5 tokens per image (SEQ_LENGTH, class token included) are not divisible by the tensor parallel size 2" \
  IMG_SIZE=8 HIDDEN_SIZE=16 NUM_HEADS=4 'parallel={tensor={mode="1d", size=2}, sequence_parallel=true}'
bad_layout 4 "tensor mode 2d, size 2 (not q x q)" "tensor mode '2d' needs parallel.tensor.size = q x q (4, 9, 16, ...), got 2 (not a perfect square)" \
  'parallel={tensor={mode="2d", size=2}}'
bad_layout 4 "tensor mode 2.5d, depth 3 over size 4" "parallel.tensor.depth 3 does not divide parallel.tensor.size 4" \
  'parallel={tensor={mode="2.5d", size=4, depth=3}}'
bad_layout 4 "tensor mode 3d, size 4 (not q x q x q)" "tensor mode '3d' needs parallel.tensor.size = q x q x q (8, 27, 64, ...), got 4 (not a perfect cube)" \
  'parallel={tensor={mode="3d", size=4}}'
# sharded data parallelism (lunar.parallel.zero): the shard group divides the data-parallel group; an unknown
# stage is a config error naming the key and the accepted values
bad_layout 4 "zero group_size 3 of data 4" "parallel: parallel.zero.group_size 3 does not divide the data-parallel size 4" \
  'parallel={zero={stage=3, group_size=3}}'
bad_layout 2 "zero stage 4" "config key 'parallel.zero' stage must be 0, 1, 2, 3 or one of 'no_shard', 'optim', 'optim_grads', 'optim_grads_params', got 4" \
  'parallel={zero=4}'
bad_layout 2 "zero stage 'full'" "stage must be 0, 1, 2, 3 or one of 'no_shard', 'optim', 'optim_grads', 'optim_grads_params', got 'full'" \
  'parallel={zero={stage="full"}}'
# compositions of sharded data parallelism not proven yet: refused naming both keys, before any collective
bad_layout 4 "zero with tensor mode 2d" "parallel.zero (stage 2) does not compose with tensor mode '2d'" \
  NUM_HEADS=4 'parallel={zero=2, tensor={mode="2d", size=4}}'
bad_layout 2 "zero with per-block tensor sizes" "parallel.zero (stage 1) does not compose with parallel.block_tensor" \
  NUM_HEADS=4 'parallel={zero=1, block_tensor={2, 1, 1, 1, 1, 1}}'
# ZeRO stages 1-3 compose with domain parallelism (tests/mpi/domain_check.lua); stages 2 and 3 of a MODEL (domain
# parallelism needs one) not yet with tensor or pipeline parallelism (nor does domain parallelism itself)
bad_layout 4 "zero stage 3 of a MODEL with domain x tensor" "config key 'parallel.zero' stage 3 of a MODEL (models as code) composes with data and domain parallelism, not yet with tensor (2) or pipeline (1) parallelism" \
  MODEL=hybrid_vit NUM_HEADS=4 'parallel={zero=3, domain=2, tensor={mode="1d", size=2}}'
# an unknown mode is the config schema's error (an enum); printed once too
bad_layout 4 "unknown tensor mode 4d" "config key 'parallel.tensor.mode' must be one of '1d', '2d', '2.5d', '3d', 'none', got string \"4d\"" \
  'parallel={tensor={mode="4d", size=2}}'

finish
