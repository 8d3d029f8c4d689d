"""The computer keyboard as a piano (pure): two rows of keys -> MIDI notes, z/x shift the octave."""
from __future__ import annotations

from typing import Callable

# Tk keysyms, in semitones from the base note: the home row is white keys, the row above the black keys.
KEY_SEMITONES = {k: i for i, k in enumerate(
    ["a", "w", "s", "e", "d", "f", "t", "g", "y", "h", "u", "j", "k", "o", "l", "p", "semicolon", "apostrophe"])}
OCTAVE_DOWN, OCTAVE_UP = "z", "x"


class ComputerKeyboard:
    """Key presses -> `note_on(pitch, velocity)`, releases -> `note_off(pitch)`; a held key repeating is one note,
    and a note is released at the pitch it started with even after an octave change."""

    def __init__(self, note_on: Callable[[int, int], None], note_off: Callable[[int], None],
                 base: int = 60, velocity: int = 100):
        self.note_on, self.note_off, self.base, self.velocity = note_on, note_off, base, velocity
        self.held: dict[str, int] = {}

    def press(self, key: str) -> bool:
        """True when the key is one of ours."""
        key = key.lower() if len(key) == 1 else key
        if key in (OCTAVE_DOWN, OCTAVE_UP):
            self.base = min(max(self.base + (12 if key == OCTAVE_UP else -12), 0), 108)
            return True
        if key not in KEY_SEMITONES:
            return False
        if key not in self.held:
            pitch = self.base + KEY_SEMITONES[key]
            if pitch <= 127:
                self.held[key] = pitch
                self.note_on(pitch, self.velocity)
        return True

    def release(self, key: str) -> bool:
        key = key.lower() if len(key) == 1 else key
        pitch = self.held.pop(key, None)
        if pitch is not None:
            self.note_off(pitch)
        return key in KEY_SEMITONES or key in (OCTAVE_DOWN, OCTAVE_UP)

    def release_all(self) -> None:
        for key in list(self.held):
            self.release(key)
