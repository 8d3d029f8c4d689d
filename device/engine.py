"""The voice engine: bank notes -> 48 kHz stereo.

Per voice: the nearest rendered pitch, resampled (4-point Catmull-Rom) to the exact MIDI pitch plus pitch bend;
a crossfade of the two nearest velocity layers (each layer is already levelled for its velocity; a gain only
outside the layers' range); the four grid cells around the voice's (smoothed) XY position with bilinear weights; an
ADSR envelope; a forward sustain loop between the bank's loop points with a crossfade, so a key can be held
forever. The output passes a soft limiter, so it never leaves +-1.0.

The 8 source streams of a voice (4 cells x 2 velocity layers) are mixed on the bank's 16 kHz grid with weights
that ramp linearly across each segment, and the mix is resampled once (resampling is linear, so this is exact).
The per-segment loop is compiled (device/kernels.py, numba) where numba is installed; the numpy version here,
all voices at once in array operations, is its reference (tests hold them to each other) and its fallback.

Threading: producers (MIDI, controls, code) call `post*` from any thread; the event is checked there and only
appended to a `collections.deque` (atomic, lock-free for the audio thread). The audio thread calls
`process(out)`, which drains the deque, applies each event at its exact frame (the block is split into segments at
event frames), and renders. Events carry an absolute frame number, or None for "at the start of the next block".
The audio thread makes no system call and reads only bank pages that are resident: when the bank has a
`residency` (device/residency.py, kept by the live instrument's prefetch thread), a voice whose pages are not all
in memory is muted for that segment (counted in `starved`) instead of waiting for the disk. A voice whose state
could read outside the bank is freed and counted (`faults`). A bug that raises in the audio thread is contained
there: an event that raises is dropped; a segment that raises is rendered again without the voices that raise on
their own (they are freed), or left silent with every voice freed when no voice is to blame; each is counted in
`failures` and logged in `failure_log` for another thread to report. The instrument plays on.

Parameters are normalised 0..1 like the original's pots (see `PARAMS`); their meaning:
  position  start offset into the note: position x half the note length
  attack    max(1 ms, a^2 x 4 s), linear rise
  decay     max(1 ms, d x 1 s) to reach the sustain level (exponential, -60 dB of the way)
  sustain   sustain level (linear amplitude)
  release   1 ms + r^3 x 10 s to -60 dB (exponential, ends at exactly zero)
  volume    master gain (linear amplitude)
  x, y      position on the timbre grid (0 = left / bottom, 1 = right / top)
Sustain and volume, which scale the sound directly, are slewed (one-pole, 50 ms); the envelope times take
effect at once (a changed rate cannot click); each voice follows x and y with a 20 ms smoothing.
"""
from __future__ import annotations

import collections
import math
import operator
from dataclasses import dataclass
from typing import Iterable, NamedTuple

import numpy as np

from device import kernels
from device.bank import Bank
from device.kernels import ATTACK, DECAY, EPS, FAULTS, FREE, KILL, RELEASE, STARVED
from nsynth.params import DEFAULT_PARAMS, PARAMS

BEND_LIMIT = 96.0  # semitones: a bend event asks for at most this much either way (the MPE maximum); more is clamped
LIMIT_KNEE = 0.9  # the output limiter leaves samples within +-0.9 (-0.9 dBFS) alone
_NCH = 16


@dataclass(frozen=True)
class EngineConfig:
    sample_rate: int = 48000
    block: int = 128
    max_voices: int = 32          # sounding voices; a few more slots hold stolen voices while they fade
    steal_fade_s: float = 0.005   # fade of a stolen or retriggered voice
    xy_smooth_s: float = 0.02     # time constant of a voice following X/Y
    param_slew_s: float = 0.05    # time constant of the other parameters
    loop_crossfade: int = 4000    # source samples (the original's), shortened to fit each loop
    velocity_curve: float = 1.0   # below the lowest layer (above the highest): (velocity / layer's) ** curve
    limiter: bool = True          # soft-limit the output to +-1.0 (see soft_limit)
    fade_slots: int = 16
    max_rate: float = 16.0        # source samples read per output sample at most (higher pitches are capped)
    compiled: bool = True         # the compiled kernel where numba is installed; False: the numpy reference


def attack_seconds(a: float) -> float:
    return max(0.001, a * a * 4.0)


def decay_seconds(d: float) -> float:
    return max(0.001, d * 1.0)


def release_seconds(r: float) -> float:
    return 0.001 + r ** 3 * 10.0


class Engine:
    """A polyphonic sampler over a bank. `process(out)` renders into a float32 [frames, 2] array."""

    def __init__(self, bank: Bank, config: EngineConfig = EngineConfig(), params: dict | None = None):
        self.config = c = config
        self.fs = c.sample_rate
        self.block = c.block
        self.frame = 0  # absolute frame of the next block to render
        self._now = 0  # frame at which events are being applied
        self._queue: collections.deque = collections.deque()
        self._pending: list[tuple[int, int, tuple]] = []  # (frame, seq, event) owned by the audio thread
        self._seq = 0
        self._notes = 0
        self._target = np.array([DEFAULT_PARAMS[p] for p in PARAMS], dtype=np.float64)
        if params:
            params = checked_event(("params", params))[1]
            self._target[:] = [min(max(params.get(p, DEFAULT_PARAMS[p]), 0.0), 1.0) for p in PARAMS]
        self._sus, self._vol = float(self._target[3]), float(self._target[5])  # slewed sustain level and volume
        self._rates: tuple | None = None  # envelope rates and the targets as floats (None: to be computed)
        self._factors: dict[int, tuple[float, float]] = {}
        self._chan_bend = np.zeros(_NCH)
        self._global_bend = 0.0
        self._chan_xy = np.full((_NCH, 2), np.nan)  # MPE X/Y a channel sent for its note (NaN: none)
        self._pedal = False
        self._swap: tuple[int, Bank] | None = None
        self._t = np.arange(1, c.block + 1, dtype=np.float64)
        cap = c.max_voices + c.fade_slots
        self._cap = cap
        # the voices' state: named views into the packed arrays the compiled kernel takes (kernels.F_*, I_*, S_*)
        self._vf = np.zeros((cap, kernels.NF))
        self._vi = np.zeros((cap, kernels.NI), np.int64)
        self._vs = np.zeros((cap, 3), np.int8)
        self.stage = self._vs[:, kernels.S_STAGE]
        self.held = self._vs[:, kernels.S_HELD].view(bool)       # key is down
        self.sustained = self._vs[:, kernels.S_SUS].view(bool)   # key is up but the pedal holds the voice
        self.level = self._vf[:, kernels.F_LEVEL]
        self.gain = self._vf[:, kernels.F_GAIN]
        self.pos = self._vf[:, kernels.F_POS]  # virtual read position in source samples (unwrapped by loops)
        self.base_rate = self._vf[:, kernels.F_RATE]
        self.sxy = self._vf[:, kernels.F_SXY:kernels.F_SXY + 2]  # smoothed position in grid units
        self.vxy = self._vf[:, kernels.F_VXY:kernels.F_VXY + 2]  # own X/Y (MPE), 0..1; NaN: follow the global X/Y
        self.vxy[:] = np.nan
        self.v_w = self._vf[:, kernels.F_VW:kernels.F_VW + 2]
        self.w8 = self._vf[:, kernels.F_W8:kernels.F_W8 + 8]  # stream weights at the voice's current X/Y
        self.chan = self._vi[:, kernels.I_CHAN]
        self.p_idx = self._vi[:, kernels.I_P]
        self.v_idx = self._vi[:, kernels.I_V:kernels.I_V + 2]
        self.square = self._vi[:, kernels.I_SQ:kernels.I_SQ + 2]  # (cx, cy) of the 4 cells in use
        self.square[:] = -1
        self.key = np.zeros(cap, np.int16)
        self.age = np.zeros(cap, np.int64)
        # per stream (8 per voice, cell-major, layer-minor): flat sample offset of its note, loop start, loop end,
        # loop length, crossfade length, crossfade start
        self.streams = np.zeros((cap, 8, 6), np.int64)
        self.streams[..., 2:4] = 1
        self.counters = np.zeros(2, np.int64)  # [STARVED, FAULTS] (see the properties)
        # contained failures (a bug raising in the audio thread): how many, and the latest (what, error) for
        # the threads that report them (they pop from the left)
        self.failures = 0
        self.failure_log: collections.deque = collections.deque(maxlen=16)
        self._kernel = kernels.render_segment if c.compiled and kernels.COMPILED else None
        self._knee = LIMIT_KNEE if c.limiter else 0.0
        self._scratch = np.empty((3, int(math.ceil(c.max_rate * c.block)) + 8))  # the compiled kernel's
        self._scratch.fill(0.0)  # written now: its pages are not first touched (faulted in) by the audio thread
        self._set_bank(bank)

    # ---- producers (any thread) -------------------------------------------------------------------------
    def post(self, event: tuple, frame: int | None = None) -> None:
        """Queue one event: ("on", ch, key, vel), ("off", ch, key), ("params", {name: 0..1}),
        ("bend", ch or None, semitones), ("pedal", down), ("note_xy", ch, x or None, y or None),
        ("all_notes_off",), ("all_sound_off",), ("reset_controllers",), ("bank", Bank).
        Channels are 0..15, keys and velocities 0..127; a malformed event raises ValueError here, in the
        posting thread, never in the audio thread. A bend is clamped to +-BEND_LIMIT semitones, parameters to
        0..1 (and the resampling rate, bend included, to `EngineConfig.max_rate`)."""
        self._queue.append((frame, checked_event(event)))

    def post_params(self, frame: int | None = None, **params: float) -> None:
        """Set parameters (normalised 0..1, names in PARAMS) from any thread, applied at `frame` or the next block."""
        self.post(("params", params), frame)

    def note_on(self, key: int, velocity: int, channel: int = 0, frame: int | None = None) -> None:
        self.post(("on", channel, key, velocity), frame)

    def note_off(self, key: int, channel: int = 0, frame: int | None = None) -> None:
        self.post(("off", channel, key), frame)

    def set_bank(self, bank: Bank, frame: int | None = None) -> None:
        """Switch banks: sounding voices fade out (steal fade), then the new bank is used."""
        self.post(("bank", bank), frame)

    @property
    def bank(self) -> Bank:
        return self._bank

    @property
    def params(self) -> dict[str, float]:
        """The parameter targets (what was last set)."""
        return dict(zip(PARAMS, self._target.tolist()))

    def active_voices(self) -> int:
        return int(np.count_nonzero(self.stage))

    def held_voices(self) -> int:
        """Voices whose key is down or held by the pedal."""
        return int(np.count_nonzero((self.stage != FREE) & (self.held | self.sustained)))

    @property
    def compiled(self) -> bool:
        """Whether blocks are rendered by the compiled kernel (else by the numpy reference)."""
        return self._kernel is not None

    @property
    def starved(self) -> int:
        """Voice-segments muted so far because a page they needed was not resident yet."""
        return int(self.counters[STARVED])

    @property
    def faults(self) -> int:
        """Voices freed so far because their state could have read outside the bank."""
        return int(self.counters[FAULTS])

    # ---- audio thread -----------------------------------------------------------------------------------
    def render(self, frames: int) -> np.ndarray:
        """Render `frames` frames into a new float32 [frames, 2] array (offline use), block by block."""
        out = np.zeros((frames, 2), np.float32)
        for start in range(0, frames, self.block):
            self.process(out[start:start + self.block])
        return out

    def process(self, out: np.ndarray) -> None:
        """Render len(out) frames (at most one block) into out [frames, channels], applying queued events."""
        frames = out.shape[0]
        if frames > self.block:
            raise ValueError(f"process() takes at most {self.block} frames, got {frames}")
        start, end = self.frame, self.frame + frames
        q = self._queue
        pending = self._pending
        if q:
            while q:
                frame, ev = q.popleft()
                self._seq += 1
                pending.append((start if frame is None or frame < start else int(frame), self._seq, ev))
            pending.sort(key=_event_order)
        i, pos = 0, start
        while pos < end:
            if self._swap is not None and self._swap[0] <= pos:
                self._finish_swap()
            self._now = pos
            while i < len(pending) and pending[i][0] <= pos and self._swap is None:
                ev = pending[i][2]
                i += 1
                try:
                    self._apply(ev)
                except Exception as e:  # a bug: the event is dropped, the rest plays on
                    self._failed(f"event {ev[0]!r} dropped", e)
            if self._swap is not None:  # events wait until the old bank's voices have faded
                nxt = min(end, self._swap[0])
            else:
                nxt = min(end, pending[i][0]) if i < len(pending) else end
            try:
                self._segment(out, pos - start, nxt - pos)
            except Exception as e:
                self._contain_failure(out, pos - start, nxt - pos, e)
            pos = nxt
        del pending[:i]
        self.frame = end

    def recover(self, frames: int, error: BaseException) -> None:
        """After `process` raised outside what it contains (a bug in its own bookkeeping): every voice is freed,
        pending events and a bank swap in progress are dropped, the clock moves on by `frames` (the caller
        silenced them), and the failure is logged; the next block starts clean."""
        self._free(self.stage != FREE)
        self._pending.clear()
        self._swap = None
        self.frame += frames
        self._failed("a block failed: every voice freed, pending events dropped", error)

    # ---- failures (audio thread) ------------------------------------------------------------------------
    def _failed(self, what: str, error: BaseException) -> None:
        """Count a contained failure and log it for the threads that report (`failure_log`: (what, error))."""
        self.failures += 1
        self.failure_log.append((what, error))

    def _contain_failure(self, out: np.ndarray, at: int, n: int, error: BaseException) -> None:
        """A segment raised: find the voices that raise on their own (each rendered alone from the state before
        the segment, into scratch), free them, and render the segment again without them. If no voice is to
        blame, or the second try raises too, the segment is silent and every voice is freed."""
        saved = [a.copy() for a in (self._vf, self._vi, self._vs, self.streams, self.counters)]
        levels = self._sus, self._vol

        def restore() -> None:
            for a, b in zip((self._vf, self._vi, self._vs, self.streams, self.counters), saved):
                a[...] = b
            self._sus, self._vol = levels

        culprits = []
        scratch = np.zeros((n, out.shape[1]), np.float32)
        active = np.flatnonzero(self.stage != FREE)
        for v in active:
            restore()
            self.stage[active[active != v]] = FREE
            try:
                self._segment(scratch, 0, n)
            except Exception:
                culprits.append(int(v))
        restore()
        if culprits:
            self._free(np.isin(np.arange(self._cap), culprits))
            keys = ", ".join(str(int(self.key[v])) for v in culprits)
            self._failed(f"{'voice' if len(culprits) == 1 else 'voices'} of key {keys} silenced", error)
            try:
                self._segment(out, at, n)
                return
            except Exception as e:
                error = e
        out[at:at + n] = 0.0
        restore()
        self._free(self.stage != FREE)
        self._failed("a segment silenced and every voice freed", error)

    def _free(self, mask: np.ndarray) -> None:
        self.stage[mask] = FREE
        self.held[mask] = False
        self.sustained[mask] = False

    # ---- events -----------------------------------------------------------------------------------------
    def _apply(self, ev: tuple) -> None:
        kind = ev[0]
        if kind == "on":
            self._note_on(ev[1], ev[2], ev[3])
        elif kind == "off":
            self._note_off(ev[1], ev[2])
        elif kind == "params":
            for name, value in ev[1].items():
                self._target[PARAMS.index(name)] = min(max(value, 0.0), 1.0)
            self._rates = None
        elif kind == "bend":
            if ev[1] is None:
                self._global_bend = ev[2]
            else:
                self._chan_bend[ev[1]] = ev[2]
        elif kind == "pedal":
            self._pedal = ev[1]
            if not self._pedal:
                self._release(self.sustained & (self.stage != FREE))
        elif kind == "note_xy":  # the channel's X/Y, for its sounding note and (until it ends) its next one
            ch = ev[1]
            mine = (self.chan == ch) & self.held
            for axis, value in ((0, ev[2]), (1, ev[3])):
                if value is not None:
                    self._chan_xy[ch, axis] = min(max(value, 0.0), 1.0)
                    self.vxy[mine, axis] = self._chan_xy[ch, axis]
        elif kind == "all_notes_off":
            self._pedal = False
            self._release((self.stage != FREE) & (self.held | self.sustained))
        elif kind == "all_sound_off":
            self._kill(self.stage != FREE)
        elif kind == "reset_controllers":
            self._chan_bend[:] = 0.0
            self._global_bend = 0.0
            self._chan_xy[:] = np.nan
            self.vxy[:] = np.nan
            if self._pedal:
                self._apply(("pedal", False))
        elif kind == "bank":
            self._kill(self.stage != FREE)
            self._swap = (self._now + int(self.config.steal_fade_s * self.fs) + 1, ev[1])
        else:
            raise ValueError(f"unknown engine event {kind!r}")

    def _release(self, mask: np.ndarray) -> None:
        mask = mask & (self.stage != KILL) & (self.stage != FREE)
        self.stage[mask] = RELEASE
        self.held[mask] = False
        self.sustained[mask] = False

    def _kill(self, mask: np.ndarray) -> None:
        mask = mask & (self.stage != FREE)
        self.stage[mask] = KILL
        self.held[mask] = False
        self.sustained[mask] = False

    def _note_off(self, ch: int, key: int) -> None:
        mine = (self.stage != FREE) & (self.stage != KILL) & (self.key == key) & (self.chan == ch) & self.held
        if mine.any():  # the channel's X/Y went with this note (the voice keeps it through its release)
            self._chan_xy[ch] = np.nan
        if self._pedal:
            self.held[mine] = False
            self.sustained[mine] = True
        else:
            self._release(mine)

    def _note_on(self, ch: int, key: int, vel: int) -> None:
        if vel <= 0:
            self._note_off(ch, key)
            return
        key = min(max(key, 0), 127)
        if self._kernel is not None:
            v = kernels.claim_voice(self._vs, self.key, self.chan, self.age, self.level, int(key), int(ch),
                                    self.config.max_voices)
        else:
            v = self._claim_voice(ch, key)
        b = self._bank
        self._notes += 1
        self.stage[v] = ATTACK
        self.key[v], self.chan[v] = key, ch
        self.held[v], self.sustained[v] = True, False
        self.age[v] = self._notes
        p = int(self._nearest[key])
        self.p_idx[v] = p
        self.base_rate[v] = 2.0 ** ((key - b.info.pitches[p]) / 12.0) * b.info.sample_rate / self.fs
        self.v_idx[v] = self._vel_idx[vel]
        self.v_w[v] = self._vel_w[vel]
        self.gain[v] = self._vel_gain[vel]
        self.level[v] = 0.0
        self.vxy[v] = self._chan_xy[ch]
        self.pos[v] = max(1.0, self._target[0] * (b.info.note_length // 2))
        self.sxy[v] = self._voice_targets(v)
        self.square[v] = -1

    def _claim_voice(self, ch: int, key: int) -> int:
        """kernels.claim_voice's reference: the slot a note-on plays in."""
        # a retriggered key: the old voice fades out quickly, the new one starts from its attack
        self._kill((self.key == key) & (self.chan == ch) & (self.stage != RELEASE))
        live = (self.stage != FREE) & (self.stage != KILL)
        if np.count_nonzero(live) >= self.config.max_voices:  # steal the oldest, released voices first
            released = live & (self.stage == RELEASE)
            pool = released if released.any() else live
            ages = np.where(pool, self.age, np.iinfo(np.int64).max)
            self._kill(np.arange(self._cap) == int(np.argmin(ages)))
        free = np.flatnonzero(self.stage == FREE)
        if free.size:
            return int(free[0])
        return int(np.argmin(np.where(self.stage == KILL, self.level, np.inf)))  # every slot fading: the quietest

    # ---- bank -------------------------------------------------------------------------------------------
    def _set_bank(self, bank: Bank) -> None:
        info = bank.info
        self._bank = bank
        self._flat = np.asarray(bank.samples).reshape(-1)
        self._loops = np.ascontiguousarray(bank.loops.reshape(-1, 2))
        res = getattr(bank, "residency", None)
        self._resident = res.bits if res is not None else np.zeros(0, np.uint8)
        self._shift = res.shift if res is not None else 0
        self._grid = info.grid
        self._L = info.note_length
        self._nv = len(info.velocities)
        pitches = np.array(info.pitches)
        self._nearest = np.abs(np.arange(128)[:, None] - pitches[None, :]).argmin(1)
        vels = np.array(info.velocities, dtype=np.float64)
        v = np.arange(128, dtype=np.float64)
        hi = np.clip(np.searchsorted(vels, v), 0, len(vels) - 1)
        lo = np.clip(hi - 1, 0, None)
        span = np.where(vels[hi] > vels[lo], vels[hi] - vels[lo], 1.0)
        t = np.clip((v - vels[lo]) / span, 0.0, 1.0)  # 0 below the lowest layer, 1 above the highest
        lo = np.where(t == 1.0, hi, lo)  # on a layer: both streams read it (nothing read for a zero weight)
        self._vel_idx = np.stack([lo, hi], 1)
        self._vel_w = np.stack([1.0 - t, t], 1)
        self._vel_gain = velocity_gains(info.velocities, self.config.velocity_curve)
        self.square[:] = -1

    def _finish_swap(self) -> None:
        assert self._swap is not None
        bank = self._swap[1]
        self._swap = None
        self.stage[:] = FREE
        self._set_bank(bank)

    def _assign_streams(self, idx: np.ndarray) -> None:
        """Point voices `idx` at the 8 streams of their current square (4 cells x 2 velocity layers)."""
        n, nv, length = self._grid, self._nv, self._L
        cx, cy = self.square[idx, 0], self.square[idx, 1]
        xs = np.stack([cx, cx + 1, cx, cx + 1], 1)  # corner order (0,0), (1,0), (0,1), (1,1)
        ys = np.stack([cy, cy, cy + 1, cy + 1], 1)
        p = self.p_idx[idx][:, None, None]
        vl = self.v_idx[idx][:, None, :]
        note = (((p * nv + vl) * n + ys[:, :, None]) * n + xs[:, :, None]).reshape(-1, 8)  # [m, 8]
        bad = (note < 0) | (note >= len(self._loops))
        loops = self._loops[np.where(bad, 0, note)]
        ls, le = loops[..., 0], loops[..., 1]
        xf = np.minimum(np.minimum(self.config.loop_crossfade, (le - ls) // 2), ls)
        off = np.where(bad, -1, note * length)  # a corrupt voice: marked unreadable (then freed)
        self.streams[idx] = np.stack([off, ls, le, le - ls, xf, le - xf], -1)

    def _voice_targets(self, idx: int | np.ndarray) -> np.ndarray:
        """The X/Y each voice heads for, in grid units: its channel's MPE X/Y where set, else the global X/Y
        ([2] for one voice `idx`, [a, 2] or broadcastable to it for an index array)."""
        g = self._target[6:8]
        own = self.vxy[idx]
        if np.isnan(own).all():  # every voice follows the global X/Y: [2], broadcasting against [a, 2]
            return g * (self._grid - 1)
        return np.where(np.isnan(own), g, own) * (self._grid - 1)

    # ---- rendering --------------------------------------------------------------------------------------
    def _segment(self, out: np.ndarray, at: int, n: int) -> None:
        """Render frames [at, at + n) of `out` with no event inside."""
        c = self.config
        k_slew, k_xy = self._factors.get(n) or self._make_factors(n)
        if self._rates is None:  # after a parameter change: the targets as floats, the envelope's rates per frame
            fs, tgt = self.fs, self._target.tolist()
            self._rates = (1.0 / (attack_seconds(tgt[1]) * fs), math.log(EPS) / (decay_seconds(tgt[2]) * fs),
                           math.log(EPS) / (release_seconds(tgt[4]) * fs), 1.0 / (c.steal_fade_s * fs), tgt)
        att_slope, log_d, log_r, kill_slope, tgt = self._rates
        vol0 = self._vol
        self._sus, self._vol = _slew(self._sus, tgt[3], k_slew), _slew(vol0, tgt[5], k_slew)
        if self._kernel is not None:
            self._kernel(out, at, n, self._vf, self._vi, self._vs, self.streams, self._chan_bend, self._global_bend,
                         tgt[6], tgt[7], k_xy, att_slope, log_d, log_r, self._sus, kill_slope, vol0, self._vol,
                         c.max_rate, self._knee, self._flat, self._loops, self._nv, self._grid, self._L,
                         c.loop_crossfade, self._resident, self._shift, self._scratch, self.counters)
        else:
            self._segment_numpy(out, at, _Segment(n, vol0, self._vol, self._sus, k_xy, att_slope, log_d, log_r,
                                                  kill_slope))

    def _make_factors(self, n: int) -> tuple[float, float]:
        """The one-pole factors over n frames: parameter slew, X/Y smoothing."""
        c = self.config
        f = self._factors[n] = (math.exp(-n / (c.param_slew_s * self.fs)), math.exp(-n / (c.xy_smooth_s * self.fs)))
        return f

    # the numpy reference: every voice at once, in array operations
    def _segment_numpy(self, out: np.ndarray, at: int, k: "_Segment") -> None:
        n = k.n
        act = np.flatnonzero(self.stage)
        if act.size == 0:
            out[at:at + n] = 0.0
            return
        w0, dw = self._xy_weights(act, k.k_xy)
        rate = self.base_rate[act] * np.exp2((self._global_bend + self._chan_bend[self.chan[act]]) / 12.0)
        pos0 = self.pos[act]
        ok = self._contain(act, rate, pos0)
        if not ok.all():
            act, w0, dw, rate, pos0 = act[ok], w0[ok], dw[ok], rate[ok], pos0[ok]
        rate = np.minimum(rate, self.config.max_rate)
        ip0 = np.floor(pos0).astype(np.int64) - 1  # first source sample the interpolator needs
        span = int(math.ceil(float(rate.max(initial=0.0)) * n)) + 4
        ph = self._physical(act, ip0, span)  # [a, 8, span]
        audible = self._audible(act, ph[..., 0], span, w0, dw)
        env = self._envelope(act, k)  # includes each voice's gain and the int16 scale; [a, n]
        self.pos[act] = pos0 + rate * n
        if audible.size - np.count_nonzero(audible):
            self.counters[STARVED] += audible.size - np.count_nonzero(audible)
        mix = self._source_mix(act, ph, (w0 != 0) | (dw != 0), audible, w0, dw,
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
        mono *= k.vol1 if k.vol0 == k.vol1 else k.vol0 + (k.vol1 - k.vol0) * self._t[:n] / n
        if self.config.limiter:
            soft_limit(mono)
        out[at:at + n] = mono[:, None]

    def _contain(self, act: np.ndarray, rate: np.ndarray, pos0: np.ndarray) -> np.ndarray:
        """Which voices may be read ([a] bool); the others (a state that could read outside the bank) are freed
        and counted."""
        st = self.streams[act]
        off, ls, le, xf = st[..., 0], st[..., 1], st[..., 2], st[..., 4]
        sane = ((off >= 0) & (off + self._L <= self._flat.size) & (ls >= 0) & (ls < le) & (le <= self._L)
                & (xf >= 0) & (xf <= ls)).all(1)
        ok = sane & (rate > 0) & (rate < np.inf) & (pos0 >= 1.0) & (pos0 < 4.0e15)
        if not ok.all():
            bad = act[~ok]
            self.stage[bad] = FREE
            self.held[bad] = self.sustained[bad] = False
            self.counters[FAULTS] += bad.size
        return ok

    def _physical(self, act: np.ndarray, ip0: np.ndarray, span: int) -> np.ndarray:
        """The physical sample index (within its note) each stream reads at source samples ip0 .. ip0 + span - 1:
        [a, 8, span], wrapped through the sustain loop."""
        st = self.streams[act][..., None]
        ls, le, ll = st[:, :, 1], st[:, :, 2], st[:, :, 3]
        q = ip0[:, None, None] + np.arange(span)
        return np.where(q >= le, ls + (q - ls) % ll, q)

    def _audible(self, act: np.ndarray, ph0: np.ndarray, span: int, w0: np.ndarray, dw: np.ndarray) -> np.ndarray:
        """Which voices have every page their weighted streams read this segment resident ([a] bool)."""
        audible = np.ones(act.size, bool)
        bits, shift = self._resident, self._shift
        if bits.size == 0:
            return audible
        for i, s in zip(*np.nonzero((w0 != 0) | (dw != 0))):
            off, ls, le, _, xf, _ = self.streams[act[i], s].tolist()
            lo, hi = kernels.needed_range(int(ph0[i, s]), span, ls, le, xf)
            if not bits[(off + lo) >> shift:((off + hi - 1) >> shift) + 1].all():
                audible[i] = False
        return audible

    def _weights8(self, idx: np.ndarray, uv: np.ndarray) -> np.ndarray:
        """Stream weights [m, 8] (cell-major, layer-minor) at local square positions uv [m, 2]."""
        return (_corner_weights(uv)[:, :, None] * self.v_w[idx][:, None, :]).reshape(-1, 8)

    def _xy_weights(self, act: np.ndarray, k_xy: float) -> tuple[np.ndarray, np.ndarray]:
        """Move each voice towards its X/Y target (staying inside its square for this segment): stream weights
        at the segment start [a, 8] and their change over the segment [a, 8] (zero for a voice that is settled)."""
        tgt = np.broadcast_to(self._voice_targets(act), (act.size, 2))
        s0 = self.sxy[act]
        settled = (s0 == tgt).all(1)
        redo = ~(settled & (self.square[act, 0] >= 0))
        if redo.any():
            r, s0r = act[redo], s0[redo]
            sq = np.clip(np.floor(s0r + 1e-9 * np.sign(tgt[redo] - s0r)), 0, self._grid - 2).astype(np.int64)
            changed = (sq != self.square[r]).any(1)
            if changed.any():  # entering a new square (or a new voice): same cells, same weights at the boundary
                idx = r[changed]
                self.square[idx] = sq[changed]
                self._assign_streams(idx)
                self.w8[idx] = self._weights8(idx, s0r[changed] - sq[changed])
        w0 = self.w8[act]
        dw = np.zeros_like(w0)
        moving = ~settled
        if moving.any():
            m, t, sq = act[moving], tgt[moving], self.square[act[moving]]
            s1 = t + (s0[moving] - t) * k_xy
            s1 = np.where(np.abs(s1 - t) < 1e-7, t, s1)  # settle exactly
            s1 = np.clip(s1, sq, sq + 1)
            self.sxy[m] = s1
            w1 = self._weights8(m, s1 - sq)
            self.w8[m] = w1
            dw[moving] = w1 - w0[moving]
        return w0, dw

    def _source_mix(self, act: np.ndarray, ph: np.ndarray, weighted: np.ndarray, audible: np.ndarray,
                    w0: np.ndarray, dw: np.ndarray, ramp0: np.ndarray, ramp1: np.ndarray) -> np.ndarray:
        """Each voice's 8 streams at physical indices ph [a, 8, span], through the loop crossfade, mixed with
        weights w0 + dw * ramp (ramp = ramp0 + ramp1 * k: 0 at the segment's start position, 1 at its end):
        [a, span]. Only weighted streams of audible voices are read (the rest are zero)."""
        st = self.streams[act][..., None]
        off, ll, xf, zs = st[:, :, 0], st[:, :, 3], st[:, :, 4], st[:, :, 5]
        read = np.broadcast_to((weighted & audible[:, None])[..., None], ph.shape)
        src = np.zeros(ph.shape)
        idx = off + ph
        src[read] = self._flat[idx[read]]
        zone = read & (ph >= zs)  # in a loop crossfade: blend towards the sample one loop earlier
        if zone.any():
            g = ((ph - zs + 1) / (xf + 1.0))[zone]
            x = src[zone]
            src[zone] = x + g * (self._flat[(idx - ll)[zone]] - x)
        span = ph.shape[2]
        ramp = ramp0[:, None] + ramp1[:, None] * np.arange(span)
        return np.einsum("as,asn->an", w0, src) + ramp * np.einsum("as,asn->an", dw, src)

    def _envelope(self, act: np.ndarray, k: "_Segment") -> np.ndarray:
        """Envelope x gain / 32768 per frame, float64 [a, n], for voices `act`; advances their stages.
        Linear stages (attack, steal fade): l0 + slope * t; exponential ones (decay, release): base + amp * c ** t."""
        n, sus = k.n, k.sus
        stage = self.stage[act]
        l0 = self.level[act]
        t = self._t[:n]
        scale = self.gain[act] * (1.0 / 32768.0)
        steady = (stage == DECAY) & (l0 == sus)
        is_rel = stage == RELEASE
        logc = np.where(is_rel, k.log_r, np.where(stage == DECAY, k.log_d, 0.0))
        base = np.where(is_rel, -EPS, np.where(stage == DECAY, sus, l0))
        amp = np.where(is_rel, l0 + EPS, np.where(stage == DECAY, l0 - sus, 0.0))
        slope = np.where(stage == ATTACK, k.att_slope, np.where(stage == KILL, -k.kill_slope, 0.0))
        env = (base[:, None] + amp[:, None] * np.exp(logc[:, None] * t) + slope[:, None] * t) * scale[:, None]
        end = base + amp * np.exp(logc * n) + slope * n
        for i in np.flatnonzero((stage == ATTACK) & (end >= 1.0)):  # the attack peaks in this segment
            tc = (1.0 - l0[i]) / slope[i]
            after = t >= tc
            env[i, after] = scale[i] * (sus + (1.0 - sus) * np.exp(k.log_d * (t[after] - tc)))
            end[i] = sus + (1.0 - sus) * math.exp(k.log_d * (n - tc))
            self.stage[act[i]] = DECAY
        np.maximum(env, 0.0, out=env)
        env[steady] = (scale * sus)[steady, None]
        np.maximum(end, 0.0, out=end)
        end[(stage == DECAY) & (np.abs(end - sus) < 1e-9)] = sus  # settle exactly on the sustain level
        self.level[act] = np.where(steady, l0, end)
        ended = ((stage == RELEASE) | (stage == KILL)) & (end <= 0.0)
        if ended.any():
            done = act[ended]
            self.stage[done] = FREE
            self.held[done] = False
            self.sustained[done] = False
        return env


def _slew(value: float, target: float, k: float) -> float:
    """One step of a one-pole slew towards target (factor k), settling exactly once within 1e-9."""
    value = target + (value - target) * k
    return target if abs(value - target) < 1e-9 else value


class _Segment(NamedTuple):
    """What one segment's rendering needs besides the voices: its length, the master volume ramp, the sustain
    level, the X/Y smoothing factor and the envelope rates (per frame)."""
    n: int
    vol0: float
    vol1: float
    sus: float
    k_xy: float
    att_slope: float
    log_d: float
    log_r: float
    kill_slope: float


def _int_in(value, lo: int, hi: int, what: str, ev: tuple) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"bad engine event {ev!r}: {what} must be an integer, got {value!r}")
    try:
        i = operator.index(value)
    except TypeError:
        raise ValueError(f"bad engine event {ev!r}: {what} must be an integer, got {value!r}") from None
    if not lo <= i <= hi:
        raise ValueError(f"bad engine event {ev!r}: {what} {i} is outside {lo}..{hi}")
    return i


def _finite(value, what: str, ev: tuple) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"bad engine event {ev!r}: {what} must be a number, got {value!r}") from None
    if not math.isfinite(f):
        raise ValueError(f"bad engine event {ev!r}: {what} must be finite, got {value!r}")
    return f


_ARITY = {"on": 4, "off": 3, "params": 2, "bend": 3, "pedal": 2, "note_xy": 4, "all_notes_off": 1,
          "all_sound_off": 1, "reset_controllers": 1, "bank": 2}


def checked_event(ev: tuple) -> tuple:
    """`ev` with its fields checked and made plain Python numbers; ValueError naming the problem otherwise."""
    if not isinstance(ev, tuple) or not ev or ev[0] not in _ARITY:
        kind = ev[0] if isinstance(ev, tuple) and ev else ev
        raise ValueError(f"unknown engine event {kind!r}; known: {', '.join(sorted(_ARITY))}")
    kind = ev[0]
    if len(ev) != _ARITY[kind]:
        raise ValueError(f"bad engine event {ev!r}: {kind!r} takes {_ARITY[kind] - 1} field(s)")
    if kind == "on":
        return (kind, _int_in(ev[1], 0, _NCH - 1, "channel", ev), _int_in(ev[2], 0, 127, "key", ev),
                _int_in(ev[3], 0, 127, "velocity", ev))
    if kind == "off":
        return kind, _int_in(ev[1], 0, _NCH - 1, "channel", ev), _int_in(ev[2], 0, 127, "key", ev)
    if kind == "params":
        if not isinstance(ev[1], dict):
            raise ValueError(f"bad engine event {ev!r}: parameters must be a dict")
        unknown = set(ev[1]) - set(PARAMS)
        if unknown:
            raise ValueError(f"bad engine event: unknown parameter(s) {sorted(unknown)}; known: {', '.join(PARAMS)}")
        return kind, {name: _finite(v, name, ev) for name, v in ev[1].items()}
    if kind == "bend":
        ch = None if ev[1] is None else _int_in(ev[1], 0, _NCH - 1, "channel", ev)
        return kind, ch, min(max(_finite(ev[2], "bend", ev), -BEND_LIMIT), BEND_LIMIT)
    if kind == "pedal":
        return kind, bool(ev[1])
    if kind == "note_xy":
        return (kind, _int_in(ev[1], 0, _NCH - 1, "channel", ev),
                *(None if v is None else _finite(v, axis, ev) for axis, v in (("x", ev[2]), ("y", ev[3]))))
    if kind == "bank" and not isinstance(ev[1], Bank):
        raise ValueError(f"bad engine event: 'bank' takes an open Bank, got {type(ev[1]).__name__}")
    return ev


def _event_order(e: tuple) -> tuple[int, int]:
    return e[0], e[1]


def velocity_gains(layers: Iterable[int], curve: float) -> np.ndarray:
    """Gain of each velocity 0..127 [128]: 1 from the lowest layer's velocity to the highest's (each layer is
    already levelled for its velocity, and between two the voice crossfades them); outside, the nearest layer
    scaled by (velocity / its velocity) ** curve (curve 0: no scaling)."""
    layers = list(layers)
    v = np.arange(128, dtype=np.float64)
    edge = np.clip(v, layers[0], layers[-1])
    return (v / edge) ** curve


def soft_limit(x: np.ndarray, knee: float = LIMIT_KNEE) -> None:
    """In place: samples within +-knee unchanged, above it a tanh curve (continuous slope) that approaches but
    never passes +-1.0."""
    over = np.abs(x) > knee
    if over.any():
        a = x[over]
        head = np.float32(1.0 - knee)
        x[over] = np.sign(a) * (np.float32(knee) + head * np.tanh((np.abs(a) - np.float32(knee)) / head))


def _corner_weights(uv: np.ndarray) -> np.ndarray:
    """Bilinear weights [m, 4] (float32) of the corners (0,0), (1,0), (0,1), (1,1) at local positions uv [m, 2]."""
    f = np.empty((uv.shape[0], 2, 2), np.float32)  # [voice, axis (x, y), (1 - t, t)]
    f[:, :, 1] = uv
    np.subtract(1.0, uv, out=f[:, :, 0])
    return (f[:, 1, :, None] * f[:, 0, None, :]).reshape(-1, 4)  # y-major, x-minor


__all__ = ["Engine", "EngineConfig", "PARAMS", "DEFAULT_PARAMS", "attack_seconds", "decay_seconds", "release_seconds"]
