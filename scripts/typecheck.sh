#!/usr/bin/env bash
# mypy on stages of groundbreak (default: datasets train), checked as the packages they install as
# (groundbreak.datasets is datasets/...): the editable install maps them with an import hook that
# mypy cannot follow, so a folder of links in .mypy_cache shows it groundbreak/<stage>. Settings
# are in pyproject.toml's [tool.mypy]. Exit code: non-zero on any type error.
set -euo pipefail
cd "$(dirname "$0")/.."
stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(datasets train)
view=.mypy_cache/groundbreak-view
mkdir -p "$view/groundbreak"
for stage in datasets train infer; do
  ln -sfn "$PWD/$stage" "$view/groundbreak/$stage"
done
packages=()
for stage in "${stages[@]}"; do
  packages+=(-p "groundbreak.${stage%/}")
done
# errors name the repository's files (datasets/scene.py), not the links
MYPYPATH="$view" mypy "${packages[@]}" 2>&1 | sed "s#$view/groundbreak/##g"
