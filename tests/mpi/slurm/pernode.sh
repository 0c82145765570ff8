#!/usr/bin/env bash
# tests/mpi/slurm/pernode.sh CMD...: runs CMD with Open MPI's shared-memory
# files (and its session directory, through TMPDIR) in a directory of its own
# per fake Slurm node and per job:
#   srun -N 2 -n 4 --mpi=pmix tests/mpi/slurm/pernode.sh build/lunar SCRIPT ...
# Only needed when several fake nodes share one host (up.sh): they all have
# the same hostname, so the vader BTL's segments /dev/shm/vader_segment.<host>.
# <job>.<local rank> of the two nodes collide (unlink errors, a segfault in
# mca_btl_vader_poll_handle_frag), and two private clusters on one host would
# both run job 1. Real nodes need no wrapper. The other fix is
# OMPI_MCA_btl=self,tcp (slower). See docs/slurm_fake_nodes.md.
# up.sh's env.sh sets LUNAR_SLURM_SHM; down.sh removes it.
node=${SLURMD_NODENAME:-$(hostname)}
base=${LUNAR_SLURM_SHM:-/dev/shm/lunar-slurm-${SLURM_CLUSTER_NAME:-none}}
d=$base/${SLURM_JOB_ID:-0}.${SLURM_STEP_ID:-0}/$node
mkdir -p "$d" || exit 1
export OMPI_MCA_btl_vader_backing_directory=$d TMPDIR=$d
exec "$@"
