#!/usr/bin/env bash
# tests/mpi/test_slurm.sh: Lunar launched by Slurm (srun --mpi=pmix) across two
# nodes. Brings up a private Slurm cluster with two fake nodes, n1 and n2, on
# this host (tests/mpi/slurm/up.sh: its own slurm.conf, ports, state and log
# directories and its own munged, all in a temporary directory), then
#   - srun -N 2 -n 4 -l printenv SLURMD_NODENAME: two tasks per node
#   - srun -N 2 -n 4 --mpi=pmix lunar tests/mpi/slurm/launch_check.lua: each
#     rank learned rank, world size (4) and local rank (0, 1 on each node) from
#     the MPI runtime; all_reduce through lunar.comm
#   - srun -N 2 -n 4 --mpi=pmix lunar examples/train_with_engine.lua --config
#     configs/vit_fmnist.lua with a tiny ViT on synthetic data for 3 steps:
#     exit 0, data parallel of size 4, each step logged once (by rank 0)
#   - the cluster shuts down (scontrol shutdown, the private munged stopped)
#     and no process of it is left
# The cluster is shut down on every exit path (trap), and every step is
# time-bounded, so a broken Slurm cannot hang the suite. The ranks run under
# tests/mpi/slurm/pernode.sh (Open MPI shared memory per fake node).
# Skips when Slurm or munge is not installed (bash scripts/install_deps.sh),
# when not root, or when the build has no MPI. Run from the repository root
# (tests/run_all.sh does); BUILD=dir and LUNAR=path override;
# LUNAR_SLURM_KEEP=1 keeps the cluster's directory (logs) after the run.
# Ends with "N passed, N failed[, N skipped]".
set -u
cd "$(dirname "$0")/../.." || exit 1
BUILD=${BUILD:-build}
LUNAR=${LUNAR:-$BUILD/lunar}
. tests/fail/lib.sh
export OMP_NUM_THREADS=1
t_start=$(date +%s%N)
ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

# --- can this machine run it? ------------------------------------------------------------
run "$LUNAR" --version
if has "$out" "MPI: no"; then skp "slurm tests" "this build has no MPI (NO_MPI=1)"; finish; fi
for c in slurmctld slurmd srun sinfo scontrol munged mungekey; do
  if ! command -v "$c" >/dev/null; then
    skp "slurm tests" "$c not installed (bash scripts/install_deps.sh: slurm-wlm slurmctld slurmd slurm-client munge)"
    finish
  fi
done
if [ "$(id -u)" != 0 ]; then skp "slurm tests" "needs root (slurmd launches the tasks)"; finish; fi

# --- the cluster, shut down on every exit ------------------------------------------------------
# a cluster left by a run that was killed with SIGKILL (no trap ran): its owner is gone
for d in "${TMPDIR:-/tmp}"/lunar-slurm.*; do
  [ -f "$d/owner" ] || continue
  owner=$(cat "$d/owner" 2>/dev/null)
  [[ "$owner" =~ ^[0-9]+$ ]] && [ -d "/proc/$owner" ] && continue
  echo "    (removing the stale cluster $d of test run $owner)"
  timeout 60 bash tests/mpi/slurm/down.sh "$d"
done
# a Slurm job around this test (make test inside salloc/sbatch) must not leak into ours
# shellcheck disable=SC2046  # one word per variable name
unset $(compgen -e | grep -E '^(SLURM|SBATCH|SALLOC|SRUN)_')
SDIR=""
cleanup() { [ -n "$SDIR" ] && timeout 60 bash tests/mpi/slurm/down.sh "$SDIR"; lib_cleanup; }
trap cleanup EXIT
trap 'echo "interrupted"; exit 130' INT TERM HUP

for attempt in 1 2; do   # a second try in a fresh directory (a port taken in between, say)
  SDIR=$(mktemp -d "${TMPDIR:-/tmp}/lunar-slurm.XXXXXX")
  echo $$ >"$SDIR/owner"
  t0=$(date +%s%N)
  run timeout 60 bash tests/mpi/slurm/up.sh "$SDIR" 2
  echo "    (cluster up in $(ms_since "$t0") ms, rc=$rc)"
  [ "$rc" -eq 0 ] && break
  [ $attempt = 1 ] && { printf '%s\n' "$err" | tail -n 20 | sed 's/^/    | /'; timeout 60 bash tests/mpi/slurm/down.sh "$SDIR"; }
done
check "up.sh: two fake nodes idle" [ "$rc" -eq 0 ]
[ "$rc" -eq 0 ] || finish
. "$SDIR/env.sh"      # SLURM_CONF, LUNAR_SLURM_SHM
SRUN=(srun -N 2 -n 4 --time=3 --kill-on-bad-exit=1 --quit-on-interrupt)
wait_idle() {   # the previous job's nodes may still be completing: wait (30 s at most)
  local until=$((SECONDS + 30))
  while [ $SECONDS -lt $until ]; do
    [ "$(timeout 5 sinfo -h -N -o '%T' 2>/dev/null | grep -cx idle)" -eq 2 ] && return 0
    sleep 0.1
  done
  echo "    (nodes not idle after 30 s: $(timeout 5 sinfo -h -N -o '%N %T' | tr '\n' ' '))"
}
# srun's notes when a job waits for the previous one's nodes are not errors
srun_notes='^srun: job [0-9]+ (queued and waiting for resources|has been allocated resources)$'
stderr_of() { grep -vE "$srun_notes" <<<"$err"; }
if ! timeout 10 srun --mpi=list 2>&1 | grep -qw pmix; then
  skp "srun --mpi=pmix tests" "srun has no pmix plugin (srun --mpi=list)"; finish
fi

wait_idle
run timeout 60 "${SRUN[@]}" -l printenv SLURMD_NODENAME
check "srun -N 2 -n 4: tasks 0,1 on n1 and 2,3 on n2" \
  [ "$rc" -eq 0 -a "$(sort <<<"$out" | tr '\n' ' ')" = "0: n1 1: n1 2: n2 3: n2 " ]

# --- (a) rank, world size and local rank from the MPI runtime ---------------------------------------
wait_idle
t0=$(date +%s%N)
run timeout 120 "${SRUN[@]}" --mpi=pmix tests/mpi/slurm/pernode.sh "$LUNAR" tests/mpi/slurm/launch_check.lua 4 2
echo "    (launch_check: $(ms_since "$t0") ms)"
check "launch_check under srun --mpi=pmix: exit 0" [ "$rc" -eq 0 ]
n_ok=$(grep -cE '^rank [0-3]: launch_check [0-9]+ passed, 0 failed' <<<"$out")
check "launch_check: every rank reports 0 failed ($n_ok of 4)" [ "$n_ok" -eq 4 ]
layout=$(grep -E '^rank [0-9]+ of [0-9]+: local rank' <<<"$out" | sort | tr '\n' ';')
want="rank 0 of 4: local rank 0 on node n1;rank 1 of 4: local rank 1 on node n1;"
want+="rank 2 of 4: local rank 0 on node n2;rank 3 of 4: local rank 1 on node n2;"
check "launch_check: world 4, local ranks 0,1 on n1 and 0,1 on n2" [ "$layout" = "$want" ]
[ "$layout" = "$want" ] || echo "    got: $layout"
check "launch_check: nothing on stderr" [ -z "$(stderr_of)" ]

# --- (b) a training script on 4 ranks over 2 nodes -------------------------------------------------------
TRAIN=(examples/train_with_engine.lua --config configs/vit_fmnist.lua DATASET=synthetic NUM_SAMPLES=256
  IMG_SIZE=8 PATCH_SIZE=4 IN_CHANS=1 HIDDEN_SIZE=16 DEPTH=2 NUM_HEADS=2 BATCH_SIZE=8 MAX_STEPS=3
  EVAL_EVERY_EPOCH=false LOG_EVERY=1 METRICS_FILE="$T/metrics.jsonl")
wait_idle
t0=$(date +%s%N)
run timeout 300 "${SRUN[@]}" --mpi=pmix -l tests/mpi/slurm/pernode.sh "$LUNAR" "${TRAIN[@]}"
echo "    (training, 3 steps on 4 ranks: $(ms_since "$t0") ms)"
check "train_with_engine.lua under srun -N 2 -n 4: exit 0" [ "$rc" -eq 0 ]
steps=$(grep -E '^[0-9]+: .*step [0-9]+/3 loss' <<<"$out")
check "training: 3 step lines, each printed once" [ "$(grep -c . <<<"$steps")" -eq 3 ]
check "training: the step lines come from rank 0" [ "$(grep -c '^0: ' <<<"$steps")" -eq 3 ]
check "training: data parallel of size 4 (grid printed once)" \
  [ "$(grep -cE '^0: .*world 4 = data 4 ' <<<"$out")" -eq 1 -a "$(grep -c 'world 4' <<<"$out")" -eq 1 ]
check "training: metrics file has steps 1..3 with finite losses" \
  eval '[ "$(grep -cE "\"step\":[1-3][,}]" "$T/metrics.jsonl" 2>/dev/null)" -eq 3 ] &&
        ! grep -qiE "nan|inf" "$T/metrics.jsonl"'
check "training: nothing on stderr" [ -z "$(stderr_of)" ]

# --- (c) the sbatch example, 2 nodes x 2 ranks, data 2 x pipeline 2 ------------------------------------
# Open MPI's shared memory is switched off here (btl self,tcp) instead of
# pernode.sh: the other fix for fake nodes that share a hostname.
wait_idle
mkdir -p "$SDIR/jobtmp"
t0=$(date +%s%N)
run env OMPI_MCA_btl=self,tcp TMPDIR="$SDIR/jobtmp" PARALLEL='parallel={pipeline=2}' \
  timeout 30 sbatch --parsable -N 2 --ntasks-per-node=2 --cpus-per-task=1 --time=3 \
  --output="$T/sbatch-%j.out" examples/slurm/train_vit.sbatch "${TRAIN[@]:3}"
job=${out%%;*}
state=""
if [ "$rc" -eq 0 ] && [[ "$job" =~ ^[0-9]+$ ]]; then
  until=$((SECONDS + 180))     # sbatch --wait polls every few seconds; this is faster
  while [ $SECONDS -lt $until ]; do
    info=$(timeout 10 scontrol -o show job "$job" 2>/dev/null)
    state=$(grep -oE 'JobState=[A-Z_]+' <<<"$info" | cut -d= -f2)
    case $state in PENDING|RUNNING|CONFIGURING|COMPLETING|"") sleep 0.2 ;; *) break ;; esac
  done
  [ "$state" = RUNNING ] || [ "$state" = PENDING ] && timeout 10 scancel "$job"
fi
echo "    (sbatch job $job: $state in $(ms_since "$t0") ms)"
out=$(cat "$T"/sbatch-*.out 2>/dev/null); err=""
check "sbatch examples/slurm/train_vit.sbatch: job COMPLETED" [ "$state" = COMPLETED ]
check "sbatch: world 4 = data 2 x pipeline 2" grep -q 'world 4 = data 2 x pipeline 2' <<<"$out"
check "sbatch: 3 steps logged once each" [ "$(grep -cE 'step [1-3]/3 loss' <<<"$out")" -eq 3 ]

# --- shutdown: nothing of the cluster is left ------------------------------------------------------------
t0=$(date +%s%N)
run timeout 60 bash tests/mpi/slurm/down.sh "$SDIR"
echo "    (cluster down in $(ms_since "$t0") ms)"
check "down.sh: exit 0" [ "$rc" -eq 0 ]
ours() {   # live processes of this cluster: its directory in their command line or environment
  local d p
  for d in /proc/[0-9]*; do
    p=${d#/proc/}
    [ "$p" = $$ ] && continue
    grep -q '^State:.*Z' "$d/status" 2>/dev/null && continue   # exited, not yet reaped
    { tr '\0' ' ' 2>/dev/null <"$d/cmdline"; echo; tr '\0' '\n' 2>/dev/null <"$d/environ"; } |
      grep -qF "$SDIR" && echo "$p"
  done
}
unset SLURM_CONF LUNAR_SLURM_SHM   # else the scan's own children would match
left=$(ours | tr '\n' ' ')
check "after shutdown: no slurmctld, slurmd, slurmstepd, munged or rank left" [ -z "$left" ]
[ -z "$left" ] || ps -o pid,stat,args -p ${left// /,}0 2>/dev/null | sed 's/^/    /'
if [ "${LUNAR_SLURM_KEEP:-0}" = 1 ]; then echo "    (kept $SDIR: logs in $SDIR/log)"
else check "after shutdown: the cluster's directory is removed" [ ! -e "$SDIR" ]; fi
echo "    (test_slurm: $(ms_since "$t_start") ms in all)"
finish
