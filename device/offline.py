"""`nsynth render-midi`: the live engine, offline, on a MIDI file (bit-identical for the same frame-stamped events).

The render runs until every voice has finished its release: at the song's last event the notes still held are
released (as a sequencer does when it stops), and blocks are rendered until no voice sounds, at most `TAIL_CAP_S`
(30 s) after that event; a render cut by the cap says so. The longest release (CC 72 = 127) is about 10 s, so the
cap is only met by something unexpected.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from device.bank import open_verified
from device.engine import Engine, EngineConfig
from device.midi_file import midi_file_messages
from device.midi_map import MidiRouter, add_midi_arguments, router_from_args
from nsynth.errors import NsynthError
from nsynth.fsutil import atomic_path

TAIL_CAP_S = 30.0  # seconds after the song's last event at which a render stops even if a voice still sounds


def _say(msg: str) -> None:
    print(f"nsynth render-midi: {msg}", file=sys.stderr, flush=True)


def parse_xy_path(text: str) -> list[tuple[float, float]]:
    """"x0,y0:x1,y1[:...]" (each 0..1) -> points swept evenly over the song."""
    points = []
    for part in text.split(":"):
        try:
            x, y = (float(v) for v in part.split(","))
        except ValueError:
            raise NsynthError(f"--xy {text!r}: expected points \"x,y:x,y\" with values 0..1") from None
        if not (0 <= x <= 1 and 0 <= y <= 1):
            raise NsynthError(f"--xy {text!r}: point {part!r} is outside 0..1")
        points.append((x, y))
    return points


def xy_at(points: list[tuple[float, float]], frac: float) -> tuple[float, float]:
    """The point a fraction `frac` (0..1) along a polyline of equally timed segments."""
    if len(points) == 1:
        return points[0]
    s = min(max(frac, 0.0), 1.0) * (len(points) - 1)
    i = min(int(s), len(points) - 2)
    u = s - i
    (x0, y0), (x1, y1) = points[i], points[i + 1]
    return x0 + (x1 - x0) * u, y0 + (y1 - y0) * u


def check_output(out: str | os.PathLike) -> None:
    """Refuse, before any work, an output path whose folder does not exist (no folders are made) or that is a
    folder."""
    out = Path(out)
    if not out.parent.is_dir():
        raise NsynthError(f"{out}: the folder {out.parent} does not exist (make it first)")
    if out.is_dir():
        raise NsynthError(f"{out}: is a folder; give a file name for the WAV")


def render_midi(bank_path: str | os.PathLike, song: str | os.PathLike, out: str | os.PathLike, *,
                xy: str | list[tuple[float, float]] | None = None, block: int = 128, sample_rate: int = 48000,
                router: MidiRouter | None = None, params: dict | None = None, tail_s: float = TAIL_CAP_S,
                config: EngineConfig | None = None) -> np.ndarray:
    """Render a MIDI file through the engine to a float32 stereo WAV at `out` (written atomically);
    returns the audio [frames, 2], which ends once every voice has finished its release, or `tail_s` seconds
    after the last event (the cap, reported when it cuts a voice). The bank is checked first (`open_verified`: a corrupt one is refused); the XY path,
    if given, is swept over the song (set at every block start)."""
    import soundfile as sf

    check_output(out)
    messages = midi_file_messages(song, sample_rate)
    if not messages:
        raise NsynthError(f"{song}: the MIDI file has no notes or controls")
    bank = open_verified(bank_path)
    cfg = replace(config or EngineConfig(), block=block, sample_rate=sample_rate)
    engine = Engine(bank, cfg, params)
    router = router or MidiRouter()
    last = messages[-1][0]
    for frame, msg in messages:
        for ev in router.route(msg):
            engine.post(ev, frame)
    engine.post(("all_notes_off",), last)  # the song has ended: what is still held is released
    points = parse_xy_path(xy) if isinstance(xy, str) else xy
    cap = last + int(tail_s * sample_rate)
    blocks, f = [], 0
    while f <= last or (engine.active_voices() and f < cap):
        if points:
            x, y = xy_at(points, f / max(last, 1))
            engine.post_params(frame=f, x=x, y=y)
        buf = np.zeros((block, 2), np.float32)
        engine.process(buf)
        blocks.append(buf)
        f += block
    if engine.active_voices():
        _say(f"{engine.active_voices()} voice(s) still sounding {tail_s:g} s after the song's last event: "
             f"the render stops there (the cap)")
    if engine.failures:
        _say(f"{engine.failures} engine error(s) contained while rendering (first: "
             f"{engine.failure_log[0][0]}: {engine.failure_log[0][1]!r})")
    audio = np.concatenate(blocks)
    try:
        with atomic_path(out) as tmp:
            sf.write(tmp, audio, sample_rate, format="WAV", subtype="FLOAT")
    except (OSError, RuntimeError) as e:
        raise NsynthError(f"{out}: cannot write: {e}") from None
    return audio


def configure_render_midi(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bank", required=True, help="bank directory")
    parser.add_argument("song", help="MIDI file (.mid)")
    parser.add_argument("-o", "--out", required=True, help="output WAV (48 kHz float32 stereo)")
    parser.add_argument("--xy", help='X/Y path swept over the song, "x0,y0:x1,y1[:...]" (0..1 each)')
    parser.add_argument("--block", type=int, default=128, help="engine block size (as the live engine's)")
    add_midi_arguments(parser)
    parser.set_defaults(func=_run_render_midi)


def _run_render_midi(args: argparse.Namespace) -> int:
    audio = render_midi(args.bank, args.song, args.out, xy=args.xy, block=args.block, router=router_from_args(args))
    print(f"{args.out}: {audio.shape[0] / 48000:.2f} s, peak {float(np.abs(audio).max()):.3f}")
    return 0
