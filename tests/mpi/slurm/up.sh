#!/usr/bin/env bash
# tests/mpi/slurm/up.sh DIR [NODES]: brings up a private Slurm cluster of NODES
# (default 2) fake nodes n1..nN on this host, everything under DIR:
#   DIR/slurm.conf        from slurm.conf.in (SLURM_CONF for daemons and clients)
#   DIR/env.sh            `. DIR/env.sh` exports SLURM_CONF and LUNAR_SLURM_SHM
#   DIR/munge/            a private munged: its own key, socket, pid and log files
#   DIR/state, spool-nK, tmp-nK, log/   Slurm's state, spool, TmpFS and logs
# The ports are chosen at random among free ones below the ephemeral range, so
# several such clusters (and a real Slurm) can run side by side. Needs root
# (slurmd launches the tasks), slurmctld, slurmd, srun, munged and mungekey
# (scripts/install_deps.sh installs them). Every step is time-bounded. On
# failure prints the logs' tails and exits 1; the caller then runs down.sh DIR
# (which also cleans up a half-started cluster). See docs/slurm_fake_nodes.md.
set -u
DIR=${1:?usage: up.sh DIR [NODES]}
NODES=${2:-2}
HERE=$(cd "$(dirname "$0")" && pwd)
fail() { echo "slurm up: $*" >&2; for f in "$DIR"/log/*.log "$DIR"/munge/munged.log; do
  [ -f "$f" ] && { echo "---- $f" >&2; tail -n 15 "$f" >&2; }; done; exit 1; }

[ "$(id -u)" = 0 ] || fail "needs root (slurmd must launch tasks)"
for c in slurmctld slurmd srun sinfo scontrol munged mungekey; do
  command -v "$c" >/dev/null || fail "$c not found (bash scripts/install_deps.sh)"
done
mkdir -p "$DIR" || fail "cannot create $DIR"
DIR=$(cd "$DIR" && pwd)
# munged wants its socket directory (and every parent) executable by all
chmod 755 "$DIR"
mkdir -p "$DIR"/{state,log,munge,munge-key} || fail "cannot create directories in $DIR"
chmod 755 "$DIR/munge"; chmod 700 "$DIR/munge-key"
for i in $(seq 1 "$NODES"); do mkdir -p "$DIR/spool-n$i" "$DIR/tmp-n$i"; done
: >"$DIR/plugstack.conf"   # no SPANK plugins, whatever /etc/slurm holds
CLUSTER=${LUNAR_SLURM_CLUSTER:-lunar$$x$RANDOM}
echo "$CLUSTER" >"$DIR/cluster"

# --- ports: free, outside the ephemeral range ------------------------------------------
port_used() {   # any TCP socket (listening or not) on this local port
  local hex; hex=$(printf ':%04X' "$1")
  awk -v h="$hex" 'FNR > 1 && substr($2, length($2) - 4) == h { f = 1 } END { exit !f }' \
    /proc/net/tcp /proc/net/tcp6 2>/dev/null
}
pick_ports() {   # n consecutive free ports in 10000..31999
  local n=$1 base k ok
  for _ in $(seq 1 50); do
    base=$((10000 + (RANDOM * 32768 + RANDOM) % (22000 - n)))
    ok=1
    for k in $(seq 0 $((n - 1))); do port_used $((base + k)) && { ok=0; break; }; done
    [ $ok = 1 ] && { echo "$base"; return 0; }
  done
  return 1
}
BASE=$(pick_ports $((NODES + 1))) || fail "no free ports"
CTLD_PORT=$BASE
NODE_LINES=""
for i in $(seq 1 "$NODES"); do
  NODE_LINES+="NodeName=n$i NodeHostname=localhost NodeAddr=127.0.0.1 Port=$((BASE + i)) CPUs=2 RealMemory=1000 State=UNKNOWN"$'\n'
done
awk -v dir="$DIR" -v cluster="$CLUSTER" -v port="$CTLD_PORT" -v nodes="$NODE_LINES" '
  { gsub(/@DIR@/, dir); gsub(/@CLUSTER@/, cluster); gsub(/@CTLD_PORT@/, port)
    if ($0 == "@NODES@") { printf "%s", nodes; next } print }' \
  "$HERE/slurm.conf.in" >"$DIR/slurm.conf" || fail "cannot write $DIR/slurm.conf"

# --- munge: a private daemon, so a system munged (if any) is left alone ----------------------
timeout 10 mungekey -c -k "$DIR/munge-key/munge.key" -b 1024 >/dev/null 2>&1 ||
  fail "mungekey failed"
env -u SLURM_CONF timeout 10 munged -S "$DIR/munge/socket" --key-file="$DIR/munge-key/munge.key" \
  --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" \
  --seed-file="$DIR/munge/munged.seed" </dev/null >/dev/null 2>&1 || fail "munged did not start"
timeout 10 munge -S "$DIR/munge/socket" -n 2>/dev/null | timeout 10 unmunge -S "$DIR/munge/socket" >/dev/null 2>&1 ||
  fail "munge -n | unmunge fails on the private socket"

export SLURM_CONF=$DIR/slurm.conf
cat >"$DIR/env.sh" <<EOF
export SLURM_CONF=$DIR/slurm.conf
export LUNAR_SLURM_SHM=/dev/shm/lunar-slurm-$CLUSTER
EOF

# --- Slurm daemons (they fork into the background; stdio away from the caller's pipes) ----------
timeout 20 slurmctld -i </dev/null >>"$DIR/log/slurmctld.out" 2>&1 || fail "slurmctld did not start"
for i in $(seq 1 "$NODES"); do
  timeout 20 slurmd -N "n$i" </dev/null >>"$DIR/log/slurmd-n$i.out" 2>&1 || fail "slurmd -N n$i did not start"
done

# every node idle (about 0.1 s; 30 s at most)
deadline=$((SECONDS + 30))
while :; do
  states=$(timeout 5 sinfo -h -N -o '%N %T' 2>/dev/null | sort -u)
  n_idle=$(grep -c ' idle$' <<<"$states")
  [ "$n_idle" -eq "$NODES" ] && break
  [ $SECONDS -ge $deadline ] && fail "nodes not idle after 30 s: $(tr '\n' ' ' <<<"$states")"
  for f in "$DIR"/slurmctld.pid "$DIR"/slurmd-n*.pid; do   # a daemon that died (port taken, ...)
    p=$(cat "$f" 2>/dev/null) || continue
    [ -n "$p" ] && [ ! -d "/proc/$p" ] && fail "$(basename "$f" .pid) (pid $p) exited"
  done
  sleep 0.2
done
exit 0
