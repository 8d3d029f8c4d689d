"""Test inputs: synthesized notes."""
import numpy as np


def synth_note(pitch: int = 60, seconds: float = 1.0, sample_rate: int = 16000) -> np.ndarray:
    """A plucked harmonic tone."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = 440.0 * 2 ** ((pitch - 69) / 12)
    tone = sum(np.sin(2 * np.pi * k * f0 * t) / k * np.exp(-t * (1.5 + k)) for k in range(1, 8) if k * f0 < 7500)
    tone *= np.minimum(t / 0.005, 1.0)
    return (0.5 * tone / np.abs(tone).max()).astype(np.float32)
