"""The engine's block time under hostile MIDI against ordinary playing, in one run, same bank, same path.

Both streams go byte by byte through the DIN parser (device/midi_stream.py) into `play`'s MIDI feed (router,
frame clock, engine queue), and the audio callback renders a block after every `--bytes-per-block` bytes (32: a
USB flood; DIN at 31,250 baud brings about 8 per 128-frame block):
  - friendly: notes in the middle of the keyboard, bends within +-2 semitones, a few CCs; no RPN;
  - hostile: `hostile_bytes` (testkit/hostile_midi.py: noise, realtime bursts, unterminated SysEx, running
    status, RPN 0 and NRPN with extreme values, full bends, extreme keys, release and channel-mode CCs);
  - the rate cap's worst case, by construction: 32 voices at keys 127..126 at the largest bend, between two
    velocity layers and off the grid's cells (so all 8 streams are read), each reading `max_rate` source samples
    per output sample, retriggered now and then (so stolen voices fade in the spare slots).
Per stream and mode (omni, MPE): block time p50 / p99 / p99.9 / max (ms, and p99 as a share of the 2.667 ms
period), the most voices, and the work (source samples read per block, summed over voices) p99 and max.

    python bench/hostile_midi.py [--blocks 20000] [--bytes-per-block 32] [--numpy]

Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from device import kernels  # noqa: E402
from device.bank import BankWriter, open_bank  # noqa: E402
from device.engine import Engine, EngineConfig  # noqa: E402
from device.audio_host import warm_up  # noqa: E402
from device.callback import LiveAudio  # noqa: E402
from device.clock import FrameClock  # noqa: E402
from device.play import MidiFeed  # noqa: E402
from device.midi_map import MidiRouter  # noqa: E402
from device.midi_stream import MidiByteParser  # noqa: E402
from testkit.hostile_midi import hostile_bytes  # noqa: E402

BLOCK = 128


def friendly_bytes(rng: random.Random, n: int, mpe: bool) -> bytes:
    """About n bytes of ordinary playing: notes 36..96 (each released later), bends within +-2 semitones (the
    default range; +-48 on MPE members at a 1/24 wheel), a few CCs."""
    out, held = bytearray(), []
    ri, r = rng.randrange, rng.random
    while len(out) < n:
        ch = ri(1, 16) if mpe else 0
        if held and (len(held) > 12 or r() < 0.4):
            key, hch = held.pop(ri(len(held)))
            out += bytes([0x80 | hch, key, 64])
        elif r() < 0.6:
            key = ri(36, 97)
            held.append((key, ch))
            out += bytes([0x90 | ch, key, ri(40, 120)])
        elif r() < 0.7:
            v = 8192 + ri(-340, 341) if mpe else ri(16384)
            out += bytes([0xE0 | ch, v & 0x7F, v >> 7])
        else:
            out += bytes([0xB0 | (0 if mpe else ch), rng.choice((16, 17, 7, 73)), ri(128)])
    return bytes(out)


def write_bank(path: Path) -> None:
    """A 3x3 bank of 16 pitches (24..84), two velocity layers, 1.5-s notes of a few harmonics (looped)."""
    pitches, length, sr = list(range(24, 85, 4)), 24000, 16000
    t = np.arange(length) / sr
    with BankWriter(path, grid=3, pitches=pitches, velocities=[60, 120], note_length=length, corners="abcd") as w:
        for pi, p in enumerate(pitches):
            f0 = 440.0 * 2 ** ((p - 69) / 12)
            for vi in range(2):
                cells = np.empty((3, 3, length), np.int16)
                for y in range(3):
                    for x in range(3):
                        sig = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 2 + x + y))
                        cells[y, x] = np.round(sig / 3 * (0.4 + 0.5 * vi) * 32767).astype(np.int16)
                w.write_block(pi, vi, cells, np.tile([length // 2, length - 1000], (3, 3, 1)))


def run(bank, data: bytes | None, mpe: bool, blocks: int, per_block: int, worst: bool) -> dict:
    engine = Engine(bank, EngineConfig(block=BLOCK), {"x": 0.3, "y": 0.6})  # off the cells: 4 of them mixed
    warm_up(bank, engine.config)
    clock = FrameClock(engine.fs, BLOCK)
    audio = LiveAudio(engine, clock)
    feed = MidiFeed(MidiRouter(mpe=mpe), engine, clock)
    parser = MidiByteParser()
    buf = np.zeros((BLOCK, 2), np.float32)
    if worst:  # every slot: key 127 at the largest bend (the cap's worst case)
        engine.post(("bend", None, 24.0))
        for ch in range(16):
            engine.post(("bend", ch, 96.0))
        for i in range(engine.config.max_voices + engine.config.fade_slots):
            engine.post(("on", i % 16, 127 - i // 16, 90))  # between the layers: both read
            if i >= engine.config.max_voices:  # the fade slots: stolen voices
                audio.callback(buf, BLOCK, None, 0)
    times, voices, work = np.zeros(blocks), np.zeros(blocks, np.int64), np.zeros(blocks)
    pos = engine.pos.copy()
    for b in range(blocks):
        if data is not None:
            for msg in parser.feed(data[b * per_block:(b + 1) * per_block]):
                feed(msg)
        elif b % 16 == 0:  # keep every slot busy: retrigger one key in a while
            engine.post(("on", b % 16, 127, 90))
        t0 = time.perf_counter()
        audio.callback(buf, BLOCK, None, 0)
        times[b] = time.perf_counter() - t0
        act = engine.stage != 0
        voices[b] = int(act.sum())
        work[b] = float(np.clip(engine.pos[act] - pos[act], 0, None).sum())
        pos[:] = engine.pos
    ms = times * 1e3
    period = BLOCK / engine.fs * 1e3
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "p999_ms": round(float(np.percentile(ms, 99.9)), 3), "max_ms": round(float(ms.max()), 3),
            "p99_of_period": round(float(np.percentile(ms, 99)) / period, 3), "voices_max": int(voices.max()),
            "work_p99": round(float(np.percentile(work, 99))), "work_max": round(float(work.max())),
            "failures": engine.failures, "feed_errors": feed.errors}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--blocks", type=int, default=20000)
    ap.add_argument("--bytes-per-block", type=int, default=32)
    ap.add_argument("--numpy", action="store_true", help="the numpy reference path instead of the compiled kernel")
    args = ap.parse_args()
    if args.numpy:
        kernels.COMPILED = False
    n = args.blocks * args.bytes_per_block
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        write_bank(Path(tmp) / "bank")
        bank = open_bank(Path(tmp) / "bank")
        for mode in ("omni", "mpe"):
            mpe = mode == "mpe"
            for name, data, worst in (("friendly", friendly_bytes(random.Random(1), n, mpe), False),
                                      ("hostile", hostile_bytes(random.Random(2), n), False),
                                      ("cap worst case", None, True)):
                if worst and mpe:
                    continue  # the same voices either way
                key = f"{name}, {mode}" if not worst else name
                results[key] = res = run(bank, data, mpe, args.blocks, args.bytes_per_block, worst)
                print(f"{key:18s} block ms p50 {res['p50_ms']:.3f} p99 {res['p99_ms']:.3f} p99.9 "
                      f"{res['p999_ms']:.3f} max {res['max_ms']:.3f} (p99 {res['p99_of_period']:.0%} of the "
                      f"period); voices max {res['voices_max']}; source samples read per block p99 "
                      f"{res['work_p99']} max {res['work_max']}", flush=True)
    load = os.getloadavg()
    print(json.dumps({"bench": "hostile_midi", "engine": "numpy" if args.numpy else "compiled",
                      "blocks": args.blocks, "bytes_per_block": args.bytes_per_block, "cpus": os.cpu_count(),
                      "load": [round(x, 2) for x in load], "results": results}))


if __name__ == "__main__":
    main()
