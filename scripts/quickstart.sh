#!/usr/bin/env bash
# Quick start, first command: set up, then open the bundled sample study in
# napari with the plugin's docks (or, with no display, run the headless demo).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh all
if [ -n "${DISPLAY:-}" ] && [ -z "${IMMUNOTRACK_HEADLESS:-}" ]; then
  exec .venv/bin/immunotrack view "$@"
else
  echo "quickstart: no display; running the headless demo into demo_output/"
  exec .venv/bin/immunotrack demo -o demo_output --overwrite "$@"
fi
