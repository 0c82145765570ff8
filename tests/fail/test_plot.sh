#!/usr/bin/env bash
# tests/fail/test_plot.sh: `lunar plot METRICS_FILE... [-o OUT]` (lua/lunar/plot.lua,
# gnuplot) and PLOT_FILE in the engine example. The PNG is decoded by PIL
# (Debian's python3-pil) and must be 900 x 1000 with each run's line colour
# (gnuplot's first two: #9400d3, #009e73); the points plotted (OUT.dat, one
# block per file and curve) are counted against the metrics files, counted
# here by Python's json, and against what `lunar plot` prints. Skipped where
# gnuplot or PIL is missing (apt-get install gnuplot-nox python3-pil).
# Run from the repository root; LUNAR (default build/lunar). Ends with "N passed, N failed, N skipped".
set -u
cd "$(dirname "$0")/../.."
. tests/fail/lib.sh
export OMP_NUM_THREADS=1
PYTHON=${PYTHON:-/usr/bin/python3}

# errors that need no gnuplot
run "$LUNAR" plot
check "plot without a file: usage error (exit 2)" [ "$rc" -eq 2 ]
check "  says no METRICS_FILE" has "$err" "lunar plot: no METRICS_FILE given"
# a PATH with everything but gnuplot (Open MPI's singleton start needs its own programs)
mkdir -p "$T/nognuplot"
IFS=: read -ra dirs <<<"$PATH"
for d in "${dirs[@]}"; do
  for f in "$d"/*; do
    b=${f##*/}; [ "${b#gnuplot}" = "$b" ] && [ ! -e "$T/nognuplot/$b" ] && ln -s "$f" "$T/nognuplot/$b"
  done
done 2>/dev/null
run env PATH="$T/nognuplot" "$LUNAR" plot tests/fail/test_plot.sh
check "plot without gnuplot on PATH: exit 1" [ "$rc" -eq 1 ]
check "  names gnuplot and the package" has "$err" "gnuplot not found on PATH (Debian: apt-get install gnuplot-nox"
run "$LUNAR" examples/train_with_engine.lua --config configs/vit_fmnist.lua PLOT_FILE="$T/x.png" METRICS_FILE=''
check "PLOT_FILE without METRICS_FILE: config error (exit 1)" [ "$rc" -eq 1 ]
check "  names PLOT_FILE" has "$err" "PLOT_FILE"

if ! command -v gnuplot >/dev/null; then skp "lunar plot" "no gnuplot (apt-get install gnuplot-nox)"; finish; fi
if ! "$PYTHON" -c 'import PIL' 2>/dev/null; then skp "lunar plot" "$PYTHON has no PIL (apt-get install python3-pil)"; finish; fi

run "$LUNAR" plot "$T/missing.jsonl"
check "a missing metrics file: exit 1, named" bash -c '[ "$1" -eq 1 ] && grep -qF "cannot open metrics file $2" <<<"$3"' _ \
  "$rc" "$T/missing.jsonl" "$err"
printf '{"step":1,"loss":2}\nnot json\n' >"$T/bad.jsonl"
run "$LUNAR" plot "$T/bad.jsonl" -o "$T/bad.png"
check "a line that is not JSON: exit 1, FILE:LINE named" bash -c '[ "$1" -eq 1 ] && grep -qF "$2:2: not a JSON object" <<<"$3"' _ \
  "$rc" "$T/bad.jsonl" "$err"

# run A: the engine example, 2 epochs of 5 steps, drawing PLOT_FILE at its end
run "$LUNAR" examples/train_with_engine.lua --config configs/vit_fmnist.lua DATASET=synthetic NUM_SAMPLES=160 \
  NUM_EPOCHS=2 BATCH_SIZE=32 HIDDEN_SIZE=32 DEPTH=1 NUM_HEADS=2 MLP_RATIO=2 METRICS_FILE="$T/a.jsonl" \
  PLOT_FILE="$T/a.png"
check "engine example with PLOT_FILE: exit 0" [ "$rc" -eq 0 ]
check "  prints the points it drew" has "$out" "$T/a.jsonl: loss 10 points, lr 10 points, test_accuracy 2 points"
# run B, by hand: 3 steps, an evaluation line, a line of none of the curves
cat >"$T/b.jsonl" <<'EOF'
{"step":1,"epoch":1,"loss":2.5,"lr":0.001,"images_per_s":10}
{"step":2,"epoch":1,"loss":1.5,"lr":0.002,"images_per_s":10}
{"step":3,"epoch":1,"loss":1.0,"lr":0.0015,"images_per_s":10}

{"step":3,"epoch":1,"test_accuracy":0.5,"test_loss":1.2}
{"step":3,"train_seconds":1.5}
EOF
run "$LUNAR" plot "$T/a.jsonl" "$T/b.jsonl" -o "$T/cmp.png"
check "lunar plot A B -o cmp.png: exit 0" [ "$rc" -eq 0 ]
check "  prints B's points" has "$out" "$T/b.jsonl: loss 3 points, lr 3 points, test_accuracy 1 points"

# the PNGs decode, have the size asked for and each run's colour; cmp.png.dat holds, per file and curve
# in order, as many points as the metrics file has lines with that key
check_png() {   # PNG, COLOURS (number of runs), METRICS...
  "$PYTHON" - "$@" <<'PY'
import json, sys
from PIL import Image
png, nruns, files = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
im = Image.open(png); im.load()
assert im.format == 'PNG' and im.size == (900, 1000), (im.format, im.size)
colours = {c for _, c in im.convert('RGB').getcolors(1 << 20)}
for want in [(0x94, 0x00, 0xd3), (0x00, 0x9e, 0x73)][:nruns]:
    assert want in colours, ('no pixel of colour', want)
blocks = open(png + '.dat').read().split('\n\n\n')
want = []
for f in files:
    lines = [json.loads(l) for l in open(f) if l.strip()]
    for key in ('loss', 'lr', 'test_accuracy'):
        pts = [(o['step'], o[key]) for o in lines if key in o]
        want.append((f, key, pts))
assert len(blocks) == len(want), (len(blocks), len(want))
for b, (f, key, pts) in zip(blocks, want):
    rows = [l.split() for l in b.splitlines() if l and not l.startswith('#')]
    assert b.splitlines()[0] == '# %s %s' % (f, key), b.splitlines()[0]
    got = [(float(s), float(v)) for s, v in rows]
    assert got == [(float(s), float(v)) for s, v in pts], (f, key, got[:3], pts[:3])
print('ok')
PY
}
run check_png "$T/a.png" 1 "$T/a.jsonl"
check "a.png: a 900x1000 PNG with the run's line, a.png.dat has every point of a.jsonl" has "$out" ok
run check_png "$T/cmp.png" 2 "$T/a.jsonl" "$T/b.jsonl"
check "cmp.png: both runs' lines, cmp.png.dat has every point of both files" has "$out" ok
check "  cmp.png.gp is the script that drew it" has "$(cat "$T/cmp.png.gp")" "set output '$T/cmp.png'"
# a check that can fail: a .dat missing a point is caught
sed -i '0,/^2 1.5$/{/^2 1.5$/d}' "$T/cmp.png.dat"
run check_png "$T/cmp.png" 2 "$T/a.jsonl" "$T/b.jsonl"
check "  a point removed from cmp.png.dat is detected" [ "$rc" -ne 0 ]
finish
