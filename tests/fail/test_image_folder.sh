#!/usr/bin/env bash
# tests/fail/test_image_folder.sh: DATASET = 'image_folder' against independent
# implementations, on folders this script writes (200 Fashion-MNIST training
# images as PNG and JPEG, photo-sized colour images, bad files; see
# tests/golden/image_folder_check.py):
#   - the file order and labels equal torchvision's ImageFolder(...).samples
#   - decoded pixels equal PIL's (PNG exactly; JPEG within 2 levels)
#   - RandomResizedCrop + flip (train) and Resize + CenterCrop (eval) equal
#     torchvision's functional ops on the PIL image for the same box, within 1
#     level (libjpeg DCT scaling: mean within 1 level)
#   - through the host: one warning naming each bad file (BAD_IMAGE=skip),
#     a user error naming it (BAD_IMAGE=error), and a training run on the folder
# Skipped, and counted, where Debian's python3-pil / python3-torchvision are
# missing. Run from the repository root; LUNAR (default build/lunar), PYTHON
# (default /usr/bin/python3). Ends with "N passed, N failed, N skipped".
set -u
cd "$(dirname "$0")/../.."
. tests/fail/lib.sh
export OMP_NUM_THREADS=1
PYTHON=${PYTHON:-/usr/bin/python3}
FMNIST=/usr/share/datasets/fashion-mnist
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
CHECK=tests/golden/image_folder_check.py

if ! "$PYTHON" -c 'import PIL, numpy, torchvision' 2>/dev/null; then
  skp "image folder vs PIL/torchvision" "$PYTHON lacks PIL, numpy or torchvision (apt-get install python3-pil python3-torchvision)"
  finish
fi
run "$PYTHON" $CHECK make "$T/d" "$FMNIST" 200
check "the test folders are written" [ "$rc" -eq 0 ]

# one comparison: KIND, the split directory, then the dump's environment
compare() {
  local kind=$1 dir=$2; shift 2
  run env DIR="$dir" OUT="$T/s.safetensors" "$@" "$LUNAR" tests/golden/image_folder_dump.lua
  if [ "$rc" -ne 0 ]; then bad "dump $kind $dir"; return; fi
  run "$PYTHON" $CHECK check "$kind" "$dir" "$T/s.safetensors"
  printf '%s\n' "$out" | grep -E 'FAIL|max \|diff\|' | head -n 12 | sed 's/^/  /'
  local line; line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' <<<"$out" | tail -n 1)
  if [ -z "$line" ]; then bad "$kind $dir: the check ran to its summary"; return; fi
  pass=$((pass + $(sed -E 's/^([0-9]+) passed.*/\1/' <<<"$line")))
  fail=$((fail + $(sed -E 's/^[0-9]+ passed, ([0-9]+) failed.*/\1/' <<<"$line")))
}
compare decode "$T/d/png/train" TRAIN=0 SIZE=28 CROP_PCT=1
compare decode "$T/d/jpg/train" TRAIN=0 SIZE=28 CROP_PCT=1
for k in photo_png photo_jpg; do
  compare train "$T/d/$k/train" TRAIN=1 SIZE=32 EPOCHS=4 SEED=7
  compare eval "$T/d/$k/train" TRAIN=0 SIZE=32
done

# bad files through the host: warnings once each (skip), a user error (error)
mkdir -p "$T/bad" && cp -r "$T/d/bad/train" "$T/bad/train" && cp -r "$T/d/bad/train" "$T/bad/val"
TRAIN_ARGS=(DATASET=image_folder IMG_SIZE=28 PATCH_SIZE=7 IN_CHANS=3 HIDDEN_SIZE=32 NUM_HEADS=2 DEPTH=2
            METRICS_FILE= DATA_THREADS=2)
run "$LUNAR" examples/train_with_engine.lua "${TRAIN_ARGS[@]}" DATA_DIR="$T/bad" BATCH_SIZE=3 NUM_EPOCHS=2
check "BAD_IMAGE=skip: training runs over bad files" [ "$rc" -eq 0 ]
n=$(grep -c 'warning: skipping bad image' <<<"$err")
for f in g00x_corrupt.jpg g01x_truncated.jpg g05x_text.png; do
  check "BAD_IMAGE=skip: a warning names $f" has "$err" "$f"
done
# 3 files in each of 2 datasets (train and val are copies): 6 warnings in 2 epochs, once per file
check "BAD_IMAGE=skip: one warning per bad file and dataset ($n)" [ "$n" -eq 6 ]
run "$LUNAR" examples/train_with_engine.lua "${TRAIN_ARGS[@]}" DATA_DIR="$T/bad" BATCH_SIZE=3 NUM_EPOCHS=1 \
    BAD_IMAGE=error PREFETCH=false SEED=1
check "BAD_IMAGE=error: fails" [ "$rc" -ne 0 ]
check "BAD_IMAGE=error: the message names a bad file" grep -qE 'g0[015]x_[a-z]+\.(jpg|png)' <<<"$err"
check "BAD_IMAGE=error: a user error (no traceback)" bash -c '! grep -q "stack traceback" <<<"$1"' _ "$err"

# a training run on the Fashion-MNIST PNG folder (train/ and val/)
run "$LUNAR" examples/train_with_engine.lua "${TRAIN_ARGS[@]}" DATA_DIR="$T/d/png" BATCH_SIZE=20 NUM_EPOCHS=1
check "training on the PNG folder runs" [ "$rc" -eq 0 ]
check "training on the PNG folder evaluates its 100 val images" has "$out" "/100)"
finish
