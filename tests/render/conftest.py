"""Shared fixtures: a tiny model run and four WAV-folder corners (distinct timbres), rendered small and fast."""
import os

import pytest
import torch

from precompute.config import preset
from precompute.run import new_run
from render_setup import CLI_SMALL, write_corner


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """One torch thread: the CPU is shared, and every process of a comparison computes alike (also where a
    command chooses its threads: from OMP_NUM_THREADS, precompute/threads.py)."""
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"


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
    from nsynth.cli import main

    root, corners, run = setup
    out = root / "reference"
    assert main(["render", "--corners", *corners, "--model", str(run), "-o", str(out), "--keep-job", *CLI_SMALL]) == 0
    return out
