"""Encoder push switches, pure and time-injected: debouncing, and short press (load) vs hold (save)."""
from __future__ import annotations

HOLD_S = 0.75


class Debouncer:
    """A level that must stay put for `interval` seconds before it counts."""

    def __init__(self, interval: float = 0.02, initial: bool = False):
        self.interval = interval
        self.state = initial
        self._candidate = initial
        self._since = 0.0

    def update(self, level: bool, now: float) -> bool | None:
        """Feed a sampled level; return the new state when it changed, else None."""
        if level != self._candidate:
            self._candidate, self._since = level, now
        if self._candidate != self.state and now - self._since >= self.interval:
            self.state = self._candidate
            return self.state
        return None


class PatchButton:
    """Debounced presses -> actions: release before `hold` seconds is "load"; reaching `hold` while still
    pressed is "save" (once; the release that follows does nothing)."""

    def __init__(self, hold: float = HOLD_S, interval: float = 0.02):
        self.hold = hold
        self.debouncer = Debouncer(interval)
        self._pressed_at: float | None = None
        self._saved = False
        self._now = 0.0

    @property
    def progress(self) -> float | None:
        """How far a press is towards saving (0..1) while held and not yet saved, else None."""
        if self._pressed_at is None or self._saved:
            return None
        return min((self._now - self._pressed_at) / self.hold, 1.0)

    def update(self, pressed: bool, now: float) -> str | None:
        self._now = now
        change = self.debouncer.update(pressed, now)
        if change is True:
            self._pressed_at, self._saved = now, False
        elif change is False and self._pressed_at is not None:
            short = not self._saved
            self._pressed_at = None
            return "load" if short else None
        if self._pressed_at is not None and not self._saved and now - self._pressed_at >= self.hold:
            self._saved = True
            return "save"
        return None
