"""Frames that pass the checksum, judged against what the board can physically do (pure: no bus).

The frame's checksum is additive, so two errors that cancel get through: touch x +8 in word 0 and a pot -8 in
word 2 leave the sum unchanged. A finger cannot jump across the pad between two polls (5 ms apart), so
`TouchGuard` accepts a touched cell only when it is within `max_step` cells of the last accepted one (per poll
since: polls that failed leave the finger time to move), or when the next frame confirms it (two frames in a
row near each other: a real touch-down elsewhere after a lift waits one poll).
A frame it refuses is dropped whole, since whatever corrupted its touch may have corrupted another byte too.

A controller that resets (brown-out, watchdog, the reset line) restarts its wrapping encoder counters at their
power-on values, which would read as a large turn; `board_reset` recognises it.
"""
from __future__ import annotations

from hardware.frame import Frame
from hardware.mapping import rotary_steps

POWER_ON_ROTARIES = (0, 0, 0, 0)  # the firmware's encoder counters after a reset
MAX_TOUCH_STEP = 2    # cells a finger moves between two polls, at most (a fast swipe: about one per 5-ms poll)
MAX_ROTARY_STEP = 16  # detents one encoder turns between two polls, at most (a fast spin: about one)


def _near(a: tuple[int, int], b: tuple[int, int] | None, step: int) -> bool:
    return b is not None and max(abs(a[0] - b[0]), abs(a[1] - b[1])) <= step


class TouchGuard:
    """Feed every good frame in order (`accept(frame)`: whether its touch is plausible) and every failed poll
    (`missed()`)."""

    def __init__(self, max_step: int = MAX_TOUCH_STEP):
        self.max_step = max_step
        self.last: tuple[int, int] | None = None      # the last accepted touched cell (kept over a lift)
        self._previous: tuple[int, int] | None = None  # the previous frame's touched cell, accepted or not
        self._polls = 1  # polls since the last accepted touched frame, while no lift was seen
        self._first = True  # nothing to judge the first frame against: it is taken as it comes

    def missed(self) -> None:
        self._polls += 1

    def accept(self, frame: Frame) -> bool:
        if not frame.touched:  # a lift (or no touch) moves nothing: the position holds
            self._previous, self._polls, self._first = None, 1, False
            return True
        cell = frame.touch
        ok = (self._first or _near(cell, self.last, self.max_step * self._polls)
              or _near(cell, self._previous, self.max_step))
        self._first = False
        self._previous = cell
        if ok:
            self.last, self._polls = cell, 1
        return ok


def board_reset(previous: tuple[int, ...], current: tuple[int, ...], max_step: int = MAX_ROTARY_STEP) -> bool:
    """Whether the encoder counters going from `previous` to `current` between two polls is the controller
    restarting rather than turns: every counter at its power-on value at once, reached by more than one counter
    moving, or by a move larger than an encoder turns in one poll. (A single counter stepping back to its
    power-on value by a few detents stays a turn: that is what a player does.)"""
    if tuple(current) != POWER_ON_ROTARIES or tuple(previous) == POWER_ON_ROTARIES:
        return False
    steps = rotary_steps(previous, current)
    return sum(s != 0 for s in steps) > 1 or max(abs(s) for s in steps) > max_step
