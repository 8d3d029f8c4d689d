"""Hostile MIDI bytes (`hostile_bytes`): what tests/device/test_midi_fuzz.py feeds the real input paths and
bench/hostile_midi.py times the engine under."""
from __future__ import annotations

import random


def hostile_bytes(rng: random.Random, n: int) -> bytes:
    """About n bytes of hostile MIDI: pure noise, realtime bursts, SysEx (a third unterminated), notes with running
    status at extreme keys and velocities, RPN and NRPN sequences with extreme values (bend ranges, the null RPN),
    full bends, extreme CCs (release, pedal, channel mode), pressure; realtime bytes inside messages."""
    out = bytearray()
    r, ri, pick = rng.random, rng.randrange, rng.choice
    extremes = (0, 1, 63, 64, 126, 127)
    ext = lambda: pick(extremes) if r() < 0.85 else ri(128)
    while len(out) < n:
        ch = ri(16)
        kind = r()
        if kind < 0.08:
            piece = [ri(256) for _ in range(ri(1, 24))]
        elif kind < 0.14:
            piece = [ri(0xF8, 0x100) for _ in range(ri(1, 40))]
        elif kind < 0.2:
            piece = [0xF0, *(ri(128) for _ in range(ri(64)))] + ([0xF7] if r() < 0.67 else [])
        elif kind < 0.5:  # notes, running status
            piece = [0x90 | ch]
            for _ in range(ri(1, 8)):
                piece += [ext(), ext() if r() < 0.8 else 0]
        elif kind < 0.6:  # RPN 0 (or another), data entry, sometimes the null RPN
            piece = [0xB0 | ch, 101, pick((0, 127)), 100, pick((0, 0, 1, 127)), 6, ext(), 38, ext()]
        elif kind < 0.67:  # NRPN then data entry: must never reach the bend range
            piece = [0xB0 | ch, 99, ext(), 98, ext(), 6, 127, 38, 127]
        elif kind < 0.8:  # full bends
            piece = [0xE0 | ch]
            for _ in range(ri(1, 4)):
                piece += [ext(), pick((0, 127, 64))]
        elif kind < 0.93:
            piece = [0xB0 | ch, pick((72, 64, 16, 17, 74, 7, 73, 120, 121, 123, 1, 127)), ext()]
        else:
            piece = [0xD0 | ch, ext()]
        for b in piece:
            if r() < 0.03:
                out.append(ri(0xF8, 0x100))
            out.append(b)
    return bytes(out)
