"""An exported SFZ instrument played by a real SFZ player (sfizz, through the pysfizz wheel) against the engine
(`nsynth render-midi`) on the same MIDI file: `compare` (bench/sfz_player.py reports it, tests/device/
test_sfz_export.py checks it) and its pieces: a bank whose every stream (cell x velocity layer) is one harmonic of
a 62.5 Hz tone (`write_harmonic_bank`), so each stream's weight can be read off the spectrum (`stream_weights`),
and the bilinear x velocity weights written out as the oracle (`bilinear_weights`, `expected_weights`).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from device.addressing import velocity_gains
from device.bank import BankWriter
from device.engine import EngineConfig
from device.midi_file import midi_file_messages
from device.offline import render_midi
from device.sfz import SfzOptions, export_sfz

F0 = 62.5  # Hz: 256 samples a period at 16 kHz (loops of whole periods are seamless); harmonics stay low
SR, FS = 16000, 48000
VELOCITIES = (64, 127)
NOTE_S, GAP_S = 1.0, 0.6


def harmonic(grid: int, layer: int, y: int, x: int) -> int:
    """The harmonic of F0 that stream (layer, y, x) holds."""
    return 1 + layer * grid * grid + y * grid + x


def write_harmonic_bank(path: Path, grid: int = 3, note_length: int = 32000) -> None:
    """Pitch 60 only (every key transposes it), two velocity layers; each note one harmonic of F0."""
    t = np.arange(note_length) / SR
    with BankWriter(path, grid=grid, pitches=[60], velocities=list(VELOCITIES), note_length=note_length,
                    corners=["bl", "br", "tl", "tr"], model="harmonics") as w:
        for v in range(len(VELOCITIES)):
            for y in range(grid):
                for x in range(grid):
                    tone = 0.3 * np.sin(2 * np.pi * F0 * harmonic(grid, v, y, x) * t) * np.minimum(1, t / 0.005)
                    w.write(0, v, y, x, np.round(tone * 32767).astype(np.int16), loop=(6400, 12800))


def write_song(path: Path, notes: list[tuple[int, int, int, int]]) -> None:
    """notes: (key, velocity, cc16, cc17), one after the other, each NOTE_S long with GAP_S between."""
    import mido

    track = mido.MidiTrack()
    beat = mido.second2tick(1.0, 480, 500000)  # ticks per second at 120 bpm
    rest = 0
    for key, vel, cx, cy in notes:
        track.append(mido.Message("control_change", control=16, value=cx, time=rest))
        track.append(mido.Message("control_change", control=17, value=cy, time=0))
        track.append(mido.Message("note_on", note=key, velocity=vel, time=0))
        track.append(mido.Message("note_off", note=key, velocity=0, time=int(NOTE_S * beat)))
        rest = int(GAP_S * beat)
    track.append(mido.MetaMessage("end_of_track", time=rest))
    song = mido.MidiFile(ticks_per_beat=480)
    song.tracks.append(track)
    song.save(path)


def render_sfizz(sfz: str | Path, song: str | Path, *, sample_rate: int = FS, block: int = 128,
                 tail_s: float = 0.5, voices: int = 256) -> np.ndarray:
    """A MIDI file played by sfizz: float32 [frames, 2]. Events go in at their frame within the block."""
    import pysfizz

    synth = pysfizz.Synth(sample_rate=sample_rate, block_size=block)  # freewheeling: samples loaded, not streamed
    if not synth.load_sfz_file(sfz):
        raise RuntimeError(f"{sfz}: sfizz could not load it")
    s = synth._synth  # the binding's MIDI and render calls
    s.set_num_voices(voices)
    messages = midi_file_messages(song, sample_rate)
    frames = messages[-1][0] + int(tail_s * sample_rate) + 1
    out = np.zeros((-(-frames // block) * block, 2), np.float32)
    i = 0
    for start in range(0, out.shape[0], block):
        while i < len(messages) and messages[i][0] < start + block:
            frame, msg = messages[i]
            at = max(0, frame - start)
            if msg.type == "note_on" and msg.velocity > 0:
                s.note_on(at, msg.note, msg.velocity)
            elif msg.type in ("note_on", "note_off"):
                s.note_off(at, msg.note, msg.velocity)
            elif msg.type == "control_change":
                s.cc(at, msg.control, msg.value)
            elif msg.type == "pitchwheel":
                s.pitch_wheel(at, msg.pitch)
            i += 1
        left, right = s.render_block()
        out[start:start + block, 0], out[start:start + block, 1] = left, right
    return out[:frames]


def stream_weights(audio: np.ndarray, onset_s: float, grid: int, key: int = 60) -> np.ndarray:
    """Amplitude of each stream's harmonic [layer, y, x] in 0.3..0.9 s after a note's onset (channel 0)."""
    a = audio[int((onset_s + 0.3) * FS): int((onset_s + 0.9) * FS), 0].astype(np.float64)
    win = np.hanning(len(a))
    n = np.arange(len(a))
    f0 = F0 * 2 ** ((key - 60) / 12)
    amps = np.zeros((len(VELOCITIES), grid, grid))
    for v in range(len(VELOCITIES)):
        for y in range(grid):
            for x in range(grid):  # the windowed projection on the harmonic's exact frequency
                f = f0 * harmonic(grid, v, y, x)
                amps[v, y, x] = 2 * abs(np.sum(a * win * np.exp(-2j * np.pi * f * n / FS))) / win.sum()
    return amps


def bilinear_weights(x: float, y: float, grid: int) -> dict[tuple[int, int], float]:
    """The bilinear rule written out (the oracle; the engine computes it its own way): the cells (cx, cy) around
    normalised (x, y) and their weights."""
    gx, gy = x * (grid - 1), y * (grid - 1)
    cx, cy = min(int(gx), grid - 2), min(int(gy), grid - 2)
    u, v = gx - cx, gy - cy
    return {(cx, cy): (1 - u) * (1 - v), (cx + 1, cy): u * (1 - v), (cx, cy + 1): (1 - u) * v, (cx + 1, cy + 1): u * v}


def expected_weights(grid: int, vel: int, cx: int, cy: int) -> np.ndarray:
    """The engine's rule: bilinear weights of the cells and a linear crossfade of the velocity layers."""
    w = np.zeros((len(VELOCITIES), grid, grid))
    lo, hi = VELOCITIES
    t = min(max((vel - lo) / (hi - lo), 0.0), 1.0)
    for (x, y), g in bilinear_weights(cx / 127, cy / 127, grid).items():
        w[0, y, x] += (1 - t) * g
        w[1, y, x] += t * g
    return w


NOTES = [(60, 127, 0, 0), (60, 127, 127, 127), (60, 96, 64, 64), (60, 100, 20, 90), (62, 80, 100, 30),
         (60, 64, 127, 40), (60, 40, 64, 64)]  # the last below the lowest layer: scaled by the velocity curve


def compare(folder: Path, grid: int = 3, notes=NOTES) -> dict:
    """Render the song through both; per note the stream weights, normalised by one level factor per render."""
    bank = folder / "bank"
    write_harmonic_bank(bank, grid)
    sfz = export_sfz(bank, folder / "sfz", options=SfzOptions(exact_cc=True), quiet=True)
    song = folder / "song.mid"
    write_song(song, notes)
    t0 = time.perf_counter()
    ours = render_midi(bank, song, folder / "engine.wav")
    t_engine = time.perf_counter() - t0
    t0 = time.perf_counter()
    theirs = render_sfizz(sfz, song)
    t_sfizz = time.perf_counter() - t0
    onsets = [i * (NOTE_S + GAP_S) for i in range(len(notes))]
    w_ours = np.array([stream_weights(ours, t, grid, n[0]) for t, n in zip(onsets, notes)])
    w_theirs = np.array([stream_weights(theirs, t, grid, n[0]) for t, n in zip(onsets, notes)])
    expected = np.array([expected_weights(grid, vel, cx, cy) for _, vel, cx, cy in notes])
    gains = velocity_gains(VELOCITIES, EngineConfig().velocity_curve)  # the engine's, which the export mirrors
    vel_gain = np.array([gains[vel] for _, vel, _, _ in notes])[:, None, None, None]
    k_ours = (w_ours * expected).sum() / (expected * expected * vel_gain).sum()
    k_theirs = (w_theirs * expected).sum() / (expected * expected * vel_gain).sum()
    ours_n, theirs_n = w_ours / (k_ours * vel_gain), w_theirs / (k_theirs * vel_gain)
    return {"engine_vs_sfizz_max_weight_diff": float(np.abs(ours_n - theirs_n).max()),
            "engine_vs_bilinear_max_diff": float(np.abs(ours_n - expected).max()),
            "sfizz_vs_bilinear_max_diff": float(np.abs(theirs_n - expected).max()),
            "sfizz_over_engine_level_db": float(20 * np.log10(k_theirs / k_ours)),
            "notes": len(notes), "grid": grid, "engine_s": round(t_engine, 3), "sfizz_s": round(t_sfizz, 3),
            "weights": {"engine": ours_n.round(4).tolist(), "sfizz": theirs_n.round(4).tolist(),
                        "expected": expected.round(4).tolist()}}
