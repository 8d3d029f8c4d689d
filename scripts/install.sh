#!/usr/bin/env bash
# Install everything this project needs on a fresh Debian/Ubuntu machine.
#   bash scripts/install.sh          # the render pipeline + the instrument (run the demo)
#   bash scripts/install.sh dev      # ... plus what the tests need
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-main}"
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"

apt_pkgs="libportaudio2 libsndfile1 fluidsynth timgm6mb-soundfont python3-tk"  # python3-tk: `nsynth play --board sim`
if [ "$mode" = dev ]; then
    apt_pkgs="$apt_pkgs jackd2 systemd mtools dosfstools e2fsprogs fdisk openssh-server openssh-client xz-utils xvfb"
fi
missing=""
for p in $apt_pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ] && command -v apt-get >/dev/null; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
fi

PY="${PYTHON:-python3}"
# A system Python that refuses global installs (PEP 668, e.g. Debian's own python3): use a venv in .venv.
if "$PY" -c 'import os, sys, sysconfig; sys.exit(sys.prefix != sys.base_prefix or not os.path.exists(os.path.join(sysconfig.get_paths()["stdlib"], "EXTERNALLY-MANAGED")))'; then
    dpkg -s python3-venv >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv
    [ -x .venv/bin/python ] || "$PY" -m venv .venv
    PY=.venv/bin/python
    echo "install.sh: installing into .venv (this Python is externally managed): run '. .venv/bin/activate' first" >&2
fi
# torch==2.13.0 is the CPU wheel; an unpinned torch pulls a multi-GB CUDA build.
"$PY" -m pip install -q --disable-pip-version-check "torch==2.13.0"
extras="precompute,device"
[ "$mode" = dev ] && extras="$extras,cluster,dev"
"$PY" -m pip install -q --disable-pip-version-check -e ".[$extras]"
# the engine's compiled code (kernels, prefetch planning, the shared-memory ring and clock) into numba's on-disk
# cache (device/__pycache__), so nothing compiles at start
"$PY" -m nsynth.cli engine warm
if [ "$mode" = dev ]; then
    # tests/magenta build real TensorFlow checkpoints and Magenta's forward pass in TF ops (test-only).
    "$PY" -m pip install -q --disable-pip-version-check "tensorflow-cpu==2.21.0"
fi
