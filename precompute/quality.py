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


# -- timbre of a note's sustain (bench/timbre.py) -----------------------------------------------------------------

SUSTAIN = (0.25, 1.5)      # seconds: the part of a note whose timbre is compared
MEL_BANDS, MEL_FMIN, MEL_FMAX = 64, 30.0, 8000.0
PROFILE_FFT, PROFILE_HOP = 2048, 512
PROFILE_RANGE_DB = 60.0    # both profiles floored this far below the louder one's peak band
HNR_FFT, HNR_HOP = 8192, 2048  # long frames: harmonics of a 33-Hz note stay resolved
HNR_FMAX = 7500.0


def _sustain(x: np.ndarray, sample_rate: int, n_fft: int) -> np.ndarray:
    a, b = (int(s * sample_rate) for s in SUSTAIN)
    seg = np.asarray(x, np.float64)[a:b]
    return np.pad(seg, (0, max(0, n_fft - len(seg))))


def _power_spectrum(x: np.ndarray, sample_rate: int, n_fft: int, hop: int) -> np.ndarray:
    """Sustain part of x [L] -> its power spectrum averaged over Hann frames [n_fft // 2 + 1]."""
    frames = np.lib.stride_tricks.sliding_window_view(_sustain(x, sample_rate, n_fft), n_fft)[::hop]
    return np.mean(np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=-1)) ** 2, axis=0)


def mel_profile(x: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
    """x [L] -> the sustain's mel profile [MEL_BANDS]: frame-averaged power in 64 mel bands (30 Hz - 8 kHz),
    normalised to unit total power (linear, not dB)."""
    import librosa

    fb = librosa.filters.mel(sr=sample_rate, n_fft=PROFILE_FFT, n_mels=MEL_BANDS, fmin=MEL_FMIN,
                             fmax=min(MEL_FMAX, sample_rate / 2))
    p = fb @ _power_spectrum(x, sample_rate, PROFILE_FFT, PROFILE_HOP)
    return p / max(p.sum(), 1e-30)


def timbre_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Two mel profiles -> mean |dB difference| over bands, both floored PROFILE_RANGE_DB below the louder
    profile's peak band (0: the same timbre; a sine against a rich tone is ~15 dB)."""
    floor = max(a.max(), b.max()) * 10 ** (-PROFILE_RANGE_DB / 10)
    da, db = (10 * np.log10(np.maximum(p, floor)) for p in (a, b))
    return float(np.mean(np.abs(da - db)))


def harmonic_to_noise(x: np.ndarray, midi_pitch: int, sample_rate: int = 16000) -> float:
    """Harmonic-to-noise ratio of the sustain in dB: power within +-f0/6 of each harmonic vs the rest, between
    f0/2 and HNR_FMAX. f0 is the note's pitch refined within +-50 cents to the comb that holds the most power
    (so a slightly detuned note is not counted as noise)."""
    spec = _power_spectrum(x, sample_rate, HNR_FFT, HNR_HOP)
    freqs = np.fft.rfftfreq(HNR_FFT, 1 / sample_rate)
    nominal = 440.0 * 2 ** ((midi_pitch - 69) / 12)
    best = None
    for f0 in nominal * 2 ** (np.linspace(-50, 50, 21) / 1200):
        band = (freqs >= f0 / 2) & (freqs <= HNR_FMAX)
        h = np.round(freqs / f0)
        harm = band & (h >= 1) & (np.abs(freqs - h * f0) <= f0 / 6)
        split = (spec[harm].sum(), spec[band & ~harm].sum())
        if best is None or split[0] > best[0]:
            best = split
    return float(10 * np.log10(max(best[0], 1e-30) / max(best[1], 1e-30)))
