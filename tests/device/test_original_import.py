"""`nsynth bank import-original`: the original NSynth Super's sound files -> banks that play the same sounds
at the same touch, switched by the encoders as the original switched them."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from device.bank import open_bank
from device.board_glue import engine_params, open_combination
from nsynth.cli import main
from nsynth.errors import NsynthError
from device import original
from device.original import Layout, import_original
from hardware.corners import corners_from_banks
from hardware.frame import Frame, decode, encode
from hardware.mapping import BoardMapper
from synth_banks import render_events
from nsynth.loops import default_loop, find_loop, pitch_period

# the original's layout, with short notes so the tests stay small
LAYOUT = Layout(note_length=2000)
PITCHES = list(range(24, 85, 4))  # the original app's settings.json
ROOT = Path(__file__).resolve().parents[2]


def note_value(row: int) -> int:
    """Every note of a synthetic sound file is a constant naming its row (cell * pitches + pitch) in the file."""
    return 10 * (row + 1)


def write_sound_file(path: Path, layout: Layout = LAYOUT, salt: int = 0) -> Path:
    """A sound file laid out as the original's audio pipeline writes it: [cells][pitches][samples] int16, every
    note identifiable (its value), and `salt` telling files apart."""
    rows = np.arange(layout.notes)
    data = np.repeat((note_value(rows) + salt).astype("<i2")[:, None], layout.note_length, axis=1)
    data.tofile(path)
    return path


def original_row(touch: tuple[int, int], key: int, grid: int = 9, pitches=PITCHES) -> int:
    """The original app's choice (its source, not ours): touch cell (0-10 each, y = 0 at the top) -> grid
    position t / 10 -> nearest cell round(x * 8), round(y * 8); index = yi * 9 + xi; the nearest generated pitch,
    the lower one on a tie; row = index * pitches + pitch index."""
    xi, yi = (int(math.floor(t / 10 * (grid - 1) + 0.5)) for t in touch)
    p_idx = min(range(len(pitches)), key=lambda j: (abs(key - pitches[j]), j))
    return (yi * grid + xi) * len(pitches) + p_idx


def board_xy(touch: tuple[int, int]) -> dict[str, float]:
    """What `nsynth play --board ons` hands the engine for a touch: the board frame's bytes, the board mapper
    (no glide), then board -> engine orientation."""
    frame = decode(encode(Frame(touch=touch, rotaries=(0, 0, 0, 0), pots=(0,) * 6)))
    params = engine_params(BoardMapper(tau=0.0).update(frame, now=0.0))
    return {"x": params["x"], "y": params["y"]}


def played_value(bank, touch, key) -> float:
    """The engine's steady output for a note at this touch, in int16 units (flat envelope, unit gains)."""
    params = {"attack": 0.0, "decay": 0.0, "sustain": 1.0, "volume": 1.0, "position": 0.0, **board_xy(touch)}
    out = render_events(bank, [(0, ("on", 0, key, 127))], 1200, params=params)
    return float(out[600:1200, 0].mean()) * 32768


def test_a_touch_plays_the_same_note_on_both_instruments(tmp_path):
    src = write_sound_file(tmp_path / "tl_tr_bl_br.bin")
    import_original(src, tmp_path / "banks", layout=LAYOUT, quiet=True)
    bank = open_bank(tmp_path / "banks" / "tl_tr_bl_br", verify=True)
    assert bank.info.corners == ("bl", "br", "tl", "tr")  # the manifest's order
    # the touches where the original's cells and this instrument's grid points coincide, every key
    for touch in [(tx, ty) for ty in (0, 5, 10) for tx in (0, 5, 10)]:
        for key in range(22, 88):
            expected = note_value(original_row(touch, key))
            assert played_value(bank, touch, key) == pytest.approx(expected, abs=0.5), (touch, key)


def test_every_note_lands_in_its_cell(tmp_path):
    src = write_sound_file(tmp_path / "a_b_c_d.bin")
    raw = np.fromfile(src, dtype="<i2").reshape(81, 16, LAYOUT.note_length)
    import_original(src, tmp_path / "banks", layout=LAYOUT, quiet=True)
    bank = open_bank(tmp_path / "banks" / "a_b_c_d")
    assert bank.info.pitches == tuple(PITCHES) and bank.info.grid == 9 and bank.info.sample_rate == 16000
    for cell in range(81):
        for p in range(16):
            y, x = 8 - cell // 9, cell % 9
            np.testing.assert_array_equal(bank.samples[p, 0, y, x], raw[cell, p])


def test_loops_are_found_as_for_rendered_banks(tmp_path):
    layout = Layout(grid=3, pitches=(48, 57), note_length=6000)  # notes long enough for a loop search
    src = write_sound_file(tmp_path / "a_b_c_d.bin", layout=layout)
    raw = np.fromfile(src, dtype="<i2").reshape(9, 2, layout.note_length)
    t = np.arange(layout.note_length) / 16000
    raw[4, 1] = np.sin(2 * np.pi * 220 * t) * (8000 - 4000 * t)  # one real, decaying tone
    raw.tofile(src)
    import_original(src, tmp_path / "banks", layout=layout, quiet=True)
    bank = open_bank(tmp_path / "banks" / "a_b_c_d")
    for cell in range(9):
        for p, pitch in enumerate(layout.pitches):
            y, x = 2 - cell // 3, cell % 3
            assert tuple(bank.loops[p, 0, y, x]) == find_loop(raw[cell, p][None] / 32768.0,
                                                               pitch_period(pitch, 16000), 16000)
    assert tuple(bank.loops[1, 0, 1, 1]) != default_loop(layout.note_length)  # the tone's loop is searched for


def test_the_encoders_switch_between_imported_combinations(tmp_path):
    sets = tmp_path / "pads"
    sets.mkdir()
    salts = {("cleanbass", "flute", "marimba", "susvox"): 0, ("cleanbass", "electricpiano", "marimba", "susvox"): 1,
             ("synthbass", "flute", "marimba", "susvox"): 2}
    for names, salt in salts.items():
        write_sound_file(sets / ("_".join(names) + ".bin"), salt=salt)
    banks = tmp_path / "banks"
    assert len(import_original(sets, banks, layout=LAYOUT, quiet=True).imported) == 3
    for corner, steps, expected in [(1, 1, 1), (1, -1, 1), (0, 1, 2), (0, -1, 2)]:  # top-right, top-left encoder
        corners = corners_from_banks(banks)  # what `play --board ons` cycles through
        corners.select(["cleanbass", "flute", "marimba", "susvox"])
        assert corners.step(corner, steps)
        assert salts[corners.names()] == expected
        bank = open_combination(banks, corners.names())  # refuses a bank that would play upside down
        assert bank.samples[0, 0, 8, 0, 0] == note_value(0) + expected  # its top-left cell: the file's first note


def test_bad_sound_files_are_all_named_and_nothing_is_written(tmp_path):
    sets = tmp_path / "pads"
    sets.mkdir()
    write_sound_file(sets / "a_b_c_d.bin")
    (sets / "a_b_c_e.bin").write_bytes(b"\0" * (LAYOUT.note_bytes * 10))            # whole notes, too few
    (sets / "a_b_c_f.bin").write_bytes(b"\0" * (LAYOUT.file_bytes - 2))              # not whole notes
    os.symlink(tmp_path / "gone.bin", sets / "a_b_c_g.bin")                          # unreadable
    write_sound_file(sets / "not-a-combination.bin")                                 # misnamed
    banks = tmp_path / "banks"
    with pytest.raises(NsynthError) as e:
        import_original(sets, banks, layout=LAYOUT, quiet=True)
    msg = str(e.value)
    assert "4 of 5 sound files refused, nothing imported" in msg
    assert f"{sets / 'a_b_c_e.bin'}: wrong size: 10 notes" in msg and "expected 1296" in msg
    assert f"{sets / 'a_b_c_f.bin'}: {LAYOUT.file_bytes - 2} bytes is not a whole number of notes" in msg
    assert f"{sets / 'a_b_c_g.bin'}: unreadable" in msg
    assert f"{sets / 'not-a-combination.bin'}: not named" in msg
    assert not banks.exists()
    result = import_original(sets, banks, layout=LAYOUT, quiet=True, skip_bad=True)
    assert result.imported == ["a_b_c_d"] and len(result.refused) == 4
    assert sorted(p.name for p in banks.iterdir() if p.name != ".store") == ["a_b_c_d"]


@pytest.mark.parametrize("make, problem", [
    (lambda d: d.mkdir(), "no sound files (*.bin, one per corner combination) in this folder"),
    (lambda d: None, "no such file or folder"),
])
def test_a_source_without_sound_files_is_refused(tmp_path, make, problem):
    src = tmp_path / "stick"
    make(src)
    with pytest.raises(NsynthError, match=f"{src}: " + problem.replace("(", r"\(").replace(")", r"\)")
                       .replace("*", r"\*").replace(".", r"\.")):
        import_original(src, tmp_path / "banks", layout=LAYOUT, quiet=True)


def test_an_existing_bank_of_another_origin_is_kept_unless_forced(tmp_path):
    src = write_sound_file(tmp_path / "a_b_c_d.bin")
    banks = tmp_path / "banks"
    (banks / "a_b_c_d").mkdir(parents=True)
    (banks / "a_b_c_d" / "mine.txt").write_text("a rendered bank")
    with pytest.raises(NsynthError, match="a_b_c_d: already exists and is not an import of a_b_c_d.bin"):
        import_original(src, banks, layout=LAYOUT, quiet=True)
    assert (banks / "a_b_c_d" / "mine.txt").exists()
    import_original(src, banks, layout=LAYOUT, quiet=True, force=True)
    assert open_bank(banks / "a_b_c_d", verify=True).info.extra["original"]["file"] == "a_b_c_d.bin"


def test_a_disk_too_small_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    src = write_sound_file(tmp_path / "a_b_c_d.bin")
    monkeypatch.setattr(original.shutil, "disk_usage", lambda path: SimpleNamespace(free=LAYOUT.file_bytes - 1))
    with pytest.raises(NsynthError, match=f"{tmp_path / 'banks'}: the banks need 0.01 GB, only 0.01 GB free"):
        import_original(src, tmp_path / "banks", layout=LAYOUT, quiet=True)
    assert not (tmp_path / "banks").exists()


KILLER = """
import os, signal, sys
import device.original as o
calls = [0]
real = o.find_loop
def find_loop(*args):
    calls[0] += 1
    if calls[0] == int(sys.argv[3]):
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args)
o.find_loop = find_loop
o.import_original(sys.argv[1], sys.argv[2], layout=o.Layout(note_length=2000), quiet=True)
"""


def test_a_killed_import_keeps_finished_banks_and_resumes(tmp_path):
    sets = tmp_path / "pads"
    sets.mkdir()
    for i, name in enumerate(["a_b_c_d", "a_b_c_e", "a_b_c_f"]):
        write_sound_file(sets / f"{name}.bin", salt=i)
    banks = tmp_path / "banks"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # killed in the middle of the second bank
    run = subprocess.run([sys.executable, "-c", KILLER, str(sets), str(banks), str(LAYOUT.notes + 500)], env=env)
    assert run.returncode == -signal.SIGKILL
    names = sorted(p.name for p in banks.iterdir() if p.name != ".store")
    assert names[0] == "a_b_c_d" and names[1].startswith("a_b_c_e.partial-") and len(names) == 2
    stamp = (banks / "a_b_c_d" / "manifest.json").stat().st_mtime_ns
    result = import_original(sets, banks, layout=LAYOUT, quiet=True)
    assert result.skipped == ["a_b_c_d"] and result.imported == ["a_b_c_e", "a_b_c_f"]
    assert (banks / "a_b_c_d" / "manifest.json").stat().st_mtime_ns == stamp  # not redone
    assert sorted(p.name for p in banks.iterdir() if p.name != ".store") == ["a_b_c_d", "a_b_c_e", "a_b_c_f"]  # no partial left
    for i, name in enumerate(["a_b_c_d", "a_b_c_e", "a_b_c_f"]):
        assert open_bank(banks / name, verify=True).samples[0, 0, 8, 0, 0] == note_value(0) + i
    os.utime(sets / "a_b_c_e.bin")  # a changed source is not taken for the bank imported from it
    with pytest.raises(NsynthError, match="a_b_c_e: already exists and is not an import of a_b_c_e.bin"):
        import_original(sets, banks, layout=LAYOUT, quiet=True)


def test_it_streams_a_few_notes_at_a_time(tmp_path, monkeypatch):
    layout = Layout(grid=5, pitches=(36, 48, 60, 72), note_length=6000)
    src = write_sound_file(tmp_path / "a_b_c_d.bin", layout)
    peaks = []

    class Writer(original.BankWriter):
        def close(self, **kw):  # the streaming is over: what did it hold at most? (closing hashes in chunks)
            peaks.append(tracemalloc.get_traced_memory()[1])
            return super().close(**kw)

    monkeypatch.setattr(original, "BankWriter", Writer)
    tracemalloc.start()
    try:
        import_original(src, tmp_path / "banks", layout=layout, quiet=True)
    finally:
        tracemalloc.stop()
    # the file holds 100 notes; the import holds one, and the loop search's float copies of it (20 to 40 int16
    # notes' worth)
    assert len(peaks) == 1 and peaks[0] < 48 * layout.note_bytes, peaks
    assert open_bank(tmp_path / "banks" / "a_b_c_d", verify=True).samples.nbytes > 2 * peaks[0]


def test_cli_imports_with_progress_and_the_original_settings(tmp_path, capsys):
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"nsynth": {"resolution": 3, "pitches": [48, 60], "length": 1000,
                                               "sampleRate": 16000}}))
    layout = Layout(grid=3, pitches=(48, 60), note_length=1000)
    write_sound_file(tmp_path / "w_x_y_z.bin", layout)
    assert main(["bank", "import-original", str(tmp_path / "w_x_y_z.bin"), "-o", str(tmp_path / "banks"),
                 "--settings", str(settings)]) == 0
    cap = capsys.readouterr()
    assert f"imported {tmp_path / 'banks' / 'w_x_y_z'}" in cap.out
    assert "import-original: 18/18 notes" in cap.err and "ETA" in cap.err
    bank = open_bank(tmp_path / "banks" / "w_x_y_z", verify=True)
    assert bank.info.grid == 3 and bank.info.pitches == (48, 60)
    assert main(["bank", "import-original", str(tmp_path / "w_x_y_z.bin"), "-o", str(tmp_path / "banks")]) == 1
    assert "w_x_y_z.bin: 36000 bytes is not a whole number of notes" in capsys.readouterr().err
