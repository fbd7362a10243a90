#!/usr/bin/env bash
# Set up napari-immunotrack on a fresh Debian/Ubuntu machine: system libraries for
# Qt/OpenGL under a virtual display (when run as root), then a virtual
# environment in .venv with the package and the extras given (default: all).
#   bash scripts/setup.sh            # napari + widgets
#   bash scripts/setup.sh testing    # + pytest, pytest-qt, hypothesis, ...
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-all}"
APT_PACKAGES="xvfb xauth libgl1-mesa-dri libegl1 libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 \
libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 \
libxcb-xfixes0 libdbus-1-3 libfontconfig1 ffmpeg"

missing=""
for pkg in $APT_PACKAGES; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    echo "setup: installing system packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
  else
    echo "setup: warning: missing system packages (run as root to install them):$missing" >&2
  fi
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
echo "setup: installing napari-immunotrack[$extras] into .venv"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$extras]" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import napari_immunotrack" || { echo "setup: installation failed" >&2; exit 1; }
echo "setup: done ($(.venv/bin/immunotrack --version))"
