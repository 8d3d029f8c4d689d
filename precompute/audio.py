"""Reading and writing 16 kHz mono audio, with clear errors for broken input."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from nsynth.errors import NsynthError
from nsynth.fsutil import atomic_path

log = logging.getLogger(__name__)


def read_audio(path: str | os.PathLike, sample_rate: int = 16000) -> np.ndarray:
    """A sound file -> float32 mono [T] at `sample_rate`, resampled (soxr) and mixed down with a notice."""
    import soundfile as sf

    path = Path(path)
    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError / OSError
        raise NsynthError(f"{path}: cannot read audio: {e}") from None
    if audio.shape[0] == 0:
        raise NsynthError(f"{path}: the file holds no samples")
    if not np.isfinite(audio).all():
        raise NsynthError(f"{path}: the audio holds NaN or infinite samples")
    if audio.shape[1] > 1:
        log.warning("%s: %d channels mixed down to mono", path, audio.shape[1])
    audio = audio.mean(1)
    if sr != sample_rate:
        import soxr

        log.warning("%s: resampled from %d Hz to %d Hz", path, sr, sample_rate)
        audio = soxr.resample(audio, sr, sample_rate).astype(np.float32)
    return np.clip(audio, -1.0, 1.0)


def write_audio(path: str | os.PathLike, audio: np.ndarray, sample_rate: int = 16000) -> None:
    """float [-1, 1] or int16 audio [T] (or [T, C]) -> 16-bit WAV, written atomically."""
    import soundfile as sf

    audio = np.asarray(audio)
    if audio.dtype != np.int16:
        audio = np.clip(audio, -1.0, 1.0)
    with atomic_path(path) as tmp:
        sf.write(str(tmp), audio, sample_rate, subtype="PCM_16", format="WAV")
