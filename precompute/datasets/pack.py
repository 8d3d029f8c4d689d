"""`nsynth dataset pack`: a dataset's notes as mu-law codes in one compressed file.

Training reads a pack like a dataset folder. A pack is what travels to a GPU box that holds neither the WAVs nor
FluidSynth (the full TimGM6mb set, 16k notes, is 2 GB of WAV, ~0.3 GB packed; a subset fits in tens of MB),
and it loads in seconds where thousands of WAVs take minutes.

File layout: MAGIC (8 bytes) | header length (uint32 little-endian) | header (UTF-8 JSON) | xz stream of the
int8 codes [notes, samples], notes in header order. The header holds format_version, samples per note, the
notes (note_str, pitch, velocity, instrument_str, split) and the sha256 of the raw codes, checked on load.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import os
import shutil
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from nsynth.errors import NsynthError
from nsynth.fsutil import atomic_path
from precompute.datasets.split import SPLITS, split_dirs

MAGIC = b"NSYNPACK"
FORMAT_VERSION = 1


def note_codes(note) -> torch.Tensor:
    """A dataset note (precompute.datasets.nsynth.Note) -> its mu-law codes, int8 [64000]."""
    from precompute.datasets.nsynth import read_note
    from precompute.mulaw import mulaw_encode

    return mulaw_encode(torch.from_numpy(read_note(note))).to(torch.int8)


def write_pack(data: str | os.PathLike, out: str | os.PathLike, *, pitches=None, velocities=None,
               samples: int | None = None, preset: int = 6, progress: bool = True) -> dict:
    """Pack the notes of DATA (train/ and valid/ NSynth layouts), filtered by pitch and velocity (None: all), each
    cut to its first `samples` (None: whole), into OUT atomically. -> the header written."""
    from precompute.datasets.nsynth import NOTE_LENGTH, load_examples

    data = Path(data)
    notes = [(split, n) for split, root in split_dirs(data).items()
             for n in load_examples(root, pitches=pitches, velocities=velocities)]
    if not notes:
        raise NsynthError(f"{data}: no notes match the pitches and velocities asked for")
    samples = NOTE_LENGTH if samples is None else samples
    if not 0 < samples <= NOTE_LENGTH:
        raise NsynthError(f"samples per note must be in 1..{NOTE_LENGTH}, got {samples}")
    bar = _bar(len(notes), f"packing {data}", progress)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    digest, comp = hashlib.sha256(), lzma.LZMACompressor(preset=preset)
    with tempfile.TemporaryFile(dir=out.parent) as stream:  # unnamed: nothing is left behind by a kill
        for _, note in notes:
            raw = note_codes(note)[:samples].numpy().tobytes()
            digest.update(raw)
            stream.write(comp.compress(raw))
            bar.update()
        stream.write(comp.flush())
        bar.close()
        header = {"format_version": FORMAT_VERSION, "samples": samples, "sha256": digest.hexdigest(),
                  "source": str(data),
                  "notes": [{"note_str": n.note_str, "pitch": n.pitch, "velocity": n.velocity,
                             "instrument_str": n.instrument_str, "split": split} for split, n in notes]}
        blob = json.dumps(header).encode()
        stream.seek(0)
        with atomic_path(out) as tmp, open(tmp, "wb") as f:
            f.write(MAGIC + struct.pack("<I", len(blob)) + blob)
            shutil.copyfileobj(stream, f, 1 << 24)
    return header


def read_pack(path: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    """A pack -> (header, {split: codes int8 [notes, samples]}); a clear error naming the file when it is not a
    pack, is of another format version, is cut short or does not match its checksum."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(len(MAGIC) + 4)
            if len(head) < len(MAGIC) + 4 or head[: len(MAGIC)] != MAGIC:
                raise NsynthError(f"{path}: not a dataset pack (made by `nsynth dataset pack`)")
            blob = f.read(struct.unpack("<I", head[len(MAGIC):])[0])
            stream = f.read()
    except OSError as e:
        raise NsynthError(f"{path}: cannot read ({e.strerror})") from None
    try:
        header = json.loads(blob)
        version, samples, notes = header["format_version"], int(header["samples"]), header["notes"]
    except (ValueError, KeyError, TypeError) as e:
        raise NsynthError(f"{path}: damaged header ({e!r})") from None
    if version != FORMAT_VERSION:
        raise NsynthError(f"{path}: pack format version {version}, this program reads {FORMAT_VERSION}")
    try:
        raw = lzma.decompress(stream)
    except lzma.LZMAError as e:
        raise NsynthError(f"{path}: damaged or cut short ({e})") from None
    if len(raw) != len(notes) * samples or hashlib.sha256(raw).hexdigest() != header.get("sha256"):
        raise NsynthError(f"{path}: codes do not match the header's size and checksum (damaged file)")
    codes = torch.from_numpy(np.frombuffer(raw, dtype=np.int8).reshape(len(notes), samples).copy())
    split = np.array([n.get("split") for n in notes])
    return header, {s: codes[torch.from_numpy(np.flatnonzero(split == s))] for s in SPLITS}


def _bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="note", disable=not enabled, file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from precompute.datasets.nsynth import SAMPLE_RATE
    from precompute.datasets.soundfont import parse_ints

    pitches = parse_ints(args.pitches, "pitches") if args.pitches else None
    velocities = parse_ints(args.velocities, "velocities") if args.velocities else None
    samples = None if args.seconds is None else int(args.seconds * SAMPLE_RATE)
    header = write_pack(args.data, args.output, pitches=pitches, velocities=velocities, samples=samples,
                        preset=args.level, progress=not args.quiet)
    counts = {s: sum(n["split"] == s for n in header["notes"]) for s in SPLITS}
    print(f"{args.output}: {counts['train']} train + {counts['valid']} valid notes of {header['samples']} samples, "
          f"{Path(args.output).stat().st_size / 1e6:.1f} MB")
    return 0


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", help="dataset folder with train/ and valid/ (NSynth json/wav layout)")
    parser.add_argument("-o", "--output", required=True, help="pack file to write (e.g. gm.nspack)")
    parser.add_argument("--pitches", help="MIDI pitches to keep, e.g. 24-96:4 (default all)")
    parser.add_argument("--velocities", help="velocities to keep, e.g. 127 (default all)")
    parser.add_argument("--seconds", type=float, help="keep the first S seconds of each note (default all 4)")
    parser.add_argument("--level", type=int, default=6, choices=range(10), metavar="0-9",
                        help="xz compression level (default 6)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)
