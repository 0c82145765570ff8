#!/usr/bin/env bash
# tests/fail/test_breakpoint.sh: the debugger of build/lunar (bindings/repl.c:
# lunar.breakpoint, next/step, post-mortem with --repl-rank; bindings/main.c).
#   - one rank, through a pipe: a breakpoint sees the caller's locals (the
#     innermost of a name) and upvalues, sets them by assignment, prints the
#     traceback; next stops at the next line of the same function or of the
#     loop, step enters a call; end of input continues; --repl-rank 0 opens
#     a post-mortem at the frame of an error, then the job fails as usual
#   - two ranks under mpirun, through a pipe: --repl-rank 1 makes a
#     breakpoint on rank 0 a no-op; without --repl-rank no rank stops; an
#     error on rank 1 with --repl-rank 1 opens the post-mortem on rank 1 while
#     rank 0 waits in its all_reduce, then the whole job ends
#   - two ranks in a real terminal (tmux): mpirun --stdin 1 ... --repl-rank 1
#     stops rank 1 in tests/fail/breakpoint_loop.lua; a rank-dependent local
#     reads 1, bt, n, c; rank 0 waits in its all_reduce meanwhile, and both
#     ranks end with the expected all_reduce total
# Skips the mpirun parts when mpirun is absent or the build has no MPI, the
# terminal part when tmux is absent. Every run is under `timeout`. Run from the
# repository root; BUILD=dir and LUNAR=path override the binary. Ends with
# "N passed, N failed[, N skipped]".
set -u
cd "$(dirname "$0")/../.."
ROOT=$PWD
BUILD=${BUILD:-build}
LUNAR=${LUNAR:-$BUILD/lunar}
. tests/fail/lib.sh
SOCK=lunar_bp_$$
cleanup() { command -v tmux >/dev/null && tmux -L "$SOCK" kill-server 2>/dev/null; lib_cleanup; }
trap cleanup EXIT
export LUNAR_HISTORY=   # never touch ~/.lunar_history from tests
export OMP_NUM_THREADS=1
LOOP=tests/fail/breakpoint_loop.lua
count() { grep -cF -- "$2" <<<"$1"; }

# --- one rank, through a pipe ----------------------------------------------------------
run timeout 20 "$LUNAR" -e 'print(type(lunar.breakpoint))'
check "lunar.breakpoint is a function" [ "$rc" -eq 0 -a "$out" = function ]

cat >"$T/locals.lua" <<'LUA'
local label = "up"
local function inner(a)
  local b = a * 2
  do
    local b = "shadow"
    lunar.breakpoint()
  end
  lunar.breakpoint()
  return b + (label == "changed" and 1000 or 0)
end
print("result " .. inner(21))
LUA
feed $'"A=" .. a .. " B=" .. b .. " L=" .. label\nlocals\nlist\nc\nb = 7\nlabel = "changed"\nbt\nup\n"MAIN=" .. label\nc\n' \
  timeout 20 "$LUNAR" "$T/locals.lua"
check "one rank: the run goes on after the breakpoints (exit 0)" [ "$rc" -eq 0 ]
check "one rank: the stop names the place" has "$out" "breakpoint: $T/locals.lua:6: in local 'inner'"
check "one rank: the source line is shown" has "$out" '->     lunar.breakpoint()'
check "one rank: the prompt (ldb) is printed on a pipe" has "$out" "(ldb) "
check "one rank: locals (the innermost b) and an upvalue are visible" has "$out" "A=21 B=shadow L=up"
check "one rank: locals lists the locals and upvalues" \
  eval 'has "$out" "  a = 21" && has "$out" "  b = shadow" && has "$out" "  label = up  (upvalue)"'
check "one rank: list shows the source around the line" \
  eval 'has "$out" "   6 ->     lunar.breakpoint()" && has "$out" "   1    local label = \"up\""'
check "one rank: assigning a local's and an upvalue's name sets them" has "$out" "result 1007"
check "one rank: bt prints the traceback from the stopped frame" \
  eval 'has "$out" "> $T/locals.lua:8: in local '"'inner'"'" && has "$out" "  $T/locals.lua:11: in main chunk"'
check "one rank: up moves to the caller, whose local is seen" \
  eval 'has "$out" "> $T/locals.lua:11: in main chunk" && has "$out" "MAIN=changed"'
check "one rank: no stdin hint on one rank" [ -z "$err" ]

feed $'n\nn\ns\n"ARG=" .. step\nn\nc\nc\nc\n' timeout 20 "$LUNAR" "$LOOP"
check "next: from the breakpoint to the loop's next iteration" has "$out" "next: $LOOP:22: in main chunk"
check "next: then the next line of the loop body, over the call" has "$out" "next: $LOOP:23: in main chunk"
check "step: into the called function" has "$out" "step: $LOOP:17: in local 'contribution'"
check "step: its argument is visible" has "$out" "ARG=2"
check "next: to the next line in that function" has "$out" "next: $LOOP:18: in local 'contribution'"
check "next/step/continue: the run completes (one rank: total 6)" \
  eval '[ "$rc" -eq 0 ] && has "$out" "rank 0: final total 6"'

feed $'help\n' timeout 20 "$LUNAR" "$LOOP" 1
check "help lists the commands" \
  eval 'has "$out" "where, bt" && has "$out" "next, n" && has "$out" "continue, c" && [ "$rc" -eq 0 ]'

run timeout 20 "$LUNAR" "$LOOP" </dev/null
check "one rank, stdin at end of input: breakpoints go on" \
  eval '[ "$rc" -eq 0 ] && has "$out" "rank 0: final total 6" && [ "$(count "$out" "breakpoint:")" -eq 3 ]'

cat >"$T/fail.lua" <<'LUA'
local function check_batch(batch)
  local size = #batch
  local t = nil
  return t.shape   -- attempt to index a nil value
end
print("before")
check_batch({1, 2, 3})
print("never")
LUA
feed $'"SIZE=" .. size\nn\nbt\nc\n' timeout 20 "$LUNAR" "$T/fail.lua" --repl-rank 0
check "post-mortem: opens at the erroring frame" has "$out" "post-mortem: $T/fail.lua:4: in local 'check_batch'"
check "post-mortem: the frame's locals are visible" has "$out" "SIZE=3"
check "post-mortem: next is refused" has "$out" "post-mortem: the script has failed, there is nothing to run"
check "post-mortem: bt shows the failed stack" has "$out" "  $T/fail.lua:7: in main chunk"
check "post-mortem: the error and traceback are printed, the job fails" \
  eval '[ "$rc" -eq 1 ] && has "$err" "attempt to index a nil value (local '"'t'"')" && has "$err" "stack traceback" && ! has "$out" never'
feed $'c\n' timeout 20 "$LUNAR" "$T/fail.lua"
check "without --repl-rank an error opens no post-mortem" \
  eval '[ "$rc" -eq 1 ] && ! has "$out" "(ldb)" && has "$err" "attempt to index a nil value"'

# --- two ranks, through a pipe ------------------------------------------------------------
need_mpirun
MPI=(timeout 90 mpirun --oversubscribe -np 2)

cat >"$T/rank0.lua" <<'LUA'
local comm = lunar.comm.world()
if comm:rank() == 0 then lunar.breakpoint() end
local t = lunar.tensor({comm:rank() + 1})
comm:all_reduce(t)
print(string.format("rank %d: sum %g", comm:rank(), t:totable()[1]))
LUA
feed $'c\n' "${MPI[@]}" --stdin 1 "$LUNAR" "$T/rank0.lua" --repl-rank 1
check "2 ranks, --repl-rank 1: a breakpoint on rank 0 is a no-op" \
  eval '[ "$rc" -eq 0 ] && ! has "$out" "(ldb)" && ! has "$out" "breakpoint:" && has "$out" "rank 0: sum 3" && has "$out" "rank 1: sum 3"'
feed $'c\nc\nc\n' "${MPI[@]}" "$LUNAR" "$LOOP"
check "2 ranks without --repl-rank: breakpoints are no-ops" \
  eval '[ "$rc" -eq 0 ] && ! has "$out" "(ldb)" && has "$out" "rank 0: final total 18" && has "$out" "rank 1: final total 18"'
run "${MPI[@]}" "$LUNAR" "$LOOP" --repl-rank 5 </dev/null
check "2 ranks, --repl-rank 5: a warning, and the run completes" \
  eval '[ "$rc" -eq 0 ] && has "$err" "--repl-rank 5, but the job has 2 ranks" && has "$out" "rank 1: final total 18"'
run "${MPI[@]}" "$LUNAR" "$LOOP" --repl-rank 1 </dev/null
check "2 ranks, stdin not sent to rank 1: it goes on and says how to send it" \
  eval '[ "$rc" -eq 0 ] && has "$err" "mpirun --stdin 1" && has "$out" "rank 0: final total 18"'

cat >"$T/fail2.lua" <<'LUA'
local comm = lunar.comm.world()
local function step(i)
  local value = (comm:rank() + 1) * 10 + i
  if comm:rank() == 1 and i == 2 then error("bad step " .. i) end
  local t = lunar.tensor({value})
  comm:all_reduce(t)
  return t:totable()[1]
end
for i = 1, 3 do print(string.format("rank %d: step %d: %g", comm:rank(), i, step(i))) end
LUA
t0=$SECONDS
feed $'"VALUE=" .. value\nc\n' "${MPI[@]}" --stdin 1 "$LUNAR" "$T/fail2.lua" --repl-rank 1
check "2 ranks: an error on rank 1 opens its post-mortem at the frame" \
  eval 'has "$out" "[rank 1] post-mortem: $T/fail2.lua:4: in local '"'step'"'" && has "$out" "VALUE=22"'
check "2 ranks: then the job ends with rank 1's error (no hang)" \
  eval '[ "$rc" -ne 0 -a "$rc" -ne 124 ] && has "$err" "[rank 1] $T/fail2.lua:4: bad step 2" && ! has "$out" "rank 0: step 2"'
check "2 ranks: rank 0 stayed in its all_reduce (did step 1 only)" \
  eval 'has "$out" "rank 0: step 1: 32" && [ $((SECONDS - t0)) -lt 80 ]'

feed $'q\n' "${MPI[@]}" --stdin 1 "$LUNAR" "$LOOP" --repl-rank 1
check "2 ranks: quit ends the whole job" \
  eval '[ "$rc" -ne 0 -a "$rc" -ne 124 ] && has "$err" "[rank 1] quit from the debugger" && ! has "$out" "final total"'

# --- two ranks in a terminal (tmux) ----------------------------------------------------------
if ! command -v tmux >/dev/null; then
  skp "tmux breakpoint checks" "tmux is not installed (scripts/install_deps.sh)"; finish
fi
TM() { tmux -L "$SOCK" "$@"; }
# wait_for TEXT [N]: polls the pane (up to 30 s) until TEXT shows at least N (1) times
wait_for() {
  for _ in $(seq 300); do
    pane=$(TM capture-pane -p -S -200 -t bp 2>/dev/null)
    [ "$(grep -cF -- "$1" <<<"$pane")" -ge "${2:-1}" ] && return 0
    sleep 0.1
  done
  return 1
}
# timeout --foreground: mpirun must stay in the terminal's foreground process
# group, or it does not forward what is typed to the rank's stdin.
TM new-session -d -s bp -x 200 -y 50 -c "$ROOT" \
  "env OMP_NUM_THREADS=1 LUNAR_HISTORY= OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
   timeout --foreground 120 mpirun --oversubscribe -np 2 --stdin 1 '$LUNAR' $LOOP --repl-rank 1; \
   echo JOB-EXITED-\$?; sleep 60"
rc=0; err=""
wait_for "(ldb)"; r=$?; out=$pane
check "tmux: rank 1 stops at the breakpoint with the (ldb) prompt" \
  eval '[ "$r" -eq 0 ] && has "$out" "[rank 1] breakpoint: $LOOP:27: in main chunk"'
TM send-keys -t bp '"R=" .. my_rank .. " C=" .. contrib .. " S=" .. scale' Enter
wait_for "R=1 C=2 S=2"; r=$?; out=$pane
check "tmux: the REPL reads the caller's locals (rank-dependent: rank 1)" [ "$r" -eq 0 ]
TM send-keys -t bp 'bt' Enter
wait_for "> $LOOP:27: in main chunk"; r=$?; out=$pane
check "tmux: bt prints the traceback" eval '[ "$r" -eq 0 ] && has "$out" "stack traceback"'
check "tmux: rank 0 is waiting (it has not finished)" eval '! has "$out" "rank 0: final total"'
TM send-keys -t bp 'n' Enter
wait_for "[rank 1] next: $LOOP:22: in main chunk"; r=$?; out=$pane
check "tmux: n stops at the loop's next iteration" [ "$r" -eq 0 ]
TM send-keys -t bp 'c' Enter
wait_for "[rank 1] breakpoint: $LOOP:27" 2; r=$?; out=$pane
check "tmux: c runs to the breakpoint of the next step" [ "$r" -eq 0 ]
TM send-keys -t bp 'c' Enter
wait_for "[rank 1] breakpoint: $LOOP:27" 3; r1=$?
TM send-keys -t bp 'c' Enter
wait_for "JOB-EXITED-"; r=$?; out=$pane
check "tmux: after c the run finishes, exit 0" eval '[ "$r1" -eq 0 -a "$r" -eq 0 ] && has "$out" "JOB-EXITED-0"'
check "tmux: both ranks end with the all_reduce total 18" \
  eval 'has "$out" "rank 0: final total 18" && has "$out" "rank 1: final total 18"'

finish
