#!/usr/bin/env bash
# tests/fail/test_repl.sh: the REPL of build/lunar (bindings/repl.c), driven
# through a pipe (no prompt decoration), then through a real terminal in tmux
# (skipped when tmux is not installed). Run from the repository root;
# LUNAR=path overrides the binary. Ends with "N passed, N failed[, N skipped]".
set -u
cd "$(dirname "$0")/../.."
ROOT=$PWD
. tests/fail/lib.sh
SOCK=lunar_test_$$
cleanup() { command -v tmux >/dev/null && tmux -L "$SOCK" kill-server 2>/dev/null; lib_cleanup; }
trap cleanup EXIT
export LUNAR_HISTORY=   # never touch ~/.lunar_history from tests

# --- through a pipe ------------------------------------------------------------
feed $'1+1\n' "$LUNAR"
check "expression value printed" [ "$rc" -eq 0 -a "$out" = 2 ]
feed $'"a", 2, nil\n' "$LUNAR"
check "several values printed tab-separated" [ "$out" = "$(printf 'a\t2\tnil')" ]
feed $'function sq(x)\n  local y = x * x\n  return y\nend\nsq(7)\n' "$LUNAR"
check "multi-line function definition, then a call" [ "$rc" -eq 0 -a "$out" = 49 ]
feed $'t = {\n  a = 1,\n  b = 2,\n}\nt.a + t.b\n' "$LUNAR"
check "multi-line table constructor" [ "$out" = 3 ]
feed $'error("oops")\nprint("after")\n' "$LUNAR"
check "an error prints its message" has "$err" "oops"
check "an error prints a traceback" has "$err" "stack traceback"
check "the session goes on after an error" [ "$rc" -eq 0 -a "$out" = after ]
feed $'x = = 1\n3\n' "$LUNAR"
check "a syntax error is reported, then the session goes on" eval 'has "$err" "repl:1:" && [ "$out" = 3 ]'
feed $'setmetatable({}, {__tostring = function() return "<custom>" end})\n' "$LUNAR"
check "values print through __tostring" [ "$out" = "<custom>" ]
feed $'print("no value")\n' "$LUNAR"
check "a statement prints only its own output" [ "$out" = "no value" ]
feed $'for i = 1, 2 do\n' "$LUNAR"
check "an unfinished chunk at end of input is reported" has "$err" "<eof>"

cat >"$T/script.lua" <<'LUA'
G_VALUE = 41
function bump(n) return G_VALUE + n end
print("script ran")
LUA
feed $'G_VALUE\nbump(1)\nlunar.args.interactive\n' "$LUNAR" -i "$T/script.lua"
check "-i: the script runs first" [ "$(head -n 1 <<<"$out")" = "script ran" ]
check "-i: the REPL sees the script's globals" [ "$(sed -n 2,4p <<<"$out" | tr '\n' ' ')" = "41 42 true " ]
feed $'H\n' "$LUNAR" -i -e 'H = "from -e"'
check "-i with -e: the REPL sees the globals" [ "$out" = "from -e" ]

# -i sees the script's top-level locals, as python -i does (the values they
# hold when the script ends; an inner block's locals are gone, as in Lua)
cat >"$T/locals.lua" <<'LUA'
local cfg = {n = 3}
local model = 'vit'
local model = model .. '-s'      -- the later local of a name wins
do local inner = 1 end
local function area(w, h) return w * h end
LUA
feed $'cfg.n
model
inner
area(2, 5)
print(type(lunar.tensor) ~= nil)
' "$LUNAR" -i "$T/locals.lua"
check "-i: the REPL sees the script's top-level locals (cfg.n, model, a local function)" \
  [ "$(tr '\n' ' ' <<<"$out")" = "3 vit-s nil 10 true " ]
feed $'model = "other"
model
rawget(_G, "model")
fresh = 1
rawget(_G, "fresh")
' "$LUNAR" -i "$T/locals.lua"
check "-i: assigning to a captured local's name sets it; other names are globals" \
  [ "$(tr '\n' ' ' <<<"$out")" = "other nil 1 " ]
printf 'local r = 5\nerror("late")\n' >"$T/fails.lua"
feed $'1 + 1\n' "$LUNAR" -i "$T/fails.lua"
check "-i after a failing script: the error is reported and the REPL still opens" \
  eval 'has "$err" "late" && [ "$out" = 2 ]'

# --- in a terminal (tmux) -------------------------------------------------------------
if ! command -v tmux >/dev/null; then
  skp "tmux REPL check" "tmux is not installed"
else
  TM() { tmux -L "$SOCK" "$@"; }
  # wait_for TEXT: polls the pane (up to 10 s) until it shows TEXT
  wait_for() {
    for _ in $(seq 100); do
      pane=$(TM capture-pane -p -t lt 2>/dev/null)
      grep -qF -- "$1" <<<"$pane" && return 0
      sleep 0.1
    done
    return 1
  }
  TM new-session -d -s lt -x 100 -y 30 -c "$ROOT" \
    "env LUNAR_HISTORY='$T/history' '$ROOT/$LUNAR'; echo REPL-EXITED-\$?; sleep 30"
  rc=0; err=""
  # (capture-pane drops trailing blanks: the bare prompt reads "lunar>")
  wait_for "lunar>"; r=$?; out=$pane
  TM send-keys -t lt '6 * 7' Enter
  wait_for "lunar> 6 * 7"; r2=$?; out=$pane
  check "tmux: the prompt 'lunar> ' appears" [ "$r" -eq 0 -a "$r2" -eq 0 ]
  wait_for "42"; r=$?; out=$pane
  check "tmux: an expression evaluates" [ "$r" -eq 0 ]
  TM send-keys -t lt 'function f()' Enter
  wait_for "    >>"; r=$?; out=$pane
  check "tmux: continuation prompt for an unfinished chunk" [ "$r" -eq 0 ]
  TM send-keys -t lt 'return "done" .. "!" end' Enter 'f()' Enter
  wait_for "done!"; r=$?; out=$pane
  check "tmux: the multi-line function runs" [ "$r" -eq 0 ]
  TM send-keys -t lt C-d
  wait_for "REPL-EXITED-0"; r=$?; out=$pane
  check "tmux: Ctrl-D exits with status 0" [ "$r" -eq 0 ]
  check "tmux: the history file has the lines" grep -qF '6 * 7' "$T/history"
fi

finish
