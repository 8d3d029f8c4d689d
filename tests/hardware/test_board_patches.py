import json
import os

import pytest

from hardware.errors import HardwareError
from hardware.patches import Patch, PatchStore

PARAMS = {"position": 0.1, "attack": 0.2, "decay": 0.3, "sustain": 0.4, "release": 0.5, "volume": 0.6,
          "x": 0.7, "y": 0.8}
NAMES = ("cleanbass", "flute", "marimba", "susvox")


def test_save_then_reload(tmp_path):
    path = tmp_path / "patches.json"
    store = PatchStore(path)
    store.save(2, Patch(NAMES, PARAMS))
    again = PatchStore(path)
    assert again.get(2) == Patch(NAMES, PARAMS) and again.get(0) is None and again.problems == []
    assert [p.name for p in tmp_path.iterdir()] == ["patches.json"]  # no temp file left behind


def test_reads_the_originals_format(tmp_path):
    path = tmp_path / "patches.json"
    node = {"position": 0.25, "attack": 0.0, "decay": 1.0, "sustain": 0.5, "release": 2.0,
            "instruments": list(NAMES), "grid": [0.3, 0.6]}
    path.write_text(json.dumps({"patches": [node]}))
    p = PatchStore(path).get(0)
    assert p.instruments == NAMES
    assert p.params == {"position": 0.25, "attack": 0.0, "decay": 1.0, "sustain": 0.5, "release": 1.0,
                        "volume": 1.0, "x": 0.3, "y": 0.6}


def test_a_corrupt_file_is_reported_not_loaded_and_kept(tmp_path, caplog):
    path = tmp_path / "patches.json"
    path.write_text('{"patches": [ {"position": 0.5,')
    store = PatchStore(path)
    assert store.slots == [None] * 4
    assert str(path) in store.problems[0] and "corrupt" in store.problems[0]
    assert "corrupt" in caplog.text
    store.save(0, Patch(NAMES, PARAMS))
    assert (tmp_path / "patches.json.bad").read_text() == '{"patches": [ {"position": 0.5,'
    assert PatchStore(path).get(0) == Patch(NAMES, PARAMS)


def test_one_bad_patch_does_not_spoil_the_others(tmp_path):
    path = tmp_path / "patches.json"
    good = Patch(NAMES, PARAMS).to_json()
    path.write_text(json.dumps({"patches": [good, {**good, "attack": "loud"}, {**good, "instruments": ["a"]}]}))
    store = PatchStore(path)
    assert store.get(0) == Patch(NAMES, PARAMS) and store.get(1) is None and store.get(2) is None
    assert "patch 2 not loaded: `attack` must be a number" in store.problems[0]
    assert "patch 3 not loaded: `instruments`" in store.problems[1]


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "patches.json"
    store = PatchStore(path)
    store.save(0, Patch(NAMES, PARAMS))
    before = path.read_text()

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(HardwareError, match="patch 2 not saved.*No space"):
        store.save(1, Patch(NAMES, {**PARAMS, "volume": 0.1}))
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["patches.json"]
