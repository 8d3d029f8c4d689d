"""`nsynth bank import-original`: the original NSynth Super's sound sets -> this instrument's banks.

The original (googlecreativelab/open-nsynth-super) keeps one headerless int16 file per corner combination,
`<TL>_<TR>_<BL>_<BR>.bin` (the app's four corner choices in its order: top-left, top-right, bottom-left,
bottom-right, joined by "_"), holding [grid * grid cells][pitches][note_length] (by default 81 x 16 x 60,000
samples at 16 kHz: 155.52 MB). Cells run row by row from the top of the touch pad, left to right in a row:
the app plays cell `round(y * 8) * 9 + round(x * 8)` for a touch at (x, y), with y = 0 at the top, and the
audio pipeline's grid (`np.meshgrid` over x then y, flattened) puts the instrument named first at that top-left
cell, the second at the top right, the third at the bottom left, the fourth at the bottom right.

This instrument counts y from the bottom row (device/bank.py), so original cell (row r from the top, column c)
becomes bank cell (y = grid - 1 - r, x = c), and the bank is named like the file, which is what `nsynth play
--board ons` opens when the encoders choose that combination (device/board_glue.py). Sustain loops are found as
for rendered banks (precompute/render/post.py); the audio is copied unchanged, as the single velocity layer 127.

Streaming: a file is read one note at a time into the bank writer, and each bank is written aside and swapped in
whole (device/bank.py `BankWriter`), so a killed import leaves finished banks and no partial one; run again, it
skips the banks already imported from the same file (name, size and modification time in the manifest).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from device.bank import BankError, BankWriter, open_bank
from device.board_glue import manifest_corners
from nsynth.errors import NsynthError
from nsynth.loops import find_loop, pitch_period
from nsynth.progress import ETA

SUFFIX = ".bin"
VELOCITY = 127  # the original has one layer and plays velocity as a gain
MODEL = "original NSynth Super sound set"
SOURCE_KEY = "original"  # the manifest's extra[SOURCE_KEY]: which file the bank was imported from


@dataclass(frozen=True)
class Layout:
    """The original's sound-file layout (its app's settings.json `nsynth` section)."""

    grid: int = 9
    pitches: tuple[int, ...] = tuple(range(24, 85, 4))
    note_length: int = 60000
    sample_rate: int = 16000

    @property
    def notes(self) -> int:
        return self.grid * self.grid * len(self.pitches)

    @property
    def note_bytes(self) -> int:
        return self.note_length * 2

    @property
    def file_bytes(self) -> int:
        return self.notes * self.note_bytes

    def describe(self) -> str:
        return (f"{self.grid}x{self.grid} cells x {len(self.pitches)} pitches x {self.note_length} int16 samples "
                f"= {self.file_bytes} bytes")


def layout_from_settings(path: str | os.PathLike) -> Layout:
    """The layout in the original app's settings.json (`nsynth`: resolution, pitches, length, sampleRate)."""
    path = Path(path)
    try:
        node = json.loads(path.read_text())["nsynth"]
        d = Layout()
        layout = Layout(grid=int(node.get("resolution", d.grid)),
                        pitches=tuple(int(p) for p in node.get("pitches", d.pitches)),
                        note_length=int(node.get("length", d.note_length)),
                        sample_rate=int(node.get("sampleRate", d.sample_rate)))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise NsynthError(f"{path}: not the original's settings.json with an `nsynth` section ({e})") from None
    if layout.grid < 2 or not layout.pitches or layout.note_length < 2 or layout.sample_rate < 1:
        raise NsynthError(f"{path}: unusable `nsynth` settings: {layout}")
    return layout


def bank_cell(index: int, grid: int) -> tuple[int, int]:
    """Original cell index (row-major from the top-left) -> this bank's (y, x), y = 0 the bottom row."""
    row, col = divmod(index, grid)
    return grid - 1 - row, col


def corner_names(path: Path) -> tuple[str, ...]:
    """The four corner instruments a sound file is named after (TL, TR, BL, BR); NsynthError if it is not."""
    names = tuple(path.name[: -len(SUFFIX)].split("_"))
    if len(names) != 4 or not all(names):
        raise NsynthError(f"{path}: not named <top-left>_<top-right>_<bottom-left>_<bottom-right>{SUFFIX} "
                          f"like the original's sound files")
    return names


def check_sound_file(path: Path, layout: Layout) -> int:
    """Check a sound file's name, readability and size; returns its size, raises NsynthError naming the file."""
    corner_names(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.read(1)
    except OSError as e:
        raise NsynthError(f"{path}: unreadable ({e.strerror or e})") from None
    if size % layout.note_bytes:
        raise NsynthError(f"{path}: {size} bytes is not a whole number of notes ({layout.note_length} int16 "
                          f"samples = {layout.note_bytes} bytes each)")
    if size != layout.file_bytes:
        raise NsynthError(f"{path}: wrong size: {size // layout.note_bytes} notes ({size} bytes), expected "
                          f"{layout.notes} ({layout.describe()})")
    return size


def find_sound_files(src: str | os.PathLike) -> list[Path]:
    """SRC is one sound file or a folder of them (the original's pads folder, not searched below)."""
    src = Path(src)
    if src.is_dir():
        try:
            files = sorted(p for p in src.iterdir() if p.name.lower().endswith(SUFFIX) and not p.name.startswith("."))
        except OSError as e:
            raise NsynthError(f"{src}: cannot list the folder ({e.strerror or e})") from None
        if not files:
            raise NsynthError(f"{src}: no sound files (*{SUFFIX}, one per corner combination) in this folder")
        return files
    if not src.exists():
        raise NsynthError(f"{src}: no such file or folder")
    if not src.name.lower().endswith(SUFFIX):
        raise NsynthError(f"{src}: not a sound file (*{SUFFIX}) or a folder of them")
    return [src]


def source_stamp(path: Path) -> dict:
    st = path.stat()
    return {"file": path.name, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def already_imported(dest: Path, stamp: dict) -> bool:
    """Whether dest holds a valid bank imported from this very file; NsynthError if it holds something else."""
    if not dest.exists():
        return False
    try:
        bank = open_bank(dest)
    except BankError:
        bank = None
    if bank is not None and bank.info.extra.get(SOURCE_KEY) == stamp:
        return True
    raise NsynthError(f"{dest}: already exists and is not an import of {stamp['file']} as it is now "
                      f"(--force replaces it)")


def import_sound_file(path: Path, dest: Path, layout: Layout, stamp: dict, progress=None) -> None:
    """Stream one sound file into a bank at dest (written aside, swapped in whole). progress(notes_done)."""
    names = corner_names(path)
    buf = np.empty(layout.note_length, dtype="<i2")
    with BankWriter(dest, grid=layout.grid, pitches=layout.pitches, velocities=[VELOCITY],
                    note_length=layout.note_length, sample_rate=layout.sample_rate,
                    corners=manifest_corners(names), model=MODEL, extra={SOURCE_KEY: stamp}) as writer:
        try:
            with open(path, "rb", buffering=0) as f:
                if hasattr(os, "posix_fadvise"):
                    os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
                for cell in range(layout.grid * layout.grid):
                    y, x = bank_cell(cell, layout.grid)
                    for p_idx, pitch in enumerate(layout.pitches):
                        got = f.readinto(memoryview(buf).cast("B"))
                        if got != layout.note_bytes:
                            raise NsynthError(f"{path}: ended early, in cell {cell} pitch {pitch} (the file "
                                              f"changed while it was imported?)")
                        loop = find_loop(buf[None].astype(np.float64) / 32768.0,
                                         pitch_period(pitch, layout.sample_rate), layout.sample_rate)
                        writer.write(p_idx, 0, y, x, buf, loop)
                        if progress:
                            progress(1)
                if hasattr(os, "posix_fadvise"):  # read once: leave the page cache to the bank that plays
                    os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError as e:
            raise NsynthError(f"{path}: read failed ({e.strerror or e}); {dest.name} not written") from None
        writer.close()


def _check_space(banks_dir: Path, need: int) -> None:
    """Refuse up front when the banks would not fit (a full disk would stop the import half way)."""
    where = banks_dir
    while not where.exists() and where != where.parent:
        where = where.parent
    free = shutil.disk_usage(where).free
    if need > free:
        raise NsynthError(f"{banks_dir}: the banks need {need / 1e9:.2f} GB, only {free / 1e9:.2f} GB free there")


@dataclass
class ImportResult:
    imported: list[str]
    skipped: list[str]
    refused: dict[str, str]


def import_original(src: str | os.PathLike, banks_dir: str | os.PathLike, *, layout: Layout = Layout(),
                    force: bool = False, skip_bad: bool = False, quiet: bool = False) -> ImportResult:
    """Import one sound file or a folder of them into banks_dir, one bank per corner combination.

    Every file is checked first: a bad one (misnamed, unreadable, wrong size, not a whole number of notes) stops
    the import before anything is written, with every problem listed, unless `skip_bad` imports the good ones."""
    banks_dir = Path(banks_dir)
    files = find_sound_files(src)
    refused: dict[str, str] = {}
    good = []
    for path in files:
        try:
            check_sound_file(path, layout)
            good.append(path)
        except NsynthError as e:
            refused[str(path)] = str(e)
    if refused and not skip_bad:
        raise NsynthError(f"{len(refused)} of {len(files)} sound files refused, nothing imported "
                          f"(--skip-bad imports the others):\n  " + "\n  ".join(refused.values()))
    result = ImportResult([], [], refused)
    todo = []
    for path in good:
        dest = banks_dir / path.name[: -len(SUFFIX)]
        stamp = source_stamp(path)
        if not force and already_imported(dest, stamp):
            result.skipped.append(dest.name)
        else:
            todo.append((path, dest, stamp))
    _check_space(banks_dir, len(todo) * layout.file_bytes)
    banks_dir.mkdir(parents=True, exist_ok=True)
    total = len(todo) * layout.notes
    eta = None if quiet else ETA("import-original", unit="notes")
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if eta:
            eta(done, total)

    for path, dest, stamp in todo:
        import_sound_file(path, dest, layout, stamp, advance)
        result.imported.append(dest.name)
    return result


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="a sound file (<TL>_<TR>_<BL>_<BR>.bin) or the folder holding them")
    parser.add_argument("-o", "--out", required=True, help="folder of banks (one per corner combination)")
    parser.add_argument("--settings", help="the original app's settings.json, if its `nsynth` section changed "
                                           "the layout (default: 9x9 cells, pitches 24-84 step 4, 60000 samples "
                                           "at 16 kHz)")
    parser.add_argument("--force", action="store_true", help="re-import banks that are already there")
    parser.add_argument("--skip-bad", action="store_true", help="import the good files when some are bad")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    layout = layout_from_settings(args.settings) if args.settings else Layout()
    result = import_original(args.src, args.out, layout=layout, force=args.force, skip_bad=args.skip_bad,
                             quiet=args.quiet)
    for name in result.imported:
        print(f"imported {Path(args.out) / name}")
    if result.skipped:
        print(f"already imported: {len(result.skipped)} bank{'s' if len(result.skipped) != 1 else ''}")
    for why in result.refused.values():
        print(f"skipped: {why}")
    return 1 if result.refused else 0
