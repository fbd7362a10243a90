#!/usr/bin/env bash
# Quick start, second command (and CI, through .ci/run): set up .venv with the testing extras, then run
#   1. the lint lane      scripts/lint.sh: ruff, ruff format --check, import-linter contracts, mypy (pure layers)
#   2. the doctest lane   the examples in the public API's docstrings (pytest --doctest-modules src)
#   3. the test suite     pytest under a virtual display (napari needs a real OpenGL context), by default
#                         --lane full: the quick and the slow lanes together, with the full hypothesis budgets
# Every step runs; the script fails if any of them failed. Arguments go to the test-suite step:
#   bash scripts/test.sh                    # everything, as CI
#   bash scripts/test.sh --lane quick -x    # the quick lane (also plain `pytest`; see CONTRIBUTING.md)
#   SKIP_LINT=1 SKIP_DOCTEST=1 bash scripts/test.sh tests/test_volume.py
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh testing || exit 1
export PYTHONHASHSEED=0
# screenshots GUI tests keep for a person to look at (CI keeps this folder as an artefact; CONTRIBUTING.md)
export IMMUNOTRACK_ARTIFACTS="${IMMUNOTRACK_ARTIFACTS:-$PWD/test-artifacts}"

run_pytest() {
  if [ -z "${DISPLAY:-}" ] && command -v xvfb-run >/dev/null; then
    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python -m pytest -p no:xvfb "$@"
  else
    .venv/bin/python -m pytest "$@"
  fi
}

failed=()
if [ -z "${SKIP_LINT:-}" ]; then
  echo "== test.sh: lint lane"
  PYTHON=.venv/bin/python bash scripts/lint.sh || failed+=("lint")
fi
if [ -z "${SKIP_DOCTEST:-}" ]; then
  echo "== test.sh: doctest lane"
  # one BLAS thread: scipy.linalg.expm in the CEST examples thrashes with several on a loaded 2-core machine
  OPENBLAS_NUM_THREADS=1 run_pytest --doctest-modules src/napari_immunotrack -q -p no:cacheprovider || failed+=("doctests")
fi
echo "== test.sh: test suite"
lane=(--lane full)
for arg in "$@"; do
  case "$arg" in --lane|--lane=*) lane=() ;; esac
done
run_pytest "${lane[@]}" "$@" || failed+=("tests")

if [ ${#failed[@]} -gt 0 ]; then
  echo "test.sh: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "test.sh: all passed"
