"""The voice engine: bank notes -> 48 kHz stereo (`Engine`, `EngineConfig`).

Per voice: the nearest rendered pitch, resampled (4-point Catmull-Rom) to the exact MIDI pitch plus pitch bend;
a crossfade of the two nearest velocity layers (each layer is already levelled for its velocity; a gain only
outside the layers' range); the four grid cells around the voice's (smoothed) XY position with bilinear weights; an
ADSR envelope; a forward sustain loop between the bank's loop points with a crossfade, so a key can be held
forever. The output passes a soft limiter, so it never leaves +-1.0.

This module schedules events and orchestrates; the pieces it uses are named for what they hold:
  device/events.py      the event tuples and the check each passes when posted
  device/voices.py      the voices' state (the engine is a `Voices`), slot choice, release and steal fade
  device/addressing.py  the bank as the engine reads it (`BankView`) and each voice's 8 streams
  device/xy.py          X/Y: targets, glide, bilinear stream weights
  device/envelopes.py   the envelope's times and rates, and its step
  device/kernels.py     the per-segment loop, compiled (numba) where numba is installed
  device/mix.py         its numpy reference (tests hold the two to each other, and the fallback), the limiter

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
  attack, decay, release: see device/envelopes.py
  sustain   sustain level (linear amplitude)
  volume    master gain (linear amplitude)
  x, y      position on the timbre grid (0 = left / bottom, 1 = right / top)
Sustain and volume, which scale the sound directly, are slewed (one-pole, 50 ms); the envelope times take
effect at once (a changed rate cannot click); each voice follows x and y with a 20 ms smoothing.
"""
from __future__ import annotations

import collections
import math
from dataclasses import dataclass

import numpy as np

from device import kernels
from device.addressing import bank_view
from device.bank import Bank
from device.envelopes import rates
from device.events import CHANNELS, EventPoster, checked_event, event_order
from device.kernels import ATTACK, FREE, KILL
from device.mix import LIMIT_KNEE, Segment, render_segment
from device.voices import Voices
from device.xy import voice_targets
from nsynth.params import DEFAULT_PARAMS, PARAMS


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
    limiter: bool = True          # soft-limit the output to +-1.0 (see mix.soft_limit)
    fade_slots: int = 16
    max_rate: float = 16.0        # source samples read per output sample at most (higher pitches are capped)
    compiled: bool = True         # the compiled kernel where numba is installed; False: the numpy reference


class Engine(Voices, EventPoster):
    """A polyphonic sampler over a bank. `process(out)` renders into a float32 [frames, 2] array. The voices'
    state and its counts (`active_voices`, `held_voices`, `starved`, `faults`) are the `Voices` it is."""

    def __init__(self, bank: Bank, config: EngineConfig = EngineConfig(), params: dict | None = None):
        super().__init__(config.max_voices + config.fade_slots)
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
        self._chan_bend = np.zeros(CHANNELS)
        self._global_bend = 0.0
        self._chan_xy = np.full((CHANNELS, 2), np.nan)  # MPE X/Y a channel sent for its note (NaN: none)
        self._pedal = False
        self._swap: tuple[int, Bank] | None = None
        self._t = np.arange(1, c.block + 1, dtype=np.float64)
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
        """Queue one event (the tuples of device/events.py: ("on", ch, key, vel), ("off", ch, key),
        ("params", {name: 0..1}), ...); a malformed event raises ValueError here, in the posting thread, never in
        the audio thread. Parameters are clamped to 0..1 (and the resampling rate, bend included, to
        `EngineConfig.max_rate`)."""
        self._queue.append((frame, checked_event(event)))

    def set_bank(self, bank: Bank, frame: int | None = None) -> None:
        """Switch banks: sounding voices fade out (steal fade), then the new bank is used."""
        self.post(("bank", bank), frame)

    @property
    def bank(self) -> Bank:
        return self._view.bank

    @property
    def params(self) -> dict[str, float]:
        """The parameter targets (what was last set)."""
        return dict(zip(PARAMS, self._target.tolist()))

    @property
    def compiled(self) -> bool:
        """Whether blocks are rendered by the compiled kernel (else by the numpy reference)."""
        return self._kernel is not None

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
            pending.sort(key=event_order)
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
        self.free(self.stage != FREE)
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
        saved = [a.copy() for a in self.state()]
        levels = self._sus, self._vol

        def restore() -> None:
            for a, b in zip(self.state(), saved):
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
            self.free(np.isin(np.arange(self._cap), culprits))
            keys = ", ".join(str(int(self.key[v])) for v in culprits)
            self._failed(f"{'voice' if len(culprits) == 1 else 'voices'} of key {keys} silenced", error)
            try:
                self._segment(out, at, n)
                return
            except Exception as e:
                error = e
        out[at:at + n] = 0.0
        restore()
        self.free(self.stage != FREE)
        self._failed("a segment silenced and every voice freed", error)

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
                self.release(self.sustained & (self.stage != FREE))
        elif kind == "note_xy":  # the channel's X/Y, for its sounding note and (until it ends) its next one
            ch = ev[1]
            mine = (self.chan == ch) & self.held
            for axis, value in ((0, ev[2]), (1, ev[3])):
                if value is not None:
                    self._chan_xy[ch, axis] = min(max(value, 0.0), 1.0)
                    self.vxy[mine, axis] = self._chan_xy[ch, axis]
        elif kind == "all_notes_off":
            self._pedal = False
            self.release((self.stage != FREE) & (self.held | self.sustained))
        elif kind == "all_sound_off":
            self.kill(self.stage != FREE)
        elif kind == "reset_controllers":
            self._chan_bend[:] = 0.0
            self._global_bend = 0.0
            self._chan_xy[:] = np.nan
            self.vxy[:] = np.nan
            if self._pedal:
                self._apply(("pedal", False))
        elif kind == "bank":
            self.kill(self.stage != FREE)
            self._swap = (self._now + int(self.config.steal_fade_s * self.fs) + 1, ev[1])
        else:
            raise ValueError(f"unknown engine event {kind!r}")

    def _note_off(self, ch: int, key: int) -> None:
        mine = (self.stage != FREE) & (self.stage != KILL) & (self.key == key) & (self.chan == ch) & self.held
        if mine.any():  # the channel's X/Y went with this note (the voice keeps it through its release)
            self._chan_xy[ch] = np.nan
        if self._pedal:
            self.held[mine] = False
            self.sustained[mine] = True
        else:
            self.release(mine)

    def _note_on(self, ch: int, key: int, vel: int) -> None:
        if vel <= 0:
            self._note_off(ch, key)
            return
        key = min(max(key, 0), 127)
        if self._kernel is not None:
            v = kernels.claim_voice(self._vs, self.key, self.chan, self.age, self.level, int(key), int(ch),
                                    self.config.max_voices)
        else:
            v = self.claim(ch, key, self.config.max_voices)
        b = self._view
        info = b.bank.info
        self._notes += 1
        self.stage[v] = ATTACK
        self.key[v], self.chan[v] = key, ch
        self.held[v], self.sustained[v] = True, False
        self.age[v] = self._notes
        p = int(b.nearest[key])
        self.p_idx[v] = p
        self.base_rate[v] = 2.0 ** ((key - info.pitches[p]) / 12.0) * info.sample_rate / self.fs
        self.v_idx[v] = b.vel_idx[vel]
        self.v_w[v] = b.vel_w[vel]
        self.gain[v] = b.vel_gain[vel]
        self.level[v] = 0.0
        self.vxy[v] = self._chan_xy[ch]
        self.pos[v] = max(1.0, self._target[0] * (info.note_length // 2))
        self.sxy[v] = voice_targets(self.vxy[v], self._target[6:8], b.grid)
        self.square[v] = -1

    # ---- bank -------------------------------------------------------------------------------------------
    def _set_bank(self, bank: Bank) -> None:
        self._view = bank_view(bank, self.config.velocity_curve)
        self.square[:] = -1

    def _finish_swap(self) -> None:
        assert self._swap is not None
        bank = self._swap[1]
        self._swap = None
        self.stage[:] = FREE
        self._set_bank(bank)

    # ---- rendering --------------------------------------------------------------------------------------
    def _segment(self, out: np.ndarray, at: int, n: int) -> None:
        """Render frames [at, at + n) of `out` with no event inside."""
        c, b = self.config, self._view
        k_slew, k_xy = self._factors.get(n) or self._make_factors(n)
        if self._rates is None:  # after a parameter change: the targets as floats, the envelope's rates per frame
            tgt = self._target.tolist()
            self._rates = rates(tgt[1], tgt[2], tgt[4], c.steal_fade_s, self.fs), tgt
        r, tgt = self._rates
        vol0 = self._vol
        self._sus, self._vol = _slew(self._sus, tgt[3], k_slew), _slew(vol0, tgt[5], k_slew)
        if self._kernel is not None:
            self._kernel(out, at, n, self._vf, self._vi, self._vs, self.streams, self._chan_bend, self._global_bend,
                         tgt[6], tgt[7], k_xy, r.att_slope, r.log_d, r.log_r, self._sus, r.kill_slope, vol0,
                         self._vol, c.max_rate, self._knee, b.flat, b.loops, b.layers, b.grid, b.length,
                         c.loop_crossfade, b.resident, b.shift, self._scratch, self.counters)
        else:
            render_segment(self, b, out, at, Segment(n, vol0, self._vol, self._sus, k_xy, r, self._target[6:8],
                                                     self._global_bend, self._chan_bend, c.max_rate, self._knee,
                                                     c.loop_crossfade, self._t))

    def _make_factors(self, n: int) -> tuple[float, float]:
        """The one-pole factors over n frames: parameter slew, X/Y smoothing."""
        c = self.config
        f = self._factors[n] = (math.exp(-n / (c.param_slew_s * self.fs)), math.exp(-n / (c.xy_smooth_s * self.fs)))
        return f


def _slew(value: float, target: float, k: float) -> float:
    """One step of a one-pole slew towards target (factor k), settling exactly once within 1e-9."""
    value = target + (value - target) * k
    return target if abs(value - target) < 1e-9 else value
