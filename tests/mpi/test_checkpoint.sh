#!/usr/bin/env bash
# tests/mpi/test_checkpoint.sh: checkpoints under mpirun --oversubscribe (-np 2
# and 4), one thread per rank: tests/mpi/checkpoint_check.lua saves from each
# data / tensor / pipeline layout of the world size (barriers, one shard per
# writing rank, index.json and the rename by rank 0), resumes bitwise on the
# same layout through RESUME='auto', and loads into the single-rank model
# (resharding). Skips when mpirun is absent or the build has no MPI.
# Run from the repository root (tests/run_all.sh does). Ends with
# "N passed, N failed[, N skipped]".
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
LUNAR=${LUNAR:-$BUILD/lunar}
. tests/fail/lib.sh
export OMP_NUM_THREADS=1

run "$LUNAR" --version
if has "$out" "MPI: no"; then
  skp "mpirun tests" "this build has no MPI (NO_MPI=1)"; finish
fi
if ! command -v mpirun >/dev/null; then
  skp "mpirun tests" "mpirun not found (apt-get install openmpi-bin)"; finish
fi

for np in 2 4; do
  mkdir -p "$T/np$np"
  run timeout 120 mpirun -np $np "$LUNAR" tests/mpi/checkpoint_check.lua "$T/np$np"
  check "checkpoint_check -np $np: exit 0" [ "$rc" -eq 0 ]
  n_ok=$(grep -cE '^rank [0-9]+: checkpoint_check [0-9]+ passed, 0 failed' <<<"$out")
  check "checkpoint_check -np $np: every rank reports 0 failed ($n_ok of $np)" [ "$n_ok" -eq $np ]
  check "checkpoint_check -np $np: no .tmp directory is left" \
    bash -c '! find "$1" -name "*.tmp.*" | grep -q .' _ "$T/np$np"
  [ "$rc" -ne 0 ] && { grep -E 'FAIL|rror' <<<"$out$err" | head -n 10 | sed 's/^/    /'; }
done
finish
