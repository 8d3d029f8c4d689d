"""Post-processing of decoded notes, in numpy (deterministic, whatever device decoded them).

A block is every cell of one pitch and velocity. The decoder generates a block's cells in phase (the excitation
starts at phase 0 in each), and the engine mixes neighbouring cells sample by sample, so whatever moves a note in
time is decided once per block and applied to every cell alike:

- per note: DC removal (one-pole high-pass), click repair (isolated samples far beyond both neighbours);
- per block: one onset shift, which trims the silence before the earliest start among the cells (a note starts
  at its first sample above 1 % of its peak) and so never cuts into any cell's attack; short fades;
- per block: one sustain loop shared by every cell (cells read together through one loop stay in phase),
  chosen so that the cells, compensated and held through the engine's crossfade, swing least in level at the
  loop rate and in their noise band's share of the level (find_loop);
- per note: the loop's level compensation, smooth gains that take off the level's swing at the loop rate,
  bring what the engine plays straight before the loop's crossfade to its start's level, and hold the crossfade
  itself at that level where its two sides do not match in phase (compensate_loop);
- per note: brought to the block's target RMS, the corners' level at that pitch and velocity (measured before
  the compensation), so cells match and velocity layers keep the corners' relative levels.

Loop points are stored in the bank, not baked into the audio.
"""
from __future__ import annotations

import numpy as np
from scipy.signal import lfilter

from nsynth.loops import compensate_loop, find_loop, pitch_period

DC_POLE = 0.995            # one-pole DC blocker: about 13 Hz at 16 kHz
CLICK_RATIO = 8.0          # a click stands this many times above its neighbourhood's second difference
CLICK_FLOOR = 0.05         # ... and at least this far from the mean of its two neighbours
SPIKE_RATIO = 1.5          # ... and this many times above its neighbours'
CLICK_CONTEXT = 32         # neighbourhood on each side for the comparison
START_THRESHOLD = 0.01     # a note starts at its first sample at or above this fraction of its peak (-40 dB)
ONSET_AT = 16              # a block's earliest start is placed this many samples into the note (or later)
FADE_IN = 8                # samples
FADE_OUT_SECONDS = 0.01
PEAK_LIMIT = 0.98          # a note's gain never lifts its peak above this
MAX_GAIN = 100.0           # +40 dB at most (a near-silent generation stays quiet)


def remove_dc(x: np.ndarray) -> np.ndarray:
    """[n, L] -> high-passed copy (y[t] = x[t] - x[t-1] + R y[t-1])."""
    return lfilter([1.0, -1.0], [1.0, -DC_POLE], x, axis=-1)


def repair_clicks(x: np.ndarray) -> tuple[np.ndarray, int]:
    """Replace isolated samples far beyond both neighbours by the neighbours' mean. -> (copy, clicks repaired).

    With s[t] = |x[t] - (x[t-1] + x[t+1]) / 2|, a click has s[t] above CLICK_FLOOR, above CLICK_RATIO times the
    mean of s over CLICK_CONTEXT samples either side, and above SPIKE_RATIO times s at both neighbours (a spike
    puts half its size there; a step puts its whole size on two samples, and is kept)."""
    x = x.copy()
    a = np.zeros_like(x)
    a[:, 1:-1] = np.abs(x[:, 1:-1] - 0.5 * (x[:, :-2] + x[:, 2:]))
    # mean of s over t-C..t+C without t-1..t+1 (a spike spreads half its size onto each neighbour)
    c = CLICK_CONTEXT
    cum = np.cumsum(np.pad(a, ((0, 0), (c + 1, c))), axis=1)
    window = cum[:, 2 * c + 1:] - cum[:, : -2 * c - 1]
    near = np.pad(a, ((0, 0), (1, 1)))
    local = (window - near[:, :-2] - near[:, 1:-1] - near[:, 2:]) / (2 * c - 2)
    click = (a > CLICK_RATIO * local) & (a > CLICK_FLOOR)
    click[:, 1:-1] &= (a[:, 1:-1] > SPIKE_RATIO * a[:, :-2]) & (a[:, 1:-1] > SPIKE_RATIO * a[:, 2:])
    click[:, [0, -1]] = False
    n, t = np.nonzero(click)
    x[n, t] = 0.5 * (x[n, t - 1] + x[n, t + 1])
    return x, len(t)


def note_starts(x: np.ndarray) -> np.ndarray:
    """[n, L] -> each note's start, its first sample at or above START_THRESHOLD of its peak (-1: silent) [n]."""
    a = np.abs(x)
    peak = a.max(1)
    return np.where(peak > 0, np.argmax(a >= START_THRESHOLD * peak[:, None], 1), -1)


def block_shift(x: np.ndarray) -> int:
    """One onset shift for a block [n, L]: the silence before its earliest start less ONSET_AT, at least 0
    (0 too when every note is silent). No note loses anything of its attack at or above START_THRESHOLD."""
    starts = note_starts(x)
    starts = starts[starts >= 0]
    return max(0, int(starts.min()) - ONSET_AT) if starts.size else 0


def shift_block(x: np.ndarray, shift: int) -> np.ndarray:
    """Every note of x [n, L] moved `shift` >= 0 samples earlier (zeros shifted in at the end)."""
    out = np.zeros_like(x)
    out[:, : x.shape[1] - shift] = x[:, shift:]
    return out


def apply_fades(x: np.ndarray, sample_rate: int) -> np.ndarray:
    x = x.copy()
    length = x.shape[1]
    n_in = min(FADE_IN, length)
    n_out = min(int(FADE_OUT_SECONDS * sample_rate), length)
    x[:, :n_in] *= np.linspace(0.0, 1.0, n_in, endpoint=False)
    x[:, length - n_out:] *= np.linspace(1.0, 0.0, n_out)
    return x


def rms(x: np.ndarray) -> np.ndarray:
    """[..., L] -> [...] root mean square (float64)."""
    return np.sqrt(np.mean(np.square(x, dtype=np.float64), axis=-1))


def match_level(x: np.ndarray, target_rms: float, level: np.ndarray | None = None) -> np.ndarray:
    """Scale each note from its RMS (or `level` [n], the RMS to scale from) to target_rms, limited so that no
    peak exceeds PEAK_LIMIT."""
    level = rms(x) if level is None else level
    peak = np.abs(x).max(1)
    gain = np.where(level > 0, target_rms / np.maximum(level, 1e-12), 1.0)
    gain = np.minimum(gain, MAX_GAIN)
    gain = np.where(peak * gain > PEAK_LIMIT, PEAK_LIMIT / np.maximum(peak, 1e-12), gain)
    return x * gain[:, None]



def to_int16(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, -1.0, 1.0) * 32767).astype(np.int16)


def postprocess_block(audio: np.ndarray, *, pitch: int, target_rms: float, sample_rate: int
                      ) -> tuple[np.ndarray, np.ndarray, int]:
    """audio float [n, L] (the decoded notes of one pitch and velocity) -> (int16 [n, L], loops [n, 2] (one loop,
    shared), clicks repaired)."""
    x = remove_dc(audio.astype(np.float64))
    x, clicks = repair_clicks(x)
    x = apply_fades(shift_block(x, block_shift(x)), sample_rate)
    period = pitch_period(pitch, sample_rate)
    loop = find_loop(x, period, sample_rate)
    level = rms(x)  # the notes' levels as generated: the compensated loop does not turn the attack down
    x = match_level(compensate_loop(x, loop, period), target_rms, level)
    return to_int16(x), np.tile(np.array(loop, dtype=np.int64), (len(x), 1)), clicks
