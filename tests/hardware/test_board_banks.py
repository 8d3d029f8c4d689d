import json
import threading

import pytest

from hardware.banks import BankSwitcher, bank_name, bank_path
from hardware.corners import CornerChoices, Instrument, corners_from_banks, corners_from_settings
from hardware.errors import HardwareError


def test_bank_name_is_the_originals():
    assert bank_name(("cleanbass", "flute", "marimba", "susvox")) == "cleanbass_flute_marimba_susvox"


def test_bank_path_finds_the_combination_or_says_which_is_missing(tmp_path):
    (tmp_path / "a_b_c_d.nsb").write_bytes(b"")
    assert bank_path(tmp_path, ("a", "b", "c", "d"), ".nsb") == tmp_path / "a_b_c_d.nsb"
    with pytest.raises(HardwareError, match=r"a_b_c_e.nsb: no bank for the corners a, b, c, e"):
        bank_path(tmp_path, ("a", "b", "c", "e"), ".nsb")


def test_corner_choices_from_a_folder_of_banks(tmp_path):
    for a in ("bass", "organ"):
        for d in ("vox", "gtr"):
            (tmp_path / f"{a}_flute_marimba_{d}.nsb").write_bytes(b"")
    (tmp_path / "README.txt").write_text("not a bank")
    c = corners_from_banks(tmp_path)
    assert [[i.name for i in corner] for corner in c.corners] == [["bass", "organ"], ["flute"], ["marimba"],
                                                                   ["gtr", "vox"]]
    assert c.names() == ("bass", "flute", "marimba", "gtr")
    assert c.step(0, 1) and c.names()[0] == "organ"
    assert c.step(0, 1) and c.names()[0] == "bass"   # wraps
    assert not c.step(1, 3)                          # one choice: nothing changes
    assert c.step(3, -1) and c.names()[3] == "vox"


def test_an_empty_bank_folder_is_a_clear_error(tmp_path):
    with pytest.raises(HardwareError, match=str(tmp_path) + r".*no banks named"):
        corners_from_banks(tmp_path)
    with pytest.raises(HardwareError, match="cannot list"):
        corners_from_banks(tmp_path / "missing")


def test_corner_choices_from_the_originals_settings(tmp_path):
    corner = {"instruments": [{"name": "cleanbass", "display": "CLN BASS", "abbr": "CB"},
                              {"name": "synthbass", "display": "SYN BASS", "abbr": "SB"}]}
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"corners": [corner] * 4}))
    c = corners_from_settings(path)
    assert c.current()[0] == Instrument("cleanbass", "CLN BASS", "CB")
    assert c.select(["synthbass", "cleanbass", "cleanbass", "synthbass"])
    with pytest.raises(HardwareError, match="'flute' is not one"):
        c.select(["flute", "cleanbass", "cleanbass", "cleanbass"])
    path.write_text('{"corners": 3}')
    with pytest.raises(HardwareError, match="settings.json"):
        corners_from_settings(path)


def test_corner_choices_need_four_corners():
    with pytest.raises(HardwareError, match="4 corners"):
        CornerChoices([[Instrument("a", "A", "A")]] * 3)


class Engine:
    def __init__(self):
        self.playing = "old"
        self.swaps = []

    def swap(self, bank):
        self.playing = bank
        self.swaps.append(bank)


def test_the_old_bank_plays_until_the_new_one_is_verified():
    engine, gate, opened = Engine(), threading.Event(), threading.Event()

    def loader(names):
        opened.set()
        gate.wait(5)
        return bank_name(names)
    sw = BankSwitcher(loader, engine.swap)
    sw.request(("a", "b", "c", "d"))
    assert opened.wait(5)
    assert engine.playing == "old"   # still loading: nothing swapped
    gate.set()
    assert sw.wait_idle(5)
    assert engine.playing == "a_b_c_d" and sw.current == ("a", "b", "c", "d")
    sw.close()


def test_a_bank_that_fails_to_verify_is_not_swapped_in():
    engine, errors = Engine(), []

    def loader(names):
        raise ValueError(f"{bank_name(names)}: checksum mismatch")
    sw = BankSwitcher(loader, engine.swap, on_error=lambda n, e: errors.append((n, str(e))))
    sw.request(("a", "b", "c", "x"))
    assert sw.wait_idle(5)
    assert engine.playing == "old" and sw.current is None
    assert errors == [(("a", "b", "c", "x"), "a_b_c_x: checksum mismatch")]
    sw.close()


def test_requests_during_a_load_collapse_to_the_newest():
    engine, gate, opened, loaded = Engine(), threading.Event(), threading.Event(), []

    def loader(names):
        loaded.append(names)
        opened.set()
        gate.wait(5)
        return bank_name(names)
    sw = BankSwitcher(loader, engine.swap)
    sw.request(("1", "b", "c", "d"))
    assert opened.wait(5)
    for n in "234":
        sw.request((n, "b", "c", "d"))
    gate.set()
    assert sw.wait_idle(5)
    assert loaded == [("1", "b", "c", "d"), ("4", "b", "c", "d")]
    assert engine.swaps == ["4_b_c_d"]   # the stale one was opened but never played
    sw.close()
