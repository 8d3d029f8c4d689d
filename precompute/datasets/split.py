"""Train/valid split by instrument, as NSynth does: no instrument has notes on both sides.

An instrument's side depends only on (seed, instrument_str), not on which other instruments are present, so
growing a dataset never moves an instrument already placed; only when one side would be empty is the
instrument whose hash lies nearest the boundary moved across.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable, Sequence, TypeVar

from nsynth.errors import NsynthError

T = TypeVar("T")
SPLITS = ("train", "valid")  # the folders of a dataset root


def split_dirs(data: Path) -> dict[str, Path]:
    """A dataset root -> {split: its NSynth-layout folder}; a clear error when one is missing."""
    for split in SPLITS:
        if not (data / split).is_dir():
            raise NsynthError(f"{data}: no {split}/ folder (make one with `nsynth dataset soundfont`)")
    return {split: data / split for split in SPLITS}


def _rank(instrument: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{instrument}".encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2.0**64


def valid_instruments(instruments: Iterable[str], valid_fraction: float, seed: int = 0) -> set[str]:
    """The instruments that go to the validation split (about valid_fraction of them)."""
    if not 0.0 <= valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
    ranks = {name: _rank(name, seed) for name in set(instruments)}
    valid = {name for name, r in ranks.items() if r < valid_fraction}
    if valid_fraction > 0 and len(ranks) >= 2:
        if not valid:
            valid = {min(ranks, key=ranks.get)}
        elif len(valid) == len(ranks):
            valid.discard(max(ranks, key=ranks.get))
    return valid


def split_by_instrument(notes: Sequence[T], valid_fraction: float, seed: int = 0) -> tuple[list[T], list[T]]:
    """(train, valid): notes (anything with `instrument_str`) split so that no instrument is on both sides."""
    valid = valid_instruments((n.instrument_str for n in notes), valid_fraction, seed)
    return [n for n in notes if n.instrument_str not in valid], [n for n in notes if n.instrument_str in valid]
