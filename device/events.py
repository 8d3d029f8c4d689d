"""The engine's events: their tuple format and the check every posted event passes (in the posting thread).

    ("on", ch, key, vel)        note on (velocity 0: a note off)
    ("off", ch, key)            note off
    ("params", {name: 0..1})    set parameters (names in nsynth.params.PARAMS)
    ("bend", ch or None, semi)  pitch bend of a channel, or of every channel (None), in semitones
    ("pedal", down)             sustain pedal
    ("note_xy", ch, x, y)       MPE X/Y of a channel's note (None: that axis unchanged)
    ("all_notes_off",), ("all_sound_off",), ("reset_controllers",)
    ("bank", Bank)              switch banks (sounding voices fade out first)

Channels are 0..15, keys and velocities 0..127; a bend is clamped to +-BEND_LIMIT semitones. Posted events carry
the absolute frame they apply at (None: the next block's start); the audio thread applies them in (frame, posting)
order (`event_order`).
"""
from __future__ import annotations

import math
import operator

import numpy as np

from device.bank import Bank
from nsynth.params import PARAMS

BEND_LIMIT = 96.0  # semitones: a bend event asks for at most this much either way (the MPE maximum); more is clamped
CHANNELS = 16

_ARITY = {"on": 4, "off": 3, "params": 2, "bend": 3, "pedal": 2, "note_xy": 4, "all_notes_off": 1,
          "all_sound_off": 1, "reset_controllers": 1, "bank": 2}


def _int_in(value, lo: int, hi: int, what: str, ev: tuple) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"bad engine event {ev!r}: {what} must be an integer, got {value!r}")
    try:
        i = operator.index(value)
    except TypeError:
        raise ValueError(f"bad engine event {ev!r}: {what} must be an integer, got {value!r}") from None
    if not lo <= i <= hi:
        raise ValueError(f"bad engine event {ev!r}: {what} {i} is outside {lo}..{hi}")
    return i


def _finite(value, what: str, ev: tuple) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"bad engine event {ev!r}: {what} must be a number, got {value!r}") from None
    if not math.isfinite(f):
        raise ValueError(f"bad engine event {ev!r}: {what} must be finite, got {value!r}")
    return f


def checked_event(ev: tuple) -> tuple:
    """`ev` with its fields checked and made plain Python numbers; ValueError naming the problem otherwise."""
    if not isinstance(ev, tuple) or not ev or ev[0] not in _ARITY:
        kind = ev[0] if isinstance(ev, tuple) and ev else ev
        raise ValueError(f"unknown engine event {kind!r}; known: {', '.join(sorted(_ARITY))}")
    kind = ev[0]
    if len(ev) != _ARITY[kind]:
        raise ValueError(f"bad engine event {ev!r}: {kind!r} takes {_ARITY[kind] - 1} field(s)")
    if kind == "on":
        return (kind, _int_in(ev[1], 0, CHANNELS - 1, "channel", ev), _int_in(ev[2], 0, 127, "key", ev),
                _int_in(ev[3], 0, 127, "velocity", ev))
    if kind == "off":
        return kind, _int_in(ev[1], 0, CHANNELS - 1, "channel", ev), _int_in(ev[2], 0, 127, "key", ev)
    if kind == "params":
        if not isinstance(ev[1], dict):
            raise ValueError(f"bad engine event {ev!r}: parameters must be a dict")
        unknown = set(ev[1]) - set(PARAMS)
        if unknown:
            raise ValueError(f"bad engine event: unknown parameter(s) {sorted(unknown)}; known: {', '.join(PARAMS)}")
        return kind, {name: _finite(v, name, ev) for name, v in ev[1].items()}
    if kind == "bend":
        ch = None if ev[1] is None else _int_in(ev[1], 0, CHANNELS - 1, "channel", ev)
        return kind, ch, min(max(_finite(ev[2], "bend", ev), -BEND_LIMIT), BEND_LIMIT)
    if kind == "pedal":
        return kind, bool(ev[1])
    if kind == "note_xy":
        return (kind, _int_in(ev[1], 0, CHANNELS - 1, "channel", ev),
                *(None if v is None else _finite(v, axis, ev) for axis, v in (("x", ev[2]), ("y", ev[3]))))
    if kind == "bank" and not isinstance(ev[1], Bank):
        raise ValueError(f"bad engine event: 'bank' takes an open Bank, got {type(ev[1]).__name__}")
    return ev


def event_order(e: tuple) -> tuple[int, int]:
    """Sort key of a pending (frame, arrival number, event): by frame, then in the order posted."""
    return e[0], e[1]


class EventPoster:
    """The shorthands every event sink shares (the engine, and its proxy in the control process), each one
    `post(event, frame)` of its tuple."""

    def post(self, event: tuple, frame: int | None = None) -> None:
        raise NotImplementedError

    def post_params(self, frame: int | None = None, **params: float) -> None:
        """Set parameters (normalised 0..1, names in PARAMS), applied at `frame` or the next block."""
        self.post(("params", params), frame)

    def note_on(self, key: int, velocity: int, channel: int = 0, frame: int | None = None) -> None:
        self.post(("on", channel, key, velocity), frame)

    def note_off(self, key: int, channel: int = 0, frame: int | None = None) -> None:
        self.post(("off", channel, key), frame)
