"""The bank format: the contract between the render pipeline (precompute/) and the instrument (device/).

A bank is a directory::

    BANK/manifest.json   what the samples are (below)
    BANK/samples.i16     headerless little-endian int16, C order, shape
                         [n_pitches, n_velocities, grid (y), grid (x), note_length]
    BANK/timbre_map.png  optional picture of the grid
    BANK/verified.json   the outcome of the last sha256 check of the samples (written by the reader, below)

so one note's four neighbouring cells lie close together on disk. The samples are memory-mapped on read
(never loaded whole): a bank with every pitch, five velocities and a 9x9 grid is several GB.

manifest.json::

    {"format": "nsynth-bank", "format_version": 1,
     "grid": N, "pitches": [midi, ...] (strictly increasing), "velocities": [1..127, ...] (strictly increasing),
     "sample_rate": 16000, "note_length": L,
     "loops": [P][V][N][N][2]  sustain-loop [start, end) in samples, 0 <= start < end <= L (stored, not baked in),
     "corners": [4 names] in the order (x, y) = (0,0), (1,0), (0,1), (1,1): bottom-left, bottom-right,
                top-left, top-right (x runs left to right, y bottom to top; cell [y][x], y = 0 is the bottom row),
     "model": str, "config_hash": str, "sha256": hex digest of samples.i16, "created": ISO-8601 time,
     "extra": {free-form}}

`BankWriter` builds a bank in a sibling temp directory and, on `close()`, moves it to `.store/` beside the final
path and points the symlink BANK at it with rename(2), so BANK is the old bank or the new one at every instant;
`open_bank` validates everything and raises `BankError` naming the file and the problem.

Checked before played: `open_verified` (what the players call) hashes the samples on a bank's first use and
remembers the outcome in verified.json, keyed by the samples' size, mtime, ctime and inode and the manifest's own
sha256, so a multi-GB bank on an SD card is read once, not at every boot: any change to either file (a copy, a
rewrite, even one that restores the mtime) makes the stamp stale and the next use hashes again. A bank whose
samples failed is refused at once until its files change; `nsynth bank verify` always hashes afresh.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import logging
import mmap
import operator
import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from nsynth.errors import NsynthError
from nsynth.fsutil import atomic_write_bytes, exchange_paths, fsync_dir, pid_alive
from nsynth.loops import default_loop

FORMAT_NAME = "nsynth-bank"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SAMPLES = "samples.i16"
TIMBRE_MAP = "timbre_map.png"
STAMP = "verified.json"
STAMP_FORMAT = "nsynth-bank-verified"
STORE = ".store"  # BANKS/NAME is a symlink to BANKS/.store/<version> (shared with `nsynth bank import`)
DTYPE = np.dtype("<i2")
CORNER_ORDER = ((0, 0), (1, 0), (0, 1), (1, 1))  # (x, y) of corners[0..3]: BL, BR, TL, TR
_HASH_CHUNK = 1 << 24
log = logging.getLogger(__name__)


class BankError(NsynthError):
    """A bank that cannot be written or read: the message names the file and the problem."""


@dataclass(frozen=True)
class BankInfo:
    """The manifest, less the loop table (which `Bank.loops` holds as an array)."""

    grid: int
    pitches: tuple[int, ...]
    velocities: tuple[int, ...]
    sample_rate: int
    note_length: int
    corners: tuple[str, ...]
    model: str = ""
    config_hash: str = ""
    sha256: str = ""
    extra: dict = field(default_factory=dict)
    created: str = ""

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        """[pitches, velocities, y, x, samples] of samples.i16."""
        return (len(self.pitches), len(self.velocities), self.grid, self.grid, self.note_length)


def _sha256(path: Path) -> str:
    """Hash a file, then drop it from the page cache: the hash read it all, the instrument will map only what
    it plays (and cached pages would be mapped in large folios, inflating what the player keeps resident)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    return h.hexdigest()


def _as_int(value: Any) -> int | None:
    """An integer (numpy integers too), or None for anything else (bools and floats included)."""
    if isinstance(value, (bool, np.bool_)):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def _check_axis(name: str, values: Sequence[int], lo: int, hi: int) -> tuple[int, ...]:
    vals = tuple(_as_int(v) for v in values)
    if not vals or not all(v is not None and lo <= v <= hi for v in vals):
        raise ValueError(f"{name} must be a non-empty list of integers in {lo}..{hi}, got {list(values)!r}")
    if any(b <= a for a, b in zip(vals, vals[1:])):
        raise ValueError(f"{name} must be strictly increasing, got {list(vals)!r}")
    return vals


def _check_loops(loops: np.ndarray, note_length: int) -> str | None:
    """None if every loop is 0 <= start < end <= note_length, else a description of the first bad one."""
    bad = (loops[..., 0] < 0) | (loops[..., 1] <= loops[..., 0]) | (loops[..., 1] > note_length)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        return f"loop {loops[idx].tolist()} at [pitch, velocity, y, x] = {list(idx)} is outside 0 <= start < end <= {note_length}"
    return None


class BankWriter:
    """Write a bank into `<path>.partial-<pid>`, then atomically put it at `path` on `close()`: `path` becomes a
    symlink to `<parent>/.store/<name>.<stamp>.<pid>`, replaced with rename(2); the old version is then removed.

    An existing bank at `path` stays intact until the new one is complete; an exception inside a `with`
    block (or `abort()`) removes the partial directory and leaves nothing under the final name. Notes not
    written are silent; `close()` refuses them unless `allow_missing=True`.
    """

    def __init__(self, path: str | os.PathLike, *, grid: int, pitches: Sequence[int], velocities: Sequence[int],
                 note_length: int, sample_rate: int = 16000, corners: Sequence[str], model: str = "",
                 config_hash: str = "", extra: dict | None = None):
        self.path = Path(path)
        grid, note_length, sample_rate = (v if _as_int(v) is None else _as_int(v)
                                          for v in (grid, note_length, sample_rate))  # numpy ints -> int
        try:
            if not (isinstance(grid, int) and grid >= 2):
                raise ValueError(f"grid must be an integer >= 2, got {grid!r}")
            if not (isinstance(note_length, int) and note_length >= 2):
                raise ValueError(f"note_length must be an integer >= 2, got {note_length!r}")
            if not (isinstance(sample_rate, int) and sample_rate > 0):
                raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
            if len(corners) != 4 or not all(isinstance(c, str) for c in corners):
                raise ValueError(f"corners must be 4 names (BL, BR, TL, TR), got {corners!r}")
            self.info = BankInfo(grid=grid, pitches=_check_axis("pitches", pitches, 0, 127),
                                 velocities=_check_axis("velocities", velocities, 1, 127), sample_rate=sample_rate,
                                 note_length=note_length, corners=tuple(corners), model=str(model),
                                 config_hash=str(config_hash), extra=dict(extra or {}))
            json.dumps(self.info.extra)
        except (ValueError, TypeError) as e:
            raise BankError(f"{self.path}: cannot write bank: {e}") from None
        self.partial = self.path.with_name(f"{self.path.name}.partial-{os.getpid()}")
        self._clear_stale()
        self.partial.mkdir(parents=True)
        shape = self.info.shape
        self.samples = np.memmap(self.partial / SAMPLES, dtype=DTYPE, mode="w+", shape=shape)
        self.loops = np.zeros(shape[:4] + (2,), dtype=np.int64)
        self.loops[...] = default_loop(note_length)
        self.written = np.zeros(shape[:4], dtype=bool)
        self._done = False

    def _clear_stale(self) -> None:
        """Remove what writers that were killed left: partial banks, temporary links, versions never linked."""
        parent, name = self.path.parent, self.path.name
        live = (parent / os.readlink(self.path)).resolve() if self.path.is_symlink() else None

        def dead(pid: str) -> bool:
            return pid.isdigit() and (int(pid) == os.getpid() or not pid_alive(int(pid)))

        for stale in parent.glob(f"{name}.partial-*"):
            if dead(stale.name.rsplit("-", 1)[1]):
                shutil.rmtree(stale, ignore_errors=True)
        for stale in parent.glob(f".{name}.link-*"):  # a new link, or (after the exchange) the old plain folder
            if dead(stale.name.rsplit("-", 1)[1]):
                if stale.is_dir() and not stale.is_symlink():
                    shutil.rmtree(stale, ignore_errors=True)
                else:
                    stale.unlink(missing_ok=True)
        for stale in (parent / STORE).glob(f"{name}.*"):
            parts = stale.name[len(name) + 1:].split(".")
            ours = (len(parts) == 2 or (len(parts) == 3 and parts[0] == "plain")) and parts[-2].isdigit()
            if ours and dead(parts[-1]) and stale.resolve() != live:
                shutil.rmtree(stale, ignore_errors=True)

    def _check_index(self, p_idx: int, v_idx: int) -> None:
        if not (0 <= p_idx < len(self.info.pitches) and 0 <= v_idx < len(self.info.velocities)):
            raise BankError(f"{self.path}: note index (pitch {p_idx}, velocity {v_idx}) out of range")

    def _check_audio(self, audio: np.ndarray, last_dim: str) -> np.ndarray:
        audio = np.asarray(audio)
        if audio.dtype != np.int16:
            raise BankError(f"{self.path}: audio must be int16, got {audio.dtype}")
        if audio.shape[-1] > self.info.note_length:
            raise BankError(f"{self.path}: {last_dim} has {audio.shape[-1]} samples, the bank's note_length is "
                            f"{self.info.note_length}")
        return audio

    def write(self, p_idx: int, v_idx: int, y: int, x: int, audio_int16: np.ndarray,
              loop: tuple[int, int] | None = None) -> None:
        """Store one note (int16, at most note_length samples, zero-padded) and its sustain loop
        (default: 20 %..41 % of the note)."""
        self._check_index(p_idx, v_idx)
        n = self.info.grid
        if not (0 <= y < n and 0 <= x < n):
            raise BankError(f"{self.path}: cell (y {y}, x {x}) outside the {n}x{n} grid")
        audio = self._check_audio(audio_int16, "note")
        if audio.ndim != 1:
            raise BankError(f"{self.path}: a note must be 1-D, got shape {audio.shape}")
        lp = np.asarray(default_loop(self.info.note_length) if loop is None else loop, dtype=np.int64)
        if (msg := _check_loops(lp.reshape(1, 2), self.info.note_length)) is not None:
            raise BankError(f"{self.path}: {msg}")
        self.samples[p_idx, v_idx, y, x, : audio.shape[0]] = audio
        self.samples[p_idx, v_idx, y, x, audio.shape[0]:] = 0
        self.loops[p_idx, v_idx, y, x] = lp
        self.written[p_idx, v_idx, y, x] = True

    def write_block(self, p_idx: int, v_idx: int, audio: np.ndarray, loops: np.ndarray | None = None) -> None:
        """Store all N x N cells of one (pitch, velocity): audio [N, N, <=L] int16, loops [N, N, 2]."""
        self._check_index(p_idx, v_idx)
        n, length = self.info.grid, self.info.note_length
        audio = self._check_audio(audio, "block")
        if audio.ndim != 3 or audio.shape[:2] != (n, n):
            raise BankError(f"{self.path}: block must be [{n}, {n}, samples], got {list(audio.shape)}")
        lp = np.broadcast_to(np.asarray(default_loop(length) if loops is None else loops, dtype=np.int64), (n, n, 2))
        if (msg := _check_loops(lp, length)) is not None:
            raise BankError(f"{self.path}: {msg}")
        self.samples[p_idx, v_idx, :, :, : audio.shape[2]] = audio
        self.samples[p_idx, v_idx, :, :, audio.shape[2]:] = 0
        self.loops[p_idx, v_idx] = lp
        self.written[p_idx, v_idx] = True

    def close(self, *, allow_missing: bool = False) -> BankInfo:
        """Hash, write the manifest, fsync, and swap the bank in at `path`. Returns the final BankInfo."""
        if self._done:
            raise BankError(f"{self.path}: writer already closed")
        try:
            if not allow_missing and not self.written.all():
                idx = [int(i) for i in np.argwhere(~self.written)[0]]
                raise BankError(f"{self.path}: {int((~self.written).sum())} notes never written "
                                f"(first at [pitch, velocity, y, x] = {idx})")
            self.samples.flush()
            del self.samples
            samples_path = self.partial / SAMPLES
            fsync_dir(samples_path)
            info = replace(self.info, sha256=_sha256(samples_path),
                           created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
            manifest = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "grid": info.grid,
                        "pitches": list(info.pitches), "velocities": list(info.velocities),
                        "sample_rate": info.sample_rate, "note_length": info.note_length,
                        "loops": self.loops.tolist(), "corners": list(info.corners), "model": info.model,
                        "config_hash": info.config_hash, "sha256": info.sha256, "created": info.created,
                        "extra": info.extra}
            with open(self.partial / MANIFEST, "w") as f:
                json.dump(manifest, f, separators=(",", ":"))
                f.flush()
                os.fsync(f.fileno())
            fsync_dir(self.partial)
            self._swap_in()
        except BaseException:
            self.abort()
            raise
        self._done = True
        return info

    def _swap_in(self) -> None:
        """Move the finished bank into `<parent>/.store/<name>.<stamp>` and point the symlink `path` at it with
        rename(2) (the scheme of `nsynth bank import`): at every instant `path` is the old bank or the new one."""
        parent, name = self.path.parent, self.path.name
        store = parent / STORE
        store.mkdir(exist_ok=True)
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d%H%M%S%f")
        final = store / f"{name}.{stamp}.{os.getpid()}"
        os.rename(self.partial, final)
        fsync_dir(store)
        old: Path | None = None
        if self.path.is_symlink():
            old = parent / os.readlink(self.path)
        link = parent / f".{name}.link-{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        os.symlink(os.path.relpath(final, parent), link)
        if self.path.is_dir() and not self.path.is_symlink():  # a plain bank folder (an older writer's)
            old = store / f"{name}.plain.{stamp}.{os.getpid()}"
            exchange_paths(link, self.path)  # now `link` names the old folder, `path` the symlink
            os.rename(link, old)
        else:
            os.replace(link, self.path)
        fsync_dir(parent)
        if old is not None and old.resolve() != final.resolve():
            shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        """Drop the partial bank; whatever is at `path` is untouched."""
        self._done = True
        self.__dict__.pop("samples", None)
        shutil.rmtree(self.partial, ignore_errors=True)

    def __enter__(self) -> "BankWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._done:
            self.close()


class Bank:
    """An open bank: `.info`, `.samples` (read-only memmap [P, V, N, N, L]), `.loops` (int [P, V, N, N, 2]);
    `.residency`: which of its pages are in memory (device/residency.py), set by the live instrument (None: every
    page may be read, waiting for the disk if need be, as offline rendering does)."""

    def __init__(self, path: Path, info: BankInfo, samples: np.memmap, loops: np.ndarray):
        self.path, self.info, self.samples, self.loops = path, info, samples, loops
        self.residency = None

    def note(self, p_idx: int, v_idx: int, y: int, x: int) -> np.ndarray:
        """One note's samples (a read-only view into the memmap)."""
        return self.samples[p_idx, v_idx, y, x]

    def __repr__(self) -> str:
        i = self.info
        return (f"Bank({str(self.path)!r}, grid={i.grid}, pitches={len(i.pitches)}, "
                f"velocities={len(i.velocities)}, note_length={i.note_length})")


_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "format": str, "format_version": int, "grid": int, "pitches": list, "velocities": list, "sample_rate": int,
    "note_length": int, "loops": list, "corners": list, "model": str, "config_hash": str, "sha256": str,
    "created": str, "extra": dict,
}


def open_bank(path: str | os.PathLike, verify: bool = False) -> Bank:
    """Open and validate a bank (verify=True also hashes the samples now: `verify_samples`). Raises BankError.
    A player opens with `open_verified` instead."""
    path = Path(path)
    mpath, spath = path / MANIFEST, path / SAMPLES
    if not path.is_dir():
        raise BankError(f"{path}: not a bank directory (expected {MANIFEST} and {SAMPLES} inside)")
    try:
        with open(mpath) as f:
            m = json.load(f)
    except FileNotFoundError:
        raise BankError(f"{mpath}: missing") from None
    except (OSError, ValueError) as e:
        raise BankError(f"{mpath}: unreadable manifest: {e}") from None
    if not isinstance(m, dict):
        raise BankError(f"{mpath}: manifest must be a JSON object")
    if m.get("format") != FORMAT_NAME:
        raise BankError(f"{mpath}: format is {m.get('format')!r}, expected {FORMAT_NAME!r}")
    if m.get("format_version") != FORMAT_VERSION:
        raise BankError(f"{mpath}: format_version {m.get('format_version')!r} is not supported "
                        f"(this instrument reads version {FORMAT_VERSION})")
    for key, typ in _REQUIRED.items():
        if key not in m:
            raise BankError(f"{mpath}: missing key {key!r}")
        if not isinstance(m[key], typ) or (typ is int and isinstance(m[key], bool)):
            raise BankError(f"{mpath}: {key!r} must be {typ.__name__}, got {type(m[key]).__name__}")
    try:
        for key, lo in (("grid", 2), ("note_length", 2), ("sample_rate", 1)):
            if m[key] < lo:
                raise ValueError(f"{key!r} must be >= {lo}, got {m[key]}")
        pitches = _check_axis("pitches", m["pitches"], 0, 127)
        velocities = _check_axis("velocities", m["velocities"], 1, 127)
        if len(m["corners"]) != 4 or not all(isinstance(c, str) for c in m["corners"]):
            raise ValueError(f"'corners' must be 4 names, got {m['corners']!r}")
        if len(m["sha256"]) != 64 or any(c not in "0123456789abcdef" for c in m["sha256"]):
            raise ValueError("'sha256' must be 64 lowercase hex digits")
    except ValueError as e:
        raise BankError(f"{mpath}: {e}") from None
    info = BankInfo(grid=m["grid"], pitches=pitches, velocities=velocities, sample_rate=m["sample_rate"],
                    note_length=m["note_length"], corners=tuple(m["corners"]), model=m["model"],
                    config_hash=m["config_hash"], sha256=m["sha256"], extra=m["extra"], created=m["created"])
    shape = info.shape
    try:
        loops = np.array(m["loops"], dtype=np.int64)
    except (ValueError, TypeError, OverflowError):
        raise BankError(f"{mpath}: 'loops' must be a nested list of integers of shape {list(shape[:4]) + [2]}") from None
    if loops.shape != shape[:4] + (2,):
        raise BankError(f"{mpath}: 'loops' has shape {list(loops.shape)}, expected {list(shape[:4]) + [2]}")
    if (msg := _check_loops(loops, info.note_length)) is not None:
        raise BankError(f"{mpath}: {msg}")
    expected = int(np.prod(shape)) * DTYPE.itemsize
    try:
        size = spath.stat().st_size
    except FileNotFoundError:
        raise BankError(f"{spath}: missing") from None
    if size != expected:
        raise BankError(f"{spath}: {size} bytes, expected {expected} for shape {list(shape)} int16 "
                        f"({'truncated' if size < expected else 'too long'})")
    samples = np.memmap(spath, dtype=DTYPE, mode="r", shape=shape)
    # no read-around: a page fault reads its page, not megabytes around it, so what stays resident is what
    # was played, however large the bank (the live instrument's prefetch thread asks for what it needs)
    _madvise(samples, getattr(mmap, "MADV_RANDOM", None), 0, samples.nbytes)
    bank = Bank(path, info, samples, loops)
    if verify:
        verify_samples(bank)
    return bank


# -- checked before played ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Stamp:
    """What verified.json says: whether the samples matched the manifest's sha256 (`ok`, the digest found,
    when), and whether it still speaks for the files (`current`: none of them changed since)."""

    ok: bool
    sha256: str
    checked: str
    current: bool


def _stamp_key(path: Path) -> dict:
    """What identifies the bank's files as they are now: the samples' size, mtime, ctime (which no tool can
    set back) and inode (a copy has another), and the manifest's sha256."""
    st = (path / SAMPLES).stat()
    manifest = hashlib.sha256((path / MANIFEST).read_bytes()).hexdigest()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "inode": st.st_ino,
            "manifest_sha256": manifest}


def read_stamp(path: str | os.PathLike) -> Stamp | None:
    """The bank's verification stamp (None: never checked, or the stamp is unreadable)."""
    path = Path(path)
    try:
        s = json.loads((path / STAMP).read_text())
        if s.get("format") != STAMP_FORMAT:
            return None
        return Stamp(ok=s["ok"] is True, sha256=str(s["sha256"]), checked=str(s["checked"]),
                     current=s["key"] == _stamp_key(path))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _mismatch(bank: Bank, digest: str, note: str = "") -> str:
    return (f"{bank.path / SAMPLES}: sha256 {digest} does not match the manifest's {bank.info.sha256} "
            f"(corrupt file{note})")


def verify_samples(bank: Bank) -> None:
    """Hash the samples now and stamp the outcome beside them; BankError if they do not match the manifest."""
    key = _stamp_key(bank.path)
    digest = _sha256(bank.path / SAMPLES)
    ok = digest == bank.info.sha256
    stamp = {"format": STAMP_FORMAT, "ok": ok, "sha256": digest, "key": key,
             "checked": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    try:
        if _stamp_key(bank.path) == key:  # unchanged while it was hashed
            atomic_write_bytes(bank.path / STAMP, json.dumps(stamp).encode())
    except OSError as e:  # e.g. a read-only folder: checked all the same, only not remembered
        log.warning("%s: cannot remember the check (%s); the next use hashes the bank again",
                    bank.path / STAMP, e.strerror or e)
    if not ok:
        raise BankError(_mismatch(bank, digest))


def check_samples(bank: Bank, on_hash: Callable[[Path], None] | None = None) -> bool:
    """Make sure an open bank's samples match its manifest's sha256: a current stamp answers at once, else the
    samples are hashed (`on_hash(path)` is told first: it takes a while) and the outcome stamped. Returns True
    when it hashed; BankError when the samples do not match (now, or at the stamped check)."""
    stamp = read_stamp(bank.path)
    if stamp is not None and stamp.current:
        if not stamp.ok:
            raise BankError(_mismatch(bank, stamp.sha256, f", found by the check on {stamp.checked}; replace the "
                                                          "bank, `nsynth bank verify` checks it again"))
        return False
    if on_hash is not None:
        on_hash(bank.path)
    verify_samples(bank)
    return True


def open_verified(path: str | os.PathLike, on_hash: Callable[[Path], None] | None = None) -> Bank:
    """Open a bank to play it: validated (`open_bank`) and its samples checked (`check_samples`)."""
    bank = open_bank(path)
    check_samples(bank, on_hash)
    return bank


def _madvise(samples: np.memmap, option: int | None, start: int, length: int) -> None:
    mm = getattr(samples, "_mmap", None)
    if option is None or mm is None or not hasattr(mm, "madvise") or length <= 0:
        return
    aligned = start - start % mmap.PAGESIZE
    try:
        mm.madvise(option, aligned, min(length + start - aligned, len(mm) - aligned))
    except (OSError, ValueError):
        pass  # advice only
