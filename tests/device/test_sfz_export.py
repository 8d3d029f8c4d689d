"""`nsynth bank export-sfz`: the .sfz, read by a real SFZ parser (sfzlint) and by the SFZ rules written out here
(not the writer's), gives every note the engine's weights; sfizz, a real player, plays it like the engine."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from sfzlint.parser import validate

from device import sfz as sfz_mod
from device.bank import open_bank
from nsynth.cli import main
from nsynth.errors import NsynthError
from device.sfz import SfzOptions, export_sfz
from testkit.sfz_player import bilinear_weights, compare
from synth_banks import write_bank

PITCHES, VELOCITIES, GRID = (46, 60, 74), (40, 90, 127), 9  # no note an octave of another


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    path = tmp_path_factory.mktemp("sfz") / "tl_tr_bl_br"
    write_bank(path, grid=GRID, pitches=PITCHES, velocities=VELOCITIES, note_length=2000)
    return open_bank(path)


def parse(path: Path) -> tuple[list[dict], list[str]]:
    """Regions with what they inherit from <global> and <group> (SFZ's rule), and sfzlint's complaints."""
    errors = []
    doc = validate(path, err_cb=lambda sev, msg, token, fn: errors.append(f"{sev} {msg}"),
                   config={"rel_path": path.parent, "file_name": str(path)})
    regions, inherited = [], {"global": {}, "group": {}}
    for header in doc.headers:
        ops = {str(k): v.value for k, v in header.items()}
        if header.token == "global":
            inherited = {"global": ops, "group": {}}
        elif header.token == "group":
            inherited["group"] = ops
        elif header.token == "region":
            regions.append({**inherited["global"], **inherited["group"], **ops})
    return regions, errors


def fade_in(v: float, lo: float, hi: float) -> float:
    """SFZ xfin_lo/hi with a gain curve: 0 at or below lo, 1 at or above hi, linear between."""
    return 0.0 if v <= lo else 1.0 if v >= hi else (v - lo) / (hi - lo)


def starts(r: dict, key: int, vel: int, ccs: dict[int, float]) -> bool:
    """Whether a note-on starts region r (its key, velocity and CC ranges hold the note's)."""
    return (r.get("lokey", 0) <= key <= r.get("hikey", 127) and r.get("lovel", 0) <= vel <= r.get("hivel", 127)
            and all(r.get(f"locc{cc}", 0) <= v <= r.get(f"hicc{cc}", 127) for cc, v in ccs.items()))


def gain(r: dict, key: int, vel: int, ccs: dict[int, float]) -> float:
    """What a player that multiplies its crossfades gives region r (0 when the note does not start it)."""
    if not starts(r, key, vel, ccs):
        return 0.0
    assert r["xf_cccurve"] == "gain" and r["xf_velcurve"] == "gain"
    g = 1.0
    for suffix, v in [("vel", vel)] + [(f"cc{cc}", v) for cc, v in ccs.items()]:
        if f"xfin_lo{suffix}" in r:
            g *= fade_in(v, r[f"xfin_lo{suffix}"], r[f"xfin_hi{suffix}"])
        if f"xfout_lo{suffix}" in r:
            g *= 1.0 - fade_in(v, r[f"xfout_lo{suffix}"], r[f"xfout_hi{suffix}"])
    return g


def notes_of(regions: list[dict], folder: Path, bank) -> list[tuple[int, int, int, int]]:
    """Which bank note each region's WAV holds, found by its samples (not by its name)."""
    index = {bank.samples[p, v, y, x].tobytes(): (p, v, y, x) for p in range(len(PITCHES))
             for v in range(len(VELOCITIES)) for y in range(GRID) for x in range(GRID)}
    out = []
    for r in regions:
        audio, rate = sf.read(folder / r["sample"], dtype="int16")
        assert rate == 16000
        out.append(index[audio.tobytes()])
    return out


def weights(regions, notes, key, vel, ccs) -> dict[tuple[int, int, int, int], float]:
    w: dict = {}
    for r, note in zip(regions, notes):
        g = gain(r, key, vel, ccs)
        if g:
            w[note] = w.get(note, 0.0) + g
    return w


def nearest_pitch(key: int) -> int:
    """The engine's rule: the nearest rendered pitch, the lower on a tie."""
    return min(range(len(PITCHES)), key=lambda i: (abs(key - PITCHES[i]), i))


def layer_weights(vel: int) -> dict[int, float]:
    """The engine's rule: the two nearest layers, crossfaded linearly; the outermost layer beyond the ends."""
    if vel <= VELOCITIES[0]:
        return {0: 1.0}
    if vel >= VELOCITIES[-1]:
        return {len(VELOCITIES) - 1: 1.0}
    hi = next(i for i, v in enumerate(VELOCITIES) if v >= vel)
    t = (vel - VELOCITIES[hi - 1]) / (VELOCITIES[hi] - VELOCITIES[hi - 1])
    return {i: w for i, w in ((hi - 1, 1 - t), (hi, t)) if w}


def xy_of(w: dict, p: int, v: int) -> dict[tuple[int, int], float]:
    return {(x, y): g for (pp, vv, y, x), g in w.items() if (pp, vv) == (p, v)}


@pytest.fixture(scope="module")
def exported(bank, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    sfz = export_sfz(bank.path, out, quiet=True)
    regions, errors = parse(sfz)
    return regions, errors, notes_of(regions, out, bank)


def test_it_lints_clean_and_every_region_is_its_note(bank, exported):
    regions, errors, notes = exported
    assert errors == []
    assert len(regions) == len(PITCHES) * len(VELOCITIES) * GRID * GRID and len(set(notes)) == len(regions)
    for r, (p, v, y, x) in zip(regions, notes):
        assert r["pitch_keycenter"] == PITCHES[p]
        assert r["loop_mode"] == "loop_continuous"
        assert (r["loop_start"], r["loop_end"] + 1) == tuple(bank.loops[p, v, y, x])  # SFZ's end is inclusive


def test_keys_and_velocities_pick_the_engines_pitch_and_layers(exported):
    regions, _, notes = exported
    for key in range(128):
        for vel in (1, 20, 40, 41, 65, 89, 90, 100, 126, 127):
            w = weights(regions, notes, key, vel, {16: 0, 17: 127})  # the top-left cell alone
            expected = {(nearest_pitch(key), v, GRID - 1, 0): g for v, g in layer_weights(vel).items()}
            assert w.keys() == expected.keys(), (key, vel)
            for note, g in expected.items():
                assert w[note] == pytest.approx(g, abs=1e-12)


def test_x_and_y_ccs_play_the_engines_bilinear_weights(exported):
    regions, _, notes = exported
    points = [round(127 * j / (GRID - 1)) for j in range(GRID)]  # grid points on whole CC values
    ccs = sorted(set(range(0, 128, 7)) | set(points) | {p + 1 for p in points[:-1]} | {127})
    step = 127 / (GRID - 1)
    for cx in ccs:
        for cy in ccs:
            w = xy_of(weights(regions, notes, 60, 127, {16: cx, 17: cy}), 1, 2)
            assert sum(w.values()) == pytest.approx(1.0, abs=1e-12)
            # the grid position a CC value stands for: linear between the rounded grid points
            pos = [np.interp(c, points, range(GRID)) / (GRID - 1) for c in (cx, cy)]
            expected = {c: g for c, g in bilinear_weights(pos[0], pos[1], GRID).items() if g > 1e-7}
            assert w.keys() == expected.keys(), (cx, cy)
            for cell, g in expected.items():
                assert w[cell] == pytest.approx(g, abs=1e-6), (cx, cy, cell)
            if cx in points and cy in points:  # a grid point: its cell alone
                assert w == {(points.index(cx), points.index(cy)): 1.0}
            engine = bilinear_weights(cx / 127, cy / 127, GRID)  # at most half a CC step away from the engine
            for cell, g in w.items():
                assert abs(g - engine.get(cell, 0.0)) <= 2 * 0.5 / step + 1e-6


def test_exact_cc_gives_the_engines_weights_at_every_cc_value(bank, tmp_path):
    sfz = export_sfz(bank.path, tmp_path, options=SfzOptions(exact_cc=True, x_cc=20, y_cc=21), quiet=True)
    regions, errors = parse(sfz)
    assert errors and all("expected integer" in e and "cc" in e.lower() for e in errors)  # fractions, not spec
    notes = notes_of(regions, tmp_path, bank)
    for cx in range(128):
        for cy in (0, 17, 63, 64, 100, 127):
            w = xy_of(weights(regions, notes, 59, 90, {20: cx, 21: cy}), 1, 1)
            engine = {c: g for c, g in bilinear_weights(cx / 127, cy / 127, GRID).items() if g > 1e-6}
            assert w.keys() == engine.keys()
            for cell, g in engine.items():
                assert w[cell] == pytest.approx(g, abs=1e-5)


def test_reach_starts_the_cells_around_the_square(bank, tmp_path):
    regions, _ = parse(export_sfz(bank.path, tmp_path, options=SfzOptions(reach=1), quiet=True))
    started = [r for r in regions if starts(r, 60, 127, {16: 40, 17: 40})]
    assert len(started) == 16  # (2 + 2) ** 2 cells, 4 of them with a weight
    assert sum(gain(r, 60, 127, {16: 40, 17: 40}) > 0 for r in started) == 4


def test_sfizz_plays_the_export_as_the_engine_plays_the_bank(bank, tmp_path):
    """A real SFZ player (sfizz, the pysfizz wheel) and `nsynth render-midi` on the same MIDI file: each
    stream's weight read off its own harmonic."""
    import pysfizz

    player = pysfizz.Synth()
    assert player.load_sfz_file(export_sfz(bank.path, tmp_path / "plain", quiet=True))  # the default export
    assert player._synth.get_num_regions() == len(PITCHES) * len(VELOCITIES) * GRID * GRID
    result = compare(tmp_path / "harmonics")
    assert result["engine_vs_bilinear_max_diff"] < 0.002
    # sfizz ends a crossfade whose upper bound is 127 at 126 (the top velocity span here): 1/63 at most
    assert result["sfizz_vs_bilinear_max_diff"] < 1 / 63 + 0.003
    assert result["engine_vs_sfizz_max_weight_diff"] < 1 / 63 + 0.003


def test_an_export_replaces_only_its_own_files_and_a_failed_one_changes_nothing(bank, tmp_path, monkeypatch):
    (tmp_path / "keep.txt").write_text("the user's")
    stale = tmp_path / "inst_samples.partial-999999999"
    stale.mkdir()
    sfz = export_sfz(bank.path, tmp_path, name="inst", quiet=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inst.sfz", "inst_samples", "keep.txt"]
    before = sfz.read_bytes()
    calls = []

    def failing(path, audio, rate):
        calls.append(path)
        if len(calls) == 100:
            raise OSError(28, "No space left on device")
        return real(path, audio, rate)

    real = sfz_mod._write_wav
    monkeypatch.setattr(sfz_mod, "_write_wav", failing)
    with pytest.raises(NsynthError, match=r"p0\d\d_v\d\d\d_x\d_y\d\.wav: cannot write: .*No space left"):
        export_sfz(bank.path, tmp_path, name="inst", quiet=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inst.sfz", "inst_samples", "keep.txt"]
    assert sfz.read_bytes() == before and len(os.listdir(tmp_path / "inst_samples")) == 3 * 3 * 81


def test_cli(bank, tmp_path, capsys):
    assert main(["bank", "export-sfz", str(bank.path), "-o", str(tmp_path), "-q"]) == 0
    assert f"wrote {tmp_path / 'tl_tr_bl_br.sfz'}" in capsys.readouterr().out
    assert main(["bank", "export-sfz", str(bank.path), "-o", str(tmp_path), "--x-cc", "64"]) == 1
    assert "CC 64 is reserved" in capsys.readouterr().err
    assert main(["bank", "export-sfz", str(bank.path), "-o", str(tmp_path), "--y-cc", "16"]) == 1
    assert "two different CCs" in capsys.readouterr().err
    assert main(["bank", "export-sfz", str(tmp_path / "nope"), "-o", str(tmp_path)]) == 1
    assert f"{tmp_path / 'nope'}: not a bank directory" in capsys.readouterr().err
