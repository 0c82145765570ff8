#!/usr/bin/env bash
# tests/mpi/test_nccl.sh: collectives on CUDA tensors through NCCL
# (core/comm/comm_nccl.c) against the MPI ones on CPU tensors, with one rank
# per GPU (tests/mpi/nccl_check.lua under mpirun -np <GPUs, at most 4>), and
# the single-rank golden ViT on the GPU is tests/lua/test_golden_cuda.lua.
# Skips without a CUDA device, without MPI or without mpirun (skipped, never
# passed). Ends with "N passed, N failed[, N skipped]".
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
LUNAR=${LUNAR:-$BUILD/lunar}
. tests/fail/lib.sh
export OMP_NUM_THREADS=1

run "$LUNAR" -e 'local ok, why = lunar.cuda.is_available(); print(ok and ("gpus " .. lunar.cuda.device_count()) or ("none " .. why))'
if ! has "$out" "gpus "; then
  skp "NCCL collectives" "no CUDA device (${out#none })"; finish
fi
ngpu=${out#gpus }
run "$LUNAR" --version
if has "$out" "MPI: no"; then skp "NCCL collectives" "this build has no MPI"; finish; fi
if ! command -v mpirun >/dev/null; then skp "NCCL collectives" "mpirun not found"; finish; fi
np=$(( ngpu < 4 ? ngpu : 4 ))

run timeout 300 mpirun -np "$np" "$LUNAR" tests/mpi/nccl_check.lua
check "nccl_check.lua -np $np: exit 0" [ "$rc" -eq 0 ]
n_ok=$(grep -cE '^rank [0-9]+: nccl_check [0-9]+ passed, 0 failed' <<<"$out")
check "nccl_check.lua -np $np: every rank reports 0 failed ($n_ok of $np)" [ "$n_ok" -eq "$np" ]
finish
