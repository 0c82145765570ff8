#!/usr/bin/env bash
# tests/mpi/test_domain.sh: domain parallelism (parallel.domain, issue 12).
#   - tests/mpi/domain_check.lua on 2 and 4 ranks: ring and all-gather attention
#     alone against the fused single-rank attention; the HybridViT trained 5
#     AdamW steps at domain 2 and 4, domain 2 x data 2, 2D and 3D, even and
#     uneven slabs, both attention modes (and bf16) against one rank
#   - the main job's config with MODEL=hybrid_vit through examples/train_with_engine.lua
#     (loaders cut each batch to the rank's slab, evaluation counted once per
#     image) at domain 2 and domain 2 x data 2: the losses of one rank
#     (tests/mpi/compare_metrics.lua, 1e-5)
#   - bad input, each an error that names the problem, once, before any
#     collective: a domain larger than the patch rows, domain with tensor
#     parallelism, domain with the built-in ViT, a world size domain does not divide,
#     an unknown attention mode
# Run from the repository root (tests/run_all.sh does). Ends with
# "N passed, N failed[, N skipped]".
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
LUNAR=${LUNAR:-$BUILD/lunar}
. tests/fail/lib.sh
export OMP_NUM_THREADS=1

run "$LUNAR" --version
if has "$out" "MPI: no"; then
  skp "mpirun tests" "this build has no MPI (NO_MPI=1)"; finish
fi
if ! command -v mpirun >/dev/null; then
  skp "mpirun tests" "mpirun not found (apt-get install openmpi-bin)"; finish
fi

for np in 2 4; do
  run timeout 240 mpirun --oversubscribe -np $np "$LUNAR" tests/mpi/domain_check.lua
  check "domain_check on $np ranks: exit 0" [ "$rc" -eq 0 ]
  check "domain_check on $np ranks: 0 failed" grep -qE '^rank 0: domain_check [0-9]+ passed, 0 failed' <<<"$out"
  grep -E '^(ring|allgather|[23]D)' <<<"$out" | sed 's/^/    /'
done

MAIN=(examples/train_with_engine.lua --config configs/vit_fmnist.lua MODEL=hybrid_vit DATASET=synthetic
      NUM_SAMPLES=64 IMG_SIZE=12 HIDDEN_SIZE=16 NUM_HEADS=2 DEPTH=2 MAX_STEPS=4 LOG_EVERY=1 EVAL_EVERY_EPOCH=true
      NUM_EPOCHS=1)
run timeout 120 "$LUNAR" "${MAIN[@]}" BATCH_SIZE=8 METRICS_FILE="$T/one.jsonl"
check "hybrid_vit, one rank: exit 0" [ "$rc" -eq 0 ]
one_acc=$(grep -o 'test accuracy [0-9.]*% ([0-9]*/[0-9]*)' <<<"$out" | tail -1)
same_as_one_rank() {   # np, label, overrides...
  local np=$1 label=$2; shift 2
  run timeout 180 mpirun --oversubscribe -np "$np" "$LUNAR" "${MAIN[@]}" METRICS_FILE="$T/par.jsonl" "$@"
  check "hybrid_vit, $label: exit 0" [ "$rc" -eq 0 ]
  check "hybrid_vit, $label: the test accuracy of one rank, each image counted once ($one_acc)" \
    has "$out" "$one_acc"
  run "$LUNAR" tests/mpi/compare_metrics.lua -- "$T/one.jsonl" "$T/par.jsonl" 1e-5
  check "hybrid_vit, $label: the losses of one rank" [ "$rc" -eq 0 ]
  echo "    ($label: ${out:-$err})"
}
same_as_one_rank 2 "domain 2 (uneven: 3 patch rows)" BATCH_SIZE=8 'parallel={domain=2}'
same_as_one_rank 4 "domain 2 x data 2, all-gather" BATCH_SIZE=4 "parallel={domain={size=2, attention='allgather'}}"

refused() {   # np, label, expected text, overrides...
  local np=$1 label=$2 want=$3; shift 3
  local args=("${MAIN[@]}")
  [ "$label" = "domain with the built-in ViT" ] && args=("${args[@]/MODEL=hybrid_vit/MODEL=vit}")
  run timeout 60 mpirun --oversubscribe -np "$np" "$LUNAR" "${args[@]}" BATCH_SIZE=8 "$@"
  check "$label: exits non-zero" bash -c '[ "$1" -ne 0 ] && [ "$1" -ne 124 ]' _ "$rc"
  check "$label: says so once" [ "$(grep -cF -- "$want" <<<"$out$err")" -eq 1 ]
  check "$label: no traceback" bash -c '! grep -q "stack traceback" <<<"$1"' _ "$out$err"
}
refused 4 "domain 4 over 3 patch rows" \
  'parallel: domain size 4 is more than the 3 rows of patches (IMG_SIZE 12 / PATCH_SIZE 4): a domain rank would hold no patch' \
  'parallel={domain=4}'
refused 4 "domain with tensor parallelism" \
  'parallel: domain parallelism (domain = 2) does not compose with tensor (2) or pipeline (1) parallelism yet' \
  'parallel={domain=2, tensor={mode="1d", size=2}}'
refused 2 "domain with the built-in ViT" "domain parallelism (domain = 2) needs MODEL = 'hybrid_vit'" \
  'parallel={domain=2}'
refused 3 "a world size domain does not divide" \
  'parallel: world size 3 is not divisible by pipeline (1) x tensor (1) x domain (2) = 2' 'parallel={domain=2}'
refused 2 "an unknown attention mode" "config key 'parallel.domain' .attention must be 'ring' or 'allgather'" \
  "parallel={domain={size=2, attention='ulysses'}}"
finish
