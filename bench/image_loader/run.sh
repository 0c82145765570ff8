#!/usr/bin/env bash
# bench/image_loader/run.sh: loader throughput of DATASET='image_folder'
# (decoded, augmented IMG_SIZE x IMG_SIZE images per second per core) side by
# side with torchvision's ImageFolder + DataLoader on the same files and the
# same cores (issue 15's benchmark; a benchmark, never run as a test).
#
# The folder (made once in DIR, kept): N photo-sized JPEGs (images.py:
# Fashion-MNIST upscaled bicubic to 500 x 375 like ImageNet's, tinted, JPEG
# quality 90) in 10 class directories. Both sides run the training transform
# (timm's: RandomResizedCrop(IMG_SIZE), horizontal flip, ToTensor, Normalize
# with ImageNet's statistics) over one epoch in batches of 64 and report
# images/s and images/s per core:
#   lunar  lunar_side.lua: the loader with THREADS decode threads, no prefetch
#          (the calling thread is one of them)
#   torch  torch_side.py: DataLoader(num_workers=0) with torch.set_num_threads(1)
#          for THREADS=1, else num_workers=THREADS worker processes
# Run from the repository root, after `make`:
#     bash bench/image_loader/run.sh [N] [THREADS ...]     (default 2000, threads 1)
# Environment: BUILD (default build), LUNAR (default $BUILD/lunar), PYTHON
# (default /usr/bin/python3: Debian's, with python3-pil and python3-torchvision),
# DIR (default $TMPDIR or /tmp, + /lunar_bench_images), IMG_SIZE (default 224).
set -eu
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
LUNAR=${LUNAR:-$BUILD/lunar}
PYTHON=${PYTHON:-/usr/bin/python3}
DIR=${DIR:-${TMPDIR:-/tmp}/lunar_bench_images}
N=${1:-2000}; [ $# -gt 0 ] && shift
THREADS=("${@:-1}")
export IMG_SIZE=${IMG_SIZE:-224} OMP_NUM_THREADS=1
"$PYTHON" bench/image_loader/images.py "$DIR" "$N"
printf '%-7s %7s %8s %10s %14s\n' side threads images seconds 'img/s/core'
for t in "${THREADS[@]}"; do
  DIR="$DIR/train" THREADS=$t "$LUNAR" bench/image_loader/lunar_side.lua
  DIR="$DIR/train" THREADS=$t "$PYTHON" bench/image_loader/torch_side.py
done
