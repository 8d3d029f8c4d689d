"""The timbre map: a bank's grid at one pitch and velocity as small spectrograms, corners labelled."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from device.bank import TIMBRE_MAP, open_bank
from nsynth.errors import NsynthError
from nsynth.fsutil import atomic_path

FRAME, HOP = 512, 256
FLOOR_DB = -80.0


def spectrogram(note: np.ndarray) -> np.ndarray:
    """int16 or float [L] -> dB magnitude [bins, frames], 0 dB at full scale, floored at FLOOR_DB."""
    x = note.astype(np.float64) / (32768.0 if note.dtype == np.int16 else 1.0)
    if len(x) < FRAME:
        x = np.pad(x, (0, FRAME - len(x)))
    frames = np.lib.stride_tricks.sliding_window_view(x, FRAME)[::HOP] * np.hanning(FRAME)
    mag = np.abs(np.fft.rfft(frames, axis=-1)).T / (FRAME / 4)
    return np.maximum(20 * np.log10(np.maximum(mag, 1e-12)), FLOOR_DB)


def draw_timbre_map(cells: np.ndarray, corners: Sequence[str], path: str | os.PathLike, *, title: str = "",
                    sample_rate: int = 16000) -> Path:
    """cells int16 [N (y), N (x), L] -> PNG at `path` (atomically): cell [y][x] drawn with y = 0 at the bottom,
    the four corner cells labelled with their corner names (order BL, BR, TL, TR)."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = cells.shape[0]
    fig, axes = plt.subplots(n, n, figsize=(max(1.2 * n, 4.5), max(1.2 * n, 4.5) + 0.5), squeeze=False)
    labels = {(0, 0): corners[0], (0, n - 1): corners[1], (n - 1, 0): corners[2], (n - 1, n - 1): corners[3]}
    for y in range(n):
        for x in range(n):
            ax = axes[n - 1 - y][x]
            ax.imshow(spectrogram(cells[y, x]), origin="lower", aspect="auto", cmap="magma", vmin=FLOOR_DB, vmax=0,
                      extent=(0, cells.shape[2] / sample_rate, 0, sample_rate / 2000))
            ax.set_xticks([])
            ax.set_yticks([])
            if (y, x) in labels:
                ax.set_title(textwrap.fill(labels[y, x], 20), fontsize=7)  # long preset names wrap
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80, metadata={"Software": None})
    plt.close(fig)
    return path


def timbre_map_for_bank(bank: str | os.PathLike, out: str | os.PathLike | None = None, *, pitch: int | None = None,
                        velocity: int | None = None) -> Path:
    """Draw an existing bank's map (default pitch: nearest to 60; default velocity: the highest)."""
    b = open_bank(bank)
    pitches, velocities = list(b.info.pitches), list(b.info.velocities)
    pitch = min(pitches, key=lambda p: (abs(p - 60), p)) if pitch is None else pitch
    velocity = velocities[-1] if velocity is None else velocity
    if pitch not in pitches or velocity not in velocities:
        raise NsynthError(f"{bank}: holds pitches {pitches} and velocities {velocities}, not pitch {pitch} "
                          f"velocity {velocity}")
    cells = np.asarray(b.samples[pitches.index(pitch), velocities.index(velocity)])
    return draw_timbre_map(cells, b.info.corners, Path(bank) / TIMBRE_MAP if out is None else out,
                           title=f"{Path(bank).name}: pitch {pitch}, velocity {velocity}", sample_rate=b.info.sample_rate)


def configure(parser) -> None:
    parser.add_argument("bank")
    parser.add_argument("-o", "--out", default=None, help="PNG to write (default: BANK/timbre_map.png)")
    parser.add_argument("--pitch", type=int, default=None, help="MIDI pitch (default: nearest to 60)")
    parser.add_argument("--velocity", type=int, default=None, help="velocity (default: the highest)")
    parser.set_defaults(func=lambda a: print(timbre_map_for_bank(a.bank, a.out, pitch=a.pitch,
                                                                 velocity=a.velocity)) or 0)
