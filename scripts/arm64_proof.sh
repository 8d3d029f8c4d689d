#!/usr/bin/env bash
# Proof that the instrument runs on the Pi's architecture (arm64), compiled engine included, on an x86 machine:
#   1. an arm64 Debian bookworm root (debootstrap from Debian's packages, run through qemu-user-static);
#   2. the device side installed there the way the image's first boot does: the image builder's offline wheelhouse
#      (hardware/image/build.py fetch_wheelhouse: the project wheel + aarch64 wheels of the device extra, no torch)
#      installed by systemd/nsynth-install into a venv, which also warms numba's cache;
#   3. in that root: the engine tests (compiled kernel against the numpy reference, engine behaviour, residency)
#      and a short `nsynth render-midi`, checking that the compiled engine rendered it.
#
#   sudo bash scripts/arm64_proof.sh [ROOT] [-- PYTEST ARGS]     (ROOT default /var/tmp/nsynth-arm64; reused)
#
# Needs root, debootstrap, qemu-user-static and the network for Debian's and PyPI's packages (the root itself has
# no network use: pip there installs from the wheelhouse). Emulated timings say nothing about a real Pi.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
ROOT=${1:-/var/tmp/nsynth-arm64}
shift || true
[ "${1:-}" = "--" ] && shift
PYTEST_ARGS=("$@")
# (the compiled path of every engine test; not the prefetch thread's real-time test, which emulation is too slow for;
#  the shared-memory ring and clock between two processes: arm64's memory ordering, through the compiled atomics)
[ ${#PYTEST_ARGS[@]} -gt 0 ] || PYTEST_ARGS=(tests/device/test_kernels.py tests/device/test_residency.py
                                             tests/device/test_engine.py tests/device/test_event_ring.py
                                             -k "not numpy and not what_voices_read_next")
log() { echo "arm64-proof: $*" >&2; }
[ "$(id -u)" = 0 ] || { log "run as root (debootstrap, chroot, binfmt_misc)"; exit 1; }
for tool in debootstrap qemu-aarch64-static; do
    command -v $tool >/dev/null || { log "needs $tool (apt-get install debootstrap qemu-user-static)"; exit 1; }
done

# qemu-user-static as the interpreter of aarch64 binaries (binfmt_misc), unless registered already
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    printf '%s' ':qemu-aarch64:M::\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/usr/bin/qemu-aarch64-static:F' \
        > /proc/sys/fs/binfmt_misc/register
fi

# 1. the arm64 root (what Raspberry Pi OS bookworm is built on), with what first boot installs from apt
if [ ! -x "$ROOT/usr/bin/python3" ]; then
    log "debootstrap arm64 bookworm into $ROOT"
    rm -rf "$ROOT"
    debootstrap --arch=arm64 --variant=minbase --foreign \
        --include=python3,python3-venv,libportaudio2,libsndfile1 bookworm "$ROOT" http://deb.debian.org/debian
    cp /usr/bin/qemu-aarch64-static "$ROOT/usr/bin/"
    chroot "$ROOT" /debootstrap/debootstrap --second-stage
fi
mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"  # numba reads the CPU from /proc
trap 'umount "$ROOT/proc" 2>/dev/null || true' EXIT
log "root: $(chroot "$ROOT" uname -m), $(chroot "$ROOT" python3 --version)"

# 2. the wheelhouse the image builder makes (aarch64, the device extra: no torch) + pytest, then first boot's install
#    (NSYNTH_ARM64_REUSE=1: keep the last run's install, to rerun only the checks)
WH="$ROOT/var/lib/nsynth/wheelhouse"
NAME=arm64-proof
VENV=/var/lib/nsynth/venvs/$NAME
if [ "${NSYNTH_ARM64_REUSE:-0}" != 1 ] || [ ! -x "$ROOT$VENV/bin/nsynth" ]; then
rm -rf "$WH" && mkdir -p "$WH"
python3 -c "import sys; from pathlib import Path; from hardware.image.build import fetch_wheelhouse; \
fetch_wheelhouse(Path(sys.argv[1]))" "$WH"
python3 -m pip download -q --only-binary=:all: --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 \
    --python-version 3.11 --implementation cp -d "$WH" pytest pytest-timeout
log "wheelhouse: $(ls "$WH" | wc -l) wheels, $(du -sh "$WH" | cut -f1); torch: $(ls "$WH" | grep -ci '^torch' || true)"
install -D -m 755 systemd/nsynth-install "$ROOT/usr/local/lib/nsynth/nsynth-install"
rm -rf "$ROOT$VENV"
t0=$(date +%s)
chroot "$ROOT" sh /usr/local/lib/nsynth/nsynth-install /var/lib/nsynth/wheelhouse "$NAME"
log "installed in $(( $(date +%s) - t0 )) s (numba's cache warmed by nsynth-install)"
pipwhl=$(cd "$WH" && ls pip-*.whl | head -n 1)  # the venv has no pip of its own (as on the device)
chroot "$ROOT" "$VENV/bin/python" "/var/lib/nsynth/wheelhouse/$pipwhl/pip" install -q --disable-pip-version-check \
    --no-index --find-links /var/lib/nsynth/wheelhouse pytest pytest-timeout
fi
if chroot "$ROOT" "$VENV/bin/python" -c "import torch" 2>/dev/null; then log "torch is installed: it must not be"; exit 1; fi

# 3. the engine tests, from this checkout, against the installed package (no source tree on the path)
rm -rf "$ROOT/opt/nsynth-tests" && mkdir -p "$ROOT/opt/nsynth-tests/tests"
cp -r tests/device "$ROOT/opt/nsynth-tests/tests/"
cp -r testkit "$ROOT/opt/nsynth-tests/"  # the tests' shared oracles (not in the package)
t0=$(date +%s)
chroot "$ROOT" sh -c "cd /opt/nsynth-tests && $VENV/bin/python -m pytest -q -p no:cacheprovider \
    --rootdir=/opt/nsynth-tests -o pythonpath=tests/device $(printf '%q ' "${PYTEST_ARGS[@]}")"
log "engine tests passed in $(( $(date +%s) - t0 )) s (emulated)"

# ... and a short render-midi through the compiled engine
cat > "$ROOT/opt/nsynth-tests/render.py" <<'EOF'
import subprocess, sys, mido, numpy as np, soundfile as sf
from device import kernels
from device.bank import open_bank
from device.engine import Engine
sys.path.insert(0, "tests/device")
from synth_banks import write_bank
write_bank("/tmp/arm64-bank", grid=3, pitches=(48, 60, 72), velocities=(50, 100), note_length=16000)
mid = mido.MidiFile(ticks_per_beat=480)
tr = mido.MidiTrack()
mid.tracks.append(tr)
for i, n in enumerate((60, 64, 67, 72)):
    tr.append(mido.Message("note_on", note=n, velocity=100, time=0 if i == 0 else 120))
for n in (60, 64, 67, 72):
    tr.append(mido.Message("note_off", note=n, time=240))
mid.save("/tmp/arm64.mid")
subprocess.run([sys.executable.replace("python", "nsynth"), "render-midi", "--bank", "/tmp/arm64-bank",
                "/tmp/arm64.mid", "-o", "/tmp/arm64.wav", "--xy", "0.2,0.3:0.8,0.9"], check=True)
audio, sr = sf.read("/tmp/arm64.wav")
engine = Engine(open_bank("/tmp/arm64-bank"))
print(f"render-midi: {len(audio) / sr:.2f} s at {sr} Hz, peak {np.abs(audio).max():.3f}; engine compiled: "
      f"{engine.compiled} (numba {kernels.numba.__version__ if kernels.COMPILED else '-'}), "
      f"machine {__import__('platform').machine()}")
assert engine.compiled and np.abs(audio).max() > 0.05
# the event ring's ordering on arm64: release stores and acquire loads in the compiled push and pop (compiled
# afresh here: numba cannot show the assembly of code it loaded from its cache)
import numba
from device.event_ring import EventRing, ring_pop, ring_push
ring = EventRing(8)
push, pop = numba.njit(ring_push.py_func), numba.njit(ring_pop.py_func)
assert push(ring.hdr, ring.recs, np.zeros(ring.recs.shape[1])) and pop(ring.hdr, ring.recs, ring.recs.copy()) == 1
asm = "\n".join([*push.inspect_asm().values(), *pop.inspect_asm().values()])
stores, loads = asm.count("stlr"), asm.count("ldar") + asm.count("ldapr")
print(f"event ring: {stores} release stores (stlr), {loads} acquire loads (ldar/ldapr) in push and pop")
assert stores >= 3 and loads >= 2
EOF
chroot "$ROOT" sh -c "cd /opt/nsynth-tests && $VENV/bin/python render.py"
log "done: the device side installs and runs on arm64, compiled engine included"
