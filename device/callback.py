"""The audio callback (`LiveAudio`) and what it counts (`CallbackStats`)."""
from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from device.clock import FrameClock
from device.engine import Engine
from device.event_ring import EventRing
from device.realtime import promote_current_thread

# CallbackStats cells (int64): counts kept by the callback; the engine's counters, copied after each buffer; then
# the histogram of callback durations in hundredths of the block period (the last bin: 10 periods or more)
CALLBACKS, UNDERFLOWS, LONGEST_NS, VOICES, HELD, STARVED, FAULTS, FAILURES = range(8)
HIST, BINS = 8, 1001
STATS_SIZE = HIST + BINS


class CallbackStats:
    """The callback's counts in `cells` (int64 [STATS_SIZE]; shared memory when the callback runs in the audio
    host, read there by the control process, else its own). Each count is one aligned 8-byte word, written by the
    callback alone and read whole; only the frame clock's two words need a seqlock (device/clock.py)."""

    def __init__(self, cells: np.ndarray | None = None):
        self.cells = np.zeros(STATS_SIZE, np.int64) if cells is None else cells
        self.histogram = self.cells[HIST:]

    def __getitem__(self, i: int) -> int:
        return int(self.cells[i])

    @property
    def callbacks(self) -> int:
        return int(self.cells[CALLBACKS])

    @property
    def underflows(self) -> int:
        return int(self.cells[UNDERFLOWS])

    def timing(self, period: float) -> str:
        """The callback time distribution so far: mean, p99, p99.9 and max, in ms."""
        hist = self.histogram.copy()
        n = int(hist.sum())
        if not n:
            return "no callbacks"
        bins = (np.arange(hist.size) + 0.5) * period / 100 * 1e3
        cum = np.cumsum(hist)
        pct = lambda q: float(bins[min(int(np.searchsorted(cum, q * n)), bins.size - 1)])
        return (f"callback mean {float((hist * bins).sum()) / n:.3f} ms, p99 {pct(0.99):.3f}, "
                f"p99.9 {pct(0.999):.3f}, max {self.cells[LONGEST_NS] * 1e-6:.3f} ms (period {period * 1e3:.3f} ms)")


class LiveAudio:
    """The sounddevice callback: takes the events waiting in the ring (`events`, when the producers are in another
    process) into the engine, marks the clock, renders block by block into the output buffer, heartbeats
    (`heartbeat`, when given) and counts (`stats`); on its first call it puts its own thread on real-time
    scheduling when configured. It never lets an exception out (PortAudio would stop the stream): the engine
    contains its own failures (device/engine.py) and what it cannot contain silences the rest of the buffer and
    resets the engine (`Engine.recover`); either is logged in `engine.failure_log` for another thread to report.
    Only a callback that stalls is left to the watchdog."""

    def __init__(self, engine: Engine, clock: FrameClock, *, events: EventRing | None = None,
                 stats: CallbackStats | None = None, heartbeat: Callable[[], None] | None = None,
                 rt_priority: int = 0):
        self.engine, self.clock, self.events = engine, clock, events
        self.stats = CallbackStats() if stats is None else stats
        self.heartbeat = heartbeat
        self.rt_priority = rt_priority
        self.realtime: bool | None = None  # set on the first callback
        self.period = engine.block / engine.fs

    def callback(self, outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        t0 = time.perf_counter_ns()
        if self.realtime is None:
            self.realtime = promote_current_thread(self.rt_priority)
        engine, cells = self.engine, self.stats.cells
        cells[CALLBACKS] += 1
        if status:
            cells[UNDERFLOWS] += 1
        if self.heartbeat is not None:
            self.heartbeat()
        first = engine.frame
        try:
            self.clock.mark(first)
            if self.events is not None:
                self.events.drain(engine.post)
            block = engine.block
            for start in range(0, frames, block):
                engine.process(outdata[start:start + block])
        except Exception as e:  # not contained by the engine: silence, reset it, play on
            done = engine.frame - first
            outdata[done:].fill(0)
            engine.recover(frames - done, e)
        cells[STARVED] = engine.starved
        cells[FAULTS] = engine.faults
        cells[FAILURES] = engine.failures
        cells[VOICES] = engine.active_voices()
        cells[HELD] = engine.held_voices()
        dt = time.perf_counter_ns() - t0
        cells[HIST + min(int(dt * 1e-9 * 100 / self.period), BINS - 1)] += 1
        if dt > cells[LONGEST_NS]:
            cells[LONGEST_NS] = dt

    @property
    def callbacks(self) -> int:
        return self.stats.callbacks

    @property
    def underflows(self) -> int:
        return self.stats.underflows

    def timing(self) -> str:
        return self.stats.timing(self.period)
