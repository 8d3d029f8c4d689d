import json

import numpy as np
import pytest
import soundfile as sf

from nsynth.errors import NsynthError
from precompute.datasets.nsynth import (NOTE_LENGTH, SAMPLE_RATE, Note, instrument_str, load_examples, note_str,
                                        read_note, write_note)

def test_naming_follows_nsynth():
    assert instrument_str("keyboard", "acoustic", 4) == "keyboard_acoustic_004"
    assert note_str("keyboard_acoustic_004", 21, 25) == "keyboard_acoustic_004-021-025"


def test_load_all_and_read(dataset, tone):
    notes = load_examples(dataset)
    assert len(notes) == 12
    n = notes[0]
    assert isinstance(n, Note) and n.path == dataset / "audio" / f"{n.note_str}.wav"
    audio = read_note(n)
    assert audio.dtype == np.float32 and audio.shape == (NOTE_LENGTH,)
    np.testing.assert_allclose(audio, tone(n.pitch, n.velocity), atol=1 / 32768 + 1e-6)
    np.testing.assert_array_equal(read_note(n.path), audio)
    json.loads((dataset / "examples.json").read_text())  # valid JSON as NSynth writes it


@pytest.mark.parametrize("kwargs, count", [
    ({"families": ["keyboard"]}, 8),
    ({"sources": ["acoustic"]}, 8),
    ({"families": ["keyboard"], "sources": ["acoustic"]}, 4),
    ({"pitches": range(61, 70)}, 6),
    ({"velocities": [127]}, 6),
    ({"instruments": ["string_acoustic_003"], "pitches": [60], "velocities": [25]}, 1),
    ({"families": ["bass"]}, 0),
])
def test_filters(dataset, kwargs, count):
    notes = load_examples(dataset, **kwargs)
    assert len(notes) == count
    for n in notes:
        assert n.instrument_family_str in kwargs.get("families", [n.instrument_family_str])
        assert n.instrument_source_str in kwargs.get("sources", [n.instrument_source_str])
        assert n.pitch in kwargs.get("pitches", [n.pitch])
        assert n.velocity in kwargs.get("velocities", [n.velocity])


def test_unknown_family_refused(dataset):
    with pytest.raises(NsynthError, match="unknown instrument family"):
        load_examples(dataset, families=["kazoo"])


def test_missing_examples_json(tmp_path):
    with pytest.raises(NsynthError, match="examples.json: missing"):
        load_examples(tmp_path)


def test_malformed_examples_json(tmp_path):
    (tmp_path / "examples.json").write_text("{not json")
    with pytest.raises(NsynthError, match="not valid JSON"):
        load_examples(tmp_path)


def test_missing_audio_named(dataset):
    victim = dataset / "audio" / "keyboard_synthetic_002-064-127.wav"
    victim.unlink()
    with pytest.raises(NsynthError, match="keyboard_synthetic_002-064-127.wav: missing audio"):
        load_examples(dataset)
    assert len(load_examples(dataset, velocities=[25])) == 6  # filtered out: no error
    with pytest.raises(NsynthError, match="missing audio"):
        read_note(victim)


def test_broken_wav(tmp_path):
    path = tmp_path / "broken.wav"
    path.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunk")
    with pytest.raises(NsynthError, match="broken.wav: not a readable audio file"):
        read_note(path)


def test_wrong_rate(tmp_path, tone):
    path = tmp_path / "rate.wav"
    sf.write(path, tone(60, 100), 22050, subtype="PCM_16")
    with pytest.raises(NsynthError, match="rate.wav: sample rate 22050 Hz, expected 16000"):
        read_note(path)


def test_wrong_length(tmp_path, tone):
    path = tmp_path / "short.wav"
    sf.write(path, tone(60, 100, 63999), SAMPLE_RATE, subtype="PCM_16")
    with pytest.raises(NsynthError, match="short.wav: 63999 samples, expected 64000"):
        read_note(path)


def test_stereo_refused(tmp_path, tone):
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([tone(60, 100)] * 2, axis=1), SAMPLE_RATE, subtype="PCM_16")
    with pytest.raises(NsynthError, match="stereo.wav: 2 channels, expected mono"):
        read_note(path)


def test_write_note_is_16bit_and_leaves_no_temp(tmp_path, tone):
    path = tmp_path / "a" / "n.wav"
    write_note(path, tone(60, 127) * 3)  # over full scale: clipped, not wrapped
    info = sf.info(path)
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (SAMPLE_RATE, 1, NOTE_LENGTH, "PCM_16")
    assert np.abs(read_note(path)).max() <= 1.0
    assert [p.name for p in path.parent.iterdir()] == ["n.wav"]
