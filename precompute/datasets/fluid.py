"""NSynth-style notes from a SoundFont with FluidSynth (pyfluidsynth over libfluidsynth3).

Deterministic: reverb and chorus off, float output (no dither), every note started on a fresh block
with all voices of the previous note killed first. A note's first 64-sample block depends on what its
voices played before (FluidSynth ramps some voice state from its last value), so at start-up and after
every note all voices sound one fixed chord and are killed: every note then starts from the same voice
state and renders the same whatever came before it, in any process. Stereo output is mixed down to mono.
"""
from __future__ import annotations

import ctypes
import os
from pathlib import Path

import numpy as np

from nsynth.errors import NsynthError
from precompute.datasets.nsynth import NOTE_LENGTH, SAMPLE_RATE

DEFAULT_SOUNDFONT = Path("/usr/share/sounds/sf2/TimGM6mb.sf2")
HOLD = 3 * SAMPLE_RATE          # note held 3 s, then released for the remaining 1 s
GAIN = 1.0                      # FluidSynth master gain; velocity-127 TimGM6mb notes peak at -4 dBFS at most
POLYPHONY = 32                  # voices; one note of a GM preset uses one to a few
SILENCE = 10 ** (-70 / 20)      # a render whose peak stays below -70 dBFS counts as silent
_CHANNEL = 0
_BLOCK = 64                     # FluidSynth's internal block; HOLD and NOTE_LENGTH are multiples of it


def _fluidsynth():
    try:
        import fluidsynth
    except ImportError as e:  # the module raises ImportError when libfluidsynth is missing, too
        raise NsynthError(f"pyfluidsynth/libfluidsynth3 not available ({e}); "
                          "run scripts/install.sh (apt fluidsynth, pip pyfluidsynth)") from None
    return fluidsynth


class NoteRenderer:
    """One FluidSynth instance with one SoundFont loaded; `render` gives a 4-s mono float32 note or None."""

    def __init__(self, soundfont: str | os.PathLike = DEFAULT_SOUNDFONT, *, gain: float = GAIN):
        fs = _fluidsynth()
        path = Path(soundfont)
        if not path.is_file():
            raise NsynthError(f"{path}: SoundFont not found")
        self._synth = fs.Synth(gain=float(gain), samplerate=float(SAMPLE_RATE), channels=16,
                               **{"synth.reverb.active": 0, "synth.chorus.active": 0, "synth.cpu-cores": 1,
                                  "synth.polyphony": POLYPHONY})
        self._sfid = self._synth.sfload(str(path))
        if self._sfid < 0:
            self._synth.delete()
            raise NsynthError(f"{path}: FluidSynth could not load it as a SoundFont")
        self._write_float = fs.cfunc(
            "fluid_synth_write_float", ctypes.c_int, ("synth", ctypes.c_void_p, 1), ("len", ctypes.c_int, 1),
            ("lout", ctypes.c_void_p, 1), ("loff", ctypes.c_int, 1), ("lincr", ctypes.c_int, 1),
            ("rout", ctypes.c_void_p, 1), ("roff", ctypes.c_int, 1), ("rincr", ctypes.c_int, 1))
        self.path, self.gain = path, float(gain)
        self._chord_preset = self._first_preset()
        self._use_every_voice()

    def _first_preset(self) -> tuple[int, int]:
        for bank in (0, *range(1, 129)):
            for program in range(128):
                if self.has_preset(bank, program):
                    return bank, program
        raise NsynthError(f"{self.path}: holds no preset in banks 0-128")


    def _use_every_voice(self) -> None:
        """Sound the same chord on every voice, then kill it: each voice is left in one known state."""
        synth = self._synth
        synth.all_sounds_off(_CHANNEL)
        self._samples(_BLOCK)
        synth.program_select(_CHANNEL, self._sfid, *self._chord_preset)
        for key in range(128):
            if synth.get_active_voice_count() >= POLYPHONY:
                break
            synth.noteon(_CHANNEL, key, 100)
        self._samples(_BLOCK)
        synth.all_sounds_off(_CHANNEL)
        self._samples(_BLOCK)

    def has_preset(self, bank: int, program: int) -> bool:
        return bool(self.preset_name(bank, program))

    def preset_name(self, bank: int, program: int) -> str:
        """The preset's name in the SoundFont ('' when it has none there)."""
        return (self._synth.sfpreset_name(self._sfid, bank, program) or "").strip()

    def _samples(self, n: int) -> np.ndarray:
        buf = np.zeros(2 * n, dtype=np.float32)
        ptr = buf.ctypes.data
        if self._write_float(self._synth.synth, n, ptr, 0, 2, ptr, 1, 2) != 0:
            raise NsynthError(f"{self.path}: FluidSynth failed to render")
        return (buf[0::2] + buf[1::2]) * np.float32(0.5)

    def render(self, bank: int, program: int, pitch: int, velocity: int) -> np.ndarray | None:
        """float32 [64000]: held 3 s, released 1 s; None when the preset does not sound this note."""
        synth = self._synth
        if synth.program_select(_CHANNEL, self._sfid, bank, program) != 0:
            raise NsynthError(f"{self.path}: no preset bank {bank} program {program}")
        synth.noteon(_CHANNEL, pitch, velocity)
        if synth.get_active_voice_count() == 0:
            synth.noteoff(_CHANNEL, pitch)
            return None
        held = self._samples(HOLD)
        synth.noteoff(_CHANNEL, pitch)
        released = self._samples(NOTE_LENGTH - HOLD)
        self._use_every_voice()
        audio = np.concatenate([held, released])
        if not np.abs(audio).max() >= SILENCE:  # also catches NaN
            return None
        return audio

    def close(self) -> None:
        self._synth.delete()

    def __enter__(self) -> "NoteRenderer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
