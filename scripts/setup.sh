#!/usr/bin/env bash
# One command installs everything facerig needs on a fresh Debian machine with Python 3.11:
# the system libraries bpy links against, a virtual environment at .venv/, and the project
# in editable mode with all extras, resolved in one pip call against the pinned lock file.
set -euo pipefail
cd "$(dirname "$0")/.."

SYSTEM_PACKAGES=(libx11-6 libxrender1 libxfixes3 libxi6 libxkbcommon0 libgl1 libegl1 libsm6 libxext6)
missing=()
for pkg in "${SYSTEM_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "facerig setup: installing system packages: ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), "facerig needs Python 3.11 (bpy 5.0 wheels are cp311)"'
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# One resolver run for the whole set (protobuf/numpy pins interact); the lock file keeps it reproducible.
.venv/bin/python -m pip install -q -c requirements-lock.txt -e '.[all]'
.venv/bin/facerig --help >/dev/null
echo "facerig setup: done ($(du -sh .venv | cut -f1) in .venv)"
