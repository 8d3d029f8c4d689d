"""The four corners' instrument choices and the encoders that cycle them (pure).

Corner order is the original's: 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right. Choices come from the
original's settings.json `corners` list, or from a folder of banks named `<c0>_<c1>_<c2>_<c3>`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hardware.errors import HardwareError

N_CORNERS = 4


@dataclass(frozen=True)
class Instrument:
    name: str      # as in bank names
    display: str   # the instrument screen's line
    abbr: str      # the home screen's corner label


def _from_name(name: str) -> Instrument:
    return Instrument(name, name.upper()[:10], name.upper()[:4])


class CornerChoices:
    """Which instrument each corner plays; an encoder step moves that corner's choice, wrapping around."""

    def __init__(self, corners: list[list[Instrument]], selected: list[int] | None = None):
        if len(corners) != N_CORNERS or not all(corners):
            raise HardwareError(f"need {N_CORNERS} corners with at least one instrument each, got {len(corners)}")
        self.corners = corners
        self.selected = list(selected or [0] * N_CORNERS)

    def step(self, corner: int, steps: int) -> bool:
        """Move one corner by `steps`; True when its instrument changed."""
        before = self.selected[corner]
        self.selected[corner] = (before + steps) % len(self.corners[corner])
        return self.selected[corner] != before

    def current(self) -> list[Instrument]:
        return [c[i] for c, i in zip(self.corners, self.selected)]

    def names(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.current())

    def select(self, names: list[str] | tuple[str, ...]) -> bool:
        """Choose instruments by name (a patch); unknown names raise. True when anything changed."""
        if len(names) != N_CORNERS:
            raise HardwareError(f"a patch needs {N_CORNERS} corner instruments, got {len(names)}")
        picks = []
        for corner, name in zip(self.corners, names):
            found = [i for i, inst in enumerate(corner) if inst.name == name]
            if not found:
                raise HardwareError(f"instrument {name!r} is not one of this corner's choices")
            picks.append(found[0])
        changed = picks != self.selected
        self.selected = picks
        return changed


def corners_from_settings(path: str | Path) -> CornerChoices:
    """The original's settings.json: {"corners": [{"instruments": [{"name", "display", "abbr"}, ...]}, ...]}."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        corners = [[Instrument(i["name"], i.get("display", i["name"].upper()), i.get("abbr", i["name"][:2].upper()))
                    for i in c["instruments"]] for c in doc["corners"][:N_CORNERS]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise HardwareError(f"{path}: not a settings file with a `corners` list ({e})") from e
    try:
        return CornerChoices(corners)
    except HardwareError as e:
        raise HardwareError(f"{path}: {e}") from e


def bank_stem(entry: Path) -> str:
    return entry.name.split(".", 1)[0]


def corners_from_banks(folder: str | Path) -> CornerChoices:
    """Each corner's choices are the names seen in that place of the folder's `<c0>_<c1>_<c2>_<c3>` banks."""
    folder = Path(folder)
    seen: list[list[str]] = [[] for _ in range(N_CORNERS)]
    try:
        entries = sorted(folder.iterdir())
    except OSError as e:
        raise HardwareError(f"{folder}: cannot list the bank folder ({e.strerror})") from e
    for entry in entries:
        parts = bank_stem(entry).split("_")
        if len(parts) == N_CORNERS and all(parts):
            for names, part in zip(seen, parts):
                if part not in names:
                    names.append(part)
    if not all(seen):
        raise HardwareError(f"{folder}: no banks named <c0>_<c1>_<c2>_<c3> (one per corner combination)")
    return CornerChoices([[_from_name(n) for n in names] for names in seen])
