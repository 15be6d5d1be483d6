#!/usr/bin/env bash
# Run the test suite (and ruff) in .venv. Exit code: non-zero when any test or lint check fails.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
ruff check .
python -m pytest -q "$@"
