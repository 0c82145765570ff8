#!/usr/bin/env bash
# tests/cuda_emu/train_check.sh: training end to end with `device = 'cuda'` on
# the CPU emulation of the CUDA backend ($EMU/lunar), against the same runs on
# the CPU ($BUILD/lunar), through the example scripts users run:
#   - examples/train_with_engine.lua (dropout, two epochs with evaluation):
#     every loss within 1e-4 relative of the CPU run, the same test accuracies
#     (tests/mpi/compare_metrics.lua); the batches reach the device through the
#     loader's page-locked buffer (loader:device() is cuda:0), and the log
#     reports the device's peak memory;
#   - micro-batches (NUM_MICRO_BATCHES=2: the schedule path) with gradient
#     accumulation 2, and examples/train_with_trainer.lua, likewise;
#   - precision = 'bf16' on the device against bf16 on the CPU (where the CPU
#     has avx512_bf16) within 2e-2;
#   - a checkpoint written on the device every 2 steps: resuming from step 2
#     on the device gives bitwise the losses of the straight run; resuming the
#     device's checkpoint on the CPU matches within 1e-4;
#   - device = 'cuda:3' on the emulation's one device: the config error names
#     the key and the device count, before anything is built.
# Run by tests/cuda_emu/run.sh train (the emu suite of make test), and on a
# real GPU by scripts/gpu_check.sh (EMU=<build dir with a CUDA lunar>,
# CPU_LUNAR=the same binary). Ends with "N passed, N failed[, N skipped]".
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
EMU=${EMU:-$BUILD/emu}
CPU=${CPU_LUNAR:-$BUILD/lunar}
LUNAR=$EMU/lunar
. tests/fail/lib.sh
if [ ! -x "$CPU" ]; then rc=-1; err="$CPU not built"; bad "CPU lunar $CPU exists"; finish; fi
export OMP_NUM_THREADS=1

# a tiny ViT on synthetic data: 4 batches of 16 per epoch
TINY=(DATASET=synthetic NUM_SAMPLES=64 IMG_SIZE=8 PATCH_SIZE=4 IN_CHANS=2 NUM_CLASSES=4 BATCH_SIZE=16
      HIDDEN_SIZE=32 NUM_HEADS=2 DEPTH=2 LOG_EVERY=1 PREFETCH=false)
CFG=configs/vit_fmnist.lua
compare() {   # compare NAME A B TOL
  run "$CPU" tests/mpi/compare_metrics.lua -- "$2" "$3" "$4"
  check "$1 ($(tail -n 1 <<<"$out$err"))" [ "$rc" -eq 0 ]
}

# ---- the engine example: dropout, two epochs with evaluation ----
run "$LUNAR" examples/train_with_engine.lua --config $CFG "${TINY[@]}" DROPOUT=0.1 NUM_EPOCHS=2 MAX_STEPS=6 \
  device=cuda METRICS_FILE="$T/eng_cuda.jsonl"
check "engine example on cuda: exit 0" [ "$rc" -eq 0 ]
check "engine example on cuda: two evaluations" [ "$(grep -c 'test accuracy' <<<"$out")" -eq 2 ]
check "engine example on cuda: reports the device's peak memory" has "$out" "peak memory on cuda:0:"
run "$CPU" examples/train_with_engine.lua --config $CFG "${TINY[@]}" DROPOUT=0.1 NUM_EPOCHS=2 MAX_STEPS=6 \
  METRICS_FILE="$T/eng_cpu.jsonl"
check "engine example on cpu: exit 0" [ "$rc" -eq 0 ]
compare "engine example: cuda vs cpu, losses within 1e-4, same accuracies" "$T/eng_cuda.jsonl" "$T/eng_cpu.jsonl" 1e-4

run "$LUNAR" -e "
local config, data, parallel = require('lunar.config'), require('lunar.data'), require('lunar.parallel')
local cfg = config.from_table({DATASET = 'synthetic', NUM_SAMPLES = 8, IMG_SIZE = 8, PATCH_SIZE = 4, IN_CHANS = 2,
  NUM_CLASSES = 4, BATCH_SIZE = 4, device = 'cuda', PREFETCH = false}, 'emu')
local g = parallel.initialize(cfg)
local ld = data.loader(data.datasets(cfg), cfg, {train = true})
ld:set_epoch(0)
local x, y = ld:next()
print(g.device, lunar.default_device(), ld:device(), x:device(), y:device(), x:dtype(), y:dtype())"
check "loader and grid: the batches and the default device are cuda:0" has "$out" "cuda:0	cuda:0	cuda:0	cuda:0	cuda:0	f32	i32"

# ---- micro-batches and gradient accumulation; the trainer example ----
for L in "$LUNAR:cuda" "$CPU:cpu"; do
  run "${L%%:*}" examples/train_with_engine.lua --config $CFG "${TINY[@]}" NUM_MICRO_BATCHES=2 gradient_accumulation=2 \
    MAX_STEPS=4 EVAL_EVERY_EPOCH=false device="${L##*:}" METRICS_FILE="$T/mb_${L##*:}.jsonl"
  check "micro-batches 2, accumulation 2 on ${L##*:}: exit 0" [ "$rc" -eq 0 ]
  run "${L%%:*}" examples/train_with_trainer.lua --config $CFG "${TINY[@]}" MAX_STEPS=3 device="${L##*:}" \
    METRICS_FILE="$T/tr_${L##*:}.jsonl"
  check "trainer example on ${L##*:}: exit 0" [ "$rc" -eq 0 ]
done
compare "micro-batches and accumulation: cuda vs cpu" "$T/mb_cuda.jsonl" "$T/mb_cpu.jsonl" 1e-4
compare "trainer example: cuda vs cpu" "$T/tr_cuda.jsonl" "$T/tr_cpu.jsonl" 1e-4

# ---- bf16 ----
run "$CPU" -e "print(lunar.ops.bf16_supported('cpu'))"
if has "$out" "true"; then
  for L in "$LUNAR:cuda" "$CPU:cpu"; do
    run "${L%%:*}" examples/train_with_engine.lua --config $CFG "${TINY[@]}" precision=bf16 MAX_STEPS=4 \
      EVAL_EVERY_EPOCH=false device="${L##*:}" METRICS_FILE="$T/bf_${L##*:}.jsonl"
    check "bf16 on ${L##*:}: exit 0" [ "$rc" -eq 0 ]
  done
  compare "bf16: cuda vs cpu within 2e-2" "$T/bf_cuda.jsonl" "$T/bf_cpu.jsonl" 2e-2
else
  skp "bf16: cuda vs cpu" "this CPU has no avx512_bf16 for the CPU side"
fi

# ---- checkpoints written on the device ----
run "$LUNAR" examples/train_with_engine.lua --config $CFG "${TINY[@]}" DROPOUT=0.1 MAX_STEPS=4 EVAL_EVERY_EPOCH=false \
  device=cuda CHECKPOINT_DIR="$T/ckpt" SAVE_EVERY=2 METRICS_FILE="$T/ck_a.jsonl"
check "checkpoint on cuda: the straight run saves steps 2 and 4" [ -d "$T/ckpt/step_2" ] && [ -d "$T/ckpt/step_4" ]
cp "$T/ck_a.jsonl" "$T/ck_b.jsonl"
run "$LUNAR" examples/train_with_engine.lua --config $CFG "${TINY[@]}" DROPOUT=0.1 MAX_STEPS=4 EVAL_EVERY_EPOCH=false \
  device=cuda CHECKPOINT_DIR="$T/ckpt2" RESUME="$T/ckpt/step_2" METRICS_FILE="$T/ck_b.jsonl"
check "resume on cuda: exit 0" [ "$rc" -eq 0 ]
compare "resume on cuda from step 2: bitwise the straight run's losses" "$T/ck_b.jsonl" "$T/ck_a.jsonl" 0
cp "$T/ck_a.jsonl" "$T/ck_c.jsonl"
run "$CPU" examples/train_with_engine.lua --config $CFG "${TINY[@]}" DROPOUT=0.1 MAX_STEPS=4 EVAL_EVERY_EPOCH=false \
  CHECKPOINT_DIR="$T/ckpt3" RESUME="$T/ckpt/step_2" METRICS_FILE="$T/ck_c.jsonl"
check "the device's checkpoint resumed on the cpu: exit 0" [ "$rc" -eq 0 ]
compare "the device's checkpoint resumed on the cpu: within 1e-4" "$T/ck_c.jsonl" "$T/ck_a.jsonl" 1e-4

# ---- a device this machine does not have ----
run "$LUNAR" examples/train_with_engine.lua --config $CFG "${TINY[@]}" device=cuda:3 METRICS_FILE=
check "device = 'cuda:3': exit 1" [ "$rc" -eq 1 ]
check "device = 'cuda:3': the error names the key and the device count" \
  has "$err" "config key 'device' is 'cuda:3', but this machine has 1 CUDA device (cuda:0)"
finish
