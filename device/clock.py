"""The frame clock: stamps events from other threads (or the control process) with engine frames."""
from __future__ import annotations

import time

import numpy as np

from device.atomics import seq_read, seq_write


class FrameClock:
    """An event arriving t seconds after the callback that rendered frame F is played at F + block + t * rate, one
    block later at its true offset (sample-accurate, constant latency) rather than at the next block start.

    The audio callback `mark`s the first frame of each buffer with the monotonic time (system-wide, so the same in
    every process); `frame_for` reads the mark. The mark lives in `cells` (int64 [3]: a seqlock over the frame and
    the time in ns, device/atomics.py): shared memory when the callback runs in the audio host and the readers in
    the control process, else the clock's own; a reader never sees the frame of one mark with the time of another."""

    def __init__(self, sample_rate: int, block: int, cells: np.ndarray | None = None):
        self.fs, self.block = sample_rate, block
        self.cells = np.zeros(3, np.int64) if cells is None else cells
        if cells is None:
            self.mark(0)
        self._last = (0, time.monotonic())  # the last mark read whole (one tuple: threads see both values or neither)

    def mark(self, frame: int) -> None:
        seq_write(self.cells, frame, time.monotonic_ns())

    def marked(self) -> tuple[int, float]:
        """The last mark: (frame, monotonic time in s). If the writer stays inside a write for as long as the
        reader spins (it was descheduled there), the last mark read before it (an event then lands up to a few
        blocks early or late, not frames from nowhere)."""
        out = np.zeros(2, np.int64)  # per call: readers on several threads
        if seq_read(self.cells, out):
            self._last = (int(out[0]), int(out[1]) * 1e-9)
        return self._last

    def frame_for(self, now: float | None = None) -> int:
        frame, t0 = self.marked()
        dt = (time.monotonic() if now is None else now) - t0
        return frame + self.block + min(max(int(dt * self.fs), 0), self.block - 1)
