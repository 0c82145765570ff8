#!/usr/bin/env bash
# Runs Lunar's test suites and prints one closing "N passed, N failed, N skipped"
# line (a skip: the machine lacks what the test needs, e.g. a GPU; never a pass).
#   tests/run_all.sh [c|lua|fail|mpi|emu ...]   (no argument: every suite; emu, the
#   CUDA tests on the CPU emulation of tests/cuda_emu, when LUNAR_TEST_EMU=1)
# Each test program ends its output with its own "N passed, N failed, N skipped" line;
# a program that crashes or prints no such line counts as one failure.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
export LUNAR="$BUILD/lunar"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}   # one thread per rank (and per test)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1
suites=("$@")
if [ ${#suites[@]} -eq 0 ]; then
  suites=(c lua fail mpi)
  [ "${LUNAR_TEST_EMU:-}" = 1 ] && suites+=(emu)   # set by make test in a CUDA build
fi

total_pass=0; total_fail=0; total_skip=0; failed_names=()

run_one() {   # name, command...
  local name=$1; shift
  local log; log=$(mktemp)
  local t0=$SECONDS
  "$@" >"$log" 2>&1
  local rc=$?
  local line; line=$(grep -E '^([A-Za-z_]+: )?[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
  if [ -n "$line" ]; then
    local p f s
    p=$(sed -E 's/.*\b([0-9]+) passed.*/\1/' <<<"$line")
    f=$(sed -E 's/.*\b([0-9]+) failed.*/\1/' <<<"$line")
    s=$(grep -oE '[0-9]+ skipped' <<<"$line" | grep -oE '[0-9]+' || echo 0)
    [ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && f=1
  else
    p=0; f=1; s=0
  fi
  total_pass=$((total_pass + p)); total_fail=$((total_fail + f)); total_skip=$((total_skip + ${s:-0}))
  printf '%-40s %3d passed, %d failed%s (%ds)\n' "$name" "$p" "$f" \
    "$([ "${s:-0}" -gt 0 ] && echo ", $s skipped")" $((SECONDS - t0))
  if [ "$f" -gt 0 ]; then
    failed_names+=("$name"); echo "---- output of $name (rc=$rc) ----"; tail -n 40 "$log"; echo "----"
  fi
  rm -f "$log"
}

for suite in "${suites[@]}"; do
  case $suite in
    c)    for t in "$BUILD"/tests/test_*; do [ -x "$t" ] && run_one "c/$(basename "$t")" "$t"; done ;;
    lua)  for t in tests/lua/test_*.lua; do [ -f "$t" ] && run_one "lua/$(basename "$t")" "$LUNAR" "$t"; done ;;
    fail) for t in tests/fail/test_*.sh; do [ -f "$t" ] && run_one "fail/$(basename "$t")" bash "$t"; done ;;
    mpi)  for t in tests/mpi/test_*.sh; do [ -f "$t" ] && run_one "mpi/$(basename "$t")" bash "$t"; done ;;
    emu)  # the CUDA tests on the CPU emulation of the CUDA backend (tests/cuda_emu)
          for t in test_cuda lua golden train; do run_one "emu/$t" env BUILD="$BUILD" bash tests/cuda_emu/run.sh "$t"; done ;;
    *) echo "unknown suite $suite"; exit 2 ;;
  esac
done
[ ${#failed_names[@]} -gt 0 ] && echo "failed: ${failed_names[*]}"
echo "$total_pass passed, $total_fail failed, $total_skip skipped"
[ "$total_fail" -eq 0 ]
