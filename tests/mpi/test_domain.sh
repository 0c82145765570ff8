#!/usr/bin/env bash
# tests/mpi/test_domain.sh: domain parallelism (parallel.domain, issue 12).
#   - tests/mpi/domain_check.lua on 2 and 4 ranks: ring and all-gather attention
#     alone against the fused single-rank attention; the HybridViT trained 5
#     AdamW steps at domain 2 and 4, domain 2 x data 2, 2D and 3D, even and
#     uneven slabs, both attention modes (and bf16), ZeRO stages 1-3 (hybrid,
#     micro-batches, bf16) at domain 2 x data W/2, against one rank
#   - the main job's config with MODEL=hybrid_vit through examples/train_with_engine.lua
#     (loaders cut each batch to the rank's slab, evaluation counted once per
#     image) at domain 2 and domain 2 x data 2 (also under ZeRO-3: evaluation
#     gathers each unit too): the losses and test accuracy of one rank
#     (tests/mpi/compare_metrics.lua, 1e-5)
#   - Fashion-MNIST at domain 2 (files read whole, batches cut to the slab): the
#     losses of one rank
#   - the image-size benchmark at domain 2 (3D): a CSV row per size with the
#     tokens per rank, and a MEMORY_BUDGET row marked out-of-memory, clean stop
#   - checkpoints: saved at domain 2, resumed on one rank, then at domain 2 again:
#     the losses of an uninterrupted single-rank run (as printed, 4 decimals); the
#     same with ZeRO: saved at domain 2 x data 2 under zero 3 (shards written by
#     domain rank 0 only), resumed on one rank, then at domain 2 under zero 2
#   - the REPL on one rank (--repl-rank 1) stops domain rank 1 with its slab as a local
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

need_mpirun

for np in 2 4; do
  run timeout 240 mpirun --oversubscribe -np $np "$LUNAR" tests/mpi/domain_check.lua
  check "domain_check on $np ranks: exit 0" [ "$rc" -eq 0 ]
  check "domain_check on $np ranks: 0 failed" grep -qE '^rank 0: domain_check [0-9]+ passed, 0 failed' <<<"$out"
  grep -E '^(ring|allgather|[23]D)' <<<"$out" | sed 's/^/    /'
done

BASE=(examples/train_with_engine.lua --config configs/vit_fmnist.lua MODEL=hybrid_vit DATASET=synthetic
      NUM_SAMPLES=64 IMG_SIZE=12 HIDDEN_SIZE=16 NUM_HEADS=2 DEPTH=2 LOG_EVERY=1 NUM_EPOCHS=1)
MAIN=("${BASE[@]}" MAX_STEPS=4 EVAL_EVERY_EPOCH=true)
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
same_as_one_rank 4 "domain 2 x data 2, zero 3" BATCH_SIZE=4 'parallel={domain=2, zero=3}'

# Fashion-MNIST (whole images read from the IDX files, each batch cut to the rank's slab: 7 patch rows = 4 + 3)
FM=(examples/train_with_engine.lua --config configs/vit_fmnist.lua MODEL=hybrid_vit HIDDEN_SIZE=16 NUM_HEADS=2 DEPTH=2
    MAX_STEPS=3 LOG_EVERY=1 BATCH_SIZE=8 EVAL_EVERY_EPOCH=false)
if [ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  run timeout 120 "$LUNAR" "${FM[@]}" METRICS_FILE="$T/fm_one.jsonl"
  check "Fashion-MNIST, one rank: exit 0" [ "$rc" -eq 0 ]
  run timeout 120 mpirun --oversubscribe -np 2 "$LUNAR" "${FM[@]}" METRICS_FILE="$T/fm_dom.jsonl" 'parallel={domain=2}'
  check "Fashion-MNIST, domain 2: exit 0" [ "$rc" -eq 0 ]
  run "$LUNAR" tests/mpi/compare_metrics.lua -- "$T/fm_one.jsonl" "$T/fm_dom.jsonl" 1e-5
  check "Fashion-MNIST, domain 2: the losses of one rank" [ "$rc" -eq 0 ]
  echo "    (Fashion-MNIST, domain 2: ${out:-$err})"
else
  skp "Fashion-MNIST at domain 2" "dataset-fashion-mnist is not installed"
fi

# checkpoints: saved at domain 2, resumed on one rank, saved, resumed at domain 2 (all-gather): the
# losses of an uninterrupted run on one rank (replicated parameters are written by domain rank 0)
loss_of() { grep -o "step $1/[0-9]* loss [0-9.]*" <<<"$2" | awk '{print $4}'; }
CK=(MAX_STEPS=6 CHECKPOINT_DIR="$T/ck" METRICS_FILE= EVAL_EVERY_EPOCH=false BATCH_SIZE=8)
CK=(METRICS_FILE= EVAL_EVERY_EPOCH=false BATCH_SIZE=8 CHECKPOINT_DIR="$T/ck")
run timeout 60 "$LUNAR" "${BASE[@]}" METRICS_FILE= EVAL_EVERY_EPOCH=false BATCH_SIZE=8 MAX_STEPS=6
plain=$out
run timeout 60 mpirun --oversubscribe -np 2 "$LUNAR" "${BASE[@]}" "${CK[@]}" MAX_STEPS=2 'parallel={domain=2}'
check "checkpoint at domain 2: saved" has "$out" "checkpoint: saved"
run timeout 60 "$LUNAR" "${BASE[@]}" "${CK[@]}" MAX_STEPS=4 RESUME=auto
got="$(loss_of 3 "$out") $(loss_of 4 "$out")"; want="$(loss_of 3 "$plain") $(loss_of 4 "$plain")"
check "resumed on one rank: the losses of steps 3, 4 of the uninterrupted run ($got)" \
  [ "${#want}" -gt 8 -a "$got" = "$want" ]
run timeout 60 mpirun --oversubscribe -np 2 "$LUNAR" "${BASE[@]}" "${CK[@]}" MAX_STEPS=6 RESUME=auto \
  "parallel={domain={size=2, attention='allgather'}}"
got="$(loss_of 5 "$out") $(loss_of 6 "$out")"; want="$(loss_of 5 "$plain") $(loss_of 6 "$plain")"
check "resumed at domain 2: the losses of steps 5, 6 of the uninterrupted run ($got)" \
  [ "${#want}" -gt 8 -a "$got" = "$want" ]
# sharded checkpoints: saved at domain 2 x data 2 under ZeRO-3 (each shard written once, by domain rank 0 of
# its data-parallel rank: world ranks 0 and 2), resumed on one rank without sharding, saved, resumed at domain 2
# under ZeRO-2 (a shard group of one): the losses of the same uninterrupted run
CZ=(METRICS_FILE= EVAL_EVERY_EPOCH=false CHECKPOINT_DIR="$T/ckz")
run timeout 60 mpirun --oversubscribe -np 4 "$LUNAR" "${BASE[@]}" "${CZ[@]}" BATCH_SIZE=4 MAX_STEPS=2 \
  'parallel={domain=2, zero=3}'
check "checkpoint at domain 2 x data 2, zero 3: saved" has "$out" "checkpoint: saved"
files=$(cd "$T/ckz/step_2" 2>/dev/null && ls model_rank*.safetensors | tr '\n' ' ')
check "checkpoint at domain 2 x data 2, zero 3: shards of ranks 0 and 2 only ($files)" \
  [ "$files" = "model_rank0.safetensors model_rank2.safetensors " ]
run timeout 60 "$LUNAR" "${BASE[@]}" "${CZ[@]}" BATCH_SIZE=8 MAX_STEPS=4 RESUME=auto
got="$(loss_of 3 "$out") $(loss_of 4 "$out")"; want="$(loss_of 3 "$plain") $(loss_of 4 "$plain")"
check "zero 3 checkpoint resumed on one rank: the losses of steps 3, 4 of the uninterrupted run ($got)" \
  [ "${#want}" -gt 8 -a "$got" = "$want" ]
run timeout 60 mpirun --oversubscribe -np 2 "$LUNAR" "${BASE[@]}" "${CZ[@]}" BATCH_SIZE=8 MAX_STEPS=6 RESUME=auto \
  'parallel={domain=2, zero=2}'
got="$(loss_of 5 "$out") $(loss_of 6 "$out")"; want="$(loss_of 5 "$plain") $(loss_of 6 "$plain")"
check "resumed at domain 2, zero 2: the losses of steps 5, 6 of the uninterrupted run ($got)" \
  [ "${#want}" -gt 8 -a "$got" = "$want" ]

# the REPL on one rank of a domain-parallel job (tests/mpi/domain_repl.lua): --repl-rank 1 stops domain rank 1
# after a step, its locals are its slab (1 of the 3 patch rows: 4 pixel rows) and the step's loss; rank 0 waits in
# its next collective; both then finish the second step with the same loss
feed $'"ROWS=" .. x:shape()[3] .. " DRANK=" .. run.grid.domain_rank\nc\n' \
  timeout 120 mpirun --oversubscribe -np 2 --stdin 1 "$LUNAR" tests/mpi/domain_repl.lua --repl-rank 1
check "REPL on domain rank 1: exit 0" [ "$rc" -eq 0 ]
check "REPL on domain rank 1: stops there and sees its slab (4 of 12 pixel rows)" \
  eval 'has "$out" "[rank 1] breakpoint: tests/mpi/domain_repl.lua" && has "$out" "ROWS=4 DRANK=1"'
l0=$(grep -o 'rank 0: step 2 loss [0-9.]*' <<<"$out" | awk '{print $NF}')
l1=$(grep -o 'rank 1: step 2 loss [0-9.]*' <<<"$out" | awk '{print $NF}')
check "REPL on domain rank 1: both ranks then take the next step, same loss ($l0, $l1)" \
  [ -n "$l0" -a "$l0" = "$l1" ]

# the image-size benchmark at domain 2, 3D: each rank generates its slab (tokens per rank = half),
# and a MEMORY_BUDGET below the first size's peak gives an out-of-memory row and a clean stop
BENCH=(examples/benchmark_image_sizes.lua --config configs/recipes/hybrid_vit_image_sizes.lua HIDDEN_SIZE=16
       NUM_HEADS=2 DEPTH=1 NUM_CLASSES=4 IMG_DIMS=3 SWEEP_START=16 SWEEP_STOP=32 SWEEP_STEP=16 BENCH_STEPS=1
       'parallel={domain=2}')
run timeout 120 mpirun --oversubscribe -np 2 "$LUNAR" "${BENCH[@]}" BENCH_CSV="$T/bench.csv"
check "benchmark at domain 2: exit 0" [ "$rc" -eq 0 ]
check "benchmark at domain 2: the CSV has both sizes, 64 and 32 tokens per rank at 32^3" \
  bash -c 'grep -qE "^16,3,8,1,1,([^,]*,){6}2,4,[0-9]+,\"ok\"$" "$1" &&
    grep -qE "^32,3,64,1,1,([^,]*,){6}2,32,[0-9]+,\"ok\"$" "$1"' _ "$T/bench.csv"
run timeout 120 mpirun --oversubscribe -np 2 "$LUNAR" "${BENCH[@]}" BENCH_CSV="$T/oom.csv" MEMORY_BUDGET=10KiB
check "benchmark over MEMORY_BUDGET: exit 0" [ "$rc" -eq 0 ]
check "benchmark over MEMORY_BUDGET: an out-of-memory row, then the sweep stops" \
  bash -c 'has() { grep -qF -- "$2" <<<"$1"; }; has "$1" "16^3 out-of-memory (peak" && has "$1" "stopping the sweep" &&
    ! has "$1" "32^3"' _ "$out"

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
