"""MIDI messages -> engine events (pure logic, no I/O).

Default CC map (`DEFAULT_CC_MAP`, configurable with `nsynth play --cc NUM=PARAM`); values 0..127 -> 0..1:

    CC 7   volume        CC 16  x (timbre grid, left..right)     CC 73  attack
    CC 18  position      CC 17  y (timbre grid, bottom..top)     CC 75  decay
                                                                 CC 79  sustain
                                                                 CC 72  release

Always: CC 64 sustain pedal (>= 64 down), CC 120 all sound off, CC 121 reset controllers (pitch bend, pedal,
MPE X/Y), CC 123 all notes off (also CC 124-127, the mode messages, per the MIDI spec). A note-on with velocity 0
is a note-off. Pitch bend: +-`bend_range` semitones (default 2).

Pitch-bend range (RPN 0): CC 101/100 select a registered parameter (RPN), CC 99/98 a non-registered one (NRPN);
each selection deselects the other kind, and CC 101 = CC 100 = 127 is the null RPN (nothing selected). Data entry
(CC 6 = semitones, CC 38 = cents) changes the bend range only while RPN 0 is selected; after an NRPN or the null
RPN it changes nothing. Other RPNs and every NRPN are ignored, as are data increment/decrement (CC 96/97). The
range is bounded, so no message stream can make the engine read the bank arbitrarily fast:
  - at most `MAX_BEND` = 24 semitones on an ordinary channel and on the MPE manager channel: the range General
    MIDI 2 requires of RPN 0 (0-24 semitones), and more than any common controller sends;
  - at most `MAX_MPE_BEND` = 96 semitones on MPE member channels: the MPE specification's largest member range
    (its default is 48).
A larger value (RPN 0 data can say up to 127 semitones 127 cents) is clamped to the bound. In MPE mode, RPN 0 sent
on any member channel sets the range of every member channel, as the MPE specification says.

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

from device.events import BEND_LIMIT
from nsynth.errors import NsynthError
from nsynth.params import PARAMS

MAX_BEND = 24.0       # semitones: the largest pitch-bend range of an ordinary (or MPE manager) channel
MAX_MPE_BEND = BEND_LIMIT  # semitones (96): the largest range of an MPE member channel
RESERVED_CCS = frozenset((6, 38, 64, 96, 97, 98, 99, 100, 101, *range(120, 128)))  # pedal, (N)RPN, channel mode
_NULL = (127, 127)    # the null RPN: no parameter selected

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
        if cc in RESERVED_CCS:
            raise NsynthError(f"bad CC mapping {item!r}: CC {cc} is reserved (pedal, RPN/NRPN or channel mode)")
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
    _rpn: list[tuple[int, int]] = field(default_factory=list, init=False, repr=False)  # per channel; _NULL: none

    def __post_init__(self) -> None:
        if self.channel is not None and not 0 <= self.channel <= 15:
            raise NsynthError(f"MIDI channel must be 1-16 (given as index {self.channel})")
        for what, value, bound in (("bend range", self.bend_range, MAX_BEND),
                                   ("MPE bend range", self.mpe_bend_range, MAX_MPE_BEND)):
            if not 0.0 <= value <= bound:
                raise NsynthError(f"{what} must be 0..{bound:g} semitones, got {value!r}")
        self._ranges = [self.bend_range if (not self.mpe or ch == 0) else self.mpe_bend_range for ch in range(16)]
        self._rpn = [_NULL] * 16

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
        if cc in (101, 100):  # select a registered parameter (and no NRPN)
            msb, lsb = self._rpn[ch]
            self._rpn[ch] = (value, lsb) if cc == 101 else (msb, value)
            return []
        if cc in (99, 98):  # select a non-registered parameter: data entry no longer reaches any RPN
            self._rpn[ch] = _NULL
            return []
        if cc in (6, 38):
            if self._rpn[ch] == (0, 0):  # RPN 0: pitch-bend sensitivity
                self._set_bend_range(ch, member, cc, value)
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

    def _set_bend_range(self, ch: int, member: bool, cc: int, value: int) -> None:
        """Data entry for RPN 0: CC 6 sets the semitones, CC 38 the cents (0..99; more counts as 99), clamped to the
        channel's bound; on an MPE member channel it sets every member channel's range."""
        semis = int(self._ranges[ch])
        cents = round((self._ranges[ch] - semis) * 100)
        semis, cents = (value, cents) if cc == 6 else (semis, min(value, 99))
        bound = MAX_MPE_BEND if member else MAX_BEND
        new = min(semis + cents / 100.0, bound)
        for c in (range(1, 16) if member else (ch,)):
            self._ranges[c] = new


def add_midi_arguments(parser: argparse.ArgumentParser) -> None:
    """The MIDI options shared by `nsynth play` and `nsynth render-midi`."""
    parser.add_argument("--channel", default="omni", help="MIDI channel 1-16, or omni (default)")
    parser.add_argument("--mpe", action="store_true", help="MPE lower zone: per-note bend, CC74 -> Y, pressure -> X")
    parser.add_argument("--bend-range", type=float, default=2.0,
                        help=f"pitch-bend range in semitones, 0..{MAX_BEND:g} (default 2; RPN 0 changes it)")
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
