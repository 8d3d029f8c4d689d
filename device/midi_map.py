"""MIDI messages -> engine events (pure logic, no I/O).

Default CC map (`DEFAULT_CC_MAP`, configurable with `nsynth play --cc NUM=PARAM`); values 0..127 -> 0..1:

    CC 7   volume        CC 16  x (timbre grid, left..right)     CC 73  attack
    CC 18  position      CC 17  y (timbre grid, bottom..top)     CC 75  decay
                                                                 CC 79  sustain
                                                                 CC 72  release

Always: CC 64 sustain pedal (>= 64 down), CC 120 all sound off, CC 121 reset controllers (pitch bend, pedal,
MPE X/Y), CC 123 all notes off (also CC 124-127, the mode messages, per the MIDI spec), RPN 0 (CC 101/100 = 0,
then CC 6 = semitones, CC 38 = cents) sets the pitch-bend range of that channel. A note-on with velocity 0 is a
note-off. Pitch bend: +-`bend_range` semitones (default 2).

Channels: `channel=None` is omni (every channel plays, as one); `channel=N` (0-15) listens to that channel only.

MPE (`mpe=True`, lower zone): channel 1 (index 0) is the manager channel, channels 2-16 are member channels,
one note each. Manager-channel pitch bend, CCs and pedal apply to every note; on a member channel
  pitch bend      -> that note's pitch (+-`mpe_bend_range`, default 48 semitones),
  CC 74           -> that note's Y (0..127 -> bottom..top),
  channel pressure -> that note's X (0..127 -> left..right),
and the note starts at the global X/Y until its channel sends its own (MPE senders send CC 74 and pressure
just before the note-on). Polyphonic aftertouch and program changes are ignored.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from nsynth.errors import NsynthError
from nsynth.params import PARAMS

DEFAULT_CC_MAP: dict[int, str] = {7: "volume", 16: "x", 17: "y", 18: "position", 73: "attack", 75: "decay",
                                  79: "sustain", 72: "release"}


def parse_cc_map(items: list[str], base: dict[int, str] | None = None) -> dict[int, str]:
    """Apply "NUM=PARAM" overrides (PARAM "none" unmaps NUM) to a copy of the default map."""
    cc_map = dict(DEFAULT_CC_MAP if base is None else base)
    for item in items:
        num, _, name = item.partition("=")
        try:
            cc = int(num)
        except ValueError:
            cc = -1
        if not 0 <= cc <= 127 or (name not in PARAMS and name != "none"):
            raise NsynthError(f"bad CC mapping {item!r}: expected NUM=PARAM with NUM 0..127 and PARAM one of "
                              f"{', '.join(PARAMS)} or none")
        if cc in (6, 38, 64, 100, 101) or cc >= 120:
            raise NsynthError(f"bad CC mapping {item!r}: CC {cc} is reserved (pedal, RPN or channel mode)")
        if name == "none":
            cc_map.pop(cc, None)
        else:
            cc_map[cc] = name
    return cc_map


@dataclass
class MidiRouter:
    """Turns mido messages into engine events (see `device.engine.Engine.post`)."""

    channel: int | None = None  # None = omni
    mpe: bool = False
    bend_range: float = 2.0
    mpe_bend_range: float = 48.0
    cc_map: dict[int, str] = field(default_factory=lambda: dict(DEFAULT_CC_MAP))
    _ranges: list[float] = field(default_factory=list, init=False, repr=False)
    _rpn: list[tuple[int, int]] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.channel is not None and not 0 <= self.channel <= 15:
            raise NsynthError(f"MIDI channel must be 1-16 (given as index {self.channel})")
        self._ranges = [self.bend_range if (not self.mpe or ch == 0) else self.mpe_bend_range for ch in range(16)]
        self._rpn = [(127, 127)] * 16

    def route(self, msg) -> list[tuple]:
        """Engine events for one mido message ([] if it is ignored)."""
        ch = getattr(msg, "channel", None)
        if ch is None:
            return []
        if self.channel is not None and not self.mpe and ch != self.channel:
            return []
        member = self.mpe and ch != 0
        vch = ch if (self.mpe or self.channel is not None) else 0  # omni plays all channels as one
        t = msg.type
        if t == "note_on":
            return [("on", vch, msg.note, msg.velocity)]
        if t == "note_off":
            return [("off", vch, msg.note)]
        if t == "pitchwheel":
            semis = msg.pitch / 8192.0 * self._ranges[ch]
            return [("bend", vch if member or not self.mpe else None, semis)]
        if t == "aftertouch":
            return [("note_xy", ch, msg.value / 127.0, None)] if member else []
        if t == "control_change":
            return self._cc(ch, vch, member, msg.control, msg.value)
        return []

    def _cc(self, ch: int, vch: int, member: bool, cc: int, value: int) -> list[tuple]:
        if member and cc == 74:
            return [("note_xy", ch, None, value / 127.0)]
        if cc == 101 or cc == 100:
            msb, lsb = self._rpn[ch]
            self._rpn[ch] = (value, lsb) if cc == 101 else (msb, value)
            return []
        if cc in (6, 38):
            if self._rpn[ch] == (0, 0):  # RPN 0: pitch-bend sensitivity
                semis = int(self._ranges[ch])
                cents = round((self._ranges[ch] - semis) * 100)
                semis, cents = (value, cents) if cc == 6 else (semis, value)
                self._ranges[ch] = semis + cents / 100.0
            return []
        if member:  # member channels carry only per-note expression
            return []
        if cc == 64:
            return [("pedal", value >= 64)]
        if cc == 120:
            return [("all_sound_off",)]
        if cc == 121:
            return [("reset_controllers",)]
        if cc >= 123:
            return [("all_notes_off",)]
        name = self.cc_map.get(cc)
        return [("params", {name: value / 127.0})] if name else []


def add_midi_arguments(parser: argparse.ArgumentParser) -> None:
    """The MIDI options shared by `nsynth play` and `nsynth render-midi`."""
    parser.add_argument("--channel", default="omni", help="MIDI channel 1-16, or omni (default)")
    parser.add_argument("--mpe", action="store_true", help="MPE lower zone: per-note bend, CC74 -> Y, pressure -> X")
    parser.add_argument("--bend-range", type=float, default=2.0, help="pitch-bend range in semitones (default 2)")
    parser.add_argument("--cc", action="append", default=[], metavar="NUM=PARAM",
                        help="map a CC to a parameter (or none); repeatable; see device/README.md for the default map")


def router_from_args(args: argparse.Namespace) -> MidiRouter:
    if args.channel == "omni":
        channel = None
    else:
        try:
            channel = int(args.channel) - 1
        except ValueError:
            channel = -1
        if not 0 <= channel <= 15:
            raise NsynthError(f"--channel must be 1-16 or omni, got {args.channel!r}")
    return MidiRouter(channel=channel, mpe=args.mpe, bend_range=args.bend_range, cc_map=parse_cc_map(args.cc))
