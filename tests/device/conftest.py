"""Fixtures for the device tests."""
import pytest

from device.bank import open_verified

from device import kernels
from synth_banks import write_bank


@pytest.fixture(params=["compiled", "numpy"])
def engine_path(request, monkeypatch):
    """Run a test on the compiled kernel and on the numpy reference (engines made inside the test)."""
    if request.param == "numpy":
        monkeypatch.setattr(kernels, "COMPILED", False)
    return request.param


@pytest.fixture
def small_bank(tmp_path):
    path = tmp_path / "bank"
    write_bank(path)
    return path


@pytest.fixture(scope="module")
def live_bank(tmp_path_factory):
    """A 3x3 bank (3 pitches, 2 velocities, 1-s notes) for the live and audio-host tests, checked once here (its
    sha256 stamped), so no test depends on which one opens it first."""
    path = tmp_path_factory.mktemp("live") / "bank"
    write_bank(path, grid=3, pitches=(48, 60, 72), velocities=(50, 100), note_length=16000)
    open_verified(path)
    return path
