#!/usr/bin/env bash
# tests/fail/test_timm.sh: Lunar <-> timm interoperability, tests/golden/timm_check.py
# (timm's VisionTransformer loaded into Lunar and Lunar's export loaded into
# timm, logits compared) run with Debian's PyTorch (python3-torch,
# python3-torchvision) and timm and safetensors from PyPI, in a virtual
# environment this script makes with --system-site-packages (so Debian's torch
# is the one imported) and keeps in the build directory ($(dirname LUNAR)/timm-venv,
# made once). Skipped, and counted as skipped, where the machine lacks
# python3-torch or PyPI cannot be reached (no network).
# Run from the repository root (tests/run_all.sh does); LUNAR (default
# build/lunar), PYTHON (default /usr/bin/python3: Debian's, where python3-torch
# installs). Ends with "N passed, N failed, N skipped".
set -u
cd "$(dirname "$0")/../.."
. tests/fail/lib.sh
export OMP_NUM_THREADS=1
PYTHON=${PYTHON:-/usr/bin/python3}
VENV=$(dirname "$LUNAR")/timm-venv
# the versions timm_check.py was checked with (PyTorch 1.13 from Debian 12)
PIP_PKGS=(timm==0.9.16 safetensors==0.4.5)

if ! "$PYTHON" -c 'import torch, torchvision' 2>/dev/null; then
  skp "timm_check.py" "$PYTHON has no torch/torchvision (apt-get install python3-torch python3-torchvision)"; finish
fi
if ! "$VENV/bin/python" -c 'import timm, safetensors' 2>/dev/null; then
  rm -rf "$VENV"
  if ! "$PYTHON" -m venv --system-site-packages "$VENV" >"$T/venv.log" 2>&1; then
    skp "timm_check.py" "could not make a venv (apt-get install python3-venv): $(tail -n 1 "$T/venv.log")"; finish
  fi
  if ! timeout 600 "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps "${PIP_PKGS[@]}" \
       >"$T/pip.log" 2>&1; then
    rm -rf "$VENV"
    skp "timm_check.py" "pip could not install ${PIP_PKGS[*]} (no network?): $(tail -n 1 "$T/pip.log")"; finish
  fi
fi

run "$VENV/bin/python" tests/golden/timm_check.py "$LUNAR"
printf '%s\n' "$out" | sed 's/^/  /'
line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' <<<"$out" | tail -n 1)
if [ -z "$line" ]; then
  bad "timm_check.py ran to its summary line"
else
  pass=$((pass + $(sed -E 's/^([0-9]+) passed.*/\1/' <<<"$line")))
  fail=$((fail + $(sed -E 's/^[0-9]+ passed, ([0-9]+) failed.*/\1/' <<<"$line")))
  check "timm_check.py exits 0" [ "$rc" -eq 0 ]
fi
finish
