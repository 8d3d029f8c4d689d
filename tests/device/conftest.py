"""Fixtures for the device tests."""
import pytest

from synth_banks import write_bank


@pytest.fixture
def small_bank(tmp_path):
    path = tmp_path / "bank"
    write_bank(path)
    return path
