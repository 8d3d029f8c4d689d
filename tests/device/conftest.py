"""Fixtures for the device tests."""
import pytest

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
