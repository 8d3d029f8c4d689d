"""Shared settings and helpers of the render tests (a uniquely named module; conftest.py holds the fixtures)."""
import json

import numpy as np
import soundfile as sf

from device.bank import SAMPLES

SR = 16000
PITCHES = [60, 64]
VELOCITIES = [127]
# grid 3, 2 pitches, 1 velocity, 512 samples (one frame): 18 notes; batch 4 -> 5 shards.
SMALL = dict(grid=3, pitches=PITCHES, velocities=VELOCITIES, length=0.032, batch=4, threads=1, quiet=True)
CLI_SMALL = ["--grid", "3", "--pitches", "60,64", "--velocities", "127", "--length", "0.032", "--batch", "4",
             "--threads", "1", "-q"]


def write_corner(folder, index, pitches=PITCHES, velocities=(127,), seconds=0.5, rate=SR):
    """A harmonic tone per note; `index` changes the decay and the spectrum's tilt."""
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    for p in pitches:
        f0 = 440 * 2 ** ((p - 69) / 12)
        for v in velocities:
            x = sum(np.sin(2 * np.pi * f0 * h * t + index) / h ** (1 + 0.5 * index) for h in range(1, 6))
            x = v / 127 * 0.4 * np.exp(-t * (1 + index)) * x / np.abs(x).max()
            sf.write(folder / f"c{index}_{p}_{v}.wav", x, rate)
    return str(folder)


def manifest(bank):
    m = json.loads((bank / "manifest.json").read_text())
    m.pop("created")
    return m


def same_bank(a, b):
    """Byte-identical samples and the same manifest, less its creation time."""
    return (a / SAMPLES).read_bytes() == (b / SAMPLES).read_bytes() and manifest(a) == manifest(b)
