#!/usr/bin/env bash
# tests/fail/test_bad_input.sh: bad input to the main job gets a clear error
# that names the problem, a non-zero exit, and never a bare signal:
# a missing dataset (path and Debian package), unknown and ill-typed config
# keys (key, file or command line), a shape mismatch (op, module path, both
# shapes), a non-finite loss (step number), a config that includes itself.
set -u
cd "$(dirname "$0")/../.."
. tests/fail/lib.sh
export OMP_NUM_THREADS=1
MAIN=(examples/train_with_engine.lua --config configs/vit_fmnist.lua)
# a tiny model so the runs that do train finish at once
TINY=(DEPTH=1 HIDDEN_SIZE=32 NUM_HEADS=1 METRICS_FILE="$T/m.jsonl")
clean_exit() { [ "$rc" -ge 1 ] && [ "$rc" -lt 128 ] && ! has "$err" "fatal signal"; }

run "$LUNAR" "${MAIN[@]}" DATA_DIR="$T/nowhere" "${TINY[@]}"
check "missing dataset: exits 1, no signal" clean_exit
check "missing dataset: names the path" has "$err" "$T/nowhere/train-images-idx3-ubyte.gz"
check "missing dataset: names the Debian package" has "$err" "dataset-fashion-mnist"

cat > "$T/typo.lua" <<'CFG'
include 'CONFIGS/vit_fmnist.lua'
LEARNNG_RATE = 1e-3
CFG
sed -i "s#CONFIGS#$PWD/configs#" "$T/typo.lua"
run "$LUNAR" examples/train_with_engine.lua --config "$T/typo.lua"
check "unknown key in a file: exits 1" clean_exit
check "unknown key in a file: names the key and the file" \
  bash -c 'grep -qF "LEARNNG_RATE" <<<"$1" && grep -qF "typo.lua" <<<"$1"' _ "$err"
check "unknown key: did you mean" has "$err" "did you mean 'LEARNING_RATE'"

run "$LUNAR" "${MAIN[@]}" BATCH_SIZE=abc
check "ill-typed override: exits 1" clean_exit
check "ill-typed override: names key and command line" \
  bash -c 'grep -qF "BATCH_SIZE" <<<"$1" && grep -qF "command line" <<<"$1" && grep -qF "integer" <<<"$1"' _ "$err"

run "$LUNAR" "${MAIN[@]}" DEPTH=2 DEPTH=3
check "key given twice on the command line" bash -c '[ "$1" -eq 1 ] && grep -qF "given twice" <<<"$2"' _ "$rc" "$err"

cat > "$T/self.lua" <<CFG
include '$T/self.lua'
CFG
run "$LUNAR" examples/train_with_engine.lua --config "$T/self.lua"
check "config that includes itself" bash -c '[ "$1" -eq 1 ] && grep -qF "include cycle" <<<"$2"' _ "$rc" "$err"

run "$LUNAR" "${MAIN[@]}" IN_CHANS=3 "${TINY[@]}"
check "data that does not fit the model: names IN_CHANS" bash -c '[ "$1" -eq 1 ] && grep -qF "IN_CHANS" <<<"$2"' _ "$rc" "$err"

cat > "$T/shape.lua" <<'LUA'
local nn = require('lunar.nn')
local m = nn.materialize(nn.ViT{img_size = 8, patch_size = 4, in_chans = 2, embed_dim = 16, depth = 2,
  num_heads = 2, mlp_ratio = 4, num_classes = 5}, 0)
m.blocks['1'].mlp.fc1:forward(lunar.zeros{3, 5, 12})
LUA
run "$LUNAR" "$T/shape.lua"
check "shape mismatch in a module: exits 1" clean_exit
check "shape mismatch: names the module path and both shapes" \
  bash -c 'grep -qF "blocks.1.mlp.fc1" <<<"$1" && grep -qF "[3, 5, 12]" <<<"$1" && grep -qF "16]" <<<"$1"' _ "$err"
run "$LUNAR" -e 'lunar.ops.linear(lunar.zeros{4, 6}, lunar.zeros{3, 5})'
check "shape mismatch in an op: names the op and both shapes" \
  bash -c '[ "$1" -eq 1 ] && grep -qF "linear: inp [4, 6] and weight [3, 5]" <<<"$2"' _ "$rc" "$err"

run "$LUNAR" "${MAIN[@]}" LEARNING_RATE=1e38 WARMUP_EPOCHS=0 MAX_STEPS=5 "${TINY[@]}"
check "non-finite loss: exits 1" clean_exit
check "non-finite loss: names the step" bash -c 'grep -qE "non-finite loss .* at step [0-9]+" <<<"$1"' _ "$err"

run "$LUNAR" "${MAIN[@]}" METRICS_FILE="$T/no/such/dir/m.jsonl" DEPTH=1 HIDDEN_SIZE=32 NUM_HEADS=1
check "unwritable metrics file: names it" bash -c '[ "$1" -eq 1 ] && grep -qF "METRICS_FILE" <<<"$2"' _ "$rc" "$err"

finish
