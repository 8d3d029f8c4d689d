"""The NSynth json/wav release layout: read it, filter it, and write notes into it.

A dataset root holds `examples.json` (note_str -> {pitch, velocity, instrument_str, instrument_family_str,
instrument_source_str, ...}) and `audio/<note_str>.wav`: 16 kHz mono, 64000 samples (4 s), usually 16-bit.
note_str is `<instrument_str>-<pitch:03d>-<velocity:03d>`, instrument_str `<family>_<source>_<index:03d>`.
"""
from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import soundfile as sf

from nsynth.errors import NsynthError
from nsynth.fsutil import atomic_write_bytes

SAMPLE_RATE = 16000
NOTE_LENGTH = 64000
PITCHES = range(21, 109)
VELOCITIES = (25, 50, 75, 100, 127)
FAMILIES = ("bass", "brass", "flute", "guitar", "keyboard", "mallet", "organ", "reed", "string", "synth_lead", "vocal")
SOURCES = ("acoustic", "electronic", "synthetic")
EXAMPLES_JSON = "examples.json"
AUDIO_DIR = "audio"


@dataclass(frozen=True)
class Note:
    """One note of a dataset; `path` is its WAV file."""

    note_str: str
    pitch: int
    velocity: int
    instrument_str: str
    instrument_family_str: str
    instrument_source_str: str
    path: Path


def instrument_str(family: str, source: str, index: int) -> str:
    return f"{family}_{source}_{index:03d}"


def note_str(instrument: str, pitch: int, velocity: int) -> str:
    return f"{instrument}-{pitch:03d}-{velocity:03d}"


def example_entry(note: str, instrument: str, family: str, source: str, index: int, pitch: int,
                  velocity: int) -> dict:
    """The examples.json record NSynth writes for one note (qualities unknown: all zero)."""
    return {
        "note_str": note, "pitch": pitch, "velocity": velocity, "sample_rate": SAMPLE_RATE,
        "instrument_str": instrument, "instrument": index,
        "instrument_family_str": family, "instrument_family": FAMILIES.index(family),
        "instrument_source_str": source, "instrument_source": SOURCES.index(source),
        "qualities": [0] * 10, "qualities_str": [],
    }


def read_examples_json(root: str | os.PathLike) -> dict[str, dict]:
    """examples.json of a dataset root as a dict; a clear error when missing or malformed."""
    path = Path(root) / EXAMPLES_JSON
    if not path.is_file():
        raise NsynthError(f"{path}: missing (an NSynth dataset root holds examples.json and audio/)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise NsynthError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise NsynthError(f"{path}: expected an object mapping note_str to its record")
    return data


def write_examples_json(root: str | os.PathLike, examples: dict[str, dict]) -> None:
    """Write examples.json atomically (temp file + rename), keys sorted."""
    atomic_write_bytes(Path(root) / EXAMPLES_JSON, json.dumps(dict(sorted(examples.items())), indent=1).encode())


def _note_from_record(root: Path, key: str, rec: dict) -> Note:
    try:
        return Note(
            note_str=key, pitch=int(rec["pitch"]), velocity=int(rec["velocity"]),
            instrument_str=str(rec["instrument_str"]),
            instrument_family_str=str(rec["instrument_family_str"]),
            instrument_source_str=str(rec["instrument_source_str"]),
            path=root / AUDIO_DIR / f"{key}.wav",
        )
    except (KeyError, TypeError, ValueError) as e:
        raise NsynthError(f"{root / EXAMPLES_JSON}: record {key!r} lacks or mangles a field ({e!r})") from None


def _as_set(values: Iterable | None) -> set | None:
    return None if values is None else set(values)


def load_examples(root: str | os.PathLike, *, families: Iterable[str] | None = None,
                  sources: Iterable[str] | None = None, pitches: Iterable[int] | None = None,
                  velocities: Iterable[int] | None = None,
                  instruments: Iterable[str] | None = None) -> list[Note]:
    """The notes of a dataset root, filtered (None = no filter), sorted by note_str.

    Every selected note's WAV must exist; a missing one is an error naming it.
    """
    root = Path(root)
    data = read_examples_json(root)
    fams, srcs, pits, vels, insts = map(_as_set, (families, sources, pitches, velocities, instruments))
    for name, given, known in (("family", fams, FAMILIES), ("source", srcs, SOURCES)):
        unknown = sorted((given or set()) - set(known))
        if unknown:
            raise NsynthError(f"unknown instrument {name} {unknown}; known: {', '.join(known)}")
    notes = []
    for key in sorted(data):
        n = _note_from_record(root, key, data[key])
        if ((fams is None or n.instrument_family_str in fams) and (srcs is None or n.instrument_source_str in srcs)
                and (pits is None or n.pitch in pits) and (vels is None or n.velocity in vels)
                and (insts is None or n.instrument_str in insts)):
            notes.append(n)
    missing = [n.path for n in notes if not n.path.is_file()]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise NsynthError(f"{missing[0]}: missing audio file (listed in {root / EXAMPLES_JSON}){more}")
    return notes


def read_note(note: Note | str | os.PathLike) -> np.ndarray:
    """A note's audio as float32 [64000] in [-1, 1]; refuses files that are not 16 kHz mono 64000 samples."""
    path = Path(note.path if isinstance(note, Note) else note)
    if not path.is_file():
        raise NsynthError(f"{path}: missing audio file")
    try:
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
    except RuntimeError as e:  # soundfile's errors derive from it
        raise NsynthError(f"{path}: not a readable audio file ({e})") from None
    if rate != SAMPLE_RATE:
        raise NsynthError(f"{path}: sample rate {rate} Hz, expected {SAMPLE_RATE} Hz")
    if audio.shape[1] != 1:
        raise NsynthError(f"{path}: {audio.shape[1]} channels, expected mono")
    if audio.shape[0] != NOTE_LENGTH:
        raise NsynthError(f"{path}: {audio.shape[0]} samples, expected {NOTE_LENGTH} (4 s at 16 kHz)")
    out = audio[:, 0]
    if not np.all(np.isfinite(out)):
        raise NsynthError(f"{path}: holds NaN or infinite samples")
    return np.clip(out, -1.0, 1.0)


def write_note(path: str | os.PathLike, audio: np.ndarray) -> None:
    """Write a note as 16-bit 16 kHz mono WAV atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()  # encoded in memory: soundfile's close() would fsync every file
    sf.write(buf, np.clip(audio, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16", format="WAV")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(buf.getbuffer())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
