#!/usr/bin/env bash
# tests/mpi/test_progress.sh: the progress bar (lunar.log.progress) is drawn on
# rank 0 of a one-rank job whose stdout is a terminal, and nowhere else. Open
# MPI gives every rank a pty, so under mpirun isatty(1) is true even when
# mpirun's output goes to a file: a job of several ranks never draws the bar
# (its log gets the LOG_EVERY lines instead); mpirun -np 1 is a one-rank job.
# The terminal is `script`'s pty. Skips the parts whose tool is missing.
# Run from the repository root (tests/run_all.sh does). Ends with
# "N passed, N failed[, N skipped]".
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
LUNAR=${LUNAR:-$BUILD/lunar}
. tests/fail/lib.sh
export OMP_NUM_THREADS=1
CR=$'\r'

cat >"$T/bar.lua" <<'LUA'
local log = require('lunar.log')
local b = log.progress(3, 'epoch 1')
io.write(string.format('rank %d isatty %s active %s\n', lunar.rank, tostring(lunar.isatty(1)), tostring(b.active)))
for i = 1, 3 do b:update(i, 'loss 1.0') end
b:finish()
LUA
MAIN=(examples/train_with_engine.lua --config configs/vit_fmnist.lua DATASET=synthetic NUM_SAMPLES=32
      IMG_SIZE=8 PATCH_SIZE=4 IN_CHANS=1 NUM_CLASSES=4 HIDDEN_SIZE=16 DEPTH=2 NUM_HEADS=2
      NUM_EPOCHS=1 LOG_EVERY=2 EVAL_EVERY_EPOCH=false METRICS_FILE=)

# --- one rank ---------------------------------------------------------------------------------
run "$LUNAR" "$T/bar.lua"
check "one rank, stdout a file: no bar" eval 'has "$out" "rank 0 isatty false active false" && ! has "$out" "$CR"'
if command -v script >/dev/null; then
  run script -qec "$LUNAR $T/bar.lua" /dev/null
  check "one rank on a terminal: the bar is drawn" \
    eval 'has "$out" "active true" && has "$out" "${CR}epoch 1 [==============================] 3/3 loss 1.0"'
  run script -qec "$LUNAR ${MAIN[*]} BATCH_SIZE=4" /dev/null
  check "the example on a terminal: the bar, not the LOG_EVERY lines" \
    eval '[ "$rc" -eq 0 ] && has "$out" "${CR}epoch 1 [" && ! grep -q "^epoch 1 step 2/8" <<<"$out"'
else
  skp "one rank on a terminal" "script (util-linux) not found"
fi

# --- under mpirun -----------------------------------------------------------------------------------
need_mpirun
run timeout 60 mpirun -np 2 "$LUNAR" "$T/bar.lua"
check "mpirun -np 2: exit 0" [ "$rc" -eq 0 ]
check "mpirun -np 2: no rank draws the bar, no carriage return in the log" \
  eval 'has "$out" "rank 0 isatty" && has "$out" "rank 1 isatty" && ! has "$out" "active true" && ! has "$out$err" "$CR"'
has "$out" "isatty true" && echo "    (the ranks' stdout is a pty: isatty(1) is true under mpirun)"
run timeout 60 mpirun -np 1 "$LUNAR" "$T/bar.lua"
if has "$out" "isatty true"; then
  check "mpirun -np 1 (a pty): one rank, the bar is drawn" has "$out" "active true"
else
  check "mpirun -np 1 (no pty): no bar" has "$out" "active false"
fi
run timeout 120 mpirun -np 2 "$LUNAR" "${MAIN[@]}" BATCH_SIZE=2
check "the example under mpirun -np 2: exit 0, the LOG_EVERY lines once, no bar" \
  eval '[ "$rc" -eq 0 ] && [ "$(grep -c "^epoch 1 step 2/8 " <<<"$out")" -eq 1 ] && ! has "$out$err" "$CR"'
finish
