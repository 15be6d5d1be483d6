#!/usr/bin/env bash
# Create .venv and install groundbreak with its dependencies (CPU torch from this machine's disk).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip show torch >/dev/null 2>&1 || python -m pip install -q torch==2.14.1 torchvision==0.29.1
python -m pip install -q -e '.[test,onnx]'
