#!/usr/bin/env bash
# The README's first command: set up .venv (installs groundbreak and its dependencies), then run the
# demo: rank the bundled Sentinel-2 tile pairs with the shipped default model and write the report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
groundbreak demo --out "${1:-demo-run}"
