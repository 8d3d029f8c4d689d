"""`nsynth demo`, the built-in default: both sides of the product in one run (it sits above them: it renders with
precompute and plays with the device engine)."""
from __future__ import annotations

import os
from pathlib import Path

from nsynth.fsutil import atomic_path

BUNDLED_MODEL = Path(__file__).resolve().parents[1] / "models" / "compact"
DEMO_CORNERS = ("sf2:0", "sf2:73", "sf2:19", "sf2:81")  # piano, flute, church organ, sawtooth lead (TimGM6mb)
DEMO_PITCHES = (48, 52, 55, 60, 64, 67, 72)


def demo_phrase(path: str | os.PathLike, bpm: float = 120.0) -> Path:
    """Write a short MIDI phrase (an arpeggio then a held chord, within the demo bank's pitches)."""
    import mido

    beat = 480
    mid = mido.MidiFile(ticks_per_beat=beat)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm)))
    events = []  # (tick, message)
    for i, pitch in enumerate([48, 55, 60, 64, 67, 64, 60, 55, 52, 55, 60, 64, 67, 72, 67, 64]):
        events += [(i * beat // 2, mido.Message("note_on", note=pitch, velocity=90 + 8 * (i % 4 == 0))),
                   (i * beat // 2 + beat * 2 // 5, mido.Message("note_off", note=pitch))]
    for pitch in (48, 55, 60, 64):
        events += [(8 * beat, mido.Message("note_on", note=pitch, velocity=80)),
                   (12 * beat, mido.Message("note_off", note=pitch))]
    now = 0
    for tick, msg in sorted(events, key=lambda e: (e[0], e[1].type == "note_on")):
        track.append(msg.copy(time=tick - now))
        now = tick
    path = Path(path)
    with atomic_path(path) as tmp:
        mid.save(str(tmp))
    return path


def demo(out: str | os.PathLike, run: str | os.PathLike | None = None, work: str | os.PathLike | None = None,
         quiet: bool = False, threads: int | None = None) -> Path:
    """The built-in default: render a small bank (four SoundFont corners, 3x3 grid, 7 pitches, 1 s notes) with
    the bundled model (decoded as its config recommends, on `threads` CPU threads: None chooses them,
    precompute.threads), then play a phrase through the device engine while sweeping XY across the grid.
    out: the WAV, or a folder (an existing one, or a name without a suffix) to write demo.wav into; the bank and
    the phrase go beside the WAV, in a folder named after it."""
    from device.offline import render_midi
    from precompute.render.render import render_bank  # (torch: imported only when the demo runs)

    out = Path(out)
    if out.is_dir() or not out.suffix:
        out = out / "demo.wav"
    work = Path(work) if work else out.with_suffix("")
    work.mkdir(parents=True, exist_ok=True)
    bank = work / "bank"
    render_bank(list(DEMO_CORNERS), run or BUNDLED_MODEL, bank, grid=3, pitches=list(DEMO_PITCHES),
                velocities=[100], length=1.0, threads=threads, quiet=quiet)
    render_midi(bank, demo_phrase(work / "phrase.mid"), out, xy="0,0:1,0:1,1:0,1")
    return out



def configure_demo(p) -> None:
    p.add_argument("-o", "--out", default="demo/demo.wav",
                   help="output WAV, or a folder to write demo.wav into (default: demo/demo.wav)")
    p.add_argument("--model", default=None, help="run folder (default: the bundled model, models/compact)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default: the idle physical cores, at least 1; see docs/performance.md)")
    p.set_defaults(func=lambda a: print(demo(a.out, a.model, threads=a.threads)) or 0)
