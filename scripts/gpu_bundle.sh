#!/usr/bin/env bash
# scripts/gpu_bundle.sh: builds Lunar for a GPU machine that has the NVIDIA
# driver and CUDA but none of Lunar's other libraries (a lent GPU machine can
# reach no package registry), and packs it with the shared libraries it needs
# into .gpu/bundle.tar.xz (git-ignored) for scripts/gpu_check.sh there.
#
#   bash scripts/gpu_bundle.sh            # then carry .gpu and run scripts/gpu_check.sh there
#
# The build (BUILD=build-gpu): CUDA on (sm_80, sm_90), no MPI (one GPU: the
# NCCL test needs several), -march=x86-64-v3 (any AVX2 server CPU; the CPU
# kernels the CUDA tests compare against run their non-AVX-512 paths), then
# lunar and tests/test_cuda. The libraries: what `ldd build-gpu/lunar` and
# test_cuda resolve outside glibc, libstdc++ and libgcc (liblua5.4, OpenBLAS,
# cJSON, readline, zlib, libgomp, libgfortran ...), copied into the bundle's
# lib/. A Debian 12 build needs glibc 2.34 or newer (checked below).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=build-gpu
OUTDIR=.gpu
command -v /usr/local/cuda/bin/nvcc >/dev/null || { echo "gpu_bundle: /usr/local/cuda/bin/nvcc not found" >&2; exit 1; }
make -s -j"$(nproc)" BUILD=$BUILD CUDA=1 NO_MPI=1 MARCH=x86-64-v3 lunar $BUILD/tests/test_cuda

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/$BUILD/lib" "$stage/$BUILD/tests"
cp $BUILD/lunar "$stage/$BUILD/"
cp $BUILD/tests/test_cuda "$stage/$BUILD/tests/"
# the shared libraries, less those every Linux with CUDA has (glibc, the
# dynamic loader, libstdc++, libgcc_s)
for bin in $BUILD/lunar $BUILD/tests/test_cuda; do
  ldd "$bin" | awk '/=> \//{print $3}'
done | sort -u | while read -r lib; do
  case $(basename "$lib") in
    libc.so.*|libm.so.*|libdl.so.*|libpthread.so.*|librt.so.*|ld-linux*|libstdc++.so.*|libgcc_s.so.*) ;;
    *) cp -L "$lib" "$stage/$BUILD/lib/" ;;
  esac
done
glibc=$(objdump -T $BUILD/lunar $BUILD/tests/test_cuda "$stage/$BUILD/lib"/*.so* 2>/dev/null |
        grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)
mkdir -p $OUTDIR
tar -C "$stage" -cJf $OUTDIR/bundle.tar.xz $BUILD
echo "gpu_bundle: $OUTDIR/bundle.tar.xz ($(du -h $OUTDIR/bundle.tar.xz | cut -f1)): $BUILD/lunar, $BUILD/tests/test_cuda," \
     "$(ls "$stage/$BUILD/lib" | wc -l) libraries; needs $glibc or newer"
