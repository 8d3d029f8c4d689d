"""Renders with the real FluidSynth and the real TimGM6mb SoundFont."""
import json
import re

import numpy as np
import pytest

from nsynth.cli import main
from nsynth.errors import NsynthError
from precompute.datasets import gm
from precompute.datasets.fluid import DEFAULT_SOUNDFONT, HOLD, NoteRenderer
from precompute.datasets.nsynth import NOTE_LENGTH, SAMPLE_RATE, load_examples, read_note
from precompute.datasets.soundfont import render_soundfont_dataset

# Piano, violin, oboe; TimGM6mb's oboe (68) has no sample for MIDI 21: those renders are silent.
PROGRAMS = [(0, 0), (0, 40), (0, 68)]
PITCHES = [21, 60]
VELOCITIES = [25, 127]
NOTE_RE = re.compile(r"^(keyboard|string|reed)_synthetic_\d{3}-\d{3}-\d{3}$")


def render(out, **kw):
    args = dict(programs=PROGRAMS, pitches=PITCHES, velocities=VELOCITIES, valid_fraction=0.3, seed=0,
                jobs=1, progress=False)
    args.update(kw)
    return render_soundfont_dataset(DEFAULT_SOUNDFONT, out, **args)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("sf")
    return out, render(out)


def wavs(out):
    return {p.relative_to(out): p.read_bytes() for p in sorted(out.glob("*/audio/*.wav"))}


def test_layout_naming_and_split(rendered):
    out, summary = rendered
    assert summary.rendered == 10 and summary.silent == 2 and summary.kept == 0
    assert summary.missing_presets == []
    train, valid = load_examples(out / "train"), load_examples(out / "valid")
    assert len(train) + len(valid) == 10 and train and valid
    assert not {n.instrument_str for n in train} & {n.instrument_str for n in valid}
    names = {n.note_str for n in train + valid}
    assert all(NOTE_RE.match(k) for k in names)
    assert "keyboard_synthetic_000-060-127" in names and "string_synthetic_040-021-025" in names
    assert not {"reed_synthetic_068-021-025", "reed_synthetic_068-021-127"} & names
    rec = json.loads((out / "train" / "examples.json").read_text()) | json.loads(
        (out / "valid" / "examples.json").read_text())
    r = rec["reed_synthetic_068-060-025"]
    assert (r["pitch"], r["velocity"], r["instrument_family_str"], r["instrument_source_str"], r["sample_rate"]) == (
        60, 25, "reed", "synthetic", SAMPLE_RATE)
    silent = json.loads((out / "render.json").read_text())["silent"]
    assert silent == ["reed_synthetic_068-021-025", "reed_synthetic_068-021-127"]


def test_notes_are_held_then_released(rendered):
    out, _ = rendered
    notes = {n.note_str: n for n in load_examples(out / "train") + load_examples(out / "valid")}
    for key in ("keyboard_synthetic_000-060-127", "string_synthetic_040-060-127"):
        a = read_note(notes[key])
        assert a.shape == (NOTE_LENGTH,) and np.abs(a).max() < 1.0
        rms = lambda x: float(np.sqrt(np.mean(x ** 2)))
        assert rms(a[:SAMPLE_RATE // 10]) > 1e-2                       # sounds from the start
        assert rms(a[-SAMPLE_RATE // 4:]) < 0.1 * rms(a[HOLD - SAMPLE_RATE // 4:HOLD])  # released at 3 s
    loud = read_note(notes["keyboard_synthetic_000-060-127"])
    soft = read_note(notes["keyboard_synthetic_000-060-025"])
    assert np.abs(soft).max() < 0.5 * np.abs(loud).max()


def test_rerun_renders_only_the_missing_note(rendered, tmp_path):
    out, _ = rendered
    before = wavs(out)
    victim = next(iter(before))
    mtimes = {p: (out / p).stat().st_mtime_ns for p in before if p != victim}
    (out / victim).unlink()
    summary = render(out)
    assert (summary.rendered, summary.kept, summary.silent) == (1, 9, 2)
    assert wavs(out) == before  # the same bytes: rendering is deterministic
    assert {p: (out / p).stat().st_mtime_ns for p in mtimes} == mtimes
    again = render(out)
    assert (again.rendered, again.kept) == (0, 10)


def test_instrument_changing_side_is_moved_not_rerendered(tmp_path):
    # seed 0, fraction 0.1: neither program 1 nor 2 hashes into valid, so the guard puts 1 there;
    # program 6 does hash into valid, so once it joins, program 1 goes back to train.
    kw = dict(pitches=[60], velocities=[100], valid_fraction=0.1)
    render(tmp_path, programs=[(0, 1), (0, 2)], **kw)
    assert [n.instrument_str for n in load_examples(tmp_path / "valid")] == ["keyboard_synthetic_001"]
    before = (tmp_path / "valid/audio/keyboard_synthetic_001-060-100.wav").read_bytes()
    (tmp_path / "valid/audio/.keyboard_synthetic_001-060-100.wav.99.tmp").write_bytes(b"half a file")
    summary = render(tmp_path, programs=[(0, 1), (0, 2), (0, 6)], **kw)
    assert (summary.moved, summary.rendered, summary.kept) == (1, 1, 2)
    assert [n.instrument_str for n in load_examples(tmp_path / "valid")] == ["keyboard_synthetic_006"]
    assert (tmp_path / "train/audio/keyboard_synthetic_001-060-100.wav").read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "valid/audio").iterdir()) == ["keyboard_synthetic_006-060-100.wav"]


def test_interrupted_run_keeps_what_it_wrote(tmp_path, monkeypatch):
    import precompute.datasets.soundfont as mod
    real, calls = mod.write_note, []

    def write_then_interrupt(path, audio):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(path)
        real(path, audio)

    monkeypatch.setattr(mod, "write_note", write_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        render(tmp_path, programs=[(0, 0)])
    assert len(load_examples(tmp_path / "train")) + len(load_examples(tmp_path / "valid")) == 3
    monkeypatch.setattr(mod, "write_note", real)
    summary = render(tmp_path, programs=[(0, 0)])
    assert (summary.rendered, summary.kept) == (1, 3)


def test_two_workers_match_one(rendered, tmp_path):
    out, _ = rendered
    summary = render(tmp_path, jobs=2)
    assert summary.rendered == 10
    assert wavs(tmp_path) == wavs(out)


def test_other_settings_refused(rendered):
    out, _ = rendered
    with pytest.raises(NsynthError, match="render.json.*other settings.*gain"):
        render(out, gain=0.5)


def test_missing_soundfont(tmp_path):
    with pytest.raises(NsynthError, match="nope.sf2: SoundFont not found"):
        render_soundfont_dataset(tmp_path / "nope.sf2", tmp_path / "o", programs=[(0, 0)], progress=False)


def test_not_a_soundfont(tmp_path):
    bad = tmp_path / "bad.sf2"
    bad.write_bytes(b"RIFF0000sfbkjunk")
    with pytest.raises(NsynthError, match="bad.sf2: FluidSynth could not load it"):
        render_soundfont_dataset(bad, tmp_path / "o", programs=[(0, 0)], progress=False)


def test_absent_presets_skipped_with_count(tmp_path):
    summary = render(tmp_path, programs=[(0, 0), (5, 3)], pitches=[60], velocities=[100])
    assert summary.missing_presets == [(5, 3)] and summary.rendered == 1
    assert "skipped 1 programs absent" in summary.report()
    with pytest.raises(NsynthError, match="none of the requested programs"):
        render(tmp_path / "b", programs=[(5, 3)])


def test_renderer_is_deterministic_across_history():
    a, b = NoteRenderer(), NoteRenderer()
    notes = [(0, p, k, v) for p in (0, 48, 80) for k in (40, 72) for v in (25, 127)]
    first = [a.render(*n) for n in notes]
    second = [b.render(*n) for n in reversed(notes)][::-1]
    for x, y in zip(first, second):
        np.testing.assert_array_equal(x, y)


def test_gm_names():
    assert gm.gm_instrument_str(0, 0) == "keyboard_synthetic_000"
    assert gm.gm_instrument_str(0, 40) == "string_synthetic_040"
    assert gm.gm_instrument_str(128, 0) == "mallet_synthetic_16384"
    assert [gm.family(0, p) for p in (8, 19, 21, 26, 33, 47, 53, 57, 66, 73, 81, 105, 115)] == [
        "mallet", "organ", "reed", "guitar", "bass", "mallet", "vocal", "brass", "reed", "flute", "synth_lead",
        "guitar", "mallet"]
    assert gm.parse_programs("0-2, 40,128:0,0") == [(0, 0), (0, 1), (0, 2), (0, 40), (128, 0)]
    for bad in ("x", "0-200", ""):
        with pytest.raises(ValueError):
            gm.parse_programs(bad)


def test_parse_ints():
    from precompute.datasets.soundfont import parse_ints
    assert parse_ints("21-23,30, 24-84:20", "pitches") == [21, 22, 23, 30, 24, 44, 64, 84]
    with pytest.raises(NsynthError, match="bad pitches 'a-b'"):
        parse_ints("a-b", "pitches")


def test_cli(tmp_path, capsys):
    code = main(["dataset", "soundfont", str(DEFAULT_SOUNDFONT), "-o", str(tmp_path), "--programs", "0,24",
                 "--pitches", "60-61", "--velocities", "100", "-q", "-j", "1"])
    assert code == 0
    assert "rendered 4" in capsys.readouterr().out
    assert len(list(tmp_path.glob("*/audio/*.wav"))) == 4
    assert main(["dataset", "soundfont", "-o", str(tmp_path), "--programs", "zz"]) == 1
    assert "--programs: bad program 'zz'" in capsys.readouterr().err
