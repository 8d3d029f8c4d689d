"""The numpy reference of one segment (`render_segment`: kernels.render_segment's twin, every voice at once in
array operations; tests hold the two to each other, and it runs where numba is missing) and the output limiter.

Per segment: check each voice's state (a bad one is freed and counted, never read from), glide X/Y (device/xy.py),
check that the pages each voice reads are resident (else it is muted and counted), mix its 8 streams on the bank's
16 kHz grid with weights that ramp linearly across the segment, through the sustain loop and its crossfade,
resample the mix once (4-point Catmull-Rom; resampling is linear, so this is exact) times its envelope
(device/envelopes.py), then the master volume ramp and the soft limiter."""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from device import kernels
from device.addressing import BankView
from device.envelopes import Rates, envelope
from device.kernels import FAULTS, FREE, STARVED
from device.voices import Voices
from device.xy import xy_weights

LIMIT_KNEE = 0.9  # the output limiter leaves samples within +-0.9 (-0.9 dBFS) alone


class Segment(NamedTuple):
    """What one segment's rendering needs besides the voices and the bank."""
    n: int                    # frames
    vol0: float               # the master volume ramps from vol0 to vol1
    vol1: float
    sus: float                # sustain level
    k_xy: float               # X/Y smoothing factor over the segment
    rates: Rates              # the envelope's
    gxy: np.ndarray           # the global X/Y target, 0..1 [2]
    bend: float               # global pitch bend, semitones
    chan_bend: np.ndarray     # each channel's, [16]
    max_rate: float           # source samples per output sample at most
    knee: float               # the limiter's (0: no limiter)
    loop_crossfade: int
    t: np.ndarray             # 1, 2, ... (at least n)


def render_segment(vo: Voices, b: BankView, out: np.ndarray, at: int, k: Segment) -> None:
    """Render frames [at, at + k.n) of out for every voice, advancing their state."""
    n = k.n
    act = np.flatnonzero(vo.stage)
    if act.size == 0:
        out[at:at + n] = 0.0
        return
    w0, dw = xy_weights(vo, act, k.gxy, k.k_xy, b, k.loop_crossfade)
    rate = vo.base_rate[act] * np.exp2((k.bend + k.chan_bend[vo.chan[act]]) / 12.0)
    pos0 = vo.pos[act]
    ok = _contain(vo, b, act, rate, pos0)
    if not ok.all():
        act, w0, dw, rate, pos0 = act[ok], w0[ok], dw[ok], rate[ok], pos0[ok]
    rate = np.minimum(rate, k.max_rate)
    ip0 = np.floor(pos0).astype(np.int64) - 1  # first source sample the interpolator needs
    span = int(math.ceil(float(rate.max(initial=0.0)) * n)) + 4
    ph = _physical(vo, act, ip0, span)  # [a, 8, span]
    audible = _audible(vo, b, act, ph[..., 0], span, w0, dw)
    env = envelope(vo, act, n, k.sus, k.rates, k.t)  # includes each voice's gain and the int16 scale; [a, n]
    vo.pos[act] = pos0 + rate * n
    if audible.size - np.count_nonzero(audible):
        vo.counters[STARVED] += audible.size - np.count_nonzero(audible)
    mix = _source_mix(vo, b, act, ph, (w0 != 0) | (dw != 0), audible, w0, dw,
                      (ip0 - pos0) / (rate * n), 1.0 / (rate * n))
    # resample (4-point Catmull-Rom): output sample j sits at source position pos0 + rate j, between mix[il]
    # and mix[il + 1]; slopes m = (y[i+1] - y[i-1]) / 2, and on [y1, y2]:
    # y1 + m1 t + c2 t^2 + c3 t^3 with c3 = m1 + m2 - 2 d, c2 = d - m1 - c3, d = y2 - y1
    xj = (pos0 - ip0)[:, None] + rate[:, None] * np.arange(n)
    il = xj.astype(np.int64)  # >= 1, so truncation is floor
    t = xj - il
    y0, y1, y2, y3 = (np.take_along_axis(mix, il + d, 1) for d in (-1, 0, 1, 2))
    m1, m2, d = 0.5 * (y2 - y0), 0.5 * (y3 - y1), y2 - y1
    c3 = m1 + m2 - 2.0 * d
    c2 = d - m1 - c3
    y = ((c3 * t + c2) * t + m1) * t + y1
    mono = np.einsum("an,an->n", env, y)
    mono *= k.vol1 if k.vol0 == k.vol1 else k.vol0 + (k.vol1 - k.vol0) * k.t[:n] / n
    if k.knee > 0.0:
        soft_limit(mono, k.knee)
    out[at:at + n] = mono[:, None]


def _contain(vo: Voices, b: BankView, act: np.ndarray, rate: np.ndarray, pos0: np.ndarray) -> np.ndarray:
    """Which voices may be read ([a] bool); the others (a state that could read outside the bank) are freed
    and counted."""
    st = vo.streams[act]
    off, ls, le, xf = st[..., 0], st[..., 1], st[..., 2], st[..., 4]
    sane = ((off >= 0) & (off + b.length <= b.flat.size) & (ls >= 0) & (ls < le) & (le <= b.length)
            & (xf >= 0) & (xf <= ls)).all(1)
    ok = sane & (rate > 0) & (rate < np.inf) & (pos0 >= 1.0) & (pos0 < 4.0e15)
    if not ok.all():
        bad = act[~ok]
        vo.free(bad)
        vo.counters[FAULTS] += bad.size
    return ok


def _physical(vo: Voices, act: np.ndarray, ip0: np.ndarray, span: int) -> np.ndarray:
    """The physical sample index (within its note) each stream reads at source samples ip0 .. ip0 + span - 1:
    [a, 8, span], wrapped through the sustain loop."""
    st = vo.streams[act][..., None]
    ls, le, ll = st[:, :, 1], st[:, :, 2], st[:, :, 3]
    q = ip0[:, None, None] + np.arange(span)
    return np.where(q >= le, ls + (q - ls) % ll, q)


def _audible(vo: Voices, b: BankView, act: np.ndarray, ph0: np.ndarray, span: int, w0: np.ndarray,
             dw: np.ndarray) -> np.ndarray:
    """Which voices have every page their weighted streams read this segment resident ([a] bool)."""
    audible = np.ones(act.size, bool)
    bits, shift = b.resident, b.shift
    if bits.size == 0:
        return audible
    for i, s in zip(*np.nonzero((w0 != 0) | (dw != 0))):
        off, ls, le, _, xf, _ = vo.streams[act[i], s].tolist()
        lo, hi = kernels.needed_range(int(ph0[i, s]), span, ls, le, xf)
        if not bits[(off + lo) >> shift:((off + hi - 1) >> shift) + 1].all():
            audible[i] = False
    return audible


def _source_mix(vo: Voices, b: BankView, act: np.ndarray, ph: np.ndarray, weighted: np.ndarray,
                audible: np.ndarray, w0: np.ndarray, dw: np.ndarray, ramp0: np.ndarray,
                ramp1: np.ndarray) -> np.ndarray:
    """Each voice's 8 streams at physical indices ph [a, 8, span], through the loop crossfade, mixed with
    weights w0 + dw * ramp (ramp = ramp0 + ramp1 * k: 0 at the segment's start position, 1 at its end):
    [a, span]. Only weighted streams of audible voices are read (the rest are zero)."""
    st = vo.streams[act][..., None]
    off, ll, xf, zs = st[:, :, 0], st[:, :, 3], st[:, :, 4], st[:, :, 5]
    read = np.broadcast_to((weighted & audible[:, None])[..., None], ph.shape)
    src = np.zeros(ph.shape)
    idx = off + ph
    src[read] = b.flat[idx[read]]
    zone = read & (ph >= zs)  # in a loop crossfade: blend towards the sample one loop earlier
    if zone.any():
        g = ((ph - zs + 1) / (xf + 1.0))[zone]
        x = src[zone]
        src[zone] = x + g * (b.flat[(idx - ll)[zone]] - x)
    span = ph.shape[2]
    ramp = ramp0[:, None] + ramp1[:, None] * np.arange(span)
    return np.einsum("as,asn->an", w0, src) + ramp * np.einsum("as,asn->an", dw, src)


def soft_limit(x: np.ndarray, knee: float = LIMIT_KNEE) -> None:
    """In place: samples within +-knee unchanged, above it a tanh curve (continuous slope) that approaches but
    never passes +-1.0."""
    over = np.abs(x) > knee
    if over.any():
        a = x[over]
        head = np.float32(1.0 - knee)
        x[over] = np.sign(a) * (np.float32(knee) + head * np.tanh((np.abs(a) - np.float32(knee)) / head))
