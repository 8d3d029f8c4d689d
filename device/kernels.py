"""The engine's per-block inner loop, compiled with numba (`render_segment`); numpy's array version in
device/engine.py is the reference it is tested against, and what runs where numba is missing.

One call renders one segment (frames with no event inside) for every voice: follow X/Y (new square: new streams),
check the voice's state (a bad one is freed and counted, never read from), check that the pages it will read are
resident (else it is muted for the segment and counted), mix its 8 streams on the bank's grid with weights ramping
across the segment, through the sustain loop and its crossfade, resample the mix (4-point Catmull-Rom) to the
output rate, and add it times its envelope. Then the master volume ramp and the soft limiter.

Compiled code is cached on disk (numba's `cache=True`: `__pycache__` beside this file, written at install time by
`python -m device.kernels`), so a warm start loads it instead of compiling.
"""
from __future__ import annotations

import math
import sys
import time

import numpy as np

try:  # numba is in the device extra; without it the engine runs its numpy reference path
    import numba
except ImportError:  # pragma: no cover - exercised where numba is not installed
    numba = None

COMPILED = numba is not None

# voice stages
FREE, ATTACK, DECAY, RELEASE, KILL = 0, 1, 2, 3, 4
EPS = 1e-3  # -60 dB: the decay and release times are times to get this close
# counters[]: voice-segments muted because a page was not resident; voices freed for a bad state
STARVED, FAULTS = 0, 1


def jit(**options):
    """numba.njit(cache=True, **options) where numba exists, else the plain Python function."""
    def wrap(fn):
        return numba.njit(cache=True, **options)(fn) if COMPILED else fn
    return wrap


@jit()
def corner_stream_weights(u: float, v: float, vw0: float, vw1: float, w: np.ndarray) -> None:
    """Stream weights w[8] (cell-major (0,0), (1,0), (0,1), (1,1); layer-minor) at local square position (u, v)."""
    c0 = (1.0 - v) * (1.0 - u)
    c1 = (1.0 - v) * u
    c2 = v * (1.0 - u)
    c3 = v * u
    w[0], w[1], w[2], w[3] = c0 * vw0, c0 * vw1, c1 * vw0, c1 * vw1
    w[4], w[5], w[6], w[7] = c2 * vw0, c2 * vw1, c3 * vw0, c3 * vw1


@jit()
def assign_streams(v: int, streams: np.ndarray, square: np.ndarray, p_idx: np.ndarray, v_idx: np.ndarray,
                   loops: np.ndarray, nv: int, grid: int, length: int, loop_xf: int) -> None:
    """Point voice v at the 8 streams of its square: per stream (flat offset of its note, loop start, loop end,
    loop length, crossfade length, crossfade start)."""
    for c in range(4):
        x = square[v, 0] + (c & 1)
        y = square[v, 1] + (c >> 1)
        for lay in range(2):
            note = ((p_idx[v] * nv + v_idx[v, lay]) * grid + y) * grid + x
            s = streams[v, c * 2 + lay]
            if not 0 <= note < loops.shape[0]:  # a corrupt voice: marked unreadable (render_segment frees it)
                s[0] = -1
                continue
            ls, le = loops[note, 0], loops[note, 1]
            xf = min(loop_xf, (le - ls) // 2, ls)
            s[0], s[1], s[2], s[3], s[4], s[5] = note * length, ls, le, le - ls, xf, le - xf


@jit()
def needed_range(ph0: int, span: int, ls: int, le: int, xf: int) -> tuple[int, int]:
    """The samples [lo, hi) of its note a stream at physical index ph0 reads in the next `span` source samples:
    a straight run, or, once it reaches the loop's crossfade, the loop with the run-up its crossfade reads."""
    if ph0 + span <= le - xf:
        return ph0, ph0 + span
    return min(ph0, ls - xf), le


@jit()
def render_segment(out, at, n, stage, held, sustained, level, gain, pos, base_rate, chan, p_idx, v_idx, v_w,
                   sxy, vxy, square, streams, w8, chan_bend, bend, gx, gy, k_xy, att_slope, log_d, log_r, sus,
                   kill_slope, vol0, vol1, max_rate, knee, flat, loops, nv, grid, length, loop_xf, resident, shift,
                   mix, env, mono, counters):
    """Render frames [at, at + n) of out [frames, channels] (float32) for every voice; advances the voices' state.
    gx, gy: the global X/Y (0..1); k_xy: X/Y smoothing factor over the segment; att_slope, kill_slope: level per
    frame; log_d, log_r: log of the decay and release factor per frame; sus: sustain level; vol0 -> vol1: master
    volume across the segment; knee: the limiter's (0: off); resident: one byte per 2**shift samples of flat,
    non-zero where resident (empty: everything readable); mix, env, mono: scratch (mix >= max_rate * n + 5)."""
    for j in range(n):
        mono[j] = 0.0
    g1 = grid - 1
    w0 = np.empty(8)
    dw = np.empty(8)
    ph0s = np.empty(8, np.int64)
    for v in range(stage.shape[0]):
        st = stage[v]
        if st == FREE:
            continue
        # -- X/Y: follow the target, staying inside the square for this segment
        tx = (gx if math.isnan(vxy[v, 0]) else vxy[v, 0]) * g1
        ty = (gy if math.isnan(vxy[v, 1]) else vxy[v, 1]) * g1
        s0x, s0y = sxy[v, 0], sxy[v, 1]
        settled = s0x == tx and s0y == ty
        sqx, sqy = square[v, 0], square[v, 1]
        if not (settled and sqx >= 0):
            dx, dy = tx - s0x, ty - s0y
            sqx = int(math.floor(s0x + 1e-9 * (1.0 if dx > 0 else (-1.0 if dx < 0 else 0.0))))
            sqy = int(math.floor(s0y + 1e-9 * (1.0 if dy > 0 else (-1.0 if dy < 0 else 0.0))))
            sqx = min(max(sqx, 0), grid - 2)
            sqy = min(max(sqy, 0), grid - 2)
            if sqx != square[v, 0] or sqy != square[v, 1]:  # a new square (or a new voice): its streams
                square[v, 0], square[v, 1] = sqx, sqy
                assign_streams(v, streams, square, p_idx, v_idx, loops, nv, grid, length, loop_xf)
                corner_stream_weights(s0x - sqx, s0y - sqy, v_w[v, 0], v_w[v, 1], w8[v])
        for s in range(8):
            w0[s] = w8[v, s]
            dw[s] = 0.0
        if not settled:
            s1x = tx + (s0x - tx) * k_xy
            s1y = ty + (s0y - ty) * k_xy
            if abs(s1x - tx) < 1e-7:
                s1x = tx
            if abs(s1y - ty) < 1e-7:
                s1y = ty
            s1x = min(max(s1x, sqx), sqx + 1)
            s1y = min(max(s1y, sqy), sqy + 1)
            sxy[v, 0], sxy[v, 1] = s1x, s1y
            corner_stream_weights(s1x - sqx, s1y - sqy, v_w[v, 0], v_w[v, 1], w8[v])
            for s in range(8):
                dw[s] = w8[v, s] - w0[s]
        # -- containment: a voice whose state could read outside the bank is freed, never read from
        rate = base_rate[v] * 2.0 ** ((bend + chan_bend[chan[v]]) / 12.0)
        p0 = pos[v]
        ok = rate > 0.0 and rate < math.inf and p0 >= 1.0 and p0 < 4.0e15
        for s in range(8):
            off, ls, le, xf = streams[v, s, 0], streams[v, s, 1], streams[v, s, 2], streams[v, s, 4]
            if not (off >= 0 and off + length <= flat.shape[0] and 0 <= ls and ls < le and le <= length
                    and 0 <= xf and xf <= ls):
                ok = False
        if not ok:
            stage[v] = FREE
            held[v] = False
            sustained[v] = False
            counters[FAULTS] += 1
            continue
        rate = min(rate, max_rate)
        ip0 = int(math.floor(p0)) - 1  # the first source sample the interpolator needs
        span = int(math.ceil(rate * n)) + 4
        # -- residency: every page a weighted stream reads this segment must be in memory
        audible = True
        for s in range(8):
            ls, le, ll = streams[v, s, 1], streams[v, s, 2], streams[v, s, 3]
            ph0s[s] = ip0 if ip0 < le else ls + (ip0 - ls) % ll
            if resident.shape[0] and (w0[s] != 0.0 or dw[s] != 0.0):
                lo, hi = needed_range(ph0s[s], span, ls, le, streams[v, s, 4])
                off = streams[v, s, 0]
                for c in range((off + lo) >> shift, ((off + hi - 1) >> shift) + 1):
                    if resident[c] == 0:
                        audible = False
        # -- the envelope (times gain / 32768), advancing the stage
        scale = gain[v] * (1.0 / 32768.0)
        l0 = level[v]
        if st == DECAY and l0 == sus:  # sustaining steadily
            for j in range(n):
                env[j] = scale * sus
        else:
            logc, base, amp, slope = 0.0, l0, 0.0, 0.0
            if st == RELEASE:
                logc, base, amp = log_r, -EPS, l0 + EPS
            elif st == DECAY:
                logc, base, amp = log_d, sus, l0 - sus
            elif st == ATTACK:
                slope = att_slope
            else:
                slope = -kill_slope
            for j in range(n):
                t = j + 1.0
                env[j] = max((base + amp * math.exp(logc * t) + slope * t) * scale, 0.0)
            end = base + amp * math.exp(logc * n) + slope * n
            if st == ATTACK and end >= 1.0:  # the attack peaks in this segment: decay from there
                tc = (1.0 - l0) / slope
                for j in range(n):
                    t = j + 1.0
                    if t >= tc:
                        env[j] = max(scale * (sus + (1.0 - sus) * math.exp(log_d * (t - tc))), 0.0)
                end = sus + (1.0 - sus) * math.exp(log_d * (n - tc))
                stage[v] = DECAY
            end = max(end, 0.0)
            if st == DECAY and abs(end - sus) < 1e-9:
                end = sus
            level[v] = end
            if (st == RELEASE or st == KILL) and end <= 0.0:
                stage[v] = FREE
                held[v] = False
                sustained[v] = False
        pos[v] = p0 + rate * n
        if not audible:
            counters[STARVED] += 1
            continue
        # -- the 8 streams mixed on the source grid, weights ramping linearly in source position
        for k in range(span):
            mix[k] = 0.0
        ramp1 = 1.0 / (rate * n)
        ramp0 = (ip0 - p0) * ramp1
        for s in range(8):
            a, b = w0[s], dw[s]
            if a == 0.0 and b == 0.0:
                continue
            off, ls, le, ll, xf, zs = (streams[v, s, 0], streams[v, s, 1], streams[v, s, 2], streams[v, s, 3],
                                       streams[v, s, 4], streams[v, s, 5])
            ph = ph0s[s]
            inv = 1.0 / (xf + 1.0)
            for k in range(span):
                x = float(flat[off + ph])
                if ph >= zs:  # in the crossfade: blend towards the sample one loop earlier
                    x += (ph - zs + 1) * inv * (float(flat[off + ph - ll]) - x)
                mix[k] += (a + b * (ramp0 + ramp1 * k)) * x
                ph += 1
                if ph >= le:
                    ph = ls
        # -- resample (Catmull-Rom) and add with the envelope
        frac0 = p0 - ip0
        for j in range(n):
            xj = frac0 + rate * j
            il = int(xj)  # >= 1
            t = xj - il
            y0, y1, y2, y3 = mix[il - 1], mix[il], mix[il + 1], mix[il + 2]
            m1 = 0.5 * (y2 - y0)
            m2 = 0.5 * (y3 - y1)
            d = y2 - y1
            c3 = m1 + m2 - 2.0 * d
            c2 = d - m1 - c3
            mono[j] += env[j] * (((c3 * t + c2) * t + m1) * t + y1)
    # -- master volume, limiter, both channels
    head = 1.0 - knee
    for j in range(n):
        y = mono[j] * (vol1 if vol0 == vol1 else vol0 + (vol1 - vol0) * (j + 1.0) / n)
        if knee > 0.0 and abs(y) > knee:
            y = math.copysign(knee + head * math.tanh((abs(y) - knee) / head), y)
        for ch in range(out.shape[1]):
            out[at + j, ch] = y


def warm(verbose: bool = True) -> float:
    """Compile (or load from numba's on-disk cache) every kernel the instrument uses, by rendering a little on a
    tiny in-memory bank; returns the seconds it took."""
    import tempfile
    from pathlib import Path

    from device.bank import BankWriter, open_bank
    from device.engine import Engine, EngineConfig
    from device.residency import Prefetcher, Residency

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nsynth-warm-") as tmp:
        path = Path(tmp) / "bank"
        with BankWriter(path, grid=2, pitches=[60], velocities=[100], note_length=4096, corners="abcd") as w:
            w.write_block(0, 0, np.zeros((2, 2, 4096), np.int16))
        for gated in (False, True):
            bank = open_bank(path)
            if gated:  # the live instrument's bank: with pages resident, kept by the prefetch thread
                bank.residency = Residency(bank, lock=False)
            e = Engine(bank, EngineConfig())
            if gated:
                Prefetcher(e, bank.samples.nbytes).prepare(bank)
            e.note_on(60, 100)
            e.post_params(x=0.3, y=0.6)
            e.render(4 * e.block)
    dt = time.perf_counter() - t0
    if verbose:
        where = "compiled (numba " + numba.__version__ + ")" if COMPILED else "numpy (numba is not installed)"
        print(f"engine kernels ready in {dt:.2f} s: {where}")
    return dt


if __name__ == "__main__":
    warm()
    sys.exit(0)
