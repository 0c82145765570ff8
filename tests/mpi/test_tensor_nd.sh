#!/usr/bin/env bash
# tests/mpi/test_tensor_nd.sh: the multi-dimensional tensor-parallel modes
# (lunar.parallel.tensor_2d: '2d' Optimus/SUMMA, '2.5d' Tesseract;
# lunar.parallel.tensor_3d: '3d') under
# mpirun --oversubscribe, one thread per rank.
#   - tests/mpi/tensor_nd_layers_check.lua: each split layer (the SUMMA
#     linears with and without groups, LayerNorm, attention, MLP, block,
#     patch embedding, head) alone against its unpartitioned self, forward,
#     input gradient and every parameter gradient within 1e-5; the widths and
#     heads the grid cannot split raise one message (2d at -np 4, 2.5d depth 2
#     and 3d at -np 8)
#   - tests/mpi/parallel_check.lua tensor_nd: the ViT trained 5 AdamW steps
#     (clipping every step) equals one rank (losses and grad norms within
#     1e-5 relative, gathered parameters as parallel_check's header says):
#     2d size 4 (1 and 2 micro-batches, gradient accumulation, activation
#     checkpointing, DROPOUT 0.1: each element's mask that of its place in the
#     whole tensor, and the losses not those without dropout; bf16, also
#     with dropout, where the CPU has it) at -np 4, and run twice bitwise; 2d x data 2, 2d x pipeline
#     2, 2.5d size 8 depth 2 and 3d size 8 (each also with gradient
#     accumulation and 2 micro-batches; each with dropout 0.1, 2d x pipeline
#     2 too; 3d in bf16 too) at -np 8,
#     2d x pipeline 2 under 1f1b and gpipe at -np 8; 3d size 8 x pipeline 2
#     (1f1b) and 2.5d size 8 depth 2 x pipeline 2 (gpipe) at -np 16 (16
#     oversubscribed ranks of a tiny model: about 10 s on 2 cores)
# Skips when mpirun is absent or the build has no MPI. Run from the
# repository root (tests/run_all.sh does). Ends with "N passed, N failed[, N skipped]".
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
LUNAR=${LUNAR:-$BUILD/lunar}
. tests/fail/lib.sh
export OMP_NUM_THREADS=1

need_mpirun

for spec in "4 2d" "8 2.5d 2" "8 3d"; do
  set -- $spec
  np=$1; shift
  run timeout 60 mpirun -np $np "$LUNAR" tests/mpi/tensor_nd_layers_check.lua "$@"
  check "tensor_nd_layers_check $* -np $np: exit 0" [ "$rc" -eq 0 ]
  n_ok=$(grep -cE '^rank [0-9]+: tensor_nd_layers_check .* [1-9][0-9]* passed, 0 failed' <<<"$out")
  check "tensor_nd_layers_check $* -np $np: every rank reports 0 failed ($n_ok of $np)" [ "$n_ok" -eq $np ]
  [ "$rc" -ne 0 ] && { grep -E 'FAIL' <<<"$out$err" | head -n 10 | sed 's/^/    /'; }
done

for np in 4 8 16; do
  t0=$SECONDS
  run timeout 120 mpirun -np $np "$LUNAR" tests/mpi/parallel_check.lua tensor_nd
  check "parallel_check tensor_nd -np $np: exit 0" [ "$rc" -eq 0 ]
  n_ok=$(grep -cE '^rank [0-9]+: parallel_check [0-9]+ passed, 0 failed' <<<"$out")
  check "parallel_check tensor_nd -np $np: every rank reports 0 failed ($n_ok of $np)" [ "$n_ok" -eq $np ]
  check "parallel_check tensor_nd -np $np: runs configurations" grep -qE "^world $np: [1-9][0-9]* configurations" <<<"$out"
  check "parallel_check tensor_nd -np $np: the repeat is bitwise identical" grep -q 'repeated: bitwise identical' <<<"$out"
  grep -E '^dp ' <<<"$out" | grep -v repeated | sed 's/^/    /'
  echo "    ($(grep -E "^world" <<<"$out"); job $((SECONDS - t0)) s)"
  [ "$rc" -ne 0 ] && { grep -E 'FAIL' <<<"$out$err" | head -n 10 | sed 's/^/    /'; }
done
finish
