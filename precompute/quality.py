"""Reconstruction quality: pitch accuracy (YIN) and multi-resolution log-spectral distance, with baselines."""
from __future__ import annotations

import numpy as np

FFTS = (2048, 1024, 512, 256)


def _stft_mag(x: np.ndarray, n_fft: int) -> np.ndarray:
    hop = n_fft // 4
    if len(x) < n_fft:
        x = np.pad(x, (0, n_fft - len(x)))
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop]
    return np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=-1))


def log_spectral_distance(ref: np.ndarray, est: np.ndarray, ffts=FFTS, range_db: float = 60.0) -> float:
    """Mean over resolutions of the mean |ln|R| - ln|E|| over time-frequency bins, both magnitudes floored at
    range_db below the reference's peak (so inaudible differences in empty bins do not dominate); 0 if identical."""
    n = min(len(ref), len(est))
    out = []
    for f in ffts:
        r, e = _stft_mag(ref[:n], f), _stft_mag(est[:n], f)
        floor = max(r.max(), 1e-9) * 10 ** (-range_db / 20)
        out.append(np.mean(np.abs(np.log(np.maximum(r, floor)) - np.log(np.maximum(e, floor)))))
    return float(np.mean(out))


def estimate_f0(audio: np.ndarray, sample_rate: int = 16000, fmin: float = 25.0, fmax: float = 2100.0) -> float:
    """Median YIN fundamental (librosa) over the frames that carry energy; nan when the note is silent."""
    import librosa

    frame = 2048
    if len(audio) < frame or np.max(np.abs(audio)) < 1e-4:
        return float("nan")
    f0 = librosa.yin(audio.astype(np.float32), fmin=fmin, fmax=fmax, sr=sample_rate, frame_length=frame)
    rms = librosa.feature.rms(y=audio, frame_length=frame, hop_length=frame // 4)[0][: len(f0)]
    loud = rms > 0.1 * rms.max()
    return float(np.median(f0[: len(rms)][loud])) if loud.any() else float("nan")


def cents_off(f0: float, midi_pitch: int) -> float:
    return float(1200 * np.log2(f0 / (440.0 * 2 ** ((midi_pitch - 69) / 12)))) if f0 > 0 else float("inf")


def noise_baseline(note: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """White noise over the whole note at the note's RMS loudness."""
    rms = np.sqrt(np.mean(note ** 2))
    return (rng.standard_normal(len(note)) * rms).astype(np.float32)


def sine_baseline(note: np.ndarray, midi_pitch: int, sample_rate: int = 16000) -> np.ndarray:
    """A sine at the note's pitch, at the note's RMS loudness."""
    rms = np.sqrt(np.mean(note ** 2))
    t = np.arange(len(note)) / sample_rate
    return (np.sqrt(2) * rms * np.sin(2 * np.pi * 440.0 * 2 ** ((midi_pitch - 69) / 12) * t)).astype(np.float32)
