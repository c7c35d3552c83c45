#!/usr/bin/env bash
# Runs `fastvideo config show` on every recipe of a FastVideo checkout (examples/train/configs, examples/train/scenario,
# fastvideo/tests/train/fixtures) at a commit and prints a markdown table: the recipe, its model and method classes,
# and the outcome (loads / loads but training refuses a feature / the unsupported-target error).
#   scripts/try_fastvideo_recipes.sh /path/to/FastVideo.git [COMMIT]   (COMMIT defaults to main)
# The recipes are read with `git show` into a temporary folder; nothing is copied into this repository.
set -euo pipefail
repo="${1:?usage: $0 FASTVIDEO_GIT_DIR [COMMIT]}"
commit="$(git -C "$repo" rev-parse "${2:-main}")"
here="$(cd "$(dirname "$0")/.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$here/fastvideo" --help > /dev/null   # builds the CLI once

echo "FastVideo commit $commit ($(git -C "$repo" log -1 --format=%cs "$commit")), fastvideo config show, $(date -u +%F)"
echo
echo "| recipe | models / method | outcome |"
echo "|---|---|---|"
git -C "$repo" ls-tree -r --name-only "$commit" examples/train/configs examples/train/scenario fastvideo/tests/train/fixtures \
  | grep -E '\.ya?ml$' | while read -r f; do
    mkdir -p "$tmp/$(dirname "$f")"
    git -C "$repo" show "$commit:$f" > "$tmp/$f"
    classes="$(grep -E '^\s*_target_:' "$tmp/$f" | sed -E 's/.*_target_: *([^ #]*).*/\1/; s/.*\.//' | grep -Ev 'Callback$' | sort -u | paste -sd ' ' - || true)"
    if out="$(cd "$tmp" && "$here/fastvideo" config show "$f" 2>&1)"; then
      refused="$(grep -E '^# not implemented:' <<<"$out" | sed -E 's/^# not implemented: [^ ]+: ([^:]+):.*/\1/' | paste -sd ',' - || true)"
      outcome="loads"
      [[ -n "$refused" ]] && outcome="loads; training refuses ${refused//,/, } (not implemented)"
    else
      # "error: FILE:LINE: KEY: unsupported target 'X': ..." -> "KEY: unsupported target 'X' (line LINE)"
      outcome="error: $(head -1 <<<"$out" | sed -E "s/^error: [^ ]+:([0-9]+): ([^ ]+): (unsupported target '[^']+').*/\2: \3 (line \1)/; s/^error: //")"
    fi
    echo "| $f | $classes | $outcome |"
  done
