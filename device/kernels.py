"""The engine's per-block inner loop, compiled with numba (`render_segment`); numpy's array version in
device/mix.py is the reference it is tested against, and what runs where numba is missing.

One call renders one segment (frames with no event inside) for every voice: follow X/Y (new square: new streams),
check the voice's state (a bad one is freed and counted, never read from), check that the pages it will read are
resident (else it is muted for the segment and counted), mix its 8 streams on the bank's grid with weights ramping
across the segment, through the sustain loop and its crossfade, resample the mix (4-point Catmull-Rom) to the
output rate, and add it times its envelope. Then the master volume ramp and the soft limiter.

Compiled code is cached on disk (numba's `cache=True`: `__pycache__` beside this file, or $NUMBA_CACHE_DIR, which
nsynth.service sets to /var/lib/nsynth/state/numba), written at install time by `nsynth engine warm`
(scripts/install.sh, systemd/nsynth-install: first boot and deploy), so the instrument loads it instead of
compiling (about 20 s here, a minute or more on a Pi).
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


def without_blas_check() -> None:
    """Load numba's numpy support without its check for BLAS: on its first compile or cache load numba imports
    scipy.linalg (0.25 s of the audio host's start here) only to learn whether np.dot and np.linalg can compile.
    No kernel here does linear algebra, so in a process that runs only these (the audio host) the check is made to
    fail: scipy.linalg.cython_blas is unimportable while numba.np.arraymath is imported, then importable again."""
    name = "scipy.linalg.cython_blas"
    if not COMPILED or "numba.np.arraymath" in sys.modules or name in sys.modules:
        return
    sys.modules[name] = None  # type: ignore[assignment]  # an import of it raises ImportError
    try:
        import numba.np.arraymath  # noqa: F401
    finally:
        del sys.modules[name]

# voice stages
FREE, ATTACK, DECAY, RELEASE, KILL = 0, 1, 2, 3, 4
EPS = 1e-3  # -60 dB: the decay and release times are times to get this close
# counters[]: voice-segments muted because a page was not resident; voices freed for a bad state
STARVED, FAULTS = 0, 1
# the voices' state, packed in three arrays so that a call passes few of them (device/voices.py keeps named views):
# vf float64 [voices, NF]: envelope level, gain, read position (source samples, unwrapped by loops), base rate,
#   smoothed X/Y (grid units), own X/Y (0..1, NaN: follow the global one), velocity layer weights, stream weights
F_LEVEL, F_GAIN, F_POS, F_RATE, F_SXY, F_VXY, F_VW, F_W8 = 0, 1, 2, 3, 4, 6, 8, 10
NF = 18
# vi int64 [voices, NI]: MIDI channel, pitch index, velocity layer indices, square (cx, cy) of its 4 cells
I_CHAN, I_P, I_V, I_SQ = 0, 1, 2, 4
NI = 6
# vs int8 [voices, 3]: stage, key held, held by the pedal
S_STAGE, S_HELD, S_SUS = 0, 1, 2


# fast-math without the no-NaN / no-infinity assumptions: NaN marks "no own X/Y" and fails the state checks
FASTMATH = {"contract", "reassoc", "arcp", "nsz", "afn"}


def jit(**options):
    """numba.njit(cache=True, **options) where numba exists, else the plain Python function."""
    def wrap(fn):
        return numba.njit(cache=True, **options)(fn) if COMPILED else fn
    return wrap


@jit()
def corner_stream_weights(u: float, v: float, vf: np.ndarray, row: int, col: int) -> None:
    """Stream weights (cell-major (0,0), (1,0), (0,1), (1,1); layer-minor) at local square position (u, v) into
    vf[row, col:col + 8], from the voice's velocity layer weights vf[row, F_VW:F_VW + 2]."""
    vw0, vw1 = vf[row, F_VW], vf[row, F_VW + 1]
    c0 = (1.0 - v) * (1.0 - u)
    c1 = (1.0 - v) * u
    c2 = v * (1.0 - u)
    c3 = v * u
    vf[row, col], vf[row, col + 1], vf[row, col + 2], vf[row, col + 3] = c0 * vw0, c0 * vw1, c1 * vw0, c1 * vw1
    vf[row, col + 4], vf[row, col + 5], vf[row, col + 6], vf[row, col + 7] = c2 * vw0, c2 * vw1, c3 * vw0, c3 * vw1


@jit()
def assign_streams(v: int, streams: np.ndarray, vi: np.ndarray, loops: np.ndarray, nv: int, grid: int,
                   length: int, loop_xf: int) -> None:
    """Point voice v at the 8 streams of its square: per stream (flat offset of its note, loop start, loop end,
    loop length, crossfade length, crossfade start)."""
    for c in range(4):
        x = vi[v, I_SQ] + (c & 1)
        y = vi[v, I_SQ + 1] + (c >> 1)
        for lay in range(2):
            note = ((vi[v, I_P] * nv + vi[v, I_V + lay]) * grid + y) * grid + x
            s = c * 2 + lay
            if not 0 <= note < loops.shape[0]:  # a corrupt voice: marked unreadable (render_segment frees it)
                streams[v, s, 0] = -1
                continue
            ls, le = loops[note, 0], loops[note, 1]
            xf = min(loop_xf, (le - ls) // 2, ls)
            streams[v, s, 0], streams[v, s, 1], streams[v, s, 2] = note * length, ls, le
            streams[v, s, 3], streams[v, s, 4], streams[v, s, 5] = le - ls, xf, le - xf


@jit()
def claim_voice(vs: np.ndarray, keys: np.ndarray, chans: np.ndarray, age: np.ndarray, level: np.ndarray, key: int,
                ch: int, max_voices: int) -> int:
    """The slot a note-on plays in (Voices.claim, compiled: a chord of 32 notes in one block
    costs microseconds): a voice of the same key and channel not yet releasing fades out (a retrigger); with
    max_voices sounding, the oldest fades out, released voices first; then the first free slot, else the
    quietest fading one."""
    cap = vs.shape[0]
    live = 0
    for i in range(cap):
        st = vs[i, S_STAGE]
        if st != FREE and st != RELEASE and keys[i] == key and chans[i] == ch:
            vs[i, S_STAGE], vs[i, S_HELD], vs[i, S_SUS] = KILL, 0, 0
        if vs[i, S_STAGE] != FREE and vs[i, S_STAGE] != KILL:
            live += 1
    if live >= max_voices:
        oldest, oldest_released = -1, -1
        for i in range(cap):
            st = vs[i, S_STAGE]
            if st == FREE or st == KILL:
                continue
            if oldest < 0 or age[i] < age[oldest]:
                oldest = i
            if st == RELEASE and (oldest_released < 0 or age[i] < age[oldest_released]):
                oldest_released = i
        victim = oldest_released if oldest_released >= 0 else oldest
        vs[victim, S_STAGE], vs[victim, S_HELD], vs[victim, S_SUS] = KILL, 0, 0
    quietest = 0
    for i in range(cap):
        if vs[i, S_STAGE] == FREE:
            return i
    found = False
    for i in range(cap):
        if vs[i, S_STAGE] == KILL and (not found or level[i] < level[quietest]):
            quietest, found = i, True
    return quietest


@jit()
def needed_range(ph0: int, span: int, ls: int, le: int, xf: int) -> tuple[int, int]:
    """The samples [lo, hi) of its note a stream at physical index ph0 reads in the next `span` source samples:
    a straight run, or, once it reaches the loop's crossfade, the loop with the run-up its crossfade reads."""
    if ph0 + span <= le - xf:
        return ph0, ph0 + span
    return min(ph0, ls - xf), le


@jit(fastmath=FASTMATH)
def render_segment(out, at, n, vf, vi, vs, streams, chan_bend, bend, gx, gy, k_xy, att_slope, log_d, log_r, sus,
                   kill_slope, vol0, vol1, max_rate, knee, flat, loops, nv, grid, length, loop_xf, resident, shift,
                   scratch, counters):
    """Render frames [at, at + n) of out [frames, channels] (float32) for every voice; advances the voices' state
    (vf, vi, vs, streams: see above). gx, gy: the global X/Y (0..1); k_xy: X/Y smoothing factor over the segment;
    att_slope, kill_slope: level per frame; log_d, log_r: log of the decay and release factor per frame; sus:
    sustain level; vol0 -> vol1: master volume across the segment; knee: the limiter's (0: off); resident: one
    byte per 2**shift samples of flat, non-zero where resident (empty: everything readable); scratch [3, >=
    max_rate * n + 5]: the source mix, the envelope, the output."""
    mix, env, mono = scratch[0], scratch[1], scratch[2]
    for j in range(n):
        mono[j] = 0.0
    g1 = grid - 1
    w0 = np.empty(8)
    dw = np.empty(8)
    ph0s = np.empty(8, np.int64)
    for v in range(vs.shape[0]):
        st = vs[v, S_STAGE]
        if st == FREE:
            continue
        # -- X/Y: follow the target, staying inside the square for this segment
        tx = (gx if math.isnan(vf[v, F_VXY]) else vf[v, F_VXY]) * g1
        ty = (gy if math.isnan(vf[v, F_VXY + 1]) else vf[v, F_VXY + 1]) * g1
        s0x, s0y = vf[v, F_SXY], vf[v, F_SXY + 1]
        settled = s0x == tx and s0y == ty
        sqx, sqy = vi[v, I_SQ], vi[v, I_SQ + 1]
        if not (settled and sqx >= 0):
            dx, dy = tx - s0x, ty - s0y
            sqx = int(math.floor(s0x + 1e-9 * (1.0 if dx > 0 else (-1.0 if dx < 0 else 0.0))))
            sqy = int(math.floor(s0y + 1e-9 * (1.0 if dy > 0 else (-1.0 if dy < 0 else 0.0))))
            sqx = min(max(sqx, 0), grid - 2)
            sqy = min(max(sqy, 0), grid - 2)
            if sqx != vi[v, I_SQ] or sqy != vi[v, I_SQ + 1]:  # a new square (or a new voice): its streams
                vi[v, I_SQ], vi[v, I_SQ + 1] = sqx, sqy
                assign_streams(v, streams, vi, loops, nv, grid, length, loop_xf)
                corner_stream_weights(s0x - sqx, s0y - sqy, vf, v, F_W8)
        for s in range(8):
            w0[s] = vf[v, F_W8 + s]
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
            vf[v, F_SXY], vf[v, F_SXY + 1] = s1x, s1y
            corner_stream_weights(s1x - sqx, s1y - sqy, vf, v, F_W8)
            for s in range(8):
                dw[s] = vf[v, F_W8 + s] - w0[s]
        # -- containment: a voice whose state could read outside the bank is freed, never read from
        rate = vf[v, F_RATE] * 2.0 ** ((bend + chan_bend[vi[v, I_CHAN]]) / 12.0)
        p0 = vf[v, F_POS]
        ok = rate > 0.0 and rate < math.inf and p0 >= 1.0 and p0 < 4.0e15
        for s in range(8):
            off, ls, le, xf = streams[v, s, 0], streams[v, s, 1], streams[v, s, 2], streams[v, s, 4]
            if not (off >= 0 and off + length <= flat.shape[0] and 0 <= ls and ls < le and le <= length
                    and 0 <= xf and xf <= ls):
                ok = False
        if not ok:
            vs[v, S_STAGE] = FREE
            vs[v, S_HELD] = 0
            vs[v, S_SUS] = 0
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
        scale = vf[v, F_GAIN] * (1.0 / 32768.0)
        l0 = vf[v, F_LEVEL]
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
                vs[v, S_STAGE] = DECAY
            end = max(end, 0.0)
            if st == DECAY and abs(end - sus) < 1e-9:
                end = sus
            vf[v, F_LEVEL] = end
            if (st == RELEASE or st == KILL) and end <= 0.0:
                vs[v, S_STAGE] = FREE
                vs[v, S_HELD] = 0
                vs[v, S_SUS] = 0
        vf[v, F_POS] = p0 + rate * n
        if not audible:
            counters[STARVED] += 1
            continue
        # -- the 8 streams mixed on the source grid, weights ramping linearly in source position: in runs that
        #    neither wrap nor cross into the loop's crossfade (straight loops the compiler vectorises)
        for k in range(span):
            mix[k] = 0.0
        ramp1 = 1.0 / (rate * n)
        ramp0 = (ip0 - p0) * ramp1
        for s in range(8):
            if w0[s] == 0.0 and dw[s] == 0.0:
                continue
            wa = w0[s] + dw[s] * ramp0  # the weight at mix[k] is wa + wb * k
            wb = dw[s] * ramp1
            off, ls, le, ll, xf, zs = (streams[v, s, 0], streams[v, s, 1], streams[v, s, 2], streams[v, s, 3],
                                       streams[v, s, 4], streams[v, s, 5])
            inv = 1.0 / (xf + 1.0)
            ph = ph0s[s]
            k = 0
            while k < span:
                if ph >= le:
                    ph = ls
                # (slices indexed from 0: the compiler then knows no index is negative, and vectorises)
                end = min(span, k + ((zs if ph < zs else le) - ph))
                dst = mix[k:end]
                src = flat[off + ph:off + ph + (end - k)]
                w = wa + wb * k
                if ph < zs:  # plain samples up to the crossfade
                    for i in range(end - k):
                        dst[i] += (w + wb * i) * src[i]
                else:  # in the crossfade: blend towards the sample one loop earlier, weight rising
                    back = flat[off + ph - ll:off + ph - ll + (end - k)]
                    g = (ph - zs + 1) * inv
                    for i in range(end - k):
                        x = float(src[i])
                        dst[i] += (w + wb * i) * (x + (g + inv * i) * (float(back[i]) - x))
                ph += end - k
                k = end
        # -- resample (Catmull-Rom) and add with the envelope: output j sits at source position p0 + rate j,
        #    between mix[il] and mix[il + 1]; the cubic of each source interval is set up once
        frac0 = p0 - ip0
        cur = -1
        c0 = c1 = c2 = c3 = 0.0
        for j in range(n):
            xj = frac0 + rate * j
            il = int(xj)  # >= 1
            if il != cur:
                cur = il
                y0, y1, y2, y3 = mix[il - 1], mix[il], mix[il + 1], mix[il + 2]
                c0 = y1
                c1 = 0.5 * (y2 - y0)
                d = y2 - y1
                c3 = c1 + 0.5 * (y3 - y1) - 2.0 * d
                c2 = d - c1 - c3
            t = xj - il
            mono[j] += env[j] * (((c3 * t + c2) * t + c1) * t + c0)
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


def configure_warm(parser) -> None:
    parser.set_defaults(func=lambda args: warm() and 0)
