import logging

import numpy as np
import pytest
import soundfile as sf

from nsynth.errors import NsynthError
from precompute.corners import Fill, check_compatible, load_corner, load_corners, plan_fills
from precompute.datasets.fluid import DEFAULT_SOUNDFONT, NoteRenderer

RATE = 16000


def dominant_hz(x, rate=RATE):
    spec = np.abs(np.fft.rfft(x[: rate]))
    return np.argmax(spec) * rate / (2 * (len(spec) - 1))


def write(path, audio, rate, subtype="PCM_16"):
    sf.write(path, audio, rate, subtype=subtype)
    return path


@pytest.fixture
def folder(tmp_path, tone):
    """'bell' at pitch 69 (44.1 kHz stereo, no velocity) and pitch 57 velocity 64 (16 kHz mono)."""
    d = tmp_path / "bell"
    d.mkdir()
    a = tone(69, 127, n=44100 * 2, rate=44100)
    write(d / "bell_69.wav", np.stack([a, a], axis=1), 44100)
    write(d / "bell_57_64.wav", tone(57, 64), RATE)
    (d / "notes.txt").write_text("ignored")
    return d


def test_folder_corner(folder, tone, caplog):
    caplog.set_level(logging.INFO, logger="precompute.corners")
    c = load_corner(str(folder), pitches=[57, 69, 81], velocities=[64, 127])
    assert c.name == "bell" and c.sample_rate == RATE
    assert c.audio.dtype == np.float32 and c.audio.shape == (3, 2, 64000)
    assert "mixing 2 channels down to mono" in caplog.text and "resampling 44100 Hz to 16000 Hz" in caplog.text
    # recorded notes: resampled/padded, otherwise unchanged
    np.testing.assert_allclose(c.audio[0, 0], tone(57, 64), atol=1e-4)
    np.testing.assert_allclose(c.audio[1, 1, 100:31900], tone(69, 127, n=32000)[100:31900], atol=1e-4)
    assert not c.audio[1, 1, 32000:].any()  # 2-s file padded with zeros
    # pitch 81 is filled from 69, an octave up: twice the frequency, half the length
    assert dominant_hz(c.audio[2, 1]) == pytest.approx(880, abs=2)
    assert not c.audio[2, 1, 16000:].any()
    fills = {(f.pitch, f.velocity): f for f in c.fill_report}
    assert set(fills) == {(57, 127), (69, 64), (81, 64), (81, 127)}
    assert fills[81, 127] == Fill(81, 127, 69, 127, 12, 1.0)
    assert fills[69, 64].semitones == 0 and fills[69, 64].gain == pytest.approx((64 / 127) ** 2)
    np.testing.assert_allclose(c.audio[1, 0], c.audio[1, 1] * (64 / 127) ** 2, atol=1e-6)
    assert (fills[57, 127].from_pitch, fills[57, 127].from_velocity) == (57, 64)
    assert "pitch 81 velocity 127 <- pitch 69 velocity 127 (+12 semitones" in str(fills[81, 127])
    assert "corner bell: 4 of 6 notes filled" in caplog.text


def test_velocity_gain_capped_below_full_scale(tmp_path, tone):
    d = tmp_path / "loud"
    d.mkdir()
    write(d / "loud_60_25.wav", tone(60, 127) * 1.9, RATE)  # peak 0.95
    c = load_corner(str(d), pitches=[60], velocities=[25, 127])
    assert 0.99 < np.abs(c.audio[0, 1]).max() < 1.0
    assert c.fill_report[0].gain < (127 / 25) ** 2


def test_cut_to_length_with_fade(tmp_path, tone):
    d = tmp_path / "long"
    d.mkdir()
    write(d / "long_60.wav", tone(60, 127, n=RATE * 5) / np.exp(-np.arange(RATE * 5) / RATE), RATE)
    c = load_corner(str(d), pitches=[60], velocities=[100], length=48000)
    assert c.audio.shape == (1, 1, 48000) and c.fill_report == []
    assert abs(c.audio[0, 0, -1]) < 1e-3 and np.abs(c.audio[0, 0, -400:-160]).max() > 0.1


def test_sample_rate_argument(folder):
    c = load_corner(str(folder), pitches=[69], velocities=[127], length=96000, sample_rate=48000)
    assert c.sample_rate == 48000 and c.audio.shape == (1, 1, 96000)
    assert dominant_hz(c.audio[0, 0], 48000) == pytest.approx(440, abs=2)


def test_sf2_corner_matches_renderer_and_fills_silent_notes():
    # TimGM6mb's oboe (program 68) does not sound MIDI 21: filled from 60
    c = load_corner(f"sf2:{DEFAULT_SOUNDFONT}:0:68", pitches=[21, 60], velocities=[100])
    r = NoteRenderer()
    np.testing.assert_array_equal(c.audio[1, 0], r.render(0, 68, 60, 100))
    assert c.fill_report == [Fill(21, 100, 60, 100, -39, 1.0)]
    assert c.name == "Oboe (Orch) (TimGM6mb 0:68)"
    default = load_corner("sf2:68", pitches=[21, 60], velocities=[100])
    np.testing.assert_array_equal(default.audio, c.audio)


def test_sf2_corner_fills_inaudible_notes():
    # TimGM6mb's whistle (78) at MIDI 108 velocity 25 peaks near -63 dBFS: below the silence threshold
    c = load_corner("sf2:78", pitches=[108], velocities=[25, 127])
    assert c.fill_report == [Fill(108, 25, 108, 127, 0, pytest.approx((25 / 127) ** 2))]


def test_nsynth_corner(dataset, tone):
    c = load_corner(f"nsynth:{dataset}:keyboard_synthetic_002", pitches=[60, 62], velocities=[127, 100])
    assert c.name == "keyboard_synthetic_002"
    np.testing.assert_allclose(c.audio[0, 0], tone(60, 127), atol=1 / 16384)
    assert [(f.pitch, f.velocity, f.from_pitch, f.from_velocity) for f in c.fill_report] == [
        (60, 100, 60, 127), (62, 127, 64, 127), (62, 100, 64, 127)]
    assert dominant_hz(c.audio[1, 0]) == pytest.approx(440 * 2 ** (-7 / 12), abs=2)


def test_nsynth_corner_from_rendered_soundfont_dataset(tmp_path):
    from precompute.datasets.soundfont import render_soundfont_dataset
    render_soundfont_dataset(DEFAULT_SOUNDFONT, tmp_path, programs=[(0, 0), (0, 40)], pitches=[60],
                             velocities=[100], valid_fraction=0.5, jobs=1, progress=False)
    for prog, inst in ((0, "keyboard_synthetic_000"), (40, "string_synthetic_040")):
        c = load_corner(f"nsynth:{tmp_path}:{inst}", pitches=[60], velocities=[100])
        np.testing.assert_allclose(c.audio[0, 0], NoteRenderer().render(0, prog, 60, 100), atol=1 / 32768)


def test_plan_prefers_nearest_pitch_then_higher():
    plan = plan_fills([(60, 100), (64, 50), (64, 127)], [62, 63, 66], [100])
    assert plan == {(62, 100): (64, 127), (63, 100): (64, 127), (66, 100): (64, 127)}
    assert plan_fills([(60, 100), (64, 50)], [61], [50]) == {(61, 50): (60, 100)}


@pytest.mark.parametrize("make, message", [
    (lambda d: write(d / "x_60.wav", np.zeros(RATE, np.float32), RATE), "x_60.wav: silent"),
    (lambda d: write(d / "x_60.wav", np.sign(np.sin(np.arange(RATE) / 20)).astype(np.float32), RATE),
     "x_60.wav: clipped"),
    (lambda d: write(d / "x_60.wav", np.full(RATE, np.nan, np.float32), RATE, "FLOAT"), "x_60.wav: holds NaN"),
    (lambda d: write(d / "x_60.wav", np.full(RATE // 5, 0.1, np.float32), RATE), "x_60.wav: too short"),
    (lambda d: (d / "x_60.wav").write_bytes(b"RIFFjunk"), "x_60.wav: not a readable audio file"),
    (lambda d: [write(d / f"{n}_60.wav", np.full(RATE, 0.1, np.float32), RATE) for n in "ab"],
     "more than one instrument"),
    (lambda d: [write(d / n, np.full(RATE, 0.1, np.float32), RATE) for n in ("x_60.wav", "x_60_127.wav")],
     "x_60_127.wav: pitch 60 velocity 127 also given by"),
    (lambda d: write(d / "x_160.wav", np.full(RATE, 0.1, np.float32), RATE), "outside MIDI range"),
    (lambda d: None, "no WAVs named"),
])
def test_folder_refusals(tmp_path, make, message):
    d = tmp_path / "c"
    d.mkdir()
    make(d)
    with pytest.raises(NsynthError, match=message):
        load_corner(str(d), pitches=[60], velocities=[127])


def test_short_clip_run_is_accepted(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    a = np.full(RATE, 0.2, np.float32)
    a[100:103] = 1.0  # three samples at full scale: not yet clipped
    write(d / "c_60.wav", a, RATE, "FLOAT")
    assert load_corner(str(d), pitches=[60], velocities=[127]).audio.shape == (1, 1, 64000)


@pytest.mark.parametrize("spec, message", [
    ("/no/such/folder", "not a folder"),
    ("sf2:abc", "expected sf2:"),
    ("sf2:/no/such.sf2:0", "such.sf2: SoundFont not found"),
    ("sf2:5:3", "no preset bank 5 program 3"),
    ("nsynth:", "expected nsynth:DATASET_ROOT:INSTRUMENT_STR"),
])
def test_spec_refusals(spec, message):
    with pytest.raises(NsynthError, match=message):
        load_corner(spec, pitches=[60], velocities=[127])


def test_nsynth_refusals(dataset):
    with pytest.raises(NsynthError, match="no notes of instrument 'bass_synthetic_009'"):
        load_corner(f"nsynth:{dataset}:bass_synthetic_009", pitches=[60], velocities=[127])
    (dataset / "audio" / "string_acoustic_003-060-127.wav").write_bytes(b"")
    with pytest.raises(NsynthError, match="string_acoustic_003-060-127.wav: not a readable"):
        load_corner(f"nsynth:{dataset}:string_acoustic_003", pitches=[60], velocities=[127])


def test_corners_must_agree(folder, dataset):
    a = load_corner(str(folder), pitches=[60], velocities=[127])
    b = load_corner(str(folder), pitches=[60], velocities=[127], sample_rate=22050)
    c = load_corner(str(folder), pitches=[60], velocities=[127], length=32000)
    check_compatible([a, a])
    with pytest.raises(NsynthError, match="corner 'bell' \\(22050 Hz.*does not match corner 'bell' \\(16000 Hz"):
        check_compatible([a, b])
    with pytest.raises(NsynthError, match="32000 samples"):
        check_compatible([a, c])
    both = load_corners([str(folder), f"nsynth:{dataset}:keyboard_acoustic_001"], pitches=[60], velocities=[127])
    assert [x.name for x in both] == ["bell", "keyboard_acoustic_001"]


def test_check_command(folder, dataset, capsys):
    from nsynth.cli import main
    assert main(["corners", "check", str(folder), "sf2:0", "--pitches", "57-69:12", "--velocities", "64,127",
                 "-v"]) == 0
    out = capsys.readouterr().out
    assert "bell: 2 pitches x 2 velocities, 64000 samples at 16000 Hz" in out and "2 notes filled" in out
    assert "  pitch 69 velocity 64 <- pitch 69 velocity 127 (+0 semitones, gain 0.254)" in out
    assert "Piano 1 (TimGM6mb 0:0): 2 pitches x 2 velocities" in out and "0 notes filled" in out
    (folder / "bell_60.wav").write_bytes(b"")
    assert main(["corners", "check", str(folder), "--pitches", "60"]) == 1
    assert "bell_60.wav: not a readable audio file" in capsys.readouterr().err
