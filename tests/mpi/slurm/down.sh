#!/usr/bin/env bash
# tests/mpi/slurm/down.sh DIR: shuts down the cluster that up.sh DIR started
# (also a half-started one) and removes DIR:
#   1. scontrol shutdown (slurmctld and every registered slurmd), 10 s at most
#   2. waits up to 10 s for the daemons of DIR's pid files to exit, then
#      SIGTERM, then SIGKILL what remains, also any step or task left over
#      from a killed job (processes whose environment holds this cluster's
#      SLURM_CONF, never this script's own ancestors)
#   3. stops the private munged (its pid file), removes the per-node shared
#      memory directories and DIR
# Only processes that belong to this cluster are signalled. Always exits 0
# unless something survived SIGKILL.
set -u
DIR=${1:?usage: down.sh DIR}
[ -d "$DIR" ] || exit 0
DIR=$(cd "$DIR" && pwd)
CONF=$DIR/slurm.conf
CLUSTER=$(cat "$DIR/cluster" 2>/dev/null || true)
# our own children must not look like the cluster's processes (see leftovers)
unset SLURM_CONF SLURM_JOB_ID

# pid from a pid file, if that process is still the daemon it names
pid_of() {   # file, command name
  local p; p=$(cat "$1" 2>/dev/null) || return 1
  [[ "$p" =~ ^[0-9]+$ ]] && [ -d "/proc/$p" ] && grep -q "$2" "/proc/$p/comm" 2>/dev/null && echo "$p"
}
alive() { local p; for p in "$@"; do [ -d "/proc/$p" ] && ! grep -q '^State:.*Z' "/proc/$p/status" 2>/dev/null && return 0; done; return 1; }
wait_gone() {   # seconds, pids...
  local until=$((SECONDS + $1)); shift
  while alive "$@" && [ $SECONDS -lt $until ]; do sleep 0.1; done
  ! alive "$@"
}
# processes started for this cluster: slurmstepd and tasks inherit SLURM_CONF=$CONF
ancestors=" $$ "
p=$$
while [ "$p" -gt 1 ] 2>/dev/null; do
  p=$(awk '/^PPid:/ { print $2 }' "/proc/$p/status" 2>/dev/null) || break
  [ -n "$p" ] || break
  ancestors+="$p "
done
leftovers() {
  local d p
  for d in /proc/[0-9]*; do
    p=${d#/proc/}
    [[ "$ancestors" == *" $p "* ]] && continue
    tr '\0' '\n' 2>/dev/null <"$d/environ" | grep -qxF "SLURM_CONF=$CONF" && echo "$p"
  done
}

daemons=()
for f in "$DIR"/slurmd-*.pid; do p=$(pid_of "$f" slurmd) && daemons+=("$p"); done
p=$(pid_of "$DIR/slurmctld.pid" slurmctld) && daemons+=("$p")

if [ -f "$CONF" ] && [ ${#daemons[@]} -gt 0 ]; then
  SLURM_CONF=$CONF timeout 10 scontrol shutdown >/dev/null 2>&1
fi
survivors=()
if [ ${#daemons[@]} -gt 0 ] && ! wait_gone 10 "${daemons[@]}"; then
  for p in "${daemons[@]}"; do alive "$p" && survivors+=("$p"); done
fi
mapfile -t extra < <(leftovers)
victims=("${survivors[@]}" "${extra[@]}")
if [ ${#victims[@]} -gt 0 ]; then
  echo "slurm down: terminating ${#victims[@]} leftover process(es): ${victims[*]}" >&2
  kill -TERM "${victims[@]}" 2>/dev/null
  if ! wait_gone 5 "${victims[@]}"; then
    kill -KILL "${victims[@]}" 2>/dev/null
    wait_gone 5 "${victims[@]}"
  fi
fi

# the private munged, after Slurm is down
m=$(pid_of "$DIR/munge/munged.pid" munged) && {
  kill -TERM "$m" 2>/dev/null
  wait_gone 5 "$m" || { kill -KILL "$m" 2>/dev/null; wait_gone 5 "$m"; }
}

rc=0
left=("${daemons[@]}" "${extra[@]}")
[ -n "${m:-}" ] && left+=("$m")
if [ ${#left[@]} -gt 0 ] && alive "${left[@]}"; then
  echo "slurm down: processes still alive after SIGKILL" >&2; rc=1
fi
[ -n "$CLUSTER" ] && rm -rf "/dev/shm/lunar-slurm-$CLUSTER"
[ "${LUNAR_SLURM_KEEP:-0}" = 1 ] || rm -rf "$DIR"
exit $rc
