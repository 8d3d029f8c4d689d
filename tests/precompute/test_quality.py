import numpy as np
import pytest

from precompute.quality import (cents_off, estimate_f0, log_spectral_distance, noise_baseline, sine_baseline)


def _tone(pitch, seconds=1.0, sr=16000):
    t = np.arange(int(seconds * sr)) / sr
    f = 440.0 * 2 ** ((pitch - 69) / 12)
    return (0.3 * np.sin(2 * np.pi * f * t) + 0.1 * np.sin(4 * np.pi * f * t)).astype(np.float32)


@pytest.mark.parametrize("pitch", [36, 60, 84])
def test_yin_finds_the_pitch(pitch):
    assert abs(cents_off(estimate_f0(_tone(pitch)), pitch)) < 20
    assert abs(cents_off(estimate_f0(_tone(pitch + 1)), pitch)) > 50  # a semitone off is caught


def test_silence_has_no_pitch():
    assert np.isnan(estimate_f0(np.zeros(16000, np.float32)))


def test_spectral_distance_orders_signals():
    note = _tone(60)
    rng = np.random.default_rng(0)
    assert log_spectral_distance(note, note) == 0.0
    near = log_spectral_distance(note, note + 0.001 * rng.standard_normal(len(note)).astype(np.float32))
    sine = log_spectral_distance(note, sine_baseline(note, 60))
    noise = log_spectral_distance(note, noise_baseline(note, rng))
    assert near < sine < noise


def test_baselines_match_loudness():
    note = _tone(48)
    rms = np.sqrt(np.mean(note ** 2))
    for b in (sine_baseline(note, 48), noise_baseline(note, np.random.default_rng(1))):
        assert np.sqrt(np.mean(b ** 2)) == pytest.approx(rms, rel=0.05)
