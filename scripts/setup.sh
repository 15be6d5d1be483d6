#!/usr/bin/env bash
# Create .venv and install groundbreak with its dependencies (torch 2.14.1 from this machine's disk).
# Prints one line per step; pip's own output goes to .venv/setup.log and is shown only on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
LOG=.venv/setup.log

step() {  # step "what it does" command...: run quietly, show pip's output only when it fails
  local what=$1
  shift
  echo "setup: $what"
  if ! "$@" >>"$LOG" 2>&1; then
    echo "setup: failed: $what; pip's output ($LOG):" >&2
    tail -n 60 "$LOG" >&2
    exit 1
  fi
}

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating the virtual environment .venv"
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
: >"$LOG"
step "upgrading pip" python -m pip install --upgrade pip
# torch 2.14.1 for x86_64 is a CUDA build: about 5.6 GB in the venv with its NVIDIA libraries
NEEDED_GB=7
if ! python -m pip show torch >/dev/null 2>&1; then
  free_gb=$(df -Pk . | awk 'NR == 2 {print int($4 / 1048576)}')
  if [ "$free_gb" -lt "$NEEDED_GB" ]; then
    echo "setup: $(pwd) has ${free_gb} GB free; installing torch and the other dependencies" \
      "into .venv needs about ${NEEDED_GB} GB. Free some disk space and run this again." >&2
    exit 1
  fi
  step "installing torch 2.14.1 and torchvision 0.29.1 (about 5.6 GB)" \
    python -m pip install torch==2.14.1 torchvision==0.29.1
fi
step "installing groundbreak (editable) with its dependencies and the test, onnx and openvino extras" \
  python -m pip install -e '.[test,onnx,openvino]'
echo "setup: done; activate with: . .venv/bin/activate"
