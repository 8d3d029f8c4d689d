import json

import numpy as np
import pytest

from device.bank import SAMPLES, TIMBRE_MAP, open_bank



def manifest(bank):
    m = json.loads((bank / "manifest.json").read_text())
    m.pop("created")
    return m


def same_bank(a, b):
    return (a / SAMPLES).read_bytes() == (b / SAMPLES).read_bytes() and manifest(a) == manifest(b)


def test_cli_render_writes_a_valid_bank(reference):
    bank = open_bank(reference, verify=True)
    assert bank.info.shape == (2, 1, 3, 3, 512)
    assert bank.info.corners == ("c0", "c1", "c2", "c3")
    assert (reference / TIMBRE_MAP).stat().st_size > 1000
    notes = np.asarray(bank.samples, dtype=np.float64)
    assert (np.abs(notes).max(-1) > 1000).all()  # every note holds sound
    assert len({notes[0, 0, y, x].tobytes() for y in range(3) for x in range(3)}) == 9  # distinct cells
