"""Synthetic banks for the device tests: no model, just sines whose harmonic mix depends on the cell."""
from __future__ import annotations

import numpy as np
from device.bank import BankWriter

# Harmonic amplitudes of the four corners (BL, BR, TL, TR): distinct timbres.
CORNER_HARMONICS = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])


def synth_note(midi: int, velocity: int, y: int, x: int, grid: int, length: int, sr: int = 16000) -> np.ndarray:
    """A steady note: harmonics 1..4 of the pitch, mixed bilinearly from the corners by the cell's position."""
    fx, fy = x / (grid - 1), y / (grid - 1)
    w = np.array([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy])
    amps = w @ CORNER_HARMONICS
    t = np.arange(length) / sr
    f0 = 440.0 * 2 ** ((midi - 69) / 12)
    sig = sum(a * np.sin(2 * np.pi * f0 * (k + 1) * t) for k, a in enumerate(amps))
    sig *= 0.5 * velocity / 127 / max(amps.sum(), 1e-9)
    return np.round(sig * 32767).astype(np.int16)


def write_bank(path, *, grid=3, pitches=(48, 60, 72), velocities=(50, 100), note_length=8000, loop=None,
               corners=("bl", "br", "tl", "tr"), **kw):
    """Write a complete synthetic bank at `path` (corners named in the manifest's order BL, BR, TL, TR);
    returns the BankInfo."""
    with BankWriter(path, grid=grid, pitches=pitches, velocities=velocities, note_length=note_length,
                    corners=list(corners), model="synthetic", **kw) as w:
        for pi, p in enumerate(pitches):
            for vi, v in enumerate(velocities):
                for y in range(grid):
                    for x in range(grid):
                        w.write(pi, vi, y, x, synth_note(p, v, y, x, grid, note_length), loop=loop)
        return w.close()


def render_events(bank, events, frames: int, config=None, params: dict | None = None) -> np.ndarray:
    """Offline: render frame-stamped events [(frame, event)] for `frames` frames through a fresh engine;
    float32 [frames, 2]."""
    from device.engine import Engine, EngineConfig

    engine = Engine(bank, config or EngineConfig(), params)
    for frame, ev in events:
        engine.post(ev, frame)
    return engine.render(frames)


def write_song(path):
    """A short MIDI file for the live tests: four notes at four velocities, a CC16 (X) and a pitch bend, then the
    note-offs (at 960 ticks a second); returns the path."""
    import mido

    mid = mido.MidiFile(ticks_per_beat=480)
    tr = mido.MidiTrack()
    mid.tracks.append(tr)
    tr.append(mido.MetaMessage("set_tempo", tempo=500000))
    for i, (n, v) in enumerate([(60, 100), (64, 70), (67, 40), (72, 127)]):
        tr.append(mido.Message("note_on", note=n, velocity=v, time=0 if i == 0 else 97))
    tr.append(mido.Message("control_change", control=16, value=100, time=33))
    tr.append(mido.Message("pitchwheel", pitch=3000, time=51))
    for n in (60, 64, 67, 72):
        tr.append(mido.Message("note_off", note=n, time=121))
    mid.save(path)
    return path
