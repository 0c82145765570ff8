#!/usr/bin/env bash
# tests/fail/test_config_cli.sh: `lunar config` (lua/lunar/cli.lua): show with
# parameter counts, keys, usage and config errors; the README's config
# reference equals the generated one; the image-size benchmark on tiny sizes
# (2D, 3D, and two data-parallel ranks when MPI is built); the engine and the
# trainer examples give the same losses and accuracy.
# Run from the repository root (tests/run_all.sh does). Ends with "N passed, N failed[, N skipped]".
set -u
cd "$(dirname "$0")/../.."
. tests/fail/lib.sh
MPI_BUILD=1; "$LUNAR" --version | grep -q "MPI: no" && MPI_BUILD=0

# --- config show ------------------------------------------------------------------
run "$LUNAR" config show configs/models/vit_b16.lua
check "show B/16 exits 0" [ "$rc" -eq 0 ]
check "show B/16: 86,567,656 parameters" has "$out" "-- parameters: 86,567,656 (86.6M)"
check "show prints the resolved config" eval 'has "$out" "return {" && has "$out" "HIDDEN_SIZE = 768,  -- transformer width"'
check "show prints the model line" has "$out" "patch 16, width 768, depth 12, 12 heads, MLP 3072, 1000 classes, 197 tokens"

# every model config against its published size in millions (NeMo's table; Ti and S: timm's 5.7M
# and 22.1M): the count is within a million of it (papers round or truncate); g/14 and G/14 are
# published without the classification head (Zhai et al.), the others with it
ok_counts=1
while read -r name full backbone published which; do
  run "$LUNAR" config show "configs/models/$name.lua"
  line=$(grep '^-- parameters:' <<<"$out")
  has "$line" "-- parameters: $full (" || { ok_counts=0; echo "    $name: got '$line', want $full"; }
  has "$line" "without the classification head: $backbone (" || { ok_counts=0; echo "    $name: backbone: '$line'"; }
  n=$full; [ "$which" = backbone ] && n=$backbone
  d=$(( ${n//,/} - published * 1000000 )); d=${d#-}
  [ "$d" -lt 1000000 ] || { ok_counts=0; echo "    $name: $n is not within 1M of the published ${published}M"; }
done <<'EOF'
vit_ti16 5,717,416 5,524,416 6 full
vit_s16 22,050,664 21,665,664 22 full
vit_b16 86,567,656 85,798,656 86 full
vit_l16 304,326,632 303,301,632 304 full
vit_h16 632,199,400 630,918,400 632 full
vit_h14 632,045,800 630,764,800 632 full
vit_giant14 1,012,611,432 1,011,202,432 1011 backbone
vit_gigantic14 1,844,440,680 1,842,775,680 1843 backbone
EOF
check "show: every model's count matches its published size" [ "$ok_counts" -eq 1 ]

run "$LUNAR" config show configs/models/vit_b16.lua NUM_CLASSES=10
check "show with an override: B/16 with 10 classes has 85,806,346 parameters" has "$out" "-- parameters: 85,806,346"

run "$LUNAR" config show configs/recipes/vit_b16_synthetic224_tp2_pp2.lua
printf '%s\n' "$out" >"$T/resolved.lua"
check "show of a recipe exits 0" [ "$rc" -eq 0 ]
check "show of a recipe: parallel dict and per-rank state" eval 'has "$out" "pipeline = 2," && has "$out" "per rank over pipeline 2 x tensor 2"'
run "$LUNAR" config show "$T/resolved.lua"
check "show's output is a config that resolves to the same values" \
  eval '[ "$rc" -eq 0 ] && diff <(sed 1d "$T/resolved.lua") <(printf "%s\n" "$out" | sed 1d) >/dev/null'

for f in configs/models/*.lua configs/recipes/*.lua; do
  run "$LUNAR" config show "$f"
  [ "$rc" -eq 0 ] || { bad "show $f"; continue; }
done
ok "show works for every config under configs/models and configs/recipes"

# --- config errors ------------------------------------------------------------------
run "$LUNAR" config show configs/models/vit_b16.lua DEPTH=2 DEPTH=3
check "a key given twice: exit 1, named" eval '[ "$rc" -eq 1 ] && has "$err" "key '"'"'DEPTH'"'"' given twice on the command line"'
printf "include 'self.lua'\nDEPTH = 2\n" >"$T/self.lua"
run "$LUNAR" config show "$T/self.lua"
check "a config that includes itself: exit 1, include cycle" eval '[ "$rc" -eq 1 ] && has "$err" "include cycle: $T/self.lua -> $T/self.lua"'
printf "include '%s/configs/models/vit_b16.lua'\nHIDEN_SIZE = 512\n" "$PWD" >"$T/typo.lua"
run "$LUNAR" config show "$T/typo.lua"
check "an unknown key: exit 1, names the key, the file and the nearest key" \
  eval '[ "$rc" -eq 1 ] && has "$err" "$T/typo.lua: unknown config key '"'"'HIDEN_SIZE'"'"' (did you mean '"'"'HIDDEN_SIZE'"'"'?)"'
run "$LUNAR" config show configs/models/vit_b16.lua NUM_HEADS=5
check "a cross-key error: exit 1" eval '[ "$rc" -eq 1 ] && has "$err" "must be a multiple of NUM_HEADS (5)"'
run "$LUNAR" config show "$T/missing.lua"
check "a missing file: exit 1, names it" eval '[ "$rc" -eq 1 ] && has "$err" "cannot open config file $T/missing.lua"'
check "config errors have no Lua traceback" eval '! has "$err" "stack traceback"'

# --- usage ---------------------------------------------------------------------------
run "$LUNAR" config
check "no subcommand: exit 2 with the usage" eval '[ "$rc" -eq 2 ] && has "$err" "usage: lunar config show FILE"'
run "$LUNAR" config shwo x.lua
check "unknown subcommand: exit 2, suggests show" eval '[ "$rc" -eq 2 ] && has "$err" "unknown subcommand '"'"'shwo'"'"' (did you mean '"'"'show'"'"'?)"'
run "$LUNAR" config show
check "show without FILE: exit 2" eval '[ "$rc" -eq 2 ] && has "$err" "config show: missing FILE"'
run "$LUNAR" config show a.lua b.lua
check "show with two files: exit 2" [ "$rc" -eq 2 ]
run "$LUNAR" config help
check "config help: exit 0" eval '[ "$rc" -eq 0 ] && has "$out" "lunar config keys"'
run "$LUNAR" --help
check "--help lists the config command" has "$out" "config show FILE"

# --- config keys and the README --------------------------------------------------------
run "$LUNAR" config keys
nkeys=$("$LUNAR" -e 'print(#require("lunar.schema").keys())')
check "keys: one line per schema key" eval '[ "$rc" -eq 0 ] && [ "$(wc -l <<<"$out")" -eq "$nkeys" ]'
check "keys: type, default and doc" grep -qE '^SWEEP_START +integer +32 +image-size benchmark: first image side' <<<"$out"
run "$LUNAR" config keys --markdown
check "keys --markdown: a table row per key" eval '[ "$(grep -c "^| \`" <<<"$out")" -eq "$nkeys" ]'
"$LUNAR" -e "io.write(require('lunar.cli').readme_section(), '\\n')" >"$T/section.md"
sed -n '/<!-- config-reference:begin -->/,/<!-- config-reference:end -->/p' README.md >"$T/readme.md"
if diff "$T/readme.md" "$T/section.md" >"$T/readme.diff"; then
  ok "README's config reference equals the schema's (build/lunar config keys --update-readme)"
else
  out=$(head -20 "$T/readme.diff"); err=""
  bad "README's config reference is out of date: run build/lunar config keys --update-readme"
fi
cp README.md "$T/README.md"
run "$LUNAR" config keys --update-readme "$T/README.md"
check "--update-readme leaves an up-to-date README alone" eval 'has "$out" "up to date" && cmp -s README.md "$T/README.md"'
printf '# x\n<!-- config-reference:begin -->\nold\n<!-- config-reference:end -->\ntail\n' >"$T/R.md"
run "$LUNAR" config keys --update-readme "$T/R.md"
check "--update-readme rewrites only the section" \
  eval '[ "$rc" -eq 0 ] && head -1 "$T/R.md" | grep -qx "# x" && tail -1 "$T/R.md" | grep -qx tail && grep -q "SWEEP_STEP" "$T/R.md"'

# --- the image-size benchmark ------------------------------------------------------------
TINY="PATCH_SIZE=8 HIDDEN_SIZE=16 DEPTH=1 NUM_HEADS=2 NUM_CLASSES=4 BATCH_SIZE=2 SWEEP_START=16 SWEEP_STOP=32 BENCH_WARMUP=1 BENCH_STEPS=2"
HEADER="img_size,img_dims,tokens,batch_size,data_parallel,params,step_time_s,images_per_s,flop_per_s,peak_bytes,peak_rss_bytes,domain,tokens_per_rank,activation_bytes,status"
csv_ok() {  # file dims tokens... : header, one row per size with those tokens, positive figures
  local f=$1 dims=$2; shift 2
  [ "$(head -1 "$f")" = "$HEADER" ] || return 1
  [ "$(($(wc -l <"$f") - 1))" -eq $# ] || return 1
  local i=2 size=16 tok
  for tok in "$@"; do
    awk -F, -v r="$i" -v s="$size" -v d="$dims" -v t="$tok" \
      'NR == r { exit !($1 == s && $2 == d && $3 == t && $7 > 0 && $8 > 0 && $9 > 0 && $10 > 0) }' "$f" || return 1
    i=$((i + 1)); size=$((size + 16))
  done
}
run "$LUNAR" examples/benchmark_image_sizes.lua $TINY SWEEP_STEP=16 BENCH_CSV="$T/b2.csv"
check "benchmark 2D: exit 0" [ "$rc" -eq 0 ]
check "benchmark 2D: the table has a row per size" eval 'grep -qE "^ +16\^2 +5 " <<<"$out" && grep -qE "^ +32\^2 +17 " <<<"$out"'
check "benchmark 2D: the CSV has sizes 16 and 32 with 5 and 17 tokens" csv_ok "$T/b2.csv" 2 5 17
run "$LUNAR" examples/benchmark_image_sizes.lua $TINY SWEEP_STEP=16 IMG_DIMS=3 BENCH_CSV="$T/b3.csv"
check "benchmark 3D: exit 0" [ "$rc" -eq 0 ]
check "benchmark 3D: the CSV has sizes 16 and 32 with 9 and 65 tokens" csv_ok "$T/b3.csv" 3 9 65
run "$LUNAR" examples/benchmark_image_sizes.lua $TINY SWEEP_STEP=12 BENCH_CSV="$T/bad.csv"
check "benchmark: a size that is not a multiple of PATCH_SIZE is an error naming it" \
  eval '[ "$rc" -eq 1 ] && has "$err" "image size 28 (from SWEEP_START 16 by SWEEP_STEP 12) is not a multiple of PATCH_SIZE 8" && [ ! -e "$T/bad.csv" ]'
if [ "$MPI_BUILD" = 1 ] && command -v mpirun >/dev/null; then
  run mpirun -np 2 "$LUNAR" examples/benchmark_image_sizes.lua $TINY SWEEP_STEP=16 BENCH_CSV="$T/bdp.csv"
  check "benchmark on 2 ranks: data-parallel size 2 in the CSV" \
    eval '[ "$rc" -eq 0 ] && csv_ok "$T/bdp.csv" 2 5 17 && awk -F, "NR > 1 && \$5 != 2 { exit 1 }" "$T/bdp.csv"'
else
  skp "benchmark on 2 ranks" "no MPI build"
fi

# --- engine and trainer examples: the same losses and accuracy -------------------------------
SMALL="DATASET=synthetic IMG_SIZE=8 PATCH_SIZE=4 IN_CHANS=1 HIDDEN_SIZE=16 DEPTH=2 NUM_HEADS=2 NUM_CLASSES=4 NUM_SAMPLES=256 BATCH_SIZE=16 NUM_EPOCHS=2 LOG_EVERY=8 DROPOUT=0.1 clip_grad_norm=1.0"
run "$LUNAR" examples/train_with_engine.lua $SMALL METRICS_FILE="$T/engine.jsonl"
engine_rc=$rc; engine_acc=$(grep -o 'test accuracy [0-9.]*% ([0-9/]*)' <<<"$out")
run "$LUNAR" examples/train_with_trainer.lua $SMALL METRICS_FILE="$T/trainer.jsonl"
trainer_acc=$(grep -o 'test accuracy [0-9.]*% ([0-9/]*)' <<<"$out")
losses() {  # "step loss lr" per training step of a metrics file, exactly as written
  "$LUNAR" -e 'local json = require("lunar.json")
    for line in io.lines((...)) do
      local o = json.decode(line)
      if o.loss then print(o.step, string.format("%.17g %.17g", o.loss, o.lr)) end
    end' -- "$1"
}
check "both examples run" eval '[ "$engine_rc" -eq 0 ] && [ "$rc" -eq 0 ]'
check "trainer example: the engine example's loss and lr at every step (32 steps)" \
  eval '[ "$(losses "$T/trainer.jsonl" | wc -l)" -eq 32 ] && [ "$(losses "$T/engine.jsonl")" = "$(losses "$T/trainer.jsonl")" ]'
check "trainer example: the same test accuracy after each epoch" \
  eval '[ -n "$engine_acc" ] && [ "$(wc -l <<<"$engine_acc")" -eq 2 ] && [ "$engine_acc" = "$trainer_acc" ]'
# EVAL_INTERVAL=2 over 5 epochs: evaluations after epochs 2 and 4 (multiples of 2) and 5 (the last)
run "$LUNAR" examples/train_with_engine.lua ${SMALL/NUM_EPOCHS=2/NUM_EPOCHS=5} EVAL_INTERVAL=2 METRICS_FILE=
engine_ep=$(grep -o 'epoch [0-9]*: test accuracy [0-9.]*% ([0-9/]*)' <<<"$out")
run "$LUNAR" examples/train_with_trainer.lua ${SMALL/NUM_EPOCHS=2/NUM_EPOCHS=5} EVAL_INTERVAL=2 METRICS_FILE=
trainer_acc=$(grep -o 'test accuracy [0-9.]*% ([0-9/]*)' <<<"$out")
check "EVAL_INTERVAL=2, 5 epochs: the engine example evaluates after epochs 2, 4 and 5, the trainer the same" \
  eval '[ "$(grep -o "^epoch [0-9]*" <<<"$engine_ep" | tr "\n" " ")" = "epoch 2 epoch 4 epoch 5 " ] &&
        [ "$(sed "s/^epoch [0-9]*: //" <<<"$engine_ep")" = "$trainer_acc" ]'

# the trainer on 2 ranks (pipeline stages: the test phase is engine:evaluate; tensor parallel:
# per-batch test events, counts summed over the replicas): the single rank's test accuracy
if [ "$MPI_BUILD" = 1 ] && command -v mpirun >/dev/null; then
  NODROP="${SMALL/DROPOUT=0.1/DROPOUT=0} METRICS_FILE="
  run "$LUNAR" examples/train_with_trainer.lua $NODROP
  one=$(grep -o 'test accuracy [0-9.]*% ([0-9/]*)' <<<"$out")
  for layout in "parallel={pipeline=2}" "parallel={tensor={mode='1d',size=2}}"; do
    run mpirun -np 2 "$LUNAR" examples/train_with_trainer.lua $NODROP "$layout" NUM_MICRO_BATCHES=2
    two=$(grep -o 'test accuracy [0-9.]*% ([0-9/]*)' <<<"$out")
    check "trainer on 2 ranks ($layout): the single rank's test accuracy" \
      eval '[ "$rc" -eq 0 ] && [ -n "$one" ] && [ "$one" = "$two" ]'
  done
  # data parallel with gradient accumulation, and pipeline stages: the engine example's numbers
  # (one metrics line per optimizer step: data 2 has 8 batches per epoch, 16 in all, 8 steps)
  for layout in "parallel={data=2}" "parallel={pipeline=2}"; do
    run mpirun -np 2 "$LUNAR" examples/train_with_engine.lua $SMALL "$layout" gradient_accumulation=2 \
      METRICS_FILE="$T/e2.jsonl"
    erc=$rc
    run mpirun -np 2 "$LUNAR" examples/train_with_trainer.lua $SMALL "$layout" gradient_accumulation=2 \
      METRICS_FILE="$T/t2.jsonl"
    check "2 ranks, $layout, gradient_accumulation 2: the trainer's losses and lrs are the engine example's" \
      eval '[ "$erc" -eq 0 ] && [ "$rc" -eq 0 ] && [ "$(losses "$T/t2.jsonl" | wc -l)" -ge 8 ] &&
            [ "$(losses "$T/e2.jsonl")" = "$(losses "$T/t2.jsonl")" ]'
  done
else
  skp "trainer on 2 ranks" "no MPI build"
fi

# device = 'cuda' where there is none: the training scripts stop before building anything, naming
# the key and the reason, once (also on 2 ranks), without a traceback
run "$LUNAR" -e 'print(lunar.cuda.is_available())'
if has "$out" "false"; then
  for script in train_with_engine train_with_trainer; do
    run "$LUNAR" examples/$script.lua $SMALL device=cuda METRICS_FILE=
    check "$script, device = 'cuda' without a GPU: exit 1, names the key and why" \
      eval '[ "$rc" -eq 1 ] && has "$err" "config key '"'"'device'"'"' is '"'"'cuda'"'"', but no CUDA device is available (" &&
            ! has "$err" "stack traceback"'
  done
  if [ "$MPI_BUILD" = 1 ] && command -v mpirun >/dev/null; then
    run mpirun -np 2 "$LUNAR" examples/train_with_engine.lua $SMALL device=cuda METRICS_FILE=
    check "device = 'cuda' without a GPU on 2 ranks: exit 1, the error printed once" \
      eval '[ "$rc" -ne 0 ] && [ "$(grep -c "config key '"'"'device'"'"'" <<<"$err")" -eq 1 ]'
  fi
else
  skp "device = 'cuda' without a GPU" "this machine has a CUDA device"
fi

# activation checkpointing of more blocks than a pipeline stage has (DEPTH 2 over 2 stages: 1 each):
# the config check names the key and the stage, once, before any collective (no grid is printed)
run "$LUNAR" examples/train_with_engine.lua $SMALL 'activation_checkpointing={granularity="full", num_layers=3}' \
  METRICS_FILE=
check "activation_checkpointing.num_layers > DEPTH: exit 1, names the key, no traceback" \
  eval '[ "$rc" -eq 1 ] && has "$err" "config key '"'"'activation_checkpointing.num_layers'"'"' (3) is more than the 2 blocks of the model (DEPTH 2)" && ! has "$err" "stack traceback"'
if [ "$MPI_BUILD" = 1 ] && command -v mpirun >/dev/null; then
  run mpirun -np 2 "$LUNAR" examples/train_with_engine.lua $SMALL 'parallel={pipeline=2}' NUM_MICRO_BATCHES=2 \
    CHECKPOINT=true 'activation_checkpointing={method="block", num_layers=2}' METRICS_FILE=
  check "CHECKPOINT with num_layers 2 over 2 stages of 1 block: exit 1, the stage named once, no grid printed" \
    eval '[ "$rc" -ne 0 ] && [ "$(grep -c "(2) is more than the 1 blocks of pipeline stage 0 of 2 (DEPTH 2)" <<<"$err")" -eq 1 ] && ! has "$out" "process grid"'
fi

finish
