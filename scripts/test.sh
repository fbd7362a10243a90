#!/usr/bin/env bash
# Quick start, second command: set up with the testing extras and run the
# whole test suite under a virtual display (napari needs a real OpenGL context).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh testing
export PYTHONHASHSEED=0
if [ -z "${DISPLAY:-}" ] && command -v xvfb-run >/dev/null; then
  exec xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python -m pytest -p no:xvfb "$@"
else
  exec .venv/bin/python -m pytest "$@"
fi
