#!/usr/bin/env bash
# tests/fail/test_gpu_check.sh: scripts/gpu_check.sh (the GPU machine's checks)
# and scripts/gpu_bundle.sh parse, and on a machine without a CUDA device
# gpu_check.sh stops after its device stage: exit status 1, summary.txt
# saying the device stage FAILED, the log giving lunar's reason and that the
# other stages were skipped (no stage runs tests that would only skip). On a
# machine with a GPU this is skipped: the whole check is long, run it by hand.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
LUNAR=${LUNAR:-$BUILD/lunar}
. tests/fail/lib.sh

check "gpu_check.sh parses" bash -n scripts/gpu_check.sh
check "gpu_bundle.sh parses" bash -n scripts/gpu_bundle.sh

run "$LUNAR" -e 'local ok, why = lunar.cuda.is_available(); print(ok and "gpu" or ("none: " .. why))'
if has "$out" "gpu"; then
  skp "gpu_check.sh without a GPU" "this machine has a CUDA device (run bash scripts/gpu_check.sh by hand)"
  finish
fi
reason=${out#none: }
run env BUILD="$BUILD" bash scripts/gpu_check.sh "$T/out" 1
check "no GPU: exit status 1" [ "$rc" -eq 1 ]
summary=$(cat "$T/out/summary.txt" 2>/dev/null)
log=$(cat "$T/out/gpu_check.log" 2>/dev/null)
check "no GPU: summary.txt says the device stage failed" has "$summary" "FAILED"
check "no GPU: summary.txt has the device stage only" [ "$(grep -c 's$' <<<"$summary")" -eq 1 ]
check "no GPU: the log says the other stages are skipped" has "$log" "no usable CUDA device: the other stages are skipped"
check "no GPU: the log gives lunar's reason" has "$log" "${reason%% (*}"
finish
