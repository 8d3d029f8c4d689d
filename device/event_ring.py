"""Engine events from the control process to the audio host, through a ring in shared memory.

One producer side (the control process's MIDI, board and window threads, serialised by a lock there) and one
consumer (the host's audio callback, which pops without waiting before each block). A record is WIDTH float64:
the event's kind code, its target frame (-1: the next block), its channel (-1: none) and up to 9 values (a key and
velocity, a bend, the pedal, X/Y, or one value per parameter in PARAMS order, NaN where a parameter is not set).
The indices are counters (head: records pushed, tail: records popped) on separate cache lines, published with
release stores and read with acquire loads (device/atomics.py), so a record's payload is visible before the index
that hands it over. A full ring drops the event and counts it (`dropped`); the producer never waits either.

Events are checked when pushed (`checked_event`, the engine's own check: a bad one raises ValueError in the
pushing thread) and decode to the tuples `Engine.post` takes, so the engine applies them exactly as if posted
in-process: same frames, same order.
"""
from __future__ import annotations

import math
import threading
from typing import Callable

import numpy as np

from device.atomics import load_acquire, store_release
from device.events import checked_event
from device.kernels import jit
from nsynth.params import PARAMS

KINDS = ("on", "off", "params", "bend", "pedal", "note_xy", "all_notes_off", "all_sound_off", "reset_controllers")
WIDTH = 12
HEAD, TAIL, DROPPED = 0, 8, 16  # int64 header cells, a 64-byte cache line apart
HEADER = 24
BATCH = 64  # records the callback copies out per pop


@jit()
def ring_push(hdr: np.ndarray, recs: np.ndarray, rec: np.ndarray) -> bool:
    """Append one record unless the ring is full (then count a drop): the producer's side."""
    head = hdr[HEAD]  # only the producer writes it
    if head - load_acquire(hdr, TAIL) >= recs.shape[0]:
        store_release(hdr, DROPPED, hdr[DROPPED] + 1)
        return False
    row = head % recs.shape[0]
    for j in range(recs.shape[1]):
        recs[row, j] = rec[j]
    store_release(hdr, HEAD, head + 1)  # the record is visible before the new head
    return True


@jit()
def ring_pop(hdr: np.ndarray, recs: np.ndarray, out: np.ndarray) -> int:
    """Move up to len(out) records into out; how many: the consumer's side."""
    tail = hdr[TAIL]  # only the consumer writes it
    n = min(load_acquire(hdr, HEAD) - tail, out.shape[0])
    for i in range(n):
        row = (tail + i) % recs.shape[0]
        for j in range(recs.shape[1]):
            out[i, j] = recs[row, j]
    store_release(hdr, TAIL, tail + n)  # the records are read before their slots are handed back
    return n


def encode(ev: tuple, frame: int | None, rec: np.ndarray) -> None:
    """A checked event (`checked_event`'s output) and its frame into one record."""
    kind = ev[0]
    rec.fill(math.nan)
    rec[0] = KINDS.index(kind) + 1
    rec[1] = -1 if frame is None else int(frame)
    rec[2] = -1
    if kind in ("on", "off"):
        rec[2:2 + len(ev) - 1] = ev[1:]
    elif kind == "params":
        for name, value in ev[1].items():
            rec[3 + PARAMS.index(name)] = value
    elif kind == "bend":
        rec[2] = -1 if ev[1] is None else ev[1]
        rec[3] = ev[2]
    elif kind == "pedal":
        rec[3] = ev[1]
    elif kind == "note_xy":
        rec[2] = ev[1]
        rec[3:5] = [math.nan if v is None else v for v in ev[2:]]


def decode(rec: np.ndarray) -> tuple[tuple, int | None]:
    """One record -> (event, frame) as `Engine.post` takes them."""
    values = rec.tolist()
    kind = KINDS[int(values[0]) - 1]
    frame = None if values[1] < 0 else int(values[1])
    ch = int(values[2])
    if kind == "on":
        return (kind, ch, int(values[3]), int(values[4])), frame
    if kind == "off":
        return (kind, ch, int(values[3])), frame
    if kind == "params":
        return (kind, {name: v for name, v in zip(PARAMS, values[3:]) if v == v}), frame
    if kind == "bend":
        return (kind, None if ch < 0 else ch, values[3]), frame
    if kind == "pedal":
        return (kind, values[3] != 0.0), frame
    if kind == "note_xy":
        return (kind, ch, *(None if v != v else v for v in values[3:5])), frame
    return (kind,), frame


class EventRing:
    """The ring over a buffer (shared memory; default: its own, for one process), `capacity` records."""

    def __init__(self, capacity: int = 4096, buf: memoryview | None = None):
        self.capacity = capacity
        buf = memoryview(bytearray(self.nbytes(capacity))) if buf is None else buf
        self.hdr = np.ndarray((HEADER,), np.int64, buf, 0)
        self.recs = np.ndarray((capacity, WIDTH), np.float64, buf, HEADER * 8)
        self._rec = np.zeros(WIDTH)
        self._out = np.zeros((BATCH, WIDTH))
        self._lock = threading.Lock()

    @staticmethod
    def nbytes(capacity: int) -> int:
        return HEADER * 8 + capacity * WIDTH * 8

    @property
    def dropped(self) -> int:
        """Events dropped because the ring was full."""
        return int(self.hdr[DROPPED])

    def push(self, ev: tuple, frame: int | None = None) -> bool:
        """Check and queue one engine event (any producer thread); False if the ring was full (dropped)."""
        ev = checked_event(ev)
        if ev[0] not in KINDS:
            raise ValueError(f"engine event {ev[0]!r} cannot go through the event ring")
        with self._lock:
            encode(ev, frame, self._rec)
            return ring_push(self.hdr, self.recs, self._rec)

    def drain(self, post: Callable[[tuple, int | None], None]) -> int:
        """Pop every queued event into `post(event, frame)` (the consumer: the audio callback); how many."""
        total = 0
        while True:
            n = ring_pop(self.hdr, self.recs, self._out)
            for i in range(n):
                post(*decode(self._out[i]))
            total += n
            if n < BATCH:
                return total
