"""Post-processing of decoded notes, in numpy (deterministic, whatever device decoded them).

Per note: DC removal (one-pole high-pass), click repair (isolated samples far beyond both neighbours),
onset alignment (the first sample above 10 % of the peak lands at ONSET_AT), short fades. Per block (all cells
of one pitch and velocity): each note is brought to the block's target RMS, the corners' level at that pitch and
velocity, so cells match and velocity layers keep the corners' relative levels. Sustain-loop points are found
where the waveform repeats well; they are stored in the bank, not baked into the audio.
"""
from __future__ import annotations

import numpy as np
from scipy.signal import lfilter

from device.bank import default_loop

DC_POLE = 0.995            # one-pole DC blocker: about 13 Hz at 16 kHz
CLICK_RATIO = 8.0          # a click stands this many times above its neighbourhood's second difference
CLICK_FLOOR = 0.05         # ... and at least this far from the mean of its two neighbours
SPIKE_RATIO = 1.5          # ... and this many times above its neighbours'
CLICK_CONTEXT = 32         # neighbourhood on each side for the comparison
ONSET_THRESHOLD = 0.1      # onset: first sample at or above this fraction of the peak
ONSET_AT = 16              # ... placed this many samples into the note
FADE_IN = 8                # samples
FADE_OUT_SECONDS = 0.01
PEAK_LIMIT = 0.98          # a note's gain never lifts its peak above this
MAX_GAIN = 100.0           # +40 dB at most (a near-silent generation stays quiet)
LOOP_REGION = (0.2, 0.6)   # loops lie in this part of the note
LOOP_FRACTION = 0.21       # target loop length, as the original's 20 %..41 %
LOOP_STARTS = 8            # start positions tried
LOOP_SLACK = 64            # ends tried at least this far either side of the target length (short periods:
                           # several whole numbers of periods, one of them close to a whole number of samples)


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


def align_onsets(x: np.ndarray) -> np.ndarray:
    """Shift each note so its onset sits at ONSET_AT (zeros shifted in)."""
    out = np.zeros_like(x)
    length = x.shape[1]
    peak = np.abs(x).max(1)
    for i, row in enumerate(x):
        if peak[i] == 0:
            continue
        onset = int(np.argmax(np.abs(row) >= ONSET_THRESHOLD * peak[i]))
        shift = onset - ONSET_AT
        if shift >= 0:
            out[i, : length - shift] = row[shift:]
        else:
            out[i, -shift:] = row[: length + shift]
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


def match_level(x: np.ndarray, target_rms: float) -> np.ndarray:
    """Scale each note to target_rms, limited so that no peak exceeds PEAK_LIMIT."""
    level, peak = rms(x), np.abs(x).max(1)
    gain = np.where(level > 0, target_rms / np.maximum(level, 1e-12), 1.0)
    gain = np.minimum(gain, MAX_GAIN)
    gain = np.where(peak * gain > PEAK_LIMIT, PEAK_LIMIT / np.maximum(peak, 1e-12), gain)
    return x * gain[:, None]


def find_loop(x: np.ndarray, period: float) -> tuple[int, int]:
    """A sustain loop [start, end) in the LOOP_REGION of note x [L], about LOOP_FRACTION of the note long, where
    the windows around start and end correlate best (normalised): on a periodic note, a whole number of periods
    apart. Falls back to the default loop where the region is too short or silent."""
    length = len(x)
    lo, hi = int(LOOP_REGION[0] * length), int(LOOP_REGION[1] * length)
    span = max(1, round(LOOP_FRACTION * length / period)) * period
    while span > (hi - lo) / 2 and span > period:
        span -= period
    half_w = int(np.clip(period, 32, 256))
    slack = max(int(np.ceil(period / 2)), LOOP_SLACK)
    first = lo + half_w
    last = hi - half_w - int(round(span)) - slack
    if last < first or np.abs(x[lo:hi]).max() == 0:
        return default_loop(length)
    energy = np.concatenate([[0.0], np.cumsum(np.square(x, dtype=np.float64))])
    best, best_score = default_loop(length), -np.inf
    for start in np.unique(np.linspace(first, last, LOOP_STARTS).astype(int)):
        a = x[start - half_w: start + half_w]
        e0 = start + int(round(span)) - slack  # ends tried: e0 .. e0 + 2 * slack
        dots = np.correlate(x[e0 - half_w: e0 + 2 * slack + half_w], a, mode="valid")
        ends = np.arange(e0, e0 + len(dots))
        den = np.sqrt((a @ a) * (energy[ends + half_w] - energy[ends - half_w]))
        score = np.where(den > 0, dots / np.maximum(den, 1e-30), -1.0)
        j = int(np.argmax(score))
        if score[j] > best_score:
            best, best_score = (int(start), int(ends[j])), float(score[j])
    return best


def pitch_period(pitch: int, sample_rate: int) -> float:
    return sample_rate / (440.0 * 2 ** ((pitch - 69) / 12))


def to_int16(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, -1.0, 1.0) * 32767).astype(np.int16)


def postprocess_block(audio: np.ndarray, *, pitch: int, target_rms: float, sample_rate: int
                      ) -> tuple[np.ndarray, np.ndarray, int]:
    """audio float [n, L] (the decoded notes of one pitch and velocity) -> (int16 [n, L], loops [n, 2],
    clicks repaired)."""
    x = remove_dc(audio.astype(np.float64))
    x, clicks = repair_clicks(x)
    x = apply_fades(align_onsets(x), sample_rate)
    x = match_level(x, target_rms)
    period = pitch_period(pitch, sample_rate)
    loops = np.array([find_loop(row, period) for row in x], dtype=np.int64).reshape(len(x), 2)
    return to_int16(x), loops, clicks
