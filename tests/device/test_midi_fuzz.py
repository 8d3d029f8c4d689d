"""Hostile MIDI, live: random bytes through the real input paths (the DIN reader thread with its byte parser, the
USB input's callback) into play's MIDI feed, the router and the engine, with the audio callback rendering a block
as the messages come. No exception, no failure contained, every block's work bounded (voices x resampling rate),
and all-notes-off at the end leaves no held voice (all-sound-off: none at all). Both engine paths, omni and MPE.

Block times are printed (pytest -s), not asserted: on a loaded shared machine they say little; bench/hostile_midi.py
measures them against ordinary playing."""
import queue
import random
import threading
import time

import mido
import numpy as np
import pytest

from device.bank import open_bank
from device.engine import Engine
from device.audio_host import warm_up
from device.callback import LiveAudio
from device.clock import FrameClock
from device.play import MidiFeed
from device.midi_io import UartMidiInput, UsbMidiInput, all_notes_off
from device.midi_map import MidiRouter
from testkit.hostile_midi import hostile_bytes

from synth_banks import write_bank

BLOCK = 128


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "bank"
    write_bank(path, grid=2, pitches=(36, 60, 84), velocities=(40, 110), note_length=3000, loop=(1000, 1007))
    return open_bank(path)


class SteppedSerial:
    """A serial port (the hardware edge) whose reads return the chunks the test hands over, one at a time;
    `hand(chunk)` returns once the reader has asked for more (the chunk is parsed and delivered by then)."""

    def __init__(self, *args, **kwargs):
        self._chunks: queue.Queue = queue.Queue()
        self._asking = threading.Event()
        self.in_waiting = 0

    def read(self, n):
        self._asking.set()
        try:
            return self._chunks.get(timeout=0.05)
        except queue.Empty:
            return b""

    def hand(self, chunk: bytes) -> None:
        self._asking.clear()
        self._chunks.put(chunk)
        assert self._asking.wait(10)

    def close(self):
        pass


class FakeUsbPort(mido.ports.BaseInput):
    def _receive(self, block=True):
        return None


@pytest.mark.parametrize("mode", ["omni", "mpe"])
def test_hostile_midi_through_the_live_path(bank, engine_path, mode):
    rng = random.Random(18 if mode == "omni" else 81)
    # half the bytes through DIN, half through USB: on the compiled path 5 x 10^5 in each mode (10^6 in all), a
    # block rendered every ~48 of them; the numpy path (the slow reference) a block every ~1000 of 10^5
    total, per_block = (500_000, 96) if engine_path == "compiled" else (100_000, 2000)
    engine = Engine(bank)
    warm_up(bank, engine.config)  # as play does: the compiled kernel loaded before the first block
    clock = FrameClock(engine.fs, BLOCK)
    audio = LiveAudio(engine, clock)
    feed = MidiFeed(MidiRouter(mpe=mode == "mpe"), engine, clock)
    serial = SteppedSerial()
    uart = UartMidiInput("/dev/fake-din", feed, serial_factory=lambda *a, **k: serial).start()
    opened = []
    usb = UsbMidiInput("fuzz", feed, lister=lambda: ["fuzz"], watch=lambda: b"same",
                       opener=lambda name, cb: opened.append(cb) or FakeUsbPort(name)).start()
    for _ in range(500):
        if opened:
            break
        time.sleep(0.01)
    deliver = opened[0]  # the callback python-rtmidi would call
    usb_parser = mido.Parser()
    din, usb_bytes = hostile_bytes(rng, total // 2), hostile_bytes(rng, total // 2)
    buf = np.zeros((BLOCK, 2), np.float32)
    times, voices, worst_step = [], [], 0.0
    cap = engine.config.max_rate * BLOCK
    pos, age = engine.pos.copy(), engine.age.copy()
    try:
        i = j = 0
        while i < len(din) or j < len(usb_bytes):
            step = rng.randrange(1, per_block)
            if i < len(din):
                serial.hand(din[i:i + step])
                i += step
            if j < len(usb_bytes):
                usb_parser.feed(usb_bytes[j:j + step])
                j += step
                for msg in usb_parser:
                    deliver(msg)
            t0 = time.perf_counter()
            audio.callback(buf, BLOCK, None, 0)
            times.append(time.perf_counter() - t0)
            assert np.isfinite(buf).all() and np.abs(buf).max() <= 1.0
            # the work of this block: how many voices, and how far each read (source samples)
            same = (engine.stage != 0) & (engine.age == age)
            if same.any():
                worst_step = max(worst_step, float((engine.pos[same] - pos[same]).max()))
            voices.append(engine.active_voices())
            pos[:], age[:] = engine.pos, engine.age
        for msg in all_notes_off():
            deliver(msg)
        for _ in range(4):
            audio.callback(buf, BLOCK, None, 0)
        held = engine.held_voices()
        deliver(mido.Message("control_change", channel=0, control=120, value=0))  # all sound off
        for _ in range(4):
            audio.callback(buf, BLOCK, None, 0)
    finally:
        uart.stop()
        usb.stop()
    assert feed.errors == 0 and engine.failures == 0 and engine.faults == 0, list(engine.failure_log)
    assert feed.received > total // 10
    assert max(voices) >= 8  # the engine was kept busy
    assert worst_step <= cap + 1e-6  # no voice read faster than the cap: work per block <= voices x cap
    assert max(voices) <= engine.config.max_voices + engine.config.fade_slots
    assert held == 0 and engine.active_voices() == 0
    t = np.array(times) * 1e3
    print(f"\n{mode}, {engine_path}: {len(t)} blocks, {feed.received} messages, voices max {max(voices)}, "
          f"block ms p50 {np.percentile(t, 50):.3f} p99 {np.percentile(t, 99):.3f} max {t.max():.3f} "
          f"(period {BLOCK / engine.fs * 1e3:.3f})")
