# tests/fail/lib.sh: the shell test harness shared by tests/fail/*.sh and
# tests/mpi/*.sh. Source it from the repository root; it defines
#   ok NAME / bad NAME / skp NAME WHY    count a result
#   check NAME CMD...                    ok when CMD succeeds
#   has TEXT NEEDLE                      fixed-string search
#   run CMD...                           runs CMD; sets rc, out, err
#   feed INPUT CMD...                    as run, with INPUT on stdin
#   finish                               prints "N passed, N failed, N skipped" and exits
# skp is only for what the machine lacks (a GPU, avx512_bf16, Slurm,
# python3-torch); a feature missing from Lunar itself is a failure (bad).
# and T, a temporary directory removed at exit. LUNAR (default build/lunar).
LUNAR=${LUNAR:-build/lunar}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1
pass=0; fail=0; skip=0
rc=0; out=""; err=""

ok()   { pass=$((pass + 1)); echo "  ok $1"; }
bad()  { fail=$((fail + 1)); echo "  FAIL $1"; printf '%s\n' "rc=$rc" "stdout: $out" "stderr: $err" | head -n 30 | sed 's/^/    | /'; }
skp()  { skip=$((skip + 1)); echo "  skip $1: $2"; }
check() { local name=$1; shift; if "$@"; then ok "$name"; else bad "$name"; fi; }
has()  { grep -qF -- "$2" <<<"$1"; }
run() {
  local o e; o=$(mktemp); e=$(mktemp)
  ( "$@"; s=$?; exit $s ) >"$o" 2>"$e"; rc=$?   # a subshell: bash's "Segmentation fault" note goes to $e
  out=$(cat "$o"); err=$(cat "$e"); rm -f "$o" "$e"
}
feed() {
  local input=$1; shift
  local o e; o=$(mktemp); e=$(mktemp)
  printf '%s' "$input" | "$@" >"$o" 2>"$e"; rc=$?
  out=$(cat "$o"); err=$(cat "$e"); rm -f "$o" "$e"
}
finish() {
  echo "$pass passed, $fail failed, $skip skipped"
  [ "$fail" -eq 0 ]; exit $?
}
need_mpirun() {   # the mpirun tests: skipped (and the script finished) when the build has no MPI or mpirun is absent
  run "$LUNAR" --version
  if has "$out" "MPI: no"; then
    skp "mpirun tests" "this build has no MPI (NO_MPI=1)"; finish
  fi
  if ! command -v mpirun >/dev/null; then
    skp "mpirun tests" "mpirun not found (apt-get install openmpi-bin)"; finish
  fi
}
if [ ! -x "$LUNAR" ]; then
  rc=-1; out=""; err="$LUNAR not built (make)"; bad "binary $LUNAR exists"; finish
fi
T=$(mktemp -d)
lib_cleanup() { rm -rf "$T"; }
trap lib_cleanup EXIT
