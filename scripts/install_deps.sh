#!/usr/bin/env bash
# Installs what Lunar needs from Debian's packages, when something is missing.
# Called by `make` (through the deps stamp) and by .ci/run. Runs apt-get as
# root, or through sudo otherwise. Set LUNAR_SKIP_DEPS=1 to skip.
set -euo pipefail
[ "${LUNAR_SKIP_DEPS:-0}" = 1 ] && exit 0

# Build and runtime dependencies (see README.md).
PKGS=(
  build-essential pkg-config      # gcc, make, pkg-config
  liblua5.4-dev lua5.4            # the embedded interpreter (pkg-config name lua5.4)
  libopenblas-openmp-dev          # BLAS GEMM, OpenMP build: one thread pool with our kernels
  libdnnl-dev                     # oneDNN: the CPU GEMMs, f32 and bf16 (GNU OpenMP, the same pool)
  zlib1g-dev                      # gzipped IDX files
  libjpeg62-turbo-dev libpng-dev  # DATASET='image_folder': JPEG (libjpeg-turbo, DCT scaling) and PNG decoding
  libzip-dev                      # DATASET='imagenet_zip': members read from train.zip / val.zip
  python3-pil                     # tests/golden/image_folder_check.py writes and decodes the test images
  libopenmpi-dev openmpi-bin      # MPI launch and collectives
  libcjson-dev                    # JSON: safetensors headers (C) and lunar.json (Lua)
  libreadline-dev                 # REPL line editing and history
  libprotobuf-c-dev protobuf-c-compiler libisal-dev   # TensorBoard event files: the Event protobuf
                                  # (protoc-c at build time) and CRC32C (ISA-L's crc32_iscsi)
  gnuplot-nox                     # `lunar plot` and PLOT_FILE (PNG through the pngcairo terminal)
  dataset-fashion-mnist           # the main job's data
  tmux                            # the REPL test drives a real terminal
  python3-torch python3-torchvision python3-venv   # the PyTorch reference: tests/golden (gen_golden.py,
                                  # timm_check.py in tests/fail/test_timm.sh, which adds timm and
                                  # safetensors from PyPI in a venv), bench/vs_pytorch
  clang libclang-rt-14-dev        # make fuzz only (libFuzzer; the runtime is only a
                                  # Recommends of clang-14): never used by all or test
  # A local Slurm cluster for tests/mpi/test_slurm.sh (srun --mpi=pmix). These pull
  # in liblua5.1 (with recommends also lua5.1, which can take over /usr/bin/lua):
  # Lunar embeds Lua 5.4 and never calls a bare `lua`; scripts must use lua5.4.
  slurm-wlm slurmctld slurmd slurm-client munge
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
echo "install_deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
