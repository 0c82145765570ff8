#!/usr/bin/env bash
# tests/fail/test_checkpoint_bad.sh: a corrupt, truncated or mismatched
# checkpoint given as RESUME is refused with a message naming the file (and
# the tensor), exit 1 and never a bare signal; an interrupted save never
# replaces the last complete checkpoint; RESUME=auto continues from the
# newest complete one. Runs a tiny synthetic training script with the
# checkpoint calls of the engine loop (lunar.checkpoint.maybe_resume /
# maybe_save); the same refusals are checked through
# examples/train_with_engine.lua (which must call maybe_resume: a failure, not
# a skip, when it does not).
set -u
cd "$(dirname "$0")/../.."
. tests/fail/lib.sh
export OMP_NUM_THREADS=1
clean_exit() { [ "$rc" -eq 1 ] && ! has "$err" "fatal signal" && ! has "$err" "Segmentation"; }
TINY=(DATASET=synthetic NUM_SAMPLES=32 IMG_SIZE=8 PATCH_SIZE=4 IN_CHANS=1 NUM_CLASSES=4 HIDDEN_SIZE=16
      NUM_HEADS=2 DEPTH=2 BATCH_SIZE=8 NUM_EPOCHS=2 DROPOUT=0.1 LOG_EVERY=1 EVAL_EVERY_EPOCH=false
      METRICS_FILE=)

# the engine loop with checkpoints, as examples/train_with_engine.lua wires them
cat > "$T/train.lua" <<'LUA'
local config = require('lunar.config')
local nn = require('lunar.nn')
local optim = require('lunar.optim')
local schedule = require('lunar.schedule')
local data = require('lunar.data')
local models = require('lunar.models')
local engine_mod = require('lunar.engine')
local checkpoint = require('lunar.checkpoint')
local cfg = config.load(lunar.args.config, lunar.args.overrides)
local train_ds = data.datasets(cfg)
local loader = data.loader(train_ds, cfg, {train = true})
local model = nn.materialize(models.vit(cfg), cfg.SEED, {init = cfg.INIT})
local optimizer = optim.AdamW(model:parameters(), {lr = cfg.LEARNING_RATE, weight_decay = cfg.WEIGHT_DECAY})
local lr_scheduler = schedule.warmup_cosine{base_lr = cfg.LEARNING_RATE, warmup_steps = 2,
  total_steps = loader:num_batches() * cfg.NUM_EPOCHS}
local engine = engine_mod.initialize{model = model, optimizer = optimizer, criterion = nn.CrossEntropy{},
  lr_scheduler = lr_scheduler}
local total_steps = loader:num_batches() * cfg.NUM_EPOCHS
if cfg.MAX_STEPS > 0 then total_steps = math.min(total_steps, cfg.MAX_STEPS) end
local ckpt = {model = model, optimizer = optimizer, lr_scheduler = lr_scheduler, engine = engine,
  loader = loader, config = cfg, step = 0, epoch = 0}
local step, start_epoch, start_batch = 0, 0, 0
local resumed = checkpoint.maybe_resume(cfg, ckpt)
if resumed then step, start_epoch, start_batch = resumed.step, resumed.loader.epoch, resumed.loader.batch end
for epoch = start_epoch, cfg.NUM_EPOCHS - 1 do
  if step >= total_steps then break end
  engine:train()
  if not (resumed and epoch == start_epoch) then loader:set_epoch(epoch) end   -- maybe_resume seeked it
  while step < total_steps do
    local x, y = loader:next()
    if not x then break end
    local loss, lr = engine:train_step(x, y)
    x:free(); y:free()
    step = step + 1
    print(string.format('step %d loss %.9g lr %.6g', step, loss, lr))
    ckpt.step, ckpt.epoch = step, epoch
    checkpoint.maybe_save(cfg, ckpt)
  end
end
checkpoint.maybe_save(cfg, ckpt, {final = true})
LUA

CK="$T/ckpt"
run "$LUNAR" "$T/train.lua" "${TINY[@]}" CHECKPOINT_DIR="$CK" SAVE_EVERY=3
check "training with SAVE_EVERY=3: exit 0" [ "$rc" -eq 0 ]
check "saves step_3, step_6 and the final step_8" bash -c '[ -f "$1/step_3/index.json" ] && [ -f "$1/step_6/index.json" ] && [ -f "$1/step_8/index.json" ]' _ "$CK"
straight=$(grep '^step' <<<"$out")

# resuming from step_3 gives the same steps 4..8, bitwise (the printed losses)
run "$LUNAR" "$T/train.lua" "${TINY[@]}" RESUME="$CK/step_3"
check "RESUME=step_3: exit 0 and says so" bash -c '[ "$1" -eq 0 ] && grep -qF "resumed from" <<<"$2"' _ "$rc" "$out"
check "RESUME=step_3: steps 4..8 print the losses of the straight run" \
  bash -c '[ "$(grep "^step" <<<"$1")" = "$(grep -E "^step [4-8] " <<<"$2")" ]' _ "$out" "$straight"

# an interrupted save (a .tmp directory with a newer step) is ignored by RESUME=auto
mkdir -p "$CK/step_9.tmp.12345"; cp "$CK/step_8/"* "$CK/step_9.tmp.12345/"
mkdir -p "$CK/step_10"
run "$LUNAR" "$T/train.lua" "${TINY[@]}" CHECKPOINT_DIR="$CK" RESUME=auto MAX_STEPS=8
check "RESUME=auto: picks step_8, not the .tmp or index-less step directories" \
  bash -c '[ "$1" -eq 0 ] && grep -qF "resumed from $3/step_8 " <<<"$2"' _ "$rc" "$out" "$CK"
run "$LUNAR" "$T/train.lua" "${TINY[@]}" CHECKPOINT_DIR="$T/empty" RESUME=auto MAX_STEPS=1
check "RESUME=auto with no checkpoint: starts fresh" bash -c '[ "$1" -eq 0 ] && grep -qF "starting fresh" <<<"$2"' _ "$rc" "$out"

# corrupt copies of step_3
corrupt() {   # name, lua chunk run with D = the copy's path
  local d="$T/bad_$1"
  rm -rf "$d"; cp -r "$CK/step_3" "$d"
  "$LUNAR" -e "local D = '$d'; $2" || echo "corrupting $1 failed"
  echo "$d"
}
SH=model_rank0.safetensors
refused() {   # label, dir, needles... : through the script and the example
  local label=$1 d=$2; shift 2
  for s in "$T/train.lua" examples/train_with_engine.lua; do
    local w; w=$(basename "$s")
    run "$LUNAR" "$s" "${TINY[@]}" RESUME="$d"
    check "$label ($w): exit 1, no signal" clean_exit
    for n in "$@"; do check "$label ($w): the message names $n" has "$err" "$n"; done
    check "$label ($w): nothing trained" eval '! grep -q "^step" <<<"$out"'
  done
}
d=$(corrupt trunc "local f = io.open(D .. '/$SH', 'rb'); local s = f:read('a'); f:close()
  f = io.open(D .. '/$SH', 'wb'); f:write(s:sub(1, #s - 700)); f:close()")
refused "truncated shard" "$d" "$d/$SH" "tensor '" "truncated"
d=$(corrupt json "local f = io.open(D .. '/$SH', 'r+b'); f:seek('set', 8); f:write('#'); f:close()")
refused "shard header not JSON" "$d" "$d/$SH" "not valid JSON"
d=$(corrupt shape "local t, m = lunar.io.load_safetensors(D .. '/$SH')
  t['blocks.1.mlp.fc1.weight'] = t['blocks.1.mlp.fc1.weight']:view(16, 64)
  lunar.io.save_safetensors(D .. '/$SH', t, m)")
refused "wrong shape" "$d" "$d/$SH" "tensor 'blocks.1.mlp.fc1.weight'" "[16, 64]" "[64, 16]"
d=$(corrupt missing "local t, m = lunar.io.load_safetensors(D .. '/$SH')
  t['optim.exp_avg.cls_token'] = nil
  lunar.io.save_safetensors(D .. '/$SH', t, m)")
refused "missing tensor" "$d" "$d/$SH" "tensor 'optim.exp_avg.cls_token'"
d=$(corrupt noindex "os.remove(D .. '/index.json')")
refused "missing index.json" "$d" "$d/index.json" "missing"
d=$(corrupt badindex "local f = io.open(D .. '/index.json', 'w'); f:write('{\"format\": '); f:close()")
refused "index.json not JSON" "$d" "$d/index.json" "not valid JSON"
d=$(corrupt noshard "os.remove(D .. '/$SH')")
refused "missing shard file" "$d" "$d/$SH" "missing"
refused "no such checkpoint" "$T/nowhere/step_1" "$T/nowhere/step_1"
run "$LUNAR" "$T/train.lua" "${TINY[@]}" MLP_RATIO=2 RESUME="$CK/step_3"
check "a model that differs: exit 1, no signal" clean_exit
check "a model that differs: names index.json and MLP_RATIO" \
  bash -c 'grep -qF "$2/index.json" <<<"$1" && grep -qF "MLP_RATIO is 4 in the checkpoint, 2 here" <<<"$1"' _ "$err" "$CK/step_3"
check "examples/train_with_engine.lua resumes through lunar.checkpoint.maybe_resume" \
  grep -q 'checkpoint.maybe_resume' examples/train_with_engine.lua
finish
