#!/usr/bin/env bash
# tests/mpi/test_strategy.sh: `lunar profile` and `lunar search` end to end
# (lunar.strategy; the dynamic program itself is tested on hand-made profiles
# in tests/lua/test_strategy.lua).
#   - lunar profile on one rank and under mpirun -np 2 (a tiny ViT, batches 1
#     and 2, one timed run each): a profile file with tensor sizes 1 and 2 and
#     the collectives over 2 ranks
#   - lunar search --world 2 under a budget that forces checkpointing (below
#     the estimate of the config's own layout): a strategy config that
#     `mpirun -np 2 examples/train_with_engine.lua --config STRATEGY.lua`
#     trains for 3 steps, its losses equal to the same strategy on one rank
#     (the global batch unsplit, 1e-5 relative: compare_metrics.lua)
#   - a layerwise strategy (per-block tensor sizes and checkpointing) written as
#     the search writes it trains on 2 ranks with one rank's losses
#   - bad input: a budget nothing fits (the smallest memory printed), a
#     profile of another model (warned, naming the key), missing options
# Ends with "N passed, N failed[, N skipped]".
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
LUNAR=${LUNAR:-$BUILD/lunar}
. tests/fail/lib.sh
export OMP_NUM_THREADS=1
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT

cat >"$T/tiny.lua" <<'CFG'
DATASET = 'synthetic'
NUM_SAMPLES = 48
IMG_SIZE = 16
PATCH_SIZE = 4
IN_CHANS = 1
HIDDEN_SIZE = 32
DEPTH = 4
NUM_HEADS = 4
BATCH_SIZE = 8
PREFETCH = false
MAX_STEPS = 3
EVAL_EVERY_EPOCH = false
NUM_THREADS = 1
SEED = 5
CFG

run timeout 60 "$LUNAR" profile --config "$T/tiny.lua" --out "$T/one.json" --batches 1,2 --reps 1
check "profile on one rank: exit 0" [ "$rc" -eq 0 ]
check "profile on one rank: a JSON profile with the block's tensor size 1" grep -q '"kind":"lunar-profile"' "$T/one.json"

run "$LUNAR" --version
if has "$out" "MPI: no" || ! command -v mpirun >/dev/null; then skp "mpirun tests" "no MPI in this build or no mpirun"; finish; fi

run timeout 120 mpirun -np 2 "$LUNAR" profile --config "$T/tiny.lua" --out "$T/prof.json" --batches 1,2 --reps 1
check "profile -np 2: exit 0" [ "$rc" -eq 0 ]
check "profile -np 2: tensor size 2 measured" grep -q '"2":{"act"' "$T/prof.json"
check "profile -np 2: all_reduce over 2 ranks measured" \
  "$LUNAR" -e "local p = lunar.json.decode(io.open('$T/prof.json'):read('a')); assert(p.comm.all_reduce.consecutive['2'].beta >= 0)"

# the budget: the config's own layout (data 2) needs more, so the search must checkpoint or split
need=$("$LUNAR" -e "local m = require('lunar.memory'); local c = require('lunar.config').load('$T/tiny.lua'); print(math.floor(m.estimate(c, {world = 2}).max * 0.7))")
run timeout 60 "$LUNAR" search --config "$T/tiny.lua" --profile "$T/prof.json" --world 2 --memory-budget "$need" \
  --out "$T/strategy.lua"
check "search: exit 0" [ "$rc" -eq 0 ]
check "search: prints the best with its predicted step and memory" grep -qE '^best: .*predicted step [0-9.e-]+ s .*memory' <<<"$out"
check "search: prints the next best" grep -q '^next 1: ' <<<"$out"
echo "$out" | sed 's/^/    /' | head -n 8
check "search: the strategy fits the budget (MEMORY_BUDGET set to it)" grep -q "MEMORY_BUDGET = $need," "$T/strategy.lua"

run timeout 120 mpirun -np 2 "$LUNAR" examples/train_with_engine.lua --config "$T/strategy.lua" METRICS_FILE="$T/par.jsonl"
check "the searched strategy trains on 2 ranks: exit 0" [ "$rc" -eq 0 ]
[ "$rc" -ne 0 ] && echo "$err" | tail -n 5 | sed 's/^/    | /'
# the same strategy on one rank: every layout key reset, the global batch on one rank
gb=$("$LUNAR" -e "local c = require('lunar.config').load('$T/strategy.lua'); print(c.BATCH_SIZE * c.parallel.data)")
run timeout 120 "$LUNAR" examples/train_with_engine.lua --config "$T/strategy.lua" METRICS_FILE="$T/one.jsonl" \
  'parallel={}' BATCH_SIZE="$gb" MEMORY_BUDGET=0
check "the same strategy on one rank: exit 0" [ "$rc" -eq 0 ]
run "$LUNAR" tests/mpi/compare_metrics.lua -- "$T/one.jsonl" "$T/par.jsonl" 1e-5
check "the searched strategy's losses equal one rank's (1e-5)" [ "$rc" -eq 0 ]
echo "    $out$err"

# a layerwise strategy as the search writes it (per-block tensor sizes {2, 1, 1, 2}, blocks 1 and 2
# checkpointed; lunar.strategy.search.write_config): trains on 2 ranks with one rank's losses
run "$LUNAR" -e "
local search = require('lunar.strategy.search')
local cfg = require('lunar.config').load('$T/tiny.lua')
local blocks = {{tp = 2, ckpt = false}, {tp = 1, ckpt = true}, {tp = 1, ckpt = true}, {tp = 2, ckpt = false}}
local r = {pp = 1, dp = 2, zero = 0, m = 2, global_batch = 16, blocks = blocks, block_tensor = {2, 1, 1, 2},
  memory = {0}, time = 0, max_memory = 0, runnable = true}
search.write_config(cfg, {best = r}, '$T/layerwise.lua', {world = 2, budget = 1 << 30})"
check "a layerwise strategy config is written" grep -q "block_tensor = { 2, 1, 1, 2 }" "$T/layerwise.lua"
run timeout 120 mpirun -np 2 "$LUNAR" examples/train_with_engine.lua --config "$T/layerwise.lua" METRICS_FILE="$T/lw2.jsonl"
check "the layerwise strategy trains on 2 ranks: exit 0" [ "$rc" -eq 0 ]
[ "$rc" -ne 0 ] && echo "$err" | tail -n 5 | sed 's/^/    | /'
run timeout 120 "$LUNAR" examples/train_with_engine.lua --config "$T/layerwise.lua" METRICS_FILE="$T/lw1.jsonl" \
  'parallel={}' BATCH_SIZE=16
check "the layerwise strategy on one rank: exit 0" [ "$rc" -eq 0 ]
run "$LUNAR" tests/mpi/compare_metrics.lua -- "$T/lw1.jsonl" "$T/lw2.jsonl" 1e-5
check "the layerwise strategy's losses equal one rank's (1e-5)" [ "$rc" -eq 0 ]
echo "    $out$err"

# bad input
run timeout 60 "$LUNAR" search --config "$T/tiny.lua" --profile "$T/prof.json" --world 2 --memory-budget 1KiB
check "a budget nothing fits: exit 1" [ "$rc" -eq 1 ]
check "a budget nothing fits: says so with the smallest memory found" has "$err" "no strategy fits 1.0 KiB per rank on 2 ranks"
check "a budget nothing fits: the smallest memory" has "$err" "the smallest memory found is"
run timeout 60 "$LUNAR" search --config "$T/tiny.lua" --profile "$T/prof.json" --world 2 --memory-budget 1GiB \
  HIDDEN_SIZE=64 --out "$T/s2.lua"
check "a profile of another model: warned, naming the key" has "$err" "HIDDEN_SIZE: profile 32, config 64"
run timeout 60 "$LUNAR" search --config "$T/tiny.lua" --profile "$T/prof.json" --memory-budget 1GiB
check "no --world: exit 1 naming it" bash -c '[ "$1" -eq 1 ] && grep -q -- "--world N" <<<"$2"' _ "$rc" "$err"
run timeout 60 "$LUNAR" search --config "$T/tiny.lua" --profile "$T/prof.json" --world 2 --memory-budget lots
check "a bad --memory-budget: exit 1 naming it" bash -c '[ "$1" -eq 1 ] && grep -q "memory-budget .lots." <<<"$2"' _ "$rc" "$err"
run timeout 60 "$LUNAR" search --config "$T/tiny.lua" --profile "$T/nope.json" --world 2 --memory-budget 1GiB
check "a missing profile: exit 1 naming the file" bash -c '[ "$1" -eq 1 ] && grep -q "nope.json" <<<"$2"' _ "$rc" "$err"
finish
