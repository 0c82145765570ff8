#!/usr/bin/env bash
# bench/domain_weak_scaling.sh: weak scaling of domain parallelism (issue 12),
# side by side in one run: the HybridViT (examples/benchmark_image_sizes.lua,
# configs/recipes/hybrid_vit_image_sizes.lua: the reference's width 768 and
# 12 heads, at depth 4 to keep a run short; WIDTH, HEADS, DEPTH in the
# environment override them, e.g. WIDTH=192 HEADS=3 for a quick look)
# on 1 rank x 1 thread at SIDE1 pixels against 2 ranks x 1 thread at domain 2
# and SIDE2 pixels (about twice the tokens: 160^2 = 400 tokens, 224^2 = 784 =
# 392 per rank), and, as a peer on the same ranks, 2 ranks x 1 thread data
# parallel at SIDE1 (each rank a whole image: what two ranks give without
# sharding), REPEAT times alternately. Prints each run's tokens per second per
# rank (tokens / step time / domain ranks) and the ratios of the medians
# (domain 2 over 1 rank: 1.0 = perfect weak scaling; domain 2 over data 2).
# Growing the image doubles the tokens per image, so attention's FLOPs per
# token grow (784 keys instead of 400): the script also prints the achieved
# FLOP/s per rank (the benchmark's FLOP count, attention included) and a
# second weak-scaling pair at one image size, where the FLOPs per token are
# the same: 1 rank x 1 thread with 1 image of SIDE2^2 against domain 2 with 2
# images of SIDE2^2 (each rank a half of each: the same tokens per rank, the
# global batch doubled). The ratio of that pair is what the sharding itself
# costs (ring attention, the pooled and loss reductions, the gradient
# all-reduce) plus the two ranks sharing the machine.
# Not a test: the first ratio needs two idle cores (oversubscribed ranks
# measure the machine's load, not Lunar); the second compares runs that share
# the cores alike.
#   [WIDTH=768 HEADS=12 DEPTH=4] bash bench/domain_weak_scaling.sh [SIDE1 SIDE2 REPEAT]
set -u
cd "$(dirname "$0")/.."
LUNAR=${LUNAR:-build/lunar}
S1=${1:-160} S2=${2:-224} REPEAT=${3:-3}
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
WIDTH=${WIDTH:-768} HEADS=${HEADS:-12} DEPTH=${DEPTH:-4}
B=(examples/benchmark_image_sizes.lua --config configs/recipes/hybrid_vit_image_sizes.lua HIDDEN_SIZE="$WIDTH"
   NUM_HEADS="$HEADS" DEPTH="$DEPTH" BENCH_WARMUP=1 BENCH_STEPS=3 NUM_THREADS=1)
echo "HybridViT width $WIDTH, $HEADS heads, depth $DEPTH; load: $(uptime | sed 's/.*load/load/')"
export OMP_NUM_THREADS=1
rate() {   # csv -> "tokens/s/rank FLOP/s/rank" of its single row
  awk -F, 'NR == 2 { printf "%.1f %.4g\n", $3 * $4 / $7 / $12, $9 / ($5 * $12) }' "$1"
}
one=() two=() dp=() one2=() two2=() f_one=() f_two=() f_dp=()
for i in $(seq "$REPEAT"); do
  "$LUNAR" "${B[@]}" SWEEP_START="$S1" SWEEP_STOP="$S1" BENCH_CSV="$T/one.csv" >/dev/null
  read -r t f < <(rate "$T/one.csv"); one+=("$t"); f_one+=("$f")
  mpirun --oversubscribe -np 2 "$LUNAR" "${B[@]}" 'parallel={domain=2}' SWEEP_START="$S2" SWEEP_STOP="$S2" \
    BENCH_CSV="$T/two.csv" >/dev/null
  read -r t f < <(rate "$T/two.csv"); two+=("$t"); f_two+=("$f")
  mpirun --oversubscribe -np 2 "$LUNAR" "${B[@]}" SWEEP_START="$S1" SWEEP_STOP="$S1" BENCH_CSV="$T/dp.csv" >/dev/null
  read -r t f < <(rate "$T/dp.csv"); dp+=("$t"); f_dp+=("$f")
  "$LUNAR" "${B[@]}" SWEEP_START="$S2" SWEEP_STOP="$S2" BENCH_CSV="$T/one2.csv" >/dev/null
  read -r t f < <(rate "$T/one2.csv"); one2+=("$t")
  mpirun --oversubscribe -np 2 "$LUNAR" "${B[@]}" 'parallel={domain=2}' BATCH_SIZE=2 SWEEP_START="$S2" \
    SWEEP_STOP="$S2" BENCH_CSV="$T/two2.csv" >/dev/null
  read -r t f < <(rate "$T/two2.csv"); two2+=("$t")
  echo "run $i: 1 rank ${S1}^2 ${one[-1]} (${f_one[-1]} FLOP/s); domain 2 ${S2}^2 ${two[-1]} (${f_two[-1]});" \
    "data 2 ${S1}^2 ${dp[-1]} (${f_dp[-1]}); 1 rank ${S2}^2 ${one2[-1]}; domain 2 x 2 images ${S2}^2 ${two2[-1]}" \
    "tokens/s/rank"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
m1=$(median "${one[@]}") m2=$(median "${two[@]}") md=$(median "${dp[@]}")
f1=$(median "${f_one[@]}") f2=$(median "${f_two[@]}") fd=$(median "${f_dp[@]}")
s1=$(median "${one2[@]}") s2=$(median "${two2[@]}")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
echo "load at the end: $(uptime | sed "s/.*load/load/")"
echo "growing image (${S1}^2 on 1 rank -> ${S2}^2 at domain 2), median tokens/s/rank: 1 rank $m1, domain 2 $m2," \
  "data 2 $md; domain 2 / 1 rank $(ratio "$m2" "$m1"), domain 2 / data 2 $(ratio "$m2" "$md")"
echo "  achieved FLOP/s per rank: 1 rank $f1, domain 2 $f2, data 2 $fd; domain 2 / 1 rank $(ratio "$f2" "$f1")"
echo "same image (${S2}^2: 1 image on 1 rank -> 2 images at domain 2), median tokens/s/rank: 1 rank $s1," \
  "domain 2 $s2; domain 2 / 1 rank $(ratio "$s2" "$s1")"
