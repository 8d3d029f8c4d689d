"""Four patches (corner instruments, ADSR, position, XY, volume) in one JSON file, written atomically.

The file keeps the original's shape, {"patches": [{"instruments": [4 names], "position", "attack", "decay",
"sustain", "release", "grid": [x, y]}, ...]}, plus "volume"; every number is 0..1.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hardware.errors import HardwareError

log = logging.getLogger(__name__)
N_PATCHES = 4
_NUMBERS = ("position", "attack", "decay", "sustain", "release", "volume")


@dataclass(frozen=True)
class Patch:
    instruments: tuple[str, str, str, str]
    params: dict  # the engine parameters: position, attack, decay, sustain, release, volume, x, y

    def to_json(self) -> dict:
        node = {"instruments": list(self.instruments)}
        node.update({k: self.params[k] for k in _NUMBERS})
        node["grid"] = [self.params["x"], self.params["y"]]
        return node

    @classmethod
    def from_json(cls, node: dict) -> Patch:
        """Raise ValueError naming the first bad field."""
        if not isinstance(node, dict):
            raise ValueError("not an object")
        insts = node.get("instruments")
        if not (isinstance(insts, list) and len(insts) == 4 and all(isinstance(i, str) for i in insts)):
            raise ValueError("`instruments` must list 4 names")
        params = {}
        for key in _NUMBERS:
            value = node.get(key, 1.0 if key == "volume" else None)  # the original's files have no volume
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ValueError(f"`{key}` must be a number")
            params[key] = min(max(float(value), 0.0), 1.0)
        grid = node.get("grid")
        if not (isinstance(grid, list) and len(grid) == 2 and all(isinstance(g, (int, float)) for g in grid)):
            raise ValueError("`grid` must be [x, y]")
        params["x"], params["y"] = (min(max(float(g), 0.0), 1.0) for g in grid)
        return cls(tuple(insts), params)


def write_atomic(path: Path, text: str) -> None:
    """Temp file in the same folder, fsync, rename over, fsync the folder: a crash leaves old or new, never half."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dirfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


class PatchStore:
    """The patch slots, loaded once; `problems` lists what was wrong with the file (each slot on its own)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.slots: list[Patch | None] = [None] * N_PATCHES
        self.problems: list[str] = []
        self._corrupt = False
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        try:
            nodes = json.loads(self.path.read_text())["patches"]
            if not isinstance(nodes, list):
                raise TypeError("`patches` is not a list")
        except (OSError, ValueError, KeyError, TypeError) as e:
            self._corrupt = True
            self._problem(f"{self.path}: corrupt patch file, not loaded ({e})")
            return
        for i, node in enumerate(nodes[:N_PATCHES]):
            if node is None:
                continue
            try:
                self.slots[i] = Patch.from_json(node)
            except ValueError as e:
                self._problem(f"{self.path}: patch {i + 1} not loaded: {e}")

    def _problem(self, message: str) -> None:
        self.problems.append(message)
        log.warning("%s", message)

    def get(self, index: int) -> Patch | None:
        return self.slots[index]

    def save(self, index: int, patch: Patch) -> None:
        """Store one slot and write the file; a corrupt file is kept beside it as `<name>.bad`, never lost."""
        self.slots[index] = patch
        doc = {"patches": [p.to_json() if p else None for p in self.slots]}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self._corrupt:
                os.replace(self.path, self.path.with_name(self.path.name + ".bad"))
                self._corrupt = False
            write_atomic(self.path, json.dumps(doc, indent=2) + "\n")
        except OSError as e:
            raise HardwareError(f"{self.path}: patch {index + 1} not saved ({e.strerror or e})") from e
