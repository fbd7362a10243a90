#!/usr/bin/env bash
# The lint lane: style (ruff), formatting (ruff format), layer contracts (import-linter, see
# [tool.importlinter] in pyproject.toml), types of the pure layers (mypy, against the recorded
# baseline in scripts/mypy-baseline.txt) and method citations (docs/methods, not SCIENCE.md).
# Every step runs; the script fails if any of them failed.
#   bash scripts/lint.sh            # with .venv/bin or the tools on PATH
#   PYTHON=/path/to/python bash scripts/lint.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
# lint-imports and mypy must see this checkout's package, not another installed copy
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

failed=()
step() {
  local name="$1"; shift
  echo "== lint: $name"
  if ! "$@"; then failed+=("$name"); fi
}
step "ruff check" "$PY" -m ruff check --output-format concise .
# only the names of files that need formatting (the diffs are long; `ruff format --diff FILE` shows one)
format_check() { "$PY" -m ruff format --check . 2>&1 | grep -E "^Would reformat|-->|files? (would be|already)"; }
step "ruff format --check" format_check
step "lint-imports (layer contracts)" "$PY" -c "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())" --no-cache
step "mypy (pure layers, no new errors)" "$PY" scripts/mypy_ratchet.py
# methods are cited from the project's own docs/methods/, never from a document outside the repository
no_outside_citations() {
  ! grep -rn --include='*.py' --include='*.md' --include='*.html' --include='*.yaml' "SCIENCE\.md" \
      src tests scripts benchmarks examples docs README.md CONTRIBUTING.md --exclude-dir=api --exclude=lint.sh
}
step "citations point to docs/methods (no SCIENCE.md)" no_outside_citations

if [ ${#failed[@]} -gt 0 ]; then
  echo "lint: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "lint: all passed"
