#!/usr/bin/env bash
# Create .venv and install groundbreak with its dependencies (torch 2.14.1 from this machine's disk).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
# torch 2.14.1 for x86_64 is a CUDA build: about 5.6 GB in the venv with its NVIDIA libraries
NEEDED_GB=7
if ! python -m pip show torch >/dev/null 2>&1; then
  free_gb=$(df -Pk . | awk 'NR == 2 {print int($4 / 1048576)}')
  if [ "$free_gb" -lt "$NEEDED_GB" ]; then
    echo "setup: $(pwd) has ${free_gb} GB free; installing torch and the other dependencies" \
      "into .venv needs about ${NEEDED_GB} GB. Free some disk space and run this again." >&2
    exit 1
  fi
fi
python -m pip install -q --upgrade pip
python -m pip show torch >/dev/null 2>&1 || python -m pip install -q torch==2.14.1 torchvision==0.29.1
python -m pip install -q -e '.[test,onnx]'
