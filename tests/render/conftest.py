"""Shared fixtures: a tiny model run and four WAV-folder corners (distinct timbres), rendered small and fast."""
import numpy as np
import pytest
import soundfile as sf
import torch

from precompute.config import preset
from precompute.run import new_run

SR = 16000
PITCHES = [60, 64]
VELOCITIES = [127]
# grid 3, 2 pitches, 1 velocity, 512 samples (one frame): 18 notes; batch 4 -> 5 shards.
SMALL = dict(grid=3, pitches=PITCHES, velocities=VELOCITIES, length=0.032, batch=4, threads=1, quiet=True)
CLI_SMALL = ["--grid", "3", "--pitches", "60,64", "--velocities", "127", "--length", "0.032", "--batch", "4",
             "--threads", "1", "-q"]


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """One torch thread: the CPU is shared, and every process of a comparison computes alike."""
    torch.set_num_threads(1)


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


@pytest.fixture(scope="session")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("render")
    new_run(root / "run", preset("tiny"))
    corners = [write_corner(root / f"corner{i}", i) for i in range(4)]
    return root, corners, root / "run"


@pytest.fixture(scope="session")
def reference(setup):
    """The uninterrupted single-process bank every other path is compared with, made by the CLI (its job
    folder kept as reference.job)."""
    from device.cli import main

    root, corners, run = setup
    out = root / "reference"
    assert main(["render", "--corners", *corners, "--model", str(run), "-o", str(out), "--keep-job", *CLI_SMALL]) == 0
    return out
