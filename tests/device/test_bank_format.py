import json
import os
import subprocess
import sys

import numpy as np
import pytest

from device.bank import FORMAT_VERSION, MANIFEST, SAMPLES, BankError, BankWriter, open_bank
from device.bank_commands import inspect_bank, verify_bank
from nsynth.cli import main

from synth_banks import synth_note, write_bank


def test_round_trip(tmp_path):
    path = tmp_path / "b"
    info = write_bank(path, grid=3, pitches=(40, 52), velocities=(30, 90), note_length=1000, loop=(100, 700),
                      config_hash="abc", extra={"note": "hi"})
    bank = open_bank(path, verify=True)
    assert bank.info == info
    assert bank.info.shape == (2, 2, 3, 3, 1000)
    assert isinstance(bank.samples, np.memmap) and bank.samples.shape == (2, 2, 3, 3, 1000)
    assert not bank.samples.flags.writeable
    np.testing.assert_array_equal(bank.note(1, 0, 2, 1), synth_note(52, 30, 2, 1, 3, 1000))
    np.testing.assert_array_equal(bank.loops[..., 0], 100)
    np.testing.assert_array_equal(bank.loops[..., 1], 700)
    assert bank.info.extra == {"note": "hi"} and bank.info.corners == ("bl", "br", "tl", "tr")
    # the file is little-endian int16 in [P, V, y, x, L] order
    raw = np.fromfile(path / SAMPLES, dtype="<i2").reshape(2, 2, 3, 3, 1000)
    np.testing.assert_array_equal(raw[0, 1, 1, 2], synth_note(40, 90, 1, 2, 3, 1000))
    assert not list(tmp_path.glob("*.partial-*"))


def test_write_block_and_short_notes_pad(tmp_path):
    path = tmp_path / "b"
    audio = np.arange(2 * 2 * 50, dtype=np.int16).reshape(2, 2, 50)
    with BankWriter(path, grid=2, pitches=[60], velocities=[100], note_length=64, corners="abcd") as w:
        w.write_block(0, 0, audio, loops=np.tile([10, 40], (2, 2, 1)))
    bank = open_bank(path, verify=True)
    np.testing.assert_array_equal(bank.samples[0, 0, :, :, :50], audio)
    assert not bank.samples[0, 0, :, :, 50:].any()
    assert bank.loops[0, 0, 1, 1].tolist() == [10, 40]


def test_missing_notes_are_refused(tmp_path):
    with pytest.raises(BankError, match="never written"):
        with BankWriter(tmp_path / "b", grid=2, pitches=[60], velocities=[100], note_length=8, corners="abcd") as w:
            w.write(0, 0, 0, 0, np.zeros(8, np.int16))
    assert not (tmp_path / "b").exists() and not list(tmp_path.iterdir())


@pytest.mark.parametrize("bad", [
    dict(audio=np.zeros(8, np.float32)),
    dict(audio=np.zeros(9, np.int16)),
    dict(loop=(5, 5)),
    dict(loop=(0, 9)),
    dict(y=2),
])
def test_writer_rejects_bad_notes(tmp_path, bad):
    w = BankWriter(tmp_path / "b", grid=2, pitches=[60], velocities=[100], note_length=8, corners="abcd")
    args = dict(audio=np.zeros(8, np.int16), loop=(1, 6), y=0)
    args.update(bad)
    with pytest.raises(BankError, match=str(tmp_path / "b")):
        w.write(0, 0, args["y"], 0, args["audio"], loop=args["loop"])
    w.abort()


def test_truncated_samples_are_refused(small_bank):
    size = os.path.getsize(small_bank / SAMPLES)
    os.truncate(small_bank / SAMPLES, size - 2)
    with pytest.raises(BankError, match=r"samples\.i16.*truncated"):
        open_bank(small_bank)


def _edit_manifest(path, **changes):
    m = json.loads((path / MANIFEST).read_text())
    m.update(changes)
    (path / MANIFEST).write_text(json.dumps(m))


def test_wrong_version_is_refused(small_bank):
    _edit_manifest(small_bank, format_version=FORMAT_VERSION + 1)
    with pytest.raises(BankError, match=r"manifest\.json.*format_version 2 is not supported"):
        open_bank(small_bank)


@pytest.mark.parametrize("changes, message", [
    (dict(format="something"), "format is 'something'"),
    (dict(grid="3"), "'grid' must be int"),
    (dict(pitches=[60, 48, 72]), "strictly increasing"),
    (dict(corners=["a"]), "4 names"),
    (dict(loops=[[1, 2]]), "'loops' has shape"),
    (dict(sha256="xyz"), "64 lowercase hex"),
])
def test_bad_manifest_is_refused(small_bank, changes, message):
    _edit_manifest(small_bank, **changes)
    with pytest.raises(BankError, match=message):
        open_bank(small_bank)


def test_missing_key_and_unparsable_manifest(small_bank):
    m = json.loads((small_bank / MANIFEST).read_text())
    del m["note_length"]
    (small_bank / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(BankError, match="missing key 'note_length'"):
        open_bank(small_bank)
    (small_bank / MANIFEST).write_text("{not json")
    with pytest.raises(BankError, match="unreadable manifest"):
        open_bank(small_bank)
    with pytest.raises(BankError, match="not a bank directory"):
        open_bank(small_bank / "nowhere")


def test_loop_out_of_range_is_refused(small_bank):
    m = json.loads((small_bank / MANIFEST).read_text())
    m["loops"][1][0][2][1] = [500, 9000]
    (small_bank / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(BankError, match=r"loop \[500, 9000\] at \[pitch, velocity, y, x\] = \[1, 0, 2, 1\]"):
        open_bank(small_bank)


def test_bad_sha_is_caught_by_verify(small_bank):
    with open(small_bank / SAMPLES, "r+b") as f:
        f.seek(1234)
        b = f.read(1)
        f.seek(1234)
        f.write(bytes([b[0] ^ 0xFF]))
    open_bank(small_bank)  # sizes are fine; only the hash can tell
    with pytest.raises(BankError, match="sha256 .* does not match"):
        open_bank(small_bank, verify=True)
    assert main(["bank", "verify", str(small_bank)]) == 1


def test_interrupted_writer_leaves_old_bank(tmp_path):
    path = tmp_path / "bank"
    old = write_bank(path, note_length=500)
    with pytest.raises(RuntimeError):
        with BankWriter(path, grid=2, pitches=[60], velocities=[100], note_length=16, corners="abcd") as w:
            w.write(0, 0, 0, 0, np.ones(16, np.int16))
            raise RuntimeError("killed mid-render")
    assert open_bank(path, verify=True).info == old
    assert sorted(p.name for p in tmp_path.iterdir()) == [".store", "bank"]


def test_killed_writer_process_leaves_old_bank(tmp_path):
    """A process killed mid-write (no cleanup at all) leaves only a .partial directory beside the intact bank."""
    path = tmp_path / "bank"
    old = write_bank(path, note_length=500)
    code = (f"import os, numpy as np; from device.bank import BankWriter\n"
            f"w = BankWriter({str(path)!r}, grid=2, pitches=[60], velocities=[100], note_length=16, corners='abcd')\n"
            f"w.write(0, 0, 0, 0, np.ones(16, np.int16)); os._exit(9)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9
    assert open_bank(path, verify=True).info == old
    assert len(list(tmp_path.glob("bank.partial-*"))) == 1
    new = write_bank(path, note_length=300)  # the next writer clears what the dead one left
    assert open_bank(path, verify=True).info == new
    assert sorted(p.name for p in tmp_path.iterdir()) == [".store", "bank"]
    assert len(list((tmp_path / ".store").iterdir())) == 1


def test_numpy_integers_are_accepted(tmp_path):
    with BankWriter(tmp_path / "b", grid=np.int64(2), pitches=np.array([60, 72]), velocities=[np.int32(100)],
                    note_length=np.int64(8), corners="abcd") as w:
        for p in range(2):
            w.write_block(p, 0, np.zeros((2, 2, 8), np.int16), loops=np.tile(np.array([1, 5]), (2, 2, 1)))
    info = open_bank(tmp_path / "b").info
    assert info.pitches == (60, 72) and type(info.grid) is int


def test_new_bank_replaces_old(tmp_path):
    path = tmp_path / "bank"
    write_bank(path, note_length=500)
    new = write_bank(path, note_length=300, pitches=(60,))
    assert open_bank(path, verify=True).info == new
    assert sorted(p.name for p in tmp_path.iterdir()) == [".store", "bank"]
    assert path.is_symlink() and len(list((tmp_path / ".store").iterdir())) == 1  # the old version is gone


_CRASH = """
import os, signal, sys
import numpy as np
import device.bank as bank_mod
from device.bank import BankWriter

crash_at, path, calls = int(sys.argv[1]), sys.argv[2], [0]

def counted(name, fn):
    def call(*args, **kwargs):
        calls[0] += 1
        if calls[0] == crash_at:
            os.kill(os.getpid(), signal.SIGKILL)  # killed just before this step: no cleanup runs
        return fn(*args, **kwargs)
    return call

for name in ("rename", "replace", "symlink", "unlink", "rmdir"):
    setattr(os, name, counted(name, getattr(os, name)))
bank_mod.exchange_paths = counted("exchange", bank_mod.exchange_paths)
with BankWriter(path, grid=2, pitches=[60], velocities=[100], note_length=16, corners="abcd") as w:
    w.write_block(0, 0, np.ones((2, 2, 16), np.int16))
"""


@pytest.mark.parametrize("plain", [False, True])
def test_a_writer_killed_at_any_step_leaves_a_whole_bank(tmp_path, plain):
    """Kill the writer before each file-system step of its swap in turn: the path always opens, as the old bank or
    the new one. (`plain`: the old bank is a plain folder, as written before the symlink scheme.)"""
    path = tmp_path / "bank"
    old = write_bank(path, note_length=500)
    if plain:
        target = path.resolve()
        path.unlink()
        os.rename(target, path)
    seen = set()
    for crash_at in range(1, 30):
        r = subprocess.run([sys.executable, "-c", _CRASH, str(crash_at), str(path)])
        info = open_bank(path, verify=True).info
        assert info == old or (info.note_length, info.grid) == (16, 2), crash_at
        seen.add(info.note_length)
        if r.returncode == 0:
            break
        assert r.returncode == -9
        if info != old:  # the swap happened: start again from the old bank
            write_bank(path, note_length=500)
    assert seen == {500, 16} and r.returncode == 0
    write_bank(path, note_length=300)  # a later writer clears every leftover
    assert sorted(p.name for p in tmp_path.iterdir()) == [".store", "bank"]
    assert len(list((tmp_path / ".store").iterdir())) == 1


def test_commands(small_bank, capsys):
    assert "OK" in verify_bank(small_bank)
    text = inspect_bank(small_bank)
    assert "3 x 3" in text and "48, 60, 72" in text and "BL=bl" in text
    assert main(["bank", "inspect", str(small_bank)]) == 0
    assert "sha256" in capsys.readouterr().out
    os.truncate(small_bank / SAMPLES, 10)
    assert main(["bank", "verify", str(small_bank)]) == 1
    assert "truncated" in capsys.readouterr().err
