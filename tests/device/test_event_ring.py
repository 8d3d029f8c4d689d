"""The shared-memory paths between the control process and the audio host: the event ring (order, wrap-around, a
full ring drops and counts, every event kind arrives as the engine's own check makes it, a second process pushing
while this one pops) and the frame clock's mark (never read torn while another process writes it)."""
import os
import subprocess
import sys
import textwrap
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path

import numpy as np
import pytest

from device.atomics import seq_read
from device.clock import FrameClock
from device.events import checked_event
from device.event_ring import EventRing

ROOT = Path(__file__).resolve().parents[2]

EVENTS = [("on", 3, 60, 100), ("off", 15, 127), ("params", {"x": 0.25, "volume": 1.0}), ("params", {}),
          ("params", {name: i / 10 for i, name in enumerate(["position", "attack", "decay", "sustain", "release",
                                                             "volume", "x", "y"])}),
          ("bend", None, -2.5), ("bend", 4, 96.0), ("pedal", True), ("pedal", False), ("note_xy", 2, None, 0.75),
          ("note_xy", 0, 0.5, None), ("all_notes_off",), ("all_sound_off",), ("reset_controllers",)]


def _drained(ring):
    got = []
    ring.drain(lambda ev, frame: got.append((ev, frame)))
    return got


def test_every_event_kind_arrives_as_the_engine_checks_it():
    ring = EventRing(64)
    for i, ev in enumerate(EVENTS):
        ring.push(ev, None if i % 3 == 0 else 1000 + i)
    want = [(checked_event(ev), None if i % 3 == 0 else 1000 + i) for i, ev in enumerate(EVENTS)]
    assert _drained(ring) == want
    assert [type(v) for v in _drained_one(ring, ("on", 1, 2, 3))] == [str, int, int, int]


def _drained_one(ring, ev):
    ring.push(ev)
    return _drained(ring)[0][0]


def test_bad_events_are_refused_in_the_pushing_thread():
    ring = EventRing(8)
    with pytest.raises(ValueError, match="velocity 128 is outside 0..127"):
        ring.push(("on", 0, 60, 128))
    with pytest.raises(ValueError, match="unknown parameter"):
        ring.push(("params", {"loudness": 1.0}))
    with pytest.raises(ValueError, match="'bank' takes an open Bank"):
        ring.push(("bank", "/some/path"))
    assert _drained(ring) == [] and ring.dropped == 0


def test_order_and_wrap_around_and_a_full_ring_drops_and_counts():
    ring = EventRing(8)
    sent, got = [], []
    for i in range(100):  # pushes and pops interleaved: the indices wrap many times
        for j in range(i % 5):
            ev = ("on", j, i % 128, j + 1)
            assert ring.push(ev, i)
            sent.append((ev, i))
        got += _drained(ring)
    assert got == sent and ring.dropped == 0
    assert all(ring.push(("off", 0, k), k) for k in range(8))
    assert not ring.push(("off", 0, 8), 8) and not ring.push(("off", 0, 9)) and ring.dropped == 2
    assert [f for _, f in _drained(ring)] == list(range(8))
    assert ring.push(("off", 0, 10), 10) and _drained(ring) == [(("off", 0, 10), 10)]


_PRODUCER = textwrap.dedent('''
    import mmap, sys
    from device.event_ring import EventRing
    name, capacity, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    with open(f"/dev/shm/{name}", "r+b") as f:
        ring = EventRing(capacity, memoryview(mmap.mmap(f.fileno(), EventRing.nbytes(capacity))))
    full = 0
    for i in range(n):  # every field follows from i: a record read half-written would not
        ev = ("params", {"x": i / n, "y": 1 - i / n}) if i % 2 else ("on", i % 16, i % 128, 1 + i % 127)
        while not ring.push(ev, i):
            full += 1
    print(full)
''')


def test_a_second_process_pushes_while_this_one_pops():
    n, capacity = 30000, 64
    shm = SharedMemory(create=True, size=EventRing.nbytes(capacity))
    try:
        ring = EventRing(capacity, shm.buf)
        producer = subprocess.Popen([sys.executable, "-c", _PRODUCER, shm.name, str(capacity), str(n)],
                                    env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
        got = []
        while producer.poll() is None or len(got) < n:
            got += _drained(ring)
            assert producer.poll() in (None, 0)
        full = int(producer.stdout.read())
        assert len(got) == n
        for i, (ev, frame) in enumerate(got):
            assert frame == i
            assert ev == (("params", {"x": i / n, "y": 1 - i / n}) if i % 2 else ("on", i % 16, i % 128, 1 + i % 127))
        assert ring.dropped == full  # each push that found the ring full was counted, none lost unseen
        del ring
    finally:
        shm.close()
        shm.unlink()


_MARKER = textwrap.dedent('''
    import mmap, sys
    import numpy as np
    from device.atomics import seq_write
    name, n = sys.argv[1], int(sys.argv[2])
    with open(f"/dev/shm/{name}", "r+b") as f:
        cells = np.ndarray((3,), np.int64, mmap.mmap(f.fileno(), 24))
    for i in range(1, n + 1):
        seq_write(cells, i, -7 * i)
''')


def test_the_clock_mark_is_never_read_torn_while_another_process_writes_it():
    shm = SharedMemory(create=True, size=24)
    try:
        cells = np.ndarray((3,), np.int64, shm.buf)
        cells[:] = 0
        writer = subprocess.Popen([sys.executable, "-c", _MARKER, shm.name, "3000000"],
                                  env={**os.environ, "PYTHONPATH": str(ROOT)})
        out = np.zeros(2, np.int64)
        reads, moved, last, missed = 0, 0, 0, 0
        while writer.poll() is None:
            if not seq_read(cells, out):  # the writer was descheduled inside a write as long as the reader spun
                assert (int(out[0]), int(out[1])) == (last, -7 * last)  # out left as it was
                missed += 1
                continue
            a, b = int(out[0]), int(out[1])
            assert b == -7 * a and a >= last, (a, b)  # both words from one write, never going back
            moved += a != last
            last = a
            reads += 1
        assert writer.returncode == 0 and reads > 1000 and moved > 100 and missed < reads // 100
        clock = FrameClock(48000, 128, cells)  # the control process's clock reads that mark
        assert clock.marked() == (3000000, -7 * 3000000 * 1e-9)
        del cells, clock
    finally:
        shm.close()
        shm.unlink()


def test_frame_clock_keeps_offsets_one_block_late():
    clock = FrameClock(48000, 128)
    clock.mark(1280)
    t0 = clock.marked()[1]
    assert clock.frame_for(t0) == 1408
    assert clock.frame_for(t0 + 50 / 48000 + 1e-9) == 1458
    assert clock.frame_for(t0 + 1.0) == 1408 + 127  # a late callback: clamp inside the next block
    assert clock.frame_for(t0 - 1.0) == 1408


def test_a_writer_stuck_inside_a_mark_leaves_the_last_mark_read():
    """A callback descheduled between the seqlock's odd and even sequence (for as long as the reader spins): the
    control process stamps with the last mark it read, not with a zero frame."""
    cells = np.zeros(3, np.int64)
    clock = FrameClock(48000, 128, cells)
    clock.mark(4096)
    frame, t0 = clock.marked()
    assert frame == 4096
    cells[0] += 1  # the writer is inside its next write ...
    cells[1] = 99999  # ... and has stored half of it
    assert clock.marked() == (4096, t0)
    assert clock.frame_for(t0) == 4096 + 128
