"""General MIDI programs as NSynth-style instruments.

A SoundFont preset (bank, program) becomes instrument `<family>_synthetic_<index:03d>` with index
bank * 128 + program, so names are stable whichever programs are rendered (GM program 0 is
`keyboard_synthetic_000`, 40 is `string_synthetic_040`, the bank-128 drum kit 0 `mallet_synthetic_16384`).
NSynth has no drum, pad or effects family: percussion maps to mallet, pads and effects to synth_lead.
"""
from __future__ import annotations

from precompute.datasets.nsynth import instrument_str

# GM program ranges (inclusive start) -> NSynth family; each entry holds until the next one.
_FAMILY_FROM = (
    (0, "keyboard"),      # pianos
    (8, "mallet"),        # chromatic percussion
    (16, "organ"),
    (21, "reed"),         # accordion, harmonica, tango accordion
    (24, "guitar"),
    (32, "bass"),
    (40, "string"),       # violin .. harp
    (47, "mallet"),       # timpani
    (48, "string"),       # ensembles, synth strings
    (52, "vocal"),        # choir, voice oohs, synth voice
    (55, "string"),       # orchestra hit
    (56, "brass"),
    (64, "reed"),
    (72, "flute"),        # pipes
    (80, "synth_lead"),   # leads, pads, synth effects
    (104, "guitar"),      # sitar, banjo, shamisen, koto
    (108, "mallet"),      # kalimba
    (109, "reed"),        # bagpipe
    (110, "string"),      # fiddle
    (111, "reed"),        # shanai
    (112, "mallet"),      # percussive
    (120, "synth_lead"),  # sound effects
)
# Default programs for a dataset: the melodic GM instruments (percussive and sound-effect groups left out).
DEFAULT_PROGRAMS = tuple(range(0, 112))
SOURCE = "synthetic"


def family(bank: int, program: int) -> str:
    if not (0 <= program <= 127 and 0 <= bank <= 16383):
        raise ValueError(f"bank {bank} / program {program} out of MIDI range")
    if bank == 128:  # GM percussion bank
        return "mallet"
    return [fam for start, fam in _FAMILY_FROM if start <= program][-1]


def instrument_index(bank: int, program: int) -> int:
    return bank * 128 + program


def gm_instrument_str(bank: int, program: int) -> str:
    return instrument_str(family(bank, program), SOURCE, instrument_index(bank, program))


def parse_programs(text: str) -> list[tuple[int, int]]:
    """'0-7,24,128:0' -> [(bank, program), ...]; a bare number or range is bank 0."""
    out: list[tuple[int, int]] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        bank_s, _, prog_s = part.rpartition(":")
        try:
            bank = int(bank_s) if bank_s else 0
            lo_s, _, hi_s = prog_s.partition("-")
            lo, hi = int(lo_s), int(hi_s or lo_s)
        except ValueError:
            raise ValueError(f"bad program {part!r}: expected N, N-M or BANK:N") from None
        for prog in range(lo, hi + 1):
            family(bank, prog)  # range check
            if (bank, prog) not in out:
                out.append((bank, prog))
    if not out:
        raise ValueError(f"no programs in {text!r}")
    return out
