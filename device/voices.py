"""The voices' state (`Voices`, which the engine is): packed arrays the compiled kernel takes, with named views,
and the stage changes every event makes (free, release, kill) and the choice of a note-on's slot (the numpy
reference of kernels.claim_voice).

Stages: FREE, ATTACK, DECAY (towards the sustain level, then held there), RELEASE, KILL (a fast fade of a stolen,
retriggered or switched-away voice); see device/kernels.py for the packing."""
from __future__ import annotations

import numpy as np

from device import kernels
from device.kernels import FAULTS, FREE, KILL, RELEASE, STARVED


class Voices:
    """`cap` voice slots, all free."""

    def __init__(self, cap: int):
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

    def state(self) -> tuple[np.ndarray, ...]:
        """Every array a segment changes (to save and restore around a try)."""
        return self._vf, self._vi, self._vs, self.streams, self.counters

    def active_voices(self) -> int:
        return int(np.count_nonzero(self.stage))

    def held_voices(self) -> int:
        """Voices whose key is down or held by the pedal."""
        return int(np.count_nonzero((self.stage != FREE) & (self.held | self.sustained)))

    @property
    def starved(self) -> int:
        """Voice-segments muted so far because a page they needed was not resident yet."""
        return int(self.counters[STARVED])

    @property
    def faults(self) -> int:
        """Voices freed so far because their state could have read outside the bank."""
        return int(self.counters[FAULTS])

    def free(self, mask: np.ndarray) -> None:
        self._enter(mask, FREE)

    def release(self, mask: np.ndarray) -> None:
        """Voices `mask` (those neither fading nor free) start their release."""
        self._enter(mask & (self.stage != KILL) & (self.stage != FREE), RELEASE)

    def kill(self, mask: np.ndarray) -> None:
        """Voices `mask` (those not free) fade out fast (the steal fade)."""
        self._enter(mask & (self.stage != FREE), KILL)

    def _enter(self, mask: np.ndarray, stage: int) -> None:
        """Voices `mask` enter `stage`, their key no longer down nor held by the pedal."""
        self.stage[mask] = stage
        self.held[mask] = False
        self.sustained[mask] = False

    def claim(self, ch: int, key: int, max_voices: int) -> int:
        """kernels.claim_voice's reference: the slot a note-on plays in."""
        # a retriggered key: the old voice fades out quickly, the new one starts from its attack
        self.kill((self.key == key) & (self.chan == ch) & (self.stage != RELEASE))
        live = (self.stage != FREE) & (self.stage != KILL)
        if np.count_nonzero(live) >= max_voices:  # steal the oldest, released voices first
            released = live & (self.stage == RELEASE)
            pool = released if released.any() else live
            ages = np.where(pool, self.age, np.iinfo(np.int64).max)
            self.kill(np.arange(self._cap) == int(np.argmin(ages)))
        free = np.flatnonzero(self.stage == FREE)
        if free.size:
            return int(free[0])
        return int(np.argmin(np.where(self.stage == KILL, self.level, np.inf)))  # every slot fading: the quietest
