"""Banks are checked before they are played: the players hash a bank's samples on first use and remember the
outcome beside them (verified.json), so later uses do not read the whole bank again; a corrupt bank is refused
by `render-midi` and by the board's bank switching (the old bank keeps playing), and `bank inspect` says whether
the bank has been verified."""
import os
import shutil
import time

import pytest

import device.bank as bank_mod
from device.bank import SAMPLES, STAMP, BankError, check_samples, open_bank, open_verified, read_stamp
from device.bank_commands import inspect_bank
from device.board_glue import open_combination
from nsynth.cli import main

from synth_banks import write_bank
from test_board_glue import SMALL, Rig
from test_render_midi_input import good_song


def flip_byte(bank, offset=1234, keep_mtime=False):
    """Corrupt one sample byte in place (the size stays right: only the sha256 can tell)."""
    st = (bank / SAMPLES).stat()
    with open(bank / SAMPLES, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))
    if keep_mtime:
        os.utime(bank / SAMPLES, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.fixture
def hashes(monkeypatch):
    """Every full read of a bank's samples, by path."""
    seen = []
    real = bank_mod._sha256

    def counting(path):
        seen.append(path)
        return real(path)

    monkeypatch.setattr(bank_mod, "_sha256", counting)
    return seen


def inspect_verified(bank):
    return next(line for line in inspect_bank(bank).splitlines() if line.startswith("verified"))


def test_a_good_bank_is_hashed_on_first_use_only(small_bank, hashes):
    assert inspect_verified(small_bank).startswith("verified    no: never checked")
    open_verified(small_bank)
    assert hashes == [small_bank / SAMPLES]
    stamp = read_stamp(small_bank)
    assert stamp.ok and stamp.current and stamp.sha256 == open_bank(small_bank).info.sha256
    for _ in range(3):  # later uses (a reboot, a bank switch) trust the stamp
        assert not check_samples(open_verified(small_bank))
    assert len(hashes) == 1
    assert inspect_verified(small_bank).startswith("verified    yes, the samples matched")
    assert len(hashes) == 1  # inspect never hashes


def test_a_corrupt_bank_is_refused_and_stays_refused_without_rereading(small_bank, hashes):
    flip_byte(small_bank)
    with pytest.raises(BankError, match=r"samples.i16: sha256 [0-9a-f]{64} does not match the manifest's"):
        open_verified(small_bank)
    assert inspect_verified(small_bank).startswith("verified    FAILED on ")
    with pytest.raises(BankError, match="corrupt file, found by the check on .*`nsynth bank verify` checks it again"):
        open_verified(small_bank)
    assert len(hashes) == 1
    assert main(["bank", "verify", str(small_bank)]) == 1  # verify always hashes afresh
    assert len(hashes) == 2


def test_any_change_to_the_files_makes_the_stamp_stale(small_bank, hashes):
    open_verified(small_bank)
    time.sleep(0.05)  # past the file system's timestamp granularity
    flip_byte(small_bank, keep_mtime=True)  # same size, same mtime: the ctime still tells
    assert not read_stamp(small_bank).current
    assert inspect_verified(small_bank).startswith("verified    no: samples.i16 or the manifest changed since")
    with pytest.raises(BankError, match="does not match"):
        open_verified(small_bank)
    assert len(hashes) == 2


def test_a_copy_with_its_stamp_and_times_is_checked_again(small_bank, tmp_path, hashes):
    open_verified(small_bank)
    copy = tmp_path / "copy"
    shutil.copytree(small_bank, copy)  # copy2: mtimes and the stamp come along
    assert (copy / STAMP).exists() and not read_stamp(copy).current
    assert check_samples(open_bank(copy))
    assert hashes == [small_bank / SAMPLES, copy / SAMPLES]


def test_a_changed_manifest_makes_the_stamp_stale(small_bank):
    open_verified(small_bank)
    manifest = small_bank / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"model":"synthetic"', '"model":"other"'))
    assert open_bank(small_bank).info.model == "other" and not read_stamp(small_bank).current


def test_a_stamp_that_cannot_be_written_costs_a_warning_not_the_bank(small_bank, hashes, caplog):
    (small_bank / STAMP).mkdir()  # the stamp's name taken by a folder: nothing can be written there
    assert open_verified(small_bank).info.grid == 3
    assert open_verified(small_bank).info.grid == 3
    assert len(hashes) == 2 and "cannot remember the check" in caplog.text


def test_bank_verify_stamps_the_bank(small_bank, hashes, capsys):
    assert main(["bank", "verify", str(small_bank)]) == 0
    assert not check_samples(open_bank(small_bank)) and len(hashes) == 1
    assert main(["bank", "inspect", str(small_bank)]) == 0
    assert "verified    yes" in capsys.readouterr().out


def test_render_midi_refuses_a_corrupt_bank(small_bank, tmp_path, capsys):
    flip_byte(small_bank)
    out = tmp_path / "out.wav"
    assert main(["render-midi", "--bank", str(small_bank), str(good_song(tmp_path / "a.mid")), "-o", str(out)]) == 1
    assert "samples.i16: sha256" in capsys.readouterr().err and not out.exists()


def test_render_midi_checks_a_good_bank_once(small_bank, tmp_path, hashes):
    for _ in range(2):
        assert main(["render-midi", "--bank", str(small_bank), str(good_song(tmp_path / "a.mid")), "-o",
                     str(tmp_path / "out.wav")]) == 0
    assert hashes == [small_bank / SAMPLES]


def test_open_combination_checks_the_bank_once_and_says_when_it_hashes(tmp_path, hashes):
    write_bank(tmp_path / "a_b_c_d", corners=("c", "d", "a", "b"), **SMALL)
    hashes.clear()  # the writer's own hash
    told = []
    open_combination(tmp_path, ("a", "b", "c", "d"), told.append)
    open_combination(tmp_path, ("a", "b", "c", "d"), told.append)
    assert told == [tmp_path / "a_b_c_d"] and len(hashes) == 1
    flip_byte(tmp_path / "a_b_c_d", keep_mtime=True)
    with pytest.raises(BankError, match="does not match"):
        open_combination(tmp_path, ("a", "b", "c", "d"), told.append)


def test_the_board_refuses_a_corrupt_bank_and_the_old_one_keeps_playing(tmp_path, capsys):
    banks = tmp_path / "banks"
    for tl in ("tl", "tl2", "tl3"):
        write_bank(banks / f"{tl}_tr_bl_br", corners=("bl", "br", tl, "tr"), **SMALL)
    flip_byte(banks / "tl2_tr_bl_br")  # the right size: only the sha256 tells
    rig = Rig(banks / "tl_tr_bl_br", tmp_path)
    try:
        controls = rig.source.controls
        assert rig.render_until(lambda: controls.board.counts["frames"] > 0)  # the encoders' baseline is read
        rig.board.turn(0, 1)  # to tl2
        assert rig.render_until(lambda: controls.screen.kind == "message"
                                and controls.screen.data["title"] == "BANK REFUSED")
        rig.source.switcher.wait_idle(5)
        rig.render_until(lambda: False, timeout=0.05)
        assert rig.engine.bank.path == rig.slot.path == banks / "tl_tr_bl_br"
        err = capsys.readouterr().err
        assert "checking " + str(banks / "tl2_tr_bl_br") in err
        assert "bank tl2_tr_bl_br refused" in err and "sha256" in err
        rig.board.set_touch((0, 0))
        assert rig.render_until(lambda: rig.engine.params["y"] == 1.0)
        assert rig.note().argmax() == 2  # still playing (the bank's top-left timbre at the pad's top-left)

        rig.board.turn(0, 1)  # to tl3: good, checked on first use, then played; the checking message ends
        assert rig.render_until(lambda: rig.engine.bank.path == banks / "tl3_tr_bl_br")
        assert "checking " + str(banks / "tl3_tr_bl_br") in capsys.readouterr().err
        assert controls.screen.data.get("title") != "CHECKING BANK"
        rig.board.turn(0, -1)  # back to tl2: refused at once by its stamp, not read again
        assert rig.render_until(lambda: controls.screen.data.get("title") == "BANK REFUSED")
        rig.source.switcher.wait_idle(5)
        err = capsys.readouterr().err
        assert "bank tl2_tr_bl_br refused" in err and "found by the check on" in err and "checking" not in err
        assert rig.engine.bank.path == banks / "tl3_tr_bl_br"
    finally:
        rig.stop()
