#!/usr/bin/env bash
# scripts/gpu_check.sh: the checks of the CUDA backend that need a GPU, in one
# run sized for a short loan of a GPU machine (about 10 minutes), each stage
# with its own time limit so that one hang does not eat the rest:
#   0. the device, the driver, and where cuBLASLt, cuDNN and NCCL are found
#   1. build/tests/test_cuda: every CUDA kernel against the CPU one, the
#      allocator, bf16 GEMMs, the cuDNN attention graphs (LUNAR_ATTENTION_LOG=1
#      prints which path each attention call took)
#   2. tests/lua/test_cuda.lua and tests/lua/test_golden_cuda.lua (the golden
#      ViT on the GPU in fp32 and bf16 against PyTorch's file)
#   3. tests/cuda_emu/train_check.sh with the real device: both example
#      training scripts on device=cuda against the same binary on the CPU
#      (losses within 1e-4), checkpoints saved on the GPU resumed bitwise
#   4. bench/gpu_throughput (ViT-B/16 and ViT-L/16, fp32/TF32 and bf16, beside
#      PyTorch when it has CUDA), STEPS steps (default 10)
# Where Lunar's libraries are not installed (a lent machine reaches no package
# registry), scripts/gpu_bundle.sh, run beforehand on a machine that has them,
# packs a build (build-gpu) and its libraries into .gpu/bundle.tar.xz; carry
# .gpu and this script unpacks and uses it.
#
#   bash scripts/gpu_check.sh [OUTDIR] [STEPS]     (OUTDIR default: $OUT, else /tmp/gpu_check)
# Writes OUTDIR/gpu_check.log (everything) and OUTDIR/summary.txt (one line per
# stage: ok, FAILED, TIMEOUT or SKIPPED, with the seconds it took). Exit
# status: 0 when every stage that ran passed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR=${1:-${OUT:-/tmp/gpu_check}}
STEPS=${2:-10}
mkdir -p "$OUTDIR"
LOG=$OUTDIR/gpu_check.log
SUM=$OUTDIR/summary.txt
: >"$LOG"; : >"$SUM"
failed=0

say() { echo "$*" | tee -a "$LOG"; }
# stage NAME LIMIT_S COMMAND...: runs it with output to the log, one summary line
stage() {
  local name=$1 limit=$2; shift 2
  say "==== $name (limit ${limit}s): $*"
  local t0=$SECONDS rc
  timeout --kill-after=10 "$limit" "$@" >>"$LOG" 2>&1
  rc=$?
  local dt=$((SECONDS - t0)) status=ok
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then status=TIMEOUT; failed=1
  elif [ $rc -ne 0 ]; then status="FAILED (rc $rc)"; failed=1; fi
  say "==== $name: $status (${dt}s)"
  printf '%-28s %-14s %4ds\n' "$name" "$status" "$dt" >>"$SUM"
  tail -n 3 "$LOG" | grep -E 'passed|failed|skipped' | tail -n 1 | sed 's/^/    /' >>"$SUM"
}

# ---- the build: the bundle when there is one, else build/ ----
BUILD=${BUILD:-}
if [ -z "$BUILD" ] && [ -f .gpu/bundle.tar.xz ]; then
  tar -xJf .gpu/bundle.tar.xz && BUILD=build-gpu
  export LD_LIBRARY_PATH=$PWD/build-gpu/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  say "using the bundle (.gpu/bundle.tar.xz): build-gpu, libraries in build-gpu/lib"
fi
BUILD=${BUILD:-build}
LUNAR=$BUILD/lunar
if [ ! -x "$LUNAR" ]; then
  stage build 420 make -j"$(nproc)" BUILD="$BUILD" CUDA=1 lunar "$BUILD/tests/test_cuda"
fi

# ---- the CUDA libraries Lunar opens with dlopen: the toolkit's, else pip's (PyTorch's wheels) ----
libdirs=$(ls -d /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib 2>/dev/null
          for py in python3 /opt/torch/.venv/bin/python3; do
            "$py" -c 'import site; print("\n".join(site.getsitepackages()))' 2>/dev/null
          done | while read -r sp; do ls -d "$sp"/nvidia/*/lib 2>/dev/null; done)
for lib in libcublasLt.so.13 libcudnn.so.9 libnccl.so.2; do
  found=
  for d in $libdirs /usr/lib/x86_64-linux-gnu; do
    if [ -e "$d/$lib" ]; then found=$d/$lib; break; fi
  done
  if [ -n "$found" ]; then
    say "$lib: $found"
    export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$(dirname "$found")
    [ "$lib" = libcudnn.so.9 ] && export LUNAR_CUDNN_LIBRARY=$found
  else
    say "$lib: not found (the stages that need it report it)"
  fi
done

stage "device" 60 bash -c "nvidia-smi -L; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv;
  $LUNAR --version; $LUNAR -e 'local ok, why = lunar.cuda.is_available(); assert(ok, why)
  print(lunar.cuda.device_name(), string.format(\"sm_%d%d\", lunar.cuda.capability()))'"
if ! grep -q '^device .* ok' "$SUM"; then
  say "no usable CUDA device: the other stages are skipped"
  exit 1
fi

export LUNAR_ATTENTION_LOG=1
stage "test_cuda" 300 "$BUILD/tests/test_cuda"
stage "test_cuda.lua" 120 "$LUNAR" tests/lua/test_cuda.lua
stage "test_golden_cuda.lua" 120 "$LUNAR" tests/lua/test_golden_cuda.lua
unset LUNAR_ATTENTION_LOG
stage "train on cuda" 240 env EMU="$BUILD" CPU_LUNAR="$LUNAR" BUILD="$BUILD" bash tests/cuda_emu/train_check.sh
stage "gpu_throughput" 300 env LUNAR="$LUNAR" bash bench/gpu_throughput "$STEPS"
say "---- summary"
cat "$SUM" | tee -a "$LOG"
exit $failed
