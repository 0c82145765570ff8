#!/usr/bin/env bash
# bench/fault_exit.sh: how fast a multi-rank Lunar job ends when one rank fails
# (a benchmark, never run as a test: tests/mpi/test_comm.sh and
# tests/fail/test_host.sh check that such a job ends, with a hang guard only).
#
# What it measures: the wall-clock seconds from the start of `mpirun` to its
# exit (rc != 0) for each fault below, the median and the max over ROUNDS runs.
# The start-up of the ranks is part of it; the line "baseline" (every rank
# exits normally after the same start-up) is the time that is not the fault's.
#   baseline       2 ranks, `lunar -e 'lunar.comm.world():barrier()'`, exit 0
#   lua_error      2 ranks: rank 1 raises a Lua error at step 3 while rank 0
#                  waits in an all_reduce (issue 3's fault requirement: 10 s)
#   c_error        the same with an op the core refuses (a shape error)
#   sigkill        4 ranks: rank 1 kills itself with SIGKILL, the others wait
#                  in a barrier
#
# Run from the repository root, after `make`:
#     bash bench/fault_exit.sh [ROUNDS]       (default 3)
# Environment: BUILD (default build), LUNAR (default $BUILD/lunar), TIMEOUT (a
# hang guard per run, default 120 s: a run that hits it is reported as such).
# Prints one line per fault: "NAME median S s, max S s (N runs, rc R)".
set -uo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
BUILD=${BUILD:-build}
LUNAR=${LUNAR:-$BUILD/lunar}
TIMEOUT=${TIMEOUT:-120}
export OMP_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1
command -v mpirun >/dev/null || { echo "fault_exit: mpirun not found (apt-get install openmpi-bin)"; exit 1; }
[ -x "$LUNAR" ] || { echo "fault_exit: $LUNAR not built (make)"; exit 1; }
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT

step_script() {   # the line rank 1 runs at step 3
  cat <<LUA
local c = lunar.comm.world()
local t = lunar.ones({1 << 16})
local function step(i)
  if c:rank() == 1 and i == 3 then
    $1
  end
  c:all_reduce(t, 'avg')
end
for i = 1, 1000000 do step(i) end
LUA
}
step_script "error('boom at step ' .. i)" >"$DIR/lua_error.lua"
step_script "lunar.ops.linear(lunar.zeros({2, 3}), lunar.zeros({4, 5}))" >"$DIR/c_error.lua"
cat >"$DIR/sigkill.lua" <<'LUA'
local c = lunar.comm.world()
if c:rank() == 1 then
  local pid = io.open('/proc/self/stat'):read('l'):match('^(%d+)')
  os.execute('kill -9 ' .. pid)
end
c:barrier()
LUA
echo 'lunar.comm.world():barrier()' >"$DIR/baseline.lua"

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

measure() {   # name, ranks
  local name=$1 np=$2 times=() rcs=() r t0 rc
  for ((r = 0; r < ROUNDS; r++)); do
    t0=$(date +%s%N)
    timeout "$TIMEOUT" mpirun -np "$np" "$LUNAR" "$DIR/$name.lua" >/dev/null 2>&1
    rc=$?
    times+=("$(awk -v ns=$(( $(date +%s%N) - t0 )) 'BEGIN { printf "%.2f", ns / 1e9 }')")
    rcs+=("$rc")
  done
  local med max
  med=$(printf '%s\n' "${times[@]}" | median)
  max=$(printf '%s\n' "${times[@]}" | sort -g | tail -n 1)
  local note=""
  for rc in "${rcs[@]}"; do [ "$rc" -eq 124 ] && note=" (HIT THE ${TIMEOUT} s HANG GUARD)"; done
  printf '%-10s median %s s, max %s s (%d runs on %d ranks, rc %s)%s\n' "$name" "$med" "$max" "$ROUNDS" "$np" \
    "$(printf '%s\n' "${rcs[@]}" | sort -u | paste -sd/)" "$note"
}

echo "fault_exit: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $LUNAR"
measure baseline 2
measure lua_error 2
measure c_error 2
measure sigkill 4
