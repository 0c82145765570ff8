#!/usr/bin/env bash
# examples/mpirun/train_dp2.sh [key=value ...]: trains the main job's ViT
# (configs/vit_fmnist.lua) data parallel over 2 ranks on this machine:
#   mpirun -np 2 build/lunar examples/train_with_engine.lua --config configs/vit_fmnist.lua
# Each rank reads its half of every epoch; BATCH_SIZE is per rank, so the
# global batch is 2 x BATCH_SIZE (pass BATCH_SIZE=64 to keep the one-rank
# run's 128). Overrides pass through:
#   bash examples/mpirun/train_dp2.sh MAX_STEPS=20 LOG_EVERY=5
#   NP=4 bash examples/mpirun/train_dp2.sh 'parallel={pipeline=2}'   # dp 2 x pp 2
# Environment: NP (ranks, default 2), THREADS (OpenMP threads per rank,
# default cores / NP), CONFIG, LUNAR (default build/lunar).
set -euo pipefail
cd "$(dirname "$0")/../.."
NP=${NP:-2}
CONFIG=${CONFIG:-configs/vit_fmnist.lua}
LUNAR=${LUNAR:-build/lunar}
cores=$(nproc)
THREADS=${THREADS:-$(( cores / NP > 0 ? cores / NP : 1 ))}
export OMP_NUM_THREADS=$THREADS

# Open MPI refuses to run as root unless told to (containers, CI)
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
opts=()
# more ranks than cores: Open MPI stops with "not enough slots" without this
if [ "$NP" -gt "$cores" ]; then opts+=(--oversubscribe); fi
# With -np <= 2 Open MPI binds each rank to ONE core, so its OpenMP threads
# would share that core: give each rank THREADS cores, or no binding at all.
if [ $((NP * THREADS)) -le "$cores" ]; then
  opts+=(--map-by "slot:PE=$THREADS" --bind-to core)
else
  opts+=(--bind-to none)
fi
set -x
exec mpirun -np "$NP" "${opts[@]}" "$LUNAR" examples/train_with_engine.lua --config "$CONFIG" "$@"
