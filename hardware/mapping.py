"""Board state -> engine parameters, pure (no driver library): pot hysteresis, encoder unwrapping, touch glide.

Engine parameters are all normalised to 0..1: the six pots are `POT_PARAMS` in board order, and the touch
position is `x`, `y` (0 = left/top edge of the pad, as the board reports it).
"""
from __future__ import annotations

import math

from hardware.frame import GRID, Frame
from nsynth.params import POT_PARAMS, XY_PARAMS


def rotary_steps(previous: tuple[int, ...], current: tuple[int, ...]) -> tuple[int, ...]:
    """Signed steps between two readings of the wrapping 8-bit counters (|step| < 128 between polls)."""
    return tuple(((c - p + 128) & 0xFF) - 128 for p, c in zip(previous, current))


class PotFilter:
    """One pot: 8-bit reading -> 0..1 with hysteresis (a change smaller than `band` counts is ignored, except
    to reach either end), and pick-up after a patch set the value (the pot takes over once it is moved)."""

    def __init__(self, band: int = 2, pickup: int = 4):
        self.band, self.pickup = band, pickup
        self.raw: int | None = None
        self.value: float | None = None
        self._held_at: int | None = None

    def update(self, raw: int) -> float | None:
        """Feed one reading; return the new value when it changed, else None."""
        if self.raw is None:
            self.raw = raw
            if self.value is None:
                self.value = raw / 255
                return self.value
        if self._held_at is not None:
            if abs(raw - self._held_at) < self.pickup:
                return None
            self._held_at = None
        elif raw == self.raw or (abs(raw - self.raw) < self.band and raw not in (0, 255)):
            return None
        self.raw = raw
        self.value = raw / 255
        return self.value

    def hold(self, value: float) -> None:
        """Set the value from elsewhere (a patch); the pot is ignored until it moves `pickup` counts."""
        self.value = value
        self._held_at = self.raw


class TouchGlide:
    """The 11x11 touch grid smoothed into a continuous XY: an exponential glide towards the touched cell
    (time constant `tau` seconds), holding the last position when the finger lifts. Time is injected."""

    def __init__(self, tau: float = 0.04, start: tuple[float, float] = (0.5, 0.5)):
        self.tau = tau
        self.position = start
        self.target = start
        self._t: float | None = None

    def touch(self, cell: tuple[int, int]) -> None:
        self.target = (cell[0] / (GRID - 1), cell[1] / (GRID - 1))

    def set(self, position: tuple[float, float]) -> None:
        """Jump (a patch recall): no glide."""
        self.position = self.target = position

    def advance(self, now: float) -> tuple[float, float]:
        dt = 0.0 if self._t is None else max(0.0, now - self._t)
        self._t = now
        if self.position != self.target:
            k = 1.0 - math.exp(-dt / self.tau) if self.tau > 0 else 1.0
            x, y = (p + (t - p) * k for p, t in zip(self.position, self.target))
            if abs(x - self.target[0]) < 1e-4 and abs(y - self.target[1]) < 1e-4:
                x, y = self.target
            self.position = (x, y)
        return self.position


class BoardMapper:
    """Frames in, changed engine parameters out (the encoders' steps are counted by the driver, which sees
    every frame)."""

    def __init__(self, band: int = 2, tau: float = 0.04):
        self.pots = [PotFilter(band) for _ in POT_PARAMS]
        self.glide = TouchGlide(tau)
        self._xy_sent: tuple[float, float] | None = None

    def update(self, frame: Frame | None, now: float) -> dict[str, float]:
        """One tick: `frame` is the newest verified frame (None: no new frame, the glide still advances)."""
        params: dict[str, float] = {}
        if frame is not None:
            for name, pot, raw in zip(POT_PARAMS, self.pots, frame.pots):
                value = pot.update(raw)
                if value is not None:
                    params[name] = value
            if frame.touched:
                self.glide.touch(frame.touch)
        xy = self.glide.advance(now)
        if xy != self._xy_sent:
            params.update(x=xy[0], y=xy[1])
            self._xy_sent = xy
        return params

    def values(self) -> dict[str, float]:
        """Every parameter's current value (pots not yet read are left out)."""
        out = {n: p.value for n, p in zip(POT_PARAMS, self.pots) if p.value is not None}
        out.update(zip(XY_PARAMS, self.glide.position))
        return out

    def apply(self, values: dict[str, float]) -> None:
        """Take values from a patch: pots wait for pick-up, the XY jumps."""
        for name, pot in zip(POT_PARAMS, self.pots):
            if name in values:
                pot.hold(values[name])
        if "x" in values and "y" in values:
            self.glide.set((values["x"], values["y"]))
            self._xy_sent = None
