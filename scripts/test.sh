#!/usr/bin/env bash
# The test command: set up .venv if needed, make sure headless Chromium is there for the report's
# browser test (Debian package; installed when running as root), then ruff, mypy and pytest.
# Exit code: non-zero when any lint check, type error or test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium (Debian package) for the report's browser test..."
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "note: chromium is not installed; the report's browser test will be skipped" >&2
  fi
fi
. .venv/bin/activate
ruff check .
bash scripts/typecheck.sh datasets train  # mypy; the stages it passes on
python -m pytest -q "$@"
