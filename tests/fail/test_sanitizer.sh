#!/usr/bin/env bash
# tests/fail/test_sanitizer.sh: the training example under AddressSanitizer,
# UndefinedBehaviorSanitizer and LeakSanitizer (the `make SAN=1` host, which
# `make test` builds in $(BUILD)-san: CPU only, single rank). A tiny ViT on
# synthetic data trains 3 steps and saves a checkpoint, then resumes from it
# and trains 3 more steps in bf16 (in fp32 where the CPU lacks avx512_bf16:
# the bf16 part is then skipped, with the reason). Every run must exit 0
# with no sanitizer report on stderr (a report makes the run exit non-zero
# too: halt_on_error, exitcode 23).
# Run from the repository root (tests/run_all.sh does). LUNAR (default
# build/lunar) names the regular build; SAN_LUNAR (default the same path with
# -san after the build directory) the sanitizer one.
# Ends with "N passed, N failed, N skipped".
set -u
cd "$(dirname "$0")/../.."
. tests/fail/lib.sh
export OMP_NUM_THREADS=1
SAN_LUNAR=${SAN_LUNAR:-$(dirname "$LUNAR")-san/lunar}
export ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:exitcode=23
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export LSAN_OPTIONS=exitcode=23

if [ ! -x "$SAN_LUNAR" ]; then
  rc=-1; out=""; err="$SAN_LUNAR not built: make SAN=1 BUILD=$(dirname "$SAN_LUNAR") (make test builds it)"
  bad "the sanitizer build $SAN_LUNAR exists"; finish
fi

TINY=(--config configs/vit_fmnist.lua DATASET=synthetic NUM_SAMPLES=32 IMG_SIZE=8 PATCH_SIZE=4 IN_CHANS=1
      NUM_CLASSES=4 HIDDEN_SIZE=16 NUM_HEADS=2 DEPTH=2 BATCH_SIZE=8 NUM_EPOCHS=2 DROPOUT=0.1 LOG_EVERY=1
      EVAL_EVERY_EPOCH=false METRICS_FILE= CHECKPOINT_DIR="$T/ck")
no_report() { ! grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|SUMMARY: (Address|UndefinedBehavior|Leak)Sanitizer' <<<"$err"; }
clean_run() {   # label: exit 0 and no sanitizer report
  check "$1: exit 0" [ "$rc" -eq 0 ]
  check "$1: no sanitizer report" no_report
}

run "$SAN_LUNAR" -e 'print("sanitized", lunar.world_size)'
clean_run "lunar -e under the sanitizers"

run "$SAN_LUNAR" examples/train_with_engine.lua "${TINY[@]}" MAX_STEPS=3 SAVE_EVERY=3
clean_run "3 fp32 steps and a checkpoint"
check "3 fp32 steps and a checkpoint: step_3 saved" [ -f "$T/ck/step_3/index.json" ]

if bf16=$("$LUNAR" -e 'local ok, why = lunar.ops.bf16_supported("cpu"); io.write(ok and "yes" or why)') &&
   [ "$bf16" = yes ]; then
  precision=bf16
else
  precision=fp32
  skp "resume in bf16 under the sanitizers" "this CPU has no avx512_bf16 ($bf16); resumed in fp32"
fi
run "$SAN_LUNAR" examples/train_with_engine.lua "${TINY[@]}" MAX_STEPS=6 RESUME=auto precision=$precision
clean_run "resume from step_3 and 3 $precision steps"
check "resume: from step_3, then step 6 logged" \
  eval 'has "$out" "resumed from $T/ck/step_3" && grep -q "step 6/6 " <<<"$out"'
finish
