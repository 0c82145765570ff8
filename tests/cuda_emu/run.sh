#!/usr/bin/env bash
# tests/cuda_emu/run.sh: builds Lunar on the CPU emulation of its CUDA backend
# (tests/cuda_emu/emu.mk) and runs the CUDA tests there: tests/c/test_cuda.c and
# the Lua tests test_cuda.lua and test_golden_cuda.lua. Each prints its own
# "N passed, N failed" line. A machine without a GPU checks the CUDA kernels'
# indexing, barriers, shuffles, launch configurations and numerics this way
# (under AddressSanitizer); a GPU run (build/tests/test_cuda) is still the
# real test.
#   bash tests/cuda_emu/run.sh [test_cuda|lua|golden|train ...]   (make test-cuda-emu)
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
EMU=$BUILD/emu
what=("$@")
[ ${#what[@]} -eq 0 ] && what=(test_cuda lua golden train)
make -s -f tests/cuda_emu/emu.mk BUILD="$BUILD" -j"${JOBS:-2}" >&2 || { echo "0 passed, 1 failed (emulation build)"; exit 1; }
export LD_LIBRARY_PATH="$PWD/$EMU/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"   # the fake libcublasLt.so.13
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:verify_asan_link_order=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
export LUNAR_EMU_ORDER=${LUNAR_EMU_ORDER:-reverse}   # threads in reverse order: missing barriers show
for w in "${what[@]}"; do
  case $w in
    test_cuda) "$EMU/test_cuda" ;;
    lua)       "$EMU/lunar" tests/lua/test_cuda.lua ;;
    golden)    "$EMU/lunar" tests/lua/test_golden_cuda.lua ;;
    train)     EMU="$EMU" bash tests/cuda_emu/train_check.sh ;;
    *) echo "unknown: $w"; exit 2 ;;
  esac
done
