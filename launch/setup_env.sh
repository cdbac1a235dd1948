#!/usr/bin/env bash
# Creates ./.venv with the pinned requirements; a no-op when it is already up to date.
# Used by the README's two commands and by .ci/run. PYTHON selects the interpreter (3.11).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

python_bin=${PYTHON:-}
if [ -z "$python_bin" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then python_bin=$candidate; break; fi
  done
fi
stamp=.venv/.requirements.sha256
wanted=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ "$(cat "$stamp" 2>/dev/null || true)" = "$wanted" ]; then
  exit 0
fi
echo "setting up .venv from requirements.txt with $python_bin (a few minutes, once)" >&2
"$python_bin" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip==26.3
.venv/bin/python -m pip install -q -r requirements.txt
echo "$wanted" > "$stamp"
