#!/usr/bin/env bash
# tests/fail/test_tensorboard.sh: Lunar's TensorBoard event files read back by
# TensorBoard's own reader (tests/golden/tensorboard_check.py, with PyPI's
# tensorboard in a virtual environment this script makes with
# --system-site-packages, for Debian's numpy, and keeps in the build directory:
# $(dirname LUNAR)/tensorboard-venv, made once). Skipped, and counted as
# skipped, where the venv or PyPI is not available (no network).
#   - the engine example with TENSORBOARD_DIR: every scalar equals METRICS_FILE
#   - the trainer example (hooks.TensorboardHook): the same, images/s positive and
#     their median within 2x of the file's (the hook times the steps with its own clock)
#   - a writer that dies without closing its file keeps every step written
#   - a TENSORBOARD_DIR that cannot be made is a user error naming the key
# Run from the repository root (tests/run_all.sh does); LUNAR (default
# build/lunar), PYTHON (default /usr/bin/python3). Ends with "N passed, N failed, N skipped".
set -u
cd "$(dirname "$0")/../.."
. tests/fail/lib.sh
export OMP_NUM_THREADS=1
PYTHON=${PYTHON:-/usr/bin/python3}
VENV=$(dirname "$LUNAR")/tensorboard-venv
# the versions tensorboard_check.py was checked with (Python 3.11, numpy 1.24 from Debian 12);
# --no-deps: the reader needs only these (not grpcio, werkzeug or the server)
PIP_PKGS=(tensorboard==2.14.0 protobuf==4.23.4 absl-py==2.1.0 six==1.16.0)
READER='from tensorboard.backend.event_processing import event_accumulator'

# a run: 2 epochs of 4 batches on a tiny ViT (8 steps, 2 evaluations)
SMALL=(--config configs/vit_fmnist.lua DATASET=synthetic NUM_SAMPLES=160 NUM_EPOCHS=2 BATCH_SIZE=32
       HIDDEN_SIZE=32 DEPTH=1 NUM_HEADS=2 MLP_RATIO=2 LOG_EVERY=1)
# a bad TENSORBOARD_DIR needs no venv: a user error naming the key and the path, no traceback
touch "$T/plain"
run "$LUNAR" examples/train_with_engine.lua "${SMALL[@]}" TENSORBOARD_DIR="$T/plain/tb" METRICS_FILE=''
check "TENSORBOARD_DIR under a file: exit 1" [ "$rc" -eq 1 ]
check "  the message names TENSORBOARD_DIR and the path" has "$err" "TENSORBOARD_DIR: cannot create directory $T/plain/tb"
check "  without a traceback" bash -c '! grep -q "stack traceback" <<<"$1"' _ "$err"

if ! "$VENV/bin/python" -c "$READER" 2>/dev/null; then
  rm -rf "$VENV"
  if ! "$PYTHON" -m venv --system-site-packages "$VENV" >"$T/venv.log" 2>&1; then
    skp "tensorboard_check.py" "could not make a venv (apt-get install python3-venv): $(tail -n 1 "$T/venv.log")"; finish
  fi
  if ! timeout 600 "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps "${PIP_PKGS[@]}" \
       >"$T/pip.log" 2>&1 || ! "$VENV/bin/python" -c "$READER" >>"$T/pip.log" 2>&1; then
    rm -rf "$VENV"
    skp "tensorboard_check.py" "pip could not install ${PIP_PKGS[*]} (no network?): $(tail -n 1 "$T/pip.log")"; finish
  fi
fi

# py_check NAME ARGS...: runs tensorboard_check.py and adds its counts
py_check() {
  local name=$1; shift
  run "$VENV/bin/python" tests/golden/tensorboard_check.py "$@"
  printf '%s\n' "$out" "$err" | grep -v '^$' | sed 's/^/  /'
  local line; line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' <<<"$out" | tail -n 1)
  if [ -z "$line" ]; then
    bad "$name: tensorboard_check.py ran to its summary line"
  else
    pass=$((pass + $(sed -E 's/^([0-9]+) passed.*/\1/' <<<"$line")))
    fail=$((fail + $(sed -E 's/^[0-9]+ passed, ([0-9]+) failed.*/\1/' <<<"$line")))
  fi
}

# peak tensor MiB and parameter count from the run's own lines
peak_mib() { sed -nE 's/^peak memory: ([0-9.]+) MiB in tensors.*/\1/p' <<<"$1"; }
num_params() { sed -nE 's/.*: ViT ([0-9]+) params.*/\1/p' <<<"$1"; }

for ex in engine trainer; do
  t0=$(date +%s.%N)
  run "$LUNAR" examples/train_with_$ex.lua "${SMALL[@]}" METRICS_FILE="$T/$ex.jsonl" TENSORBOARD_DIR="$T/tb_$ex"
  t1=$(date +%s.%N)
  check "$ex example with TENSORBOARD_DIR runs" [ "$rc" -eq 0 ]
  [ "$rc" -eq 0 ] || continue
  rate=(); [ "$ex" = trainer ] && rate=(--rate-factor 2)
  py_check "$ex" run "$T/tb_$ex" "$T/$ex.jsonl" "$(peak_mib "$out")" "$(num_params "$out")" "$t0" "$t1" "${rate[@]}"
done

# a writer that dies (os.exit without closing anything) keeps its steps: each is written when scalars returns
run "$LUNAR" -e "local w = lunar.io.tfevents('$T/tb_crash')
  for s = 1, 5 do w:scalars(s, {'x'}, {1 / s}) end
  os.exit(3, false)"
check "the writer's process exits 3" [ "$rc" -eq 3 ]
py_check crash steps "$T/tb_crash" x 5
finish
