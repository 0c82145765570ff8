#!/usr/bin/env bash
# bench/kernels/attention_ab.sh: the CPU attention kernels of git revision
# BASE_REV against the working tree's, side by side in one process
# (bench/kernels/attention_ab.c: GFLOP/s base -> new per kernel and shape, the
# thread's CPU time by default). Not a test. One thread unless OMP_NUM_THREADS
# says otherwise (then set ATTN_AB_WALL=1).
#   bash bench/kernels/attention_ab.sh [BASE_REV=HEAD] [REPEAT=9] [SHAPE index 0-5]
set -eu
cd "$(dirname "$0")/../.."
REV=${1:-HEAD} REPEAT=${2:-9} SHAPE=${3:--1}
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
git show "$REV:core/ops/cpu/attention.c" >"$T/attention_base.c"
CC=${CC:-gcc}
CFLAGS=(-std=c11 -D_GNU_SOURCE -O2 -march=native -fopenmp -Icore/include -Icore/ops/cpu)
RENAME=(-Dlunar_cpu_attention_forward=base_fwd -Dlunar_cpu_attention_backward=base_bwd
  -Dlunar_cpu_attention_forward_bf16=base_fwd16 -Dlunar_cpu_attention_backward_bf16=base_bwd16
  -Dlunar_cpu_attention_block_forward=base_bfwd -Dlunar_cpu_attention_block_backward=base_bbwd)
"$CC" "${CFLAGS[@]}" "${RENAME[@]}" -w -c "$T/attention_base.c" -o "$T/base.o"
"$CC" "${CFLAGS[@]}" bench/kernels/attention_ab.c core/ops/cpu/attention.c core/ops/cpu/elementwise.c "$T/base.o" \
  core/tensor.c core/status.c core/alloc.c core/rng.c core/cuda/cuda_none.c -lm -o "$T/attention_ab"
echo "base $REV ($(git rev-parse --short "$REV")) vs the working tree; load: $(uptime | sed 's/.*load/load/')"
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE} "$T/attention_ab" "$REPEAT" "$SHAPE"
