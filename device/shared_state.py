"""The memory the control process and the audio host share (multiprocessing.shared_memory): the event ring
(control -> host), the callback's counts and timing histogram, and the frame clock's mark (host -> control)."""
from __future__ import annotations

import numpy as np

from device.callback import STATS_SIZE, CallbackStats
from device.clock import FrameClock
from device.event_ring import EventRing

_LINE = 64  # each part starts on its own cache line


def _aligned(n: int) -> int:
    return -(-n // _LINE) * _LINE


class SharedState:
    """Views of one shared buffer: `ring` (EventRing), `stats` (CallbackStats), `clock_cells` (FrameClock's)."""

    def __init__(self, buf: memoryview, capacity: int):
        ring_end = _aligned(EventRing.nbytes(capacity))
        self.ring = EventRing(capacity, buf[:ring_end])
        self.stats = CallbackStats(np.ndarray((STATS_SIZE,), np.int64, buf, ring_end))
        self.clock_cells = np.ndarray((3,), np.int64, buf, ring_end + _aligned(STATS_SIZE * 8))

    @staticmethod
    def nbytes(capacity: int) -> int:
        return _aligned(EventRing.nbytes(capacity)) + _aligned(STATS_SIZE * 8) + _LINE


def warm() -> None:
    """Compile (or load from numba's on-disk cache) the compiled code both processes run on the shared memory: the
    ring's push and pop, the clock's seqlock (with the argument types of the real calls)."""
    state = SharedState(memoryview(bytearray(SharedState.nbytes(1))), 1)
    state.ring.push(("all_notes_off",))
    state.ring.drain(lambda event, frame: None)
    clock = FrameClock(48000, 128, state.clock_cells)
    clock.mark(0)
    clock.frame_for()
