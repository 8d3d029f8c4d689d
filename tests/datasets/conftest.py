import numpy as np
import pytest

from precompute.datasets.nsynth import (NOTE_LENGTH, SAMPLE_RATE, example_entry, instrument_str, note_str,
                                        write_examples_json, write_note)

INSTRUMENTS = [("keyboard", "acoustic", 1), ("keyboard", "synthetic", 2), ("string", "acoustic", 3)]


def tone(pitch, velocity, n=NOTE_LENGTH, rate=SAMPLE_RATE):
    """A decaying sine at the pitch's frequency, amplitude growing with velocity."""
    t = np.arange(n) / rate
    amp = velocity / 127 * 0.5 * np.exp(-t)
    return (amp * np.sin(2 * np.pi * 440 * 2 ** ((pitch - 69) / 12) * t)).astype(np.float32)


@pytest.fixture(name="tone")
def tone_fixture():
    return tone


def write_dataset(root, instruments=INSTRUMENTS):
    """An NSynth json/wav root at `root`: the instruments x pitches 60, 64 x velocities 25, 127."""
    examples = {}
    for fam, src, idx in instruments:
        inst = instrument_str(fam, src, idx)
        for pitch in (60, 64):
            for vel in (25, 127):
                key = note_str(inst, pitch, vel)
                examples[key] = example_entry(key, inst, fam, src, idx, pitch, vel)
                write_note(root / "audio" / f"{key}.wav", tone(pitch, vel))
    write_examples_json(root, examples)
    return root


@pytest.fixture(name="write_dataset")
def write_dataset_fixture():
    return write_dataset


@pytest.fixture
def dataset(tmp_path):
    """A small NSynth json/wav root: 3 instruments x pitches 60, 64 x velocities 25, 127."""
    return write_dataset(tmp_path)
