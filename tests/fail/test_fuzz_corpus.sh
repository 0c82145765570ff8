#!/usr/bin/env bash
# tests/fail/test_fuzz_corpus.sh: the fuzz targets' inputs as a regression
# test. Every file of $BUILD/fuzz-seeds/<target>/ (valid seeds, and
# regression_* inputs that once crashed a reader, kept after the fix, that
# fuzz/gen_corpus.c writes; make test generates them) goes through the target built with gcc, ASan and UBSan when gcc has them
# (make test builds $BUILD/fuzz-replay/fuzz_<target> from fuzz/replay_main.c):
# the reader must return (a dataset, a handle or an error with a message),
# never crash, leak, hit undefined behaviour or break the target's invariants.
# One process per file, so a failure names its input. See fuzz/README.md.
set -u
cd "$(dirname "$0")/../.."
. tests/fail/lib.sh
BUILD=${BUILD:-$(dirname "$LUNAR")}
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

for t in safetensors idx cifar image; do
  bin="$BUILD/fuzz-replay/fuzz_$t"
  if [ ! -x "$bin" ]; then
    rc=-1; out=""; err="$bin not built (make test or make fuzz-replay builds it)"
    bad "fuzz_$t: replay binary exists"
    continue
  fi
  seeds=0
  for f in "$BUILD/fuzz-seeds/$t"/*; do
    [ -f "$f" ] || continue
    seeds=$((seeds + 1))
    run "$bin" "$f"
    check "fuzz_$t: ${f#"$BUILD"/fuzz-seeds/}" bash -c '[ "$1" -eq 0 ] && grep -qF "ok $2" <<<"$3"' _ "$rc" "$f" "$out"
  done
  check "fuzz_$t: has generated seeds (make fuzz-corpus)" [ "$seeds" -gt 0 ]
done
check "the regressions are replayed" [ -f "$BUILD/fuzz-seeds/safetensors/regression_zero_size_stride_overflow.safetensors" ]
finish
