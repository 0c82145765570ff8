#!/usr/bin/env bash
# tests/fail/test_single_rank.sh: a single-rank build (comm_single.c: make
# NO_MPI=1, or no mpicc at build time) started by a launcher that runs several
# processes must fail at start with a message that says so, instead of running
# N independent jobs that each believe they are alone (core/comm/comm_single.c,
# lunar_comm_init). The single-rank host is $BUILD/tests/lunar-single, linked
# from the same objects as build/lunar (make builds it for `make test`).
# Run from the repository root. Ends with "N passed, N failed, N skipped".
set -u
cd "$(dirname "$0")/../.."
. tests/fail/lib.sh
SINGLE=${LUNAR_SINGLE:-$(dirname "$LUNAR")/tests/lunar-single}
if [ ! -x "$SINGLE" ]; then
  rc=-1; out=""; err="$SINGLE not built (make $SINGLE)"; bad "the single-rank host exists"; finish
fi

run "$SINGLE" --version
check "the single-rank host says 'MPI: no'" eval '[ "$rc" -eq 0 ] && has "$out" "MPI: no"'

run "$SINGLE" -e 'print(lunar.rank, lunar.world_size)'
check "without a launcher it runs as rank 0 of 1" [ "$rc" -eq 0 -a "$out" = "$(printf '0\t1')" ]

# the environment each launcher gives its processes (Open MPI, PMI, Slurm's srun)
for var in OMPI_COMM_WORLD_SIZE PMI_SIZE SLURM_STEP_NUM_TASKS; do
  run env "$var=2" "$SINGLE" -e 'print("ran")'
  check "$var=2: refuses to start (exit 1, no output from the script)" \
    eval '[ "$rc" -eq 1 ] && ! has "$out" "ran"'
  check "$var=2: the message says it is a single-rank build started as 2 processes" \
    eval 'has "$err" "built without MPI" && has "$err" "one of 2 processes ($var=2)"'
done
run env OMPI_COMM_WORLD_SIZE=1 "$SINGLE" -e 'print("ran")'
check "OMPI_COMM_WORLD_SIZE=1 (mpirun -np 1) runs" [ "$rc" -eq 0 -a "$out" = ran ]

# under the real launcher, when there is one
if command -v mpirun >/dev/null; then
  run timeout 120 mpirun -np 2 "$SINGLE" -e 'print("ran")'
  check "mpirun -np 2 of a single-rank build: the job fails" [ "$rc" -ne 0 -a "$rc" -ne 124 ]
  check "mpirun -np 2 of a single-rank build: no rank runs the script" eval '! has "$out" "ran"'
  check "mpirun -np 2 of a single-rank build: says why" has "$err$out" "built without MPI"
else
  skp "mpirun -np 2 of the single-rank host" "no mpirun on this machine"
fi
finish
