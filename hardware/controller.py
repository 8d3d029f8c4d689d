"""The controller board driver: polls the STM32 at I2C 0x47 on its own thread (smbus2, imported lazily).

Each poll is one combined transaction: write register 0 (the board latches a snapshot), then read the 16-byte
frame. A frame with a bad checksum, a stuck (all 0xFF) bus or an I/O error (NACK) is dropped and counted: the last
good state stays, so the position never jumps. A frame that passes the checksum but whose touch is implausible
(hardware/plausible.py: errors that cancel in the additive checksum) is dropped too ("implausible"). After
`reconnect_after` failures in a row the bus is closed and reopened (when the driver opened it), the encoder
baseline is forgotten (the board may have reset), and polls slow to one per `retry_s` until a frame comes through
again. A reset between two good frames (every counter back at its power-on value) resynchronises the encoder
baseline ("resets") instead of reporting a turn.
"""
from __future__ import annotations

import functools
import logging
import threading
import time
from collections import Counter
from typing import Callable

from hardware import frame as fr
from hardware.mapping import rotary_steps
from hardware.plausible import TouchGuard, board_reset
from hardware.platform import open_smbus
from hardware.ratelog import RateLimitedLog

log = logging.getLogger(__name__)


class ControllerBoard:
    """`bus`: an open smbus2-like bus (injected), or `open_bus`: a callable that opens one (reopened on
    reconnect). `snapshot()` hands the newest good frame and the encoder steps accumulated since the last call."""

    def __init__(self, bus=None, *, open_bus: Callable[[], object] | None = None, address: int = fr.ADDRESS,
                 poll_hz: float = 200.0, reconnect_after: int = 10, retry_s: float = 0.25,
                 log_interval: float = 5.0):
        if bus is None and open_bus is None:
            open_bus = functools.partial(open_smbus, 1)
        self.bus, self.open_bus, self.address = bus, open_bus, address
        self.period = 1.0 / poll_hz
        self.reconnect_after, self.retry_s = reconnect_after, retry_s
        self.counts: Counter[str] = Counter()  # frames, checksum, stuck, io_error, reconnects, implausible, resets
        self._log = RateLimitedLog(log, log_interval)
        self._lock = threading.Lock()
        self._frame: fr.Frame | None = None
        self._fresh = False
        self._steps = [0, 0, 0, 0]
        self._rotaries: tuple[int, ...] | None = None
        self._touch = TouchGuard()
        self._failures = 0   # since the last good frame or reconnect
        self._down = 0       # since the last good frame
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- one poll -------------------------------------------------------------------------------------------
    def read_frame(self) -> fr.Frame:
        """Latch and read one frame; raises OSError (bus) or FrameError (content)."""
        from smbus2 import i2c_msg
        if self.bus is None:
            self.bus = self.open_bus()
        latch, data = i2c_msg.write(self.address, [0]), i2c_msg.read(self.address, fr.FRAME_LEN)
        self.bus.i2c_rdwr(latch, data)
        return fr.decode(bytes(data))

    def poll_once(self) -> bool:
        """One poll; True when a good frame came in."""
        try:
            frame = self.read_frame()
        except OSError as e:
            self._fail("io_error", f"controller board at 0x{self.address:02x}: I/O error ({e})")
            return False
        except fr.FrameError as e:
            self._fail("stuck" if "stuck" in str(e) else "checksum", f"controller board: frame dropped ({e})")
            return False
        self._failures = self._down = 0  # the bus answers
        if not self._touch.accept(frame):
            self.counts["implausible"] += 1
            self._log.warning(f"controller board: frame dropped (touch {frame.touch} is no finger's move from "
                              f"{self._touch.last}); {self.counts['implausible']} so far")
            return False
        with self._lock:
            if self._rotaries is not None and board_reset(self._rotaries, frame.rotaries):
                self.counts["resets"] += 1
                self._log.warning(f"controller board reset (encoder counters {list(self._rotaries)} -> "
                                  f"{list(frame.rotaries)}): baselines resynchronised")
            elif self._rotaries is not None:
                for i, s in enumerate(rotary_steps(self._rotaries, frame.rotaries)):
                    self._steps[i] += s
            self._rotaries = frame.rotaries
            self._frame, self._fresh = frame, True
        self.counts["frames"] += 1
        return True

    def _fail(self, kind: str, message: str) -> None:
        self.counts[kind] += 1
        self._touch.missed()
        self._failures += 1
        self._down += 1
        self._log.warning(f"{message}; {self.counts[kind]} so far")
        if self._failures >= self.reconnect_after:
            self._reconnect()

    def _reconnect(self) -> None:
        self._failures = 0
        self.counts["reconnects"] += 1
        with self._lock:
            self._rotaries = None
        if self.open_bus is not None and self.bus is not None:
            try:
                self.bus.close()
            except OSError:
                pass
            self.bus = None  # reopened by the next poll

    # -- consumer side -------------------------------------------------------------------------------------
    def snapshot(self) -> tuple[fr.Frame | None, tuple[int, ...]]:
        """(the newest good frame if one came since the last call, else None; encoder steps since the last call)."""
        with self._lock:
            frame = self._frame if self._fresh else None
            steps, self._steps, self._fresh = tuple(self._steps), [0, 0, 0, 0], False
        return frame, steps

    # -- thread --------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="controller-board", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.open_bus is not None and self.bus is not None:
            self.bus.close()
            self.bus = None

    def _run(self) -> None:
        deadline = time.monotonic()
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception as e:  # e.g. the bus could not be opened: keep trying, never die
                self._fail("io_error", f"controller board: cannot open the I2C bus ({e})")
            deadline += self.period if self._down < self.reconnect_after else self.retry_s
            delay = deadline - time.monotonic()
            if delay < 0:
                deadline, delay = time.monotonic(), 0.0
            self._stop.wait(delay)
