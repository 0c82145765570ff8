#!/usr/bin/env bash
# tests/mpi/test_checkpoint.sh: checkpoints under mpirun --oversubscribe (-np 2,
# 4 and 8), one thread per rank: tests/mpi/checkpoint_check.lua saves from each
# data / tensor / pipeline layout of the world size (at -np 4 also tensor 2d
# size 4 with dropout, at -np 8 only 2.5d size 8 depth 2 and 3d size 8, each
# also loaded into tensor 1d size 4) (barriers, one shard per
# writing rank, index.json and the rename by rank 0), resumes bitwise on the
# same layout through RESUME='auto', and loads into the single-rank model
# (resharding), also for ZeRO-2/3 layouts whose shards are saved as they are
# and between sharded layouts. Then examples/train_with_engine.lua itself, on a tiny synthetic
# config with dropout: N steps straight against k steps, a stop, and
# RESUME='auto' for the N - k others: the losses and learning rates of every
# step (METRICS_FILE) are identical and the final checkpoints (parameters and
# optimizer state) bitwise equal, on one rank (also with gradient accumulation)
# and on two ranks (pipeline 2, 1F1B); a
# checkpoint resumed into another layout (pipeline 2 -> 1 rank, 1 rank ->
# tensor 1d size 2 and -> tensor 3d size 8 with dropout, data 2 -> 1 rank and
# -> tensor 2d size 4) matches the straight run within 1e-5 relative; per-block tensor sizes
# (parallel.block_tensor {2,1,4,2} on 4 ranks) resume bitwise and reshard into
# one rank, data 2, tensor 2 and back within 1e-5 (block 0 on strided ranks), and
# with dropout the losses of the one-rank run with dropout. The one-rank part runs
# without MPI; the rest skips when mpirun is absent or the build has no MPI.
# Run from the repository root (tests/run_all.sh does). Ends with
# "N passed, N failed[, N skipped]".
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
LUNAR=${LUNAR:-$BUILD/lunar}
. tests/fail/lib.sh
export OMP_NUM_THREADS=1

# --- the example: straight vs stop + RESUME='auto' ---------------------------------------------
# same_metrics.lua A B TOL: the training lines (with a loss) of two METRICS_FILEs cover the same
# steps with the same epochs and learning rates (exactly) and losses (TOL 0: identical; else within
# TOL relative); test accuracies of the evaluations both files hold at a step are equal
cat >"$T/same_metrics.lua" <<'LUA'
local json = require('lunar.json')
local a_path, b_path, tol = arg[1], arg[2], tonumber(arg[3] or '0')
local function read(path)
  local f = assert(io.open(path), 'cannot open ' .. tostring(path))
  local train, eval, n = {}, {}, 0
  for line in f:lines() do
    local o = json.decode(line)
    if o.loss then train[o.step] = o; n = n + 1 elseif o.test_accuracy then eval[o.step] = o end
  end
  f:close()
  return train, eval, n
end
local ta, ea, na = read(a_path)
local tb, eb, nb = read(b_path)
local function fail(fmt, ...) io.stderr:write('metrics differ: ', string.format(fmt, ...), '\n'); os.exit(1) end
if na ~= nb or na == 0 then fail('%d training lines in %s, %d in %s', na, a_path, nb, b_path) end
local worst = 0
for s = 1, na do
  local x, y = ta[s], tb[s]
  if not x or not y then fail('step %d is missing from %s', s, x and b_path or a_path) end
  if x.epoch ~= y.epoch or x.lr ~= y.lr then
    fail('step %d: epoch %s lr %.17g vs epoch %s lr %.17g', s, x.epoch, x.lr, y.epoch, y.lr)
  end
  local d = math.abs(x.loss - y.loss) / math.max(math.abs(x.loss), 1e-30)
  worst = math.max(worst, d)
  if (tol == 0 and x.loss ~= y.loss) or d > tol then
    fail('step %d: loss %.17g vs %.17g (relative %.3g, tolerance %g)', s, x.loss, y.loss, d, tol)
  end
end
for s, x in pairs(ea) do
  if eb[s] and eb[s].test_accuracy ~= x.test_accuracy then
    fail('step %d: test accuracy %s vs %s', s, x.test_accuracy, eb[s].test_accuracy)
  end
end
print(string.format('%d losses %s, worst relative difference %.3g', na, tol == 0 and 'identical' or 'match', worst))
LUA
# same_checkpoint.lua A B: every shard file of checkpoint A is in B with the same tensors, bitwise
cat >"$T/same_checkpoint.lua" <<'LUA'
local a, b = arg[1], arg[2]
local files, n = 0, 0
for _, f in ipairs(assert(lunar.io.listdir(a), 'no checkpoint ' .. a)) do
  if f:match('%.safetensors$') then
    files = files + 1
    local ta, tb = lunar.io.load_safetensors(a .. '/' .. f), lunar.io.load_safetensors(b .. '/' .. f)
    for name, t in pairs(ta) do
      local u = tb[name]
      if not u then io.stderr:write(b, '/', f, ': no tensor ', name, '\n'); os.exit(1) end
      local x, y = t:contiguous():view(-1):totable(), u:contiguous():view(-1):totable()
      for i = 1, math.max(#x, #y) do
        if x[i] ~= y[i] then
          io.stderr:write(string.format('%s: tensor %s differs at element %d: %.9g vs %.9g\n', f, name, i,
            x[i] or 0 / 0, y[i] or 0 / 0))
          os.exit(1)
        end
      end
      n = n + 1
    end
  end
end
if files == 0 then io.stderr:write('no shard file in ', a, '\n'); os.exit(1) end
print(string.format('%d tensors in %d files bitwise equal', n, files))
LUA
EX=(examples/train_with_engine.lua --config configs/vit_fmnist.lua DATASET=synthetic NUM_SAMPLES=40 IMG_SIZE=8
    PATCH_SIZE=4 IN_CHANS=2 NUM_CLASSES=4 HIDDEN_SIZE=16 DEPTH=4 NUM_HEADS=4 NUM_EPOCHS=2 WARMUP_EPOCHS=0.5
    LOG_EVERY=1 clip_grad_norm=1.0 LEARNING_RATE=3e-3)

same_metrics() {   # label, A, B, tol
  local o=$out e=$err r=$rc
  run "$LUNAR" "$T/same_metrics.lua" -- "$2" "$3" "$4"
  check "$1" [ "$rc" -eq 0 ]
  echo "    (${out:-$err})"
  out=$o err=$e rc=$r
}

# resume_case LABEL K LAUNCH... -- OVERRIDES...: straight (T/LABEL/a), K steps then stop
# (T/LABEL/b, SAVE_EVERY=3), RESUME=auto from T/LABEL/b: the same metrics, bitwise final checkpoints
resume_case() {
  local label=$1 k=$2; shift 2
  local launch=()
  while [ "$1" != -- ]; do launch+=("$1"); shift; done
  shift
  local d="$T/$label"; mkdir -p "$d"
  run timeout 120 "${launch[@]}" "$LUNAR" "${EX[@]}" "$@" METRICS_FILE="$d/a.jsonl" CHECKPOINT_DIR="$d/a"
  check "$label: the straight run: exit 0, a final checkpoint" \
    eval '[ "$rc" -eq 0 ] && [ -f "$d/a/step_10/index.json" ]'
  run timeout 120 "${launch[@]}" "$LUNAR" "${EX[@]}" "$@" METRICS_FILE="$d/b.jsonl" CHECKPOINT_DIR="$d/b" \
    SAVE_EVERY=3 MAX_STEPS="$k"
  check "$label: stopped after $k steps: exit 0, saved step_3 and step_$k" \
    eval '[ "$rc" -eq 0 ] && [ -f "$d/b/step_3/index.json" ] && [ -f "$d/b/step_$k/index.json" ]'
  cp -r "$d/b" "$d/b_saved"; cp "$d/b.jsonl" "$d/b_saved.jsonl"   # what the other layouts resume from
  run timeout 120 "${launch[@]}" "$LUNAR" "${EX[@]}" "$@" METRICS_FILE="$d/b.jsonl" CHECKPOINT_DIR="$d/b" \
    RESUME=auto
  check "$label: RESUME=auto: exit 0, resumed from step_$k, trained to step 10" \
    eval '[ "$rc" -eq 0 ] && has "$out" "checkpoint: resumed from $d/b/step_$k (step $k" && [ -f "$d/b/step_10/index.json" ]'
  check "$label: RESUME=auto: no step before $((k + 1)) is trained again" \
    eval '! grep -qE "^epoch [0-9]+ step [1-$k]/10 " <<<"$out" && grep -qE "^epoch [0-9]+ step $((k + 1))/10 " <<<"$out"'
  same_metrics "$label: losses and learning rates of steps 1..10 identical to the straight run" \
    "$d/a.jsonl" "$d/b.jsonl" 0
  local o=$out
  run "$LUNAR" "$T/same_checkpoint.lua" -- "$d/a/step_10" "$d/b/step_10"
  check "$label: the final checkpoints (parameters, optimizer state) are bitwise equal" [ "$rc" -eq 0 ]
  echo "    (${out:-$err})"
  check "$label: no .tmp directory is left" bash -c '! find "$1" -name "*.tmp.*" | grep -q .' _ "$d"
  out=$o
}

resume_case one 7 -- BATCH_SIZE=8 DROPOUT=0.1
# 2 batches per optimizer step, 2 epochs of 10 batches: 10 steps (MAX_STEPS and SAVE_EVERY count
# optimizer steps); stopped after step 3 (batch 6, in the middle of epoch 1)
resume_case one_accumulating 3 -- BATCH_SIZE=4 gradient_accumulation=2 DROPOUT=0.1

need_mpirun

for np in 2 4 8; do
  mkdir -p "$T/np$np"
  run timeout 120 mpirun -np $np "$LUNAR" tests/mpi/checkpoint_check.lua "$T/np$np"
  check "checkpoint_check -np $np: exit 0" [ "$rc" -eq 0 ]
  n_ok=$(grep -cE '^rank [0-9]+: checkpoint_check [0-9]+ passed, 0 failed' <<<"$out")
  check "checkpoint_check -np $np: every rank reports 0 failed ($n_ok of $np)" [ "$n_ok" -eq $np ]
  check "checkpoint_check -np $np: no .tmp directory is left" \
    bash -c '! find "$1" -name "*.tmp.*" | grep -q .' _ "$T/np$np"
  [ "$rc" -ne 0 ] && { grep -E 'FAIL|rror' <<<"$out$err" | head -n 10 | sed 's/^/    /'; }
done

# --- the example on two ranks, and resumed into other layouts ---------------------------------
PP2=('parallel={pipeline=2}' NUM_MICRO_BATCHES=2 BATCH_SIZE=8 DROPOUT=0.1)
resume_case pp2 7 mpirun -np 2 -- "${PP2[@]}"

reshard() {   # label, stopped run's checkpoint dir and metrics, reference metrics, launch... -- overrides...
  local label=$1 from=$2 from_metrics=$3 ref=$4; shift 4
  local launch=()
  while [ "$1" != -- ]; do launch+=("$1"); shift; done
  shift
  local d="$T/reshard_${label//[^a-z0-9]/_}"
  cp -r "$from" "$d"
  cp "$from_metrics" "$d.jsonl"
  run timeout 120 "${launch[@]}" "$LUNAR" "${EX[@]}" "$@" METRICS_FILE="$d.jsonl" CHECKPOINT_DIR="$d" RESUME=auto
  check "resharded, $label: exit 0, resumed from step_7, trained to step 10" \
    eval '[ "$rc" -eq 0 ] && has "$out" "checkpoint: resumed from $d/step_7 (step 7" && [ -f "$d/step_10/index.json" ]'
  same_metrics "resharded, $label: losses within 1e-5 of the straight run" "$ref" "$d.jsonl" 1e-5
}
# dropout masks are keyed by the call counter of each micro-batch: a layout that keeps the
# micro-batches keeps the masks
reshard "pipeline 2 -> one rank" "$T/pp2/b_saved" "$T/pp2/b_saved.jsonl" "$T/pp2/a.jsonl" -- \
  BATCH_SIZE=8 NUM_MICRO_BATCHES=2 DROPOUT=0.1
reshard "one rank -> tensor 2" "$T/one/b_saved" "$T/one/b_saved.jsonl" "$T/one/a.jsonl" mpirun -np 2 -- \
  BATCH_SIZE=8 DROPOUT=0.1 'parallel={tensor={mode="1d", size=2}}'
# another data-parallel size shards the loader otherwise (the global batch stays 8) and every
# replica draws the same dropout masks for other images: without dropout
run timeout 120 "$LUNAR" "${EX[@]}" DROPOUT=0 BATCH_SIZE=8 METRICS_FILE="$T/nodrop.jsonl"
check "one rank without dropout: exit 0" [ "$rc" -eq 0 ]
run timeout 120 mpirun -np 2 "$LUNAR" "${EX[@]}" DROPOUT=0 BATCH_SIZE=4 METRICS_FILE="$T/dp2.jsonl" \
  CHECKPOINT_DIR="$T/dp2" MAX_STEPS=7
check "data 2 without dropout, stopped after 7 steps: exit 0" eval '[ "$rc" -eq 0 ] && [ -f "$T/dp2/step_7/index.json" ]'
reshard "data 2 -> one rank" "$T/dp2" "$T/dp2.jsonl" "$T/nodrop.jsonl" -- DROPOUT=0 BATCH_SIZE=8
# into tensor mode 2d (q = 2: every weight split along both dims, every vector in 1/4 pieces)
reshard "data 2 -> tensor 2d size 4" "$T/dp2" "$T/dp2.jsonl" "$T/nodrop.jsonl" mpirun -np 4 -- DROPOUT=0 BATCH_SIZE=8 \
  'parallel={tensor={mode="2d", size=4}}'
# a one-rank checkpoint into tensor mode 3d (q = 2: weights in 8 pieces over both dims, vectors in 8
# pieces), with dropout: each element of a rank's block draws its mask in the whole tensor, so the
# resumed steps are the one-rank run's
reshard "one rank -> tensor 3d size 8" "$T/one/b_saved" "$T/one/b_saved.jsonl" "$T/one/a.jsonl" mpirun -np 8 -- \
  BATCH_SIZE=8 DROPOUT=0.1 'parallel={tensor={mode="3d", size=8}}'

# --- per-block tensor sizes (parallel.block_tensor, lunar.parallel.layerwise) ------------------
# 4 data-parallel ranks of 2 samples whose blocks run at tensor sizes 2 (strided ranks 0+2, 1+3), 1,
# 4, 2 (clipping on): each block's parameters saved by its own split; resumed bitwise, resharded into
# one rank, data 2 and tensor 2 and back from them, against the one-rank run (no dropout: see data 2
# above; no evaluation: 4 ranks pad the 10 test images to 12)
LW_LAYOUT=(BATCH_SIZE=2 EVAL_EVERY_EPOCH=false
    'parallel={block_tensor={2,1,4,2}, block_tensor_consec={false,true,true,true}}')
LW=(DROPOUT=0 "${LW_LAYOUT[@]}")
resume_case layerwise 7 mpirun --oversubscribe -np 4 -- "${LW[@]}"
same_metrics "layerwise: losses within 1e-5 of the one-rank run" "$T/nodrop.jsonl" "$T/layerwise/a.jsonl" 1e-5
run "$LUNAR" -e "local ix = require('lunar.checkpoint').read_index('$T/layerwise/a/step_10')
  local s = ix.tensors['blocks.2.mlp.fc1.weight'].slices
  local w = {}
  for _, x in ipairs(s) do w[#w + 1] = x.file .. ':' .. x.ranges[1][1] .. '+' .. x.ranges[1][2] end
  table.sort(w); print(table.concat(w, ' '))"
check "layerwise: block 2 (tensor 4) is saved in 4 row slices of fc1, one per rank" \
  has "$out" "model_rank0.safetensors:0+16 model_rank1.safetensors:16+16 model_rank2.safetensors:32+16 model_rank3.safetensors:48+16"
reshard "layerwise -> one rank" "$T/layerwise/b_saved" "$T/layerwise/b_saved.jsonl" "$T/nodrop.jsonl" -- \
  DROPOUT=0 BATCH_SIZE=8
reshard "layerwise -> data 2" "$T/layerwise/b_saved" "$T/layerwise/b_saved.jsonl" "$T/nodrop.jsonl" \
  mpirun -np 2 -- DROPOUT=0 BATCH_SIZE=4
reshard "layerwise -> tensor 2" "$T/layerwise/b_saved" "$T/layerwise/b_saved.jsonl" "$T/nodrop.jsonl" \
  mpirun -np 2 -- DROPOUT=0 BATCH_SIZE=8 'parallel={tensor={mode="1d", size=2}}'
run timeout 120 "$LUNAR" "${EX[@]}" DROPOUT=0 BATCH_SIZE=8 METRICS_FILE="$T/one7.jsonl" CHECKPOINT_DIR="$T/one7" MAX_STEPS=7
run timeout 120 mpirun -np 2 "$LUNAR" "${EX[@]}" DROPOUT=0 BATCH_SIZE=8 'parallel={tensor={mode="1d", size=2}}' \
  METRICS_FILE="$T/tp7.jsonl" CHECKPOINT_DIR="$T/tp7" MAX_STEPS=7
check "one rank and tensor 2 without dropout, stopped after 7 steps: checkpoints" \
  eval '[ -f "$T/one7/step_7/index.json" ] && [ -f "$T/tp7/step_7/index.json" ]'
for from in one7 dp2 tp7; do
  reshard "$from -> layerwise" "$T/$from" "$T/$from.jsonl" "$T/nodrop.jsonl" mpirun --oversubscribe -np 4 -- "${LW[@]}"
done
# with dropout the layerwise layout draws the one-rank masks (lunar.parallel.layerwise.set_dropout_rows):
# its losses are those of the one-rank run with dropout (resume_case one above)
run timeout 120 mpirun --oversubscribe -np 4 "$LUNAR" "${EX[@]}" "${LW_LAYOUT[@]}" DROPOUT=0.1 \
  METRICS_FILE="$T/lw_drop.jsonl"
check "layerwise with dropout 0.1: exit 0" [ "$rc" -eq 0 ]
same_metrics "layerwise with dropout 0.1: losses within 1e-5 of the one-rank run with dropout" "$T/one/a.jsonl" \
  "$T/lw_drop.jsonl" 1e-5
finish
