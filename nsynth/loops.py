"""Sustain loops, found and compensated for steadiness (shared: `nsynth render` loops every block of cells it
decodes; `nsynth bank import-original` loops the original's notes the same way).

find_loop picks one loop [start, end) for a block of notes (every cell of one pitch and velocity, read together
through one loop by the engine so they stay in phase): the region, inside LOOP_REGION of the note, whose notes,
compensated and held through the engine's crossfade, swing least in level at the loop rate and in their noise
band's share of the level. compensate_loop takes off each note the level changes a held loop would repeat.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

LOOP_REGION = (0.2, 0.6)   # loops lie in this part of the note
LOOP_FRACTION = 0.21       # typical loop length, as the original's 20 %..41 %
LOOP_LENGTHS = (0.6, 1.5)  # loop lengths tried, as multiples of the typical one
LOOP_SLACK = 64            # ends tried at least this far either side of the target length (short periods:
                           # several whole numbers of periods, one of them close to a whole number of samples)
LOOP_HOP = 256             # loop starts and lengths tried on this grid, the level envelope's hop
LOOP_REFINED = 64          # the best loops by level, then held through the engine's crossfade
SEAM_WINDOW = 4000         # samples before the seam compared (the engine's crossfade: the original's 4000)
SEAM_LEVEL = 1024          # samples at each end of a loop whose levels should meet
HELD_FRAME = 0.02          # seconds: the frames of a held loop's level ...
HELD_BLOCKS = 5            # ... summed from this many blocks
BAND_HZ = 2500.0           # the noise band whose level is watched (breath, bow and reed noise)
BAND_WEIGHT = 0.5          # weight of the band's share's variation in a loop's cost (it is noisier)
TREND_WEIGHT = 0.25        # weight of the compensated level trend (compensating lifts the noise floor too)
MAX_TREND_DB = 24.0        # a loop's level trend is compensated up to this much
MAX_RATE_DB = 6.0          # ... and its level's swing at the loop rate up to this much peak to peak
RATE_WEIGHT = 0.25         # weight of the swing compensated (it alters the note's own modulation)
XFADE_FRAME = 256          # samples: the frames over which the crossfade's level is kept
XFADE_MAX_GAIN = 2.0       # the crossfade's gain on the loop's last samples stays within 1/2 .. 2 (6 dB)


def default_loop(note_length: int) -> tuple[int, int]:
    """The original's sustain loop: 20 % to 41 % of the note (where no steady loop is found)."""
    return note_length * 20 // 100, max(note_length * 41 // 100, note_length * 20 // 100 + 1)


def _energy(x: np.ndarray) -> np.ndarray:
    """[n, L] -> cumulative energy [n, L + 1] (float64): the energy of x[:, a:b] is e[:, b] - e[:, a]."""
    return np.concatenate([np.zeros((len(x), 1)), np.cumsum(np.square(x, dtype=np.float64), 1)], 1)


def _fade_in(h: int) -> np.ndarray:
    """The engine's crossfade weights over h samples: (k + 1) / (h + 1) at the k-th [h]."""
    return (np.arange(h) + 1) / (h + 1)


def _capped_rate(rate: np.ndarray) -> np.ndarray:
    """Loop-rate amplitudes (complex, dB) scaled down to at most MAX_RATE_DB peak to peak."""
    return rate * np.minimum(1.0, MAX_RATE_DB / 2 / np.maximum(np.abs(rate), 1e-12))


def _levels_db(x: np.ndarray, frame: int, floor: np.ndarray | float = 1e-12) -> np.ndarray:
    """[n, L] -> dB level of frames `frame` long, one every LOOP_HOP samples [n, F] (frame f starts at
    f * LOOP_HOP); `floor` (power, [n, 1] or scalar) is added before the log, masking what lies below it."""
    e = _energy(x)
    at = np.arange(0, x.shape[1] - frame + 1, LOOP_HOP)
    return 10 * np.log10((e[:, at + frame] - e[:, at]) / frame + floor)


def loop_frame(period: float) -> int:
    """Length of the level envelope's frames: at least two periods."""
    return max(2 * LOOP_HOP, int(np.ceil(2 * period)))


def seam_window(start: int, end: int) -> int:
    """Samples before a loop's start and end that meet in the engine's crossfade (and are compensated)."""
    return min(SEAM_WINDOW, (end - start) // 2, start)


class _Ranges:
    """Sums of a level envelope y [n, F] (dB per frame, t = frame index) over frame ranges [a, b) (arrays [m]),
    and what a line of a given slope leaves of y there, each [n, m], in O(1) per range."""

    def __init__(self, y: np.ndarray):
        t = np.arange(y.shape[1], dtype=np.float64)
        pad = lambda v: np.concatenate([np.zeros(v.shape[:-1] + (1,)), np.cumsum(v, -1)], -1)  # noqa: E731
        self.env = y
        self.y, self.yy, self.ty = pad(y), pad(y * y), pad(t * y)
        self.t, self.tt = pad(t), pad(t * t)

    def sums(self, a: np.ndarray, b: np.ndarray):
        d = lambda p: p[..., b] - p[..., a]  # noqa: E731
        return (b - a).astype(np.float64), d(self.t), d(self.tt), d(self.y), d(self.yy), d(self.ty)

    def level(self, a: np.ndarray, b: np.ndarray, slope: np.ndarray | float = 0.0) -> np.ndarray:
        """Mean of y - slope * t over [a, b)."""
        n, st, _, sy, _, _ = self.sums(a, b)
        return (sy - slope * st) / n

    def spread(self, a: np.ndarray, b: np.ndarray, slope: np.ndarray) -> np.ndarray:
        """RMS of y - slope * t - (its mean) over [a, b)."""
        n, st, stt, sy, syy, sty = self.sums(a, b)
        sq = syy - 2 * slope * sty + slope * slope * stt - (sy - slope * st) ** 2 / n
        return np.sqrt(np.maximum(sq, 0.0) / n)


def _loop_frames(frame: int, starts: np.ndarray, ends: np.ndarray):
    """Level frames of loops [starts, ends) (samples, [m]): (first of the seam window, first of the loop, the
    end, the end of what the engine plays straight before the crossfade, the frames at the loop's start and
    before that end whose levels the compensation matches), each [m]."""
    h = np.minimum(np.minimum(SEAM_WINDOW, (ends - starts) // 2), starts)
    l0 = -(-starts // LOOP_HOP)
    z1 = (ends - frame) // LOOP_HOP + 1
    zc = (ends - h - frame) // LOOP_HOP + 1
    k = np.maximum(1, np.minimum(SEAM_LEVEL // LOOP_HOP, (zc - l0) // 2))
    return -(-(starts - h) // LOOP_HOP), l0, z1, zc, k


def _seam_slope(level: _Ranges, l0: np.ndarray, zc: np.ndarray, k: np.ndarray) -> np.ndarray:
    """The slope (dB per frame) of the line that, taken off, brings the level of the k frames before a loop's
    crossfade (ending at frame zc) to that of its first k: [n, m]."""
    n, st_head, _, _, _, _ = level.sums(l0, l0 + k)
    _, st_tail, _, _, _, _ = level.sums(zc - k, zc)
    return (level.level(zc - k, zc) - level.level(l0, l0 + k)) / np.maximum(st_tail / k - st_head / n, 1.0)


def _steadiness(level: _Ranges, share: _Ranges, frame: int, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Cost (dB) of looping each note over [starts, ends) (samples, [m]) from its level envelopes -> [n, m]:
    the rise or fall of the compensating line over the loop, the level's component at the loop rate once
    compensated (_loop_rate), and how much the noise band's share of the level (share: the level above
    BAND_HZ less the level) moves inside the loop and its seam window (2 sqrt 2 x RMS: a sine's peak to peak)
    and steps at the seam (bursts of breath or bow noise, which a held loop would repeat)."""
    z0, l0, z1, zc, k = _loop_frames(frame, starts, ends)
    slope = _seam_slope(level, l0, zc, k)
    band_step = np.abs(share.level(l0, l0 + k) - share.level(z1 - k, z1))
    band_spread = 2 * np.sqrt(2) * share.spread(z0, z1, np.zeros_like(slope))
    return (TREND_WEIGHT * np.abs(slope) * (ends - starts) / LOOP_HOP + _loop_rate(level.env, l0, z1, slope)
            + BAND_WEIGHT * (band_spread + band_step))


def _loop_rate(y: np.ndarray, l0: np.ndarray, z1: np.ndarray, slope: np.ndarray) -> np.ndarray:
    """What compensate_loop leaves of the component at the loop rate of the compensated level y - slope * t
    over each loop's frames [l0, z1) (peak-to-peak dB beyond MAX_RATE_DB), plus RATE_WEIGHT x what it takes
    off: y [n, F], l0 / z1 [m] -> [n, m]."""
    out = np.empty((len(y), len(l0)))
    for size in np.unique(z1 - l0):  # loops of one length in frames at a time
        j = np.flatnonzero(z1 - l0 == size)
        t = l0[j, None] + np.arange(size)  # [m', size]
        wave = np.exp(-2j * np.pi * np.arange(size) / size)
        rest = y[:, t] - slope[:, j, None] * t
        out[:, j] = 4 * np.abs(rest @ wave) / size
    return np.maximum(out - MAX_RATE_DB, 0) + RATE_WEIGHT * np.minimum(out, MAX_RATE_DB)


def find_loop(x: np.ndarray, period: float, sample_rate: int) -> tuple[int, int]:
    """One sustain loop [start, end) for every note of a block x [n, L], inside its LOOP_REGION, LOOP_LENGTHS x
    LOOP_FRACTION of the note long, chosen for steadiness once compensated (compensate_loop) and held through the
    engine's crossfade (_held_levels). Every start and length on a LOOP_HOP grid is scored by the notes' level
    envelopes (_steadiness), a note's cost counting above the least it has anywhere; the LOOP_REFINED best are
    made a whole number of periods long, the end placed where the windows around start and end correlate best
    (mean over the notes), and each note is compensated and held through them: the loop whose worst note
    swings least at the loop rate (plus, weighted, its noise band's share's swing over the least it has among
    them and the compensation's trend) wins. Falls back to the default loop where the region is too short or
    silent."""
    n, length = x.shape
    lo, hi = int(LOOP_REGION[0] * length), int(LOOP_REGION[1] * length)
    half_w = int(np.clip(period, 32, 256))
    slack = max(int(np.ceil(period / 2)), LOOP_SLACK)
    target = LOOP_FRACTION * length
    shortest = max(period, min(LOOP_LENGTHS[0] * target, (hi - lo) / 2))
    longest = max(shortest, LOOP_LENGTHS[1] * target)
    live = np.abs(x[:, lo:hi]).max(1) > 0
    first, last_end = lo + half_w, hi - half_w - slack - int(np.ceil(period / 2))
    frame = loop_frame(period)
    if first + max(shortest, frame + 2 * LOOP_HOP) > last_end or not live.any():
        return default_loop(length)
    x = x[live]
    level = _levels_db(x, frame)
    floor = 1e-3 * np.mean(np.square(x[:, lo:hi]), 1, keepdims=True)  # the band's level below this is masked
    from scipy.signal import butter, sosfilt  # here: the bank format imports default_loop, the Pi plays without scipy

    band_x = sosfilt(butter(4, BAND_HZ, "highpass", fs=sample_rate, output="sos"), x, axis=1)
    s, e = np.meshgrid(np.arange(first, last_end, LOOP_HOP),
                       np.arange(int(shortest), int(longest) + 1, LOOP_HOP), indexing="ij")
    s, e = s.ravel(), (s + e).ravel()
    keep = (e <= last_end) & (e - s >= frame + 2 * LOOP_HOP)  # two level frames at least in every loop
    s, e = s[keep], e[keep]
    if not len(s):  # the region is too short for the shortest loop tried
        return default_loop(length)
    cost = _steadiness(_Ranges(level), _Ranges(_levels_db(band_x, frame, floor) - level), frame, s, e)
    energy, band_energy = _energy(x), _energy(band_x)
    loops, held = [], []
    for j in np.argsort((cost - cost.min(1, keepdims=True)).max(0), kind="stable")[:LOOP_REFINED]:
        start = int(s[j])
        e0 = start + int(round(max(1, round((e[j] - start) / period)) * period)) - slack  # ends: e0 .. e0 + 2 slack
        a = x[:, start - half_w: start + half_w]
        dots = np.stack([np.correlate(x[i, e0 - half_w: e0 + 2 * slack + half_w], a[i], mode="valid")
                         for i in range(len(x))])
        ends = np.arange(e0, e0 + dots.shape[1])
        den = np.sqrt(np.sum(a * a, 1)[:, None] * (energy[:, ends + half_w] - energy[:, ends - half_w]))
        end = int(ends[np.argmax(np.mean(dots / np.maximum(den, 1e-30), 0))])
        loops.append((start, end))
        held.append(_held_costs(x, band_x, energy, band_energy, floor, level, frame, start, end, sample_rate))
    c = np.stack(held)  # [loops, 3, n]: loop rate, the band's share, trend
    total = c[:, 0] + BAND_WEIGHT * (c[:, 1] - c[:, 1].min(0)) + TREND_WEIGHT * c[:, 2]
    return loops[int(np.argmin(total.max(1) + 0.1 * total.mean(1)))]


class _Compensation:
    """The gains compensate_loop applies for a loop [start, end), from the notes' level envelope [n, F]."""

    def __init__(self, level: np.ndarray, energy: np.ndarray, frame: int, start: int, end: int):
        """level: the notes' level envelope [n, F]; energy: their cumulative energy [n, L + 1]."""
        self.start, self.end, self.h = start, end, seam_window(start, end)
        z0, l0, z1, zc, k = (int(v[0]) for v in _loop_frames(frame, np.array([start]), np.array([end])))
        self.rate, self.slope = np.zeros(len(level), complex), np.zeros(len(level))
        if z1 > level.shape[1] or z1 - l0 < 2:
            return  # too short for two level frames: no gain
        centre = np.arange(l0, z1) * LOOP_HOP + frame / 2
        y = level[:, l0:z1]
        c = centre - centre.mean()
        rest = y - y.mean(1, keepdims=True) - np.outer((y @ c) / (c @ c), c)  # about the level's line
        rate = 2 * np.mean(rest * np.exp(-2j * np.pi * (centre - start) / (end - start)), 1)
        self.rate = _capped_rate(rate)
        straight = end - self.h  # the loop's first w samples and the last w before its crossfade, swing off
        w = max(1, min(SEAM_LEVEL, (straight - start) // 2))
        ends = np.array([start + w / 2, straight - w / 2])
        power = (energy[:, [start + w, straight]] - energy[:, [start, straight - w]]) / w
        db = 10 * np.log10(np.maximum(power, 1e-20)) - self.swing(ends)
        slope = (db[:, 1] - db[:, 0]) / (ends[1] - ends[0])
        self.slope = np.clip(slope, -MAX_TREND_DB / (end - start), MAX_TREND_DB / (end - start))  # dB/sample

    def swing(self, t: np.ndarray) -> np.ndarray:
        """The loop-rate sinusoid (dB) at samples t: periodic through the loop, faded in and out -> [n, T]."""
        return _swing(self.rate, t, self.start, self.end, self.h)

    def __call__(self, t: np.ndarray) -> np.ndarray:
        """The gain (dB) at samples t [T] -> [n, T]."""
        a = self.start - self.h
        return -self.swing(t) - self.slope[:, None] * (np.clip(t, a, self.end) - a)


def compensate_loop(x: np.ndarray, loop: tuple[int, int], period: float) -> np.ndarray:
    """x [n, L] with the level changes a held loop would repeat taken off each note by smooth gains, in dB:
    - the level's component at the loop rate (a sinusoid with the loop's period, about the level's line over
      the loop; at most MAX_RATE_DB peak to peak), periodic through the loop and its seam window, so it is the
      same at both ends of the seam; it fades in over the seam window's length before and out after the loop;
    - a line (at most MAX_TREND_DB across the loop) that brings the level of the SEAM_LEVEL samples before the
      loop's crossfade (the last the engine plays straight) to that of its first, from 0 before the seam window
      to the loop's end and held after it: a decaying note meets its start at the same level;
    - in the seam window before the loop's end, what keeps the crossfade's level steady (crossfade_gain).
    -> a copy."""
    frame = loop_frame(period)
    energy = _energy(x)
    y = x * 10 ** (_Compensation(_levels_db(x, frame), energy, frame, *loop)(np.arange(x.shape[1])) / 20)
    start, end = loop
    h = seam_window(start, end)
    if h >= XFADE_FRAME:
        y[:, end - h:end] *= crossfade_gain(y[:, end - h:end], y[:, start - h:start], y[:, start:end])
    rate = _held_rate(y, start, end, h, frame)
    return y * 10 ** (-_swing(rate, np.arange(x.shape[1]), start, end, h) / 20)


def _swing(rate: np.ndarray, t: np.ndarray, start: int, end: int, h: int) -> np.ndarray:
    """Sinusoids at the loop rate (complex amplitudes rate [n], dB) at samples t [T]: periodic through the loop
    [start, end) and the h samples before it (so both sides of the seam see the same gain), faded in over the h
    before those and out over h after the loop -> [n, T]."""
    h = max(h, 1)
    fade = np.clip((t - (start - 2 * h)) / h, 0, 1) * np.clip((end + h - t) / h, 0, 1)
    return np.real(rate[:, None] * np.exp(2j * np.pi * (t - start) / (end - start))) * fade


def _held_rate(y: np.ndarray, start: int, end: int, h: int, frame: int) -> np.ndarray:
    """The component at the loop rate (complex amplitude, dB [n], at most MAX_RATE_DB / 2) of the level of y [n, L]
    held through the loop as the engine plays it: one period from the loop's start, its last h samples crossfaded
    into the h before the start, its level in frames `frame` long about every LOOP_HOP samples, read circularly."""
    length = end - start
    if length < 2 * LOOP_HOP or frame > length:
        return np.zeros(len(y), complex)
    g = _fade_in(h)
    period = np.concatenate([y[:, start:end - h], (1 - g) * y[:, end - h:end] + g * y[:, start - h:start]], 1)
    energy = _energy(np.concatenate([period, period[:, :frame]], 1))
    at = np.arange(length // LOOP_HOP) * length // (length // LOOP_HOP)  # evenly over exactly one loop
    level = 10 * np.log10((energy[:, at + frame] - energy[:, at]) / frame + 1e-20)
    level -= level.mean(1, keepdims=True)
    return _capped_rate(2 * np.mean(level * np.exp(-2j * np.pi * (at + frame / 2) / length), 1))


def crossfade_gain(main: np.ndarray, partner: np.ndarray, head: np.ndarray) -> np.ndarray:
    """The gain [n, h] on the h samples before a loop's end (main [n, h]: heard only in the engine's crossfade,
    fading out with weight 1 - g, g = (k + 1) / (h + 1) at the k-th, while the h before its start, partner, fade
    in with g) that holds the crossfade on a line in dB from main's level at its start to the loop's at its
    start (head [n, >= 1]: the loop's first samples). A linear crossfade keeps the level where the two sides are
    alike in phase and level (gain 1); where they are not (noise, a drifting phase, a partner still rising
    before the loop), its middle would drop (3 dB for uncorrelated sides), and a held loop would pump at the
    loop rate. Per XFADE_FRAME frame the gain a solves A a^2 + B a + C = T (A, B, C: the frame's mean of
    main^2 (1-g)^2, 2 main partner g (1-g), partner^2 g^2; T the line's power), within 1 / XFADE_MAX_GAIN ..
    XFADE_MAX_GAIN, moving linearly from 1 at the crossfade's first sample through the frames' centres."""
    n, h = main.shape
    g = _fade_in(h)
    frames = h // XFADE_FRAME
    cut = lambda v: v[..., : frames * XFADE_FRAME].reshape(*v.shape[:-1], frames, XFADE_FRAME).mean(-1)  # noqa: E731
    a2, b, c = cut(main * main * (1 - g) ** 2), cut(2 * main * partner * g * (1 - g)), cut(partner * partner * g * g)
    w = min(SEAM_LEVEL, h, head.shape[1])
    ends = np.log(np.stack([np.mean(main[:, :w] ** 2, 1), np.mean(head[:, :w] ** 2, 1)], 1) + 1e-20)  # [n, 2]
    gm = cut(g)
    target = np.exp((1 - gm) * ends[:, :1] + gm * ends[:, 1:])
    disc = np.maximum(b * b - 4 * a2 * (c - target), 0.0)
    a = (np.sqrt(disc) - b) / np.maximum(2 * a2, 1e-30)
    a = np.clip(np.where(a2 > 1e-20, a, 1.0), 1 / XFADE_MAX_GAIN, XFADE_MAX_GAIN)
    centres = (np.arange(frames) + 0.5) * XFADE_FRAME
    t = np.arange(h)
    return np.stack([np.interp(t, np.concatenate([[0.0], centres]), np.concatenate([[1.0], row])) for row in a])


def _held_levels(x: np.ndarray, energy: np.ndarray, gain: Callable[[np.ndarray], np.ndarray], start: int,
                 end: int, block: int, floor: np.ndarray | float = 1e-12) -> np.ndarray:
    """The level (dB) of x [n, L] (energy: its cumulative energy [n, L + 1]) times a gain (gain(t) -> dB
    [n, T] at samples t) held through the loop [start, end) as the engine plays it (device/mix.py), the loop's
    last h samples (h the seam window) fading linearly, weight (k + 1) / (h + 1) at the k-th, into the h before
    its start: in frames of HELD_BLOCKS blocks every block, around the loop -> [n, frames]. Powers are summed per
    block with the gain and crossfade weight of the block's middle (both change slowly)."""
    h, length = seam_window(start, end), end - start
    nb = length // block
    at = start + np.arange(nb) * block
    mid = at + block // 2
    power = (energy[:, at + block] - energy[:, at]) / block * 10 ** (gain(mid) / 10)
    xb = np.flatnonzero(mid >= end - h)  # blocks in the crossfade
    if xb.size:
        span = slice(at[xb[0]], at[-1] + block)
        main = x[:, span].reshape(len(x), len(xb), block)
        partner = x[:, span.start - length: span.stop - length].reshape(len(x), len(xb), block)
        g = (mid[xb] - (end - h) + 1) / (h + 1)
        gm, gp = 10 ** (gain(mid[xb]) / 20), 10 ** (gain(mid[xb] - length) / 20)
        power[:, xb] = ((1 - g) ** 2 * gm ** 2 * np.mean(main * main, 2)
                        + g ** 2 * gp ** 2 * np.mean(partner * partner, 2)
                        + 2 * g * (1 - g) * gm * gp * np.mean(main * partner, 2))
    frames = sum(np.roll(power, -i, 1) for i in range(HELD_BLOCKS)) / HELD_BLOCKS
    return 10 * np.log10(np.maximum(frames, 0) + floor)


def _held_costs(x: np.ndarray, band: np.ndarray, energy: np.ndarray, band_energy: np.ndarray, floor: np.ndarray,
                level: np.ndarray, frame: int, start: int, end: int, sample_rate: int) -> np.ndarray:
    """Each note of x [n, L] (level: its envelope) compensated for the loop [start, end) and held through it:
    the peak-to-peak of its level's component at the loop rate, of the share of its level above BAND_HZ (band:
    x high-passed; floor [n, 1]: its level's floor), and of the compensating gain over the loop -> [3, n] dB.
    energy, band_energy: cumulative energies of x and band [n, L + 1]."""
    block = max(1, int(HELD_FRAME * sample_rate) // HELD_BLOCKS)
    gain = _Compensation(level, energy, frame, start, end)
    held = _held_levels(x, energy, gain, start, end, block)
    held_band = _held_levels(band, band_energy, gain, start, end, block, floor)
    phase = (np.arange(held.shape[1]) * block + HELD_BLOCKS * block / 2) / (end - start)
    rate = 4 * np.abs(np.mean((held - held.mean(1, keepdims=True)) * np.exp(-2j * np.pi * phase), 1))
    trend = gain(np.array([start, end]))
    return np.stack([rate, np.ptp(held_band - held, 1), np.abs(trend[:, 1] - trend[:, 0])])


def pitch_period(pitch: int, sample_rate: int) -> float:
    return sample_rate / (440.0 * 2 ** ((pitch - 69) / 12))
