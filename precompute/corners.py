"""Corner instruments: the notes at the four corners of the grid, as float audio [pitch, velocity, samples].

A corner spec is one of
  DIR                         a folder of WAVs named `<name>_<pitch>[_<velocity>].wav` (the original NSynth
                              Super's convention); a file without a velocity counts as the highest velocity
                              asked for. The name may not itself end in `_<digits>`.
  sf2:[PATH.sf2:][BANK:]PROGRAM  a SoundFont preset rendered like the SoundFont datasets (default SoundFont:
                              precompute.datasets.fluid.DEFAULT_SOUNDFONT); notes the preset does not sound,
                              or sounds below the silence threshold, are filled like missing files
  nsynth:ROOT:INSTRUMENT_STR  one instrument of an NSynth json/wav dataset root (or of a rendered
                              SoundFont dataset: ROOT's train/ and valid/ are searched)
Audio is mixed down to mono (logged), resampled with soxr to the sample rate asked for, and cut (10-ms
fade-out) or zero-padded to the length asked for. A (pitch, velocity) without a note is filled from the
nearest note that has one: nearest pitch first (ties: the higher one, so a downward shift keeps the whole
note), then nearest velocity; pitch by resampling, velocity by a gain of (v / v_source)^2 (the GM
velocity curve, 40·log10 dB), capped so the note stays below full scale. Every fill is listed in
`Corner.fill_report`. A note that is silent, clipped, holds NaN/inf or is under 0.25 s long is refused.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import soundfile as sf
import soxr

from nsynth.errors import NsynthError
from precompute.datasets.nsynth import EXAMPLES_JSON, NOTE_LENGTH, SAMPLE_RATE, load_examples, read_note

log = logging.getLogger(__name__)

SILENT_DB = -60.0          # a note whose peak stays below this is silent
CLIP_LEVEL = 32766 / 32768  # at or above this magnitude a sample is at full scale
CLIP_RUN = 4               # this many consecutive full-scale samples make a note clipped
MIN_SECONDS = 0.25         # shorter notes are refused
FADE_SECONDS = 0.01        # fade-out where a note is cut to length
MAX_PEAK = CLIP_LEVEL      # velocity gain never lifts a note above this

_WAV_RE = re.compile(r"^(?P<name>.+?)_(?P<pitch>\d+)(?:_(?P<velocity>\d+))?\.wav$", re.IGNORECASE)
_SF2_RE = re.compile(r"^sf2:(?:(?P<path>.+\.sf[23]):)?(?:(?P<bank>\d+):)?(?P<program>\d+)$", re.IGNORECASE)

Key = tuple[int, int]  # (pitch, velocity)


@dataclass(frozen=True)
class Fill:
    """A (pitch, velocity) made from another note: shifted by `semitones`, scaled by `gain`."""

    pitch: int
    velocity: int
    from_pitch: int
    from_velocity: int
    semitones: int
    gain: float

    def __str__(self) -> str:
        return (f"pitch {self.pitch} velocity {self.velocity} <- pitch {self.from_pitch} velocity "
                f"{self.from_velocity} ({self.semitones:+d} semitones, gain {self.gain:.3f})")


@dataclass
class Corner:
    name: str
    audio: np.ndarray                 # float32 [len(pitches), len(velocities), length]
    pitches: list[int]
    velocities: list[int]
    sample_rate: int
    fill_report: list[Fill] = field(default_factory=list)


# -- checks and conversions ------------------------------------------------------------------------------------

def check_note(audio: np.ndarray, rate: int, what: str) -> None:
    """Refuse NaN/inf, too-short, clipped or silent audio ([samples] or [samples, channels]); `what` names it."""
    if not np.all(np.isfinite(audio)):
        raise NsynthError(f"{what}: holds NaN or infinite samples")
    seconds = audio.shape[0] / rate
    if seconds < MIN_SECONDS:
        raise NsynthError(f"{what}: too short ({seconds:.3f} s; at least {MIN_SECONDS} s of audio needed)")
    full = (np.abs(audio) >= CLIP_LEVEL).reshape(audio.shape[0], -1)
    for ch in range(full.shape[1]):
        run = _longest_run(full[:, ch])
        if run >= CLIP_RUN:
            raise NsynthError(f"{what}: clipped ({run} consecutive samples at full scale)")
    peak = float(np.abs(audio).max())
    if peak < 10 ** (SILENT_DB / 20):
        level = "-inf" if peak == 0 else f"{20 * np.log10(peak):.1f}"
        raise NsynthError(f"{what}: silent (peak {level} dBFS, below {SILENT_DB:.0f} dBFS)")


def _longest_run(mask: np.ndarray) -> int:
    if not mask.any():
        return 0
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return int((np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)).max())


def to_mono_rate(audio: np.ndarray, rate: int, sample_rate: int, what: str) -> np.ndarray:
    """[samples] or [samples, channels] at `rate` -> float32 mono [samples'] at `sample_rate`."""
    if audio.ndim == 2:
        if audio.shape[1] > 1:
            log.warning("%s: mixing %d channels down to mono", what, audio.shape[1])
        audio = audio.mean(axis=1)
    if rate != sample_rate:
        log.info("%s: resampling %d Hz to %d Hz", what, rate, sample_rate)
        audio = soxr.resample(audio, rate, sample_rate)
    return np.ascontiguousarray(audio, dtype=np.float32)


def fit_length(audio: np.ndarray, length: int, sample_rate: int) -> np.ndarray:
    """Cut (with a short fade-out) or zero-pad to `length` samples."""
    if len(audio) >= length:
        out = audio[:length].copy()
        if len(audio) > length:
            fade = min(length, int(FADE_SECONDS * sample_rate))
            out[length - fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
        return out
    return np.concatenate([audio, np.zeros(length - len(audio), dtype=np.float32)])


def shift_pitch(audio: np.ndarray, semitones: int, sample_rate: int) -> np.ndarray:
    """Raise (or lower) by `semitones` by resampling: the note plays 2^(semitones/12) times as fast."""
    if semitones == 0:
        return audio
    ratio = 2.0 ** (semitones / 12)
    return soxr.resample(audio, sample_rate * ratio, sample_rate).astype(np.float32, copy=False)


# -- filling ---------------------------------------------------------------------------------------------------

def plan_fills(available: Sequence[Key], pitches: Sequence[int], velocities: Sequence[int]) -> dict[Key, Key]:
    """For every requested (pitch, velocity) the recorded (pitch, velocity) it is made from."""
    if not available:
        raise ValueError("no notes to fill from")
    return {(p, v): min(available, key=lambda k: (abs(k[0] - p), -k[0], abs(k[1] - v), -k[1]))
            for p in pitches for v in velocities}


def _velocity_gain(velocity: int, from_velocity: int, peak: float) -> float:
    gain = (velocity / from_velocity) ** 2
    return min(gain, MAX_PEAK / peak) if peak > 0 else gain


# -- sources: (pitch, velocity) -> loader of mono audio at the target rate ------------------------------------

Loader = Callable[[], np.ndarray]


def _read_file(path: Path, sample_rate: int) -> np.ndarray:
    try:
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
    except RuntimeError as e:  # soundfile's errors derive from it
        raise NsynthError(f"{path}: not a readable audio file ({e})") from None
    check_note(audio, rate, str(path))
    return to_mono_rate(audio, rate, sample_rate, str(path))


def _folder_source(folder: Path, velocities: Sequence[int], sample_rate: int) -> tuple[str, dict[Key, Loader]]:
    if not folder.is_dir():
        raise NsynthError(f"{folder}: not a folder, nor an sf2:/nsynth: corner spec")
    name = None
    sources: dict[Key, Loader] = {}
    where: dict[Key, Path] = {}
    for path in sorted(folder.iterdir()):
        m = _WAV_RE.match(path.name)
        if not m or not path.is_file():
            continue
        if name is not None and m["name"] != name:
            raise NsynthError(f"{folder}: holds more than one instrument ({name}, {m['name']}); "
                              "use one folder per corner")
        name = m["name"]
        pitch = int(m["pitch"])
        velocity = int(m["velocity"]) if m["velocity"] else max(velocities)
        if not (0 <= pitch <= 127 and 1 <= velocity <= 127):
            raise NsynthError(f"{path}: pitch {pitch} / velocity {velocity} outside MIDI range")
        if (pitch, velocity) in where:
            raise NsynthError(f"{path}: pitch {pitch} velocity {velocity} also given by {where[pitch, velocity]}")
        where[pitch, velocity] = path
        sources[pitch, velocity] = lambda path=path: _read_file(path, sample_rate)
    if not sources:
        raise NsynthError(f"{folder}: no WAVs named <name>_<pitch>[_<velocity>].wav")
    return name, sources


def _sf2_source(match: re.Match, pitches: Sequence[int], velocities: Sequence[int],
                sample_rate: int) -> tuple[str, dict[Key, Loader]]:
    from precompute.datasets.fluid import DEFAULT_SOUNDFONT, NoteRenderer

    path = Path(match["path"]) if match["path"] else DEFAULT_SOUNDFONT
    bank, program = int(match["bank"] or 0), int(match["program"])
    with NoteRenderer(path) as renderer:
        preset = renderer.preset_name(bank, program)
        if not preset:
            raise NsynthError(f"{path}: no preset bank {bank} program {program}")
        sources: dict[Key, Loader] = {}
        for pitch in pitches:
            for velocity in velocities:
                audio = renderer.render(bank, program, pitch, velocity)
                if audio is None or np.abs(audio).max() < 10 ** (SILENT_DB / 20):
                    continue  # the preset does not sound this note (audibly): filled from a neighbour
                what = f"{path} bank {bank} program {program} pitch {pitch} velocity {velocity}"
                check_note(audio, SAMPLE_RATE, what)
                sources[pitch, velocity] = lambda a=audio, w=what: to_mono_rate(a, SAMPLE_RATE, sample_rate, w)
    if not sources:
        raise NsynthError(f"{path}: bank {bank} program {program} sounds none of the requested notes")
    return f"{preset} ({path.stem} {bank}:{program})", sources


def _nsynth_source(spec: str, sample_rate: int) -> tuple[str, dict[Key, Loader]]:
    root, _, instrument = spec[len("nsynth:"):].rpartition(":")
    if not root or not instrument:
        raise NsynthError(f"corner spec {spec!r}: expected nsynth:DATASET_ROOT:INSTRUMENT_STR")
    splits = [Path(root) / s for s in ("train", "valid") if (Path(root) / s / EXAMPLES_JSON).is_file()]
    roots = [Path(root)] if (Path(root) / EXAMPLES_JSON).is_file() or not splits else splits
    notes = [n for r in roots for n in load_examples(r, instruments=[instrument])]
    if not notes:
        raise NsynthError(f"{root}: no notes of instrument {instrument!r}")

    def load(note) -> np.ndarray:
        audio = read_note(note)
        check_note(audio, SAMPLE_RATE, str(note.path))
        return to_mono_rate(audio, SAMPLE_RATE, sample_rate, str(note.path))

    return instrument, {(n.pitch, n.velocity): (lambda n=n: load(n)) for n in notes}


# -- public API ------------------------------------------------------------------------------------------------

def load_corner(spec: str, *, pitches: list[int], velocities: list[int], length: int = NOTE_LENGTH,
                sample_rate: int = SAMPLE_RATE) -> Corner:
    """Load a corner (folder / sf2: / nsynth: spec) as float32 [len(pitches), len(velocities), length]."""
    pitches, velocities = [int(p) for p in pitches], [int(v) for v in velocities]
    if not pitches or not velocities:
        raise NsynthError("a corner needs at least one pitch and one velocity")
    if length <= 0 or sample_rate <= 0:
        raise NsynthError(f"bad length {length} / sample rate {sample_rate}")
    sf2 = _SF2_RE.match(spec)
    if sf2:
        name, sources = _sf2_source(sf2, pitches, velocities, sample_rate)
    elif spec.startswith("sf2:"):
        raise NsynthError(f"corner spec {spec!r}: expected sf2:[PATH.sf2:][BANK:]PROGRAM")
    elif spec.startswith("nsynth:"):
        name, sources = _nsynth_source(spec, sample_rate)
    else:
        name, sources = _folder_source(Path(spec), velocities, sample_rate)

    plan = plan_fills(list(sources), pitches, velocities)
    loaded = {key: sources[key]() for key in sorted(set(plan.values()))}
    audio = np.zeros((len(pitches), len(velocities), length), dtype=np.float32)
    report = []
    for i, p in enumerate(pitches):
        for j, v in enumerate(velocities):
            sp, sv = plan[p, v]
            note = shift_pitch(loaded[sp, sv], p - sp, sample_rate)
            note = fit_length(note, length, sample_rate)
            if (sp, sv) != (p, v):
                gain = _velocity_gain(v, sv, float(np.abs(note).max()))
                note = note * np.float32(gain)
                report.append(Fill(p, v, sp, sv, p - sp, gain))
            audio[i, j] = np.clip(note, -1.0, 1.0)  # resampling may overshoot a little
    if report:
        log.info("corner %s: %d of %d notes filled from neighbours", name, len(report), audio.shape[0] * audio.shape[1])
    return Corner(name, audio, pitches, velocities, sample_rate, report)


def check_compatible(corners: Sequence[Corner]) -> None:
    """Refuse corners that disagree in sample rate, length, pitches or velocities."""
    first = corners[0]
    for c in corners[1:]:
        if c.sample_rate != first.sample_rate or c.audio.shape != first.audio.shape \
                or c.pitches != first.pitches or c.velocities != first.velocities:
            raise NsynthError(
                f"corner {c.name!r} ({c.sample_rate} Hz, {c.audio.shape[-1]} samples, {len(c.pitches)} pitches, "
                f"{len(c.velocities)} velocities) does not match corner {first.name!r} ({first.sample_rate} Hz, "
                f"{first.audio.shape[-1]} samples, {len(first.pitches)} pitches, {len(first.velocities)} velocities)")


def load_corners(specs: Sequence[str], **kwargs) -> list[Corner]:
    """load_corner for each spec, then check_compatible."""
    corners = [load_corner(s, **kwargs) for s in specs]
    check_compatible(corners)
    return corners


# -- `nsynth corners check` ------------------------------------------------------------------------------------

def check_command(specs: Sequence[str], *, pitches: list[int], velocities: list[int], verbose: bool = False) -> str:
    """Load corners as the render pipeline would and describe them: what each holds and what was filled."""
    lines = []
    for c in load_corners(specs, pitches=pitches, velocities=velocities):
        peak = float(np.abs(c.audio).max())
        lines.append(f"{c.name}: {len(c.pitches)} pitches x {len(c.velocities)} velocities, "
                     f"{c.audio.shape[-1]} samples at {c.sample_rate} Hz, peak {20 * np.log10(peak):.1f} dBFS, "
                     f"{len(c.fill_report)} notes filled")
        lines += [f"  {f}" for f in (c.fill_report if verbose else [])]
    return "\n".join(lines)


def configure_check(parser) -> None:
    from precompute.datasets.soundfont import parse_ints

    parser.add_argument("specs", nargs="+", metavar="SPEC",
                        help="corner: a WAV folder, sf2:[PATH.sf2:][BANK:]PROGRAM or nsynth:ROOT:INSTRUMENT_STR")
    parser.add_argument("--pitches", default="24-84:4", help="MIDI pitches, ranges with optional step "
                                                              "(default 24-84:4, the original's 16)")
    parser.add_argument("--velocities", default="127", help="velocities (default 127)")
    parser.add_argument("-v", "--verbose", action="store_true", help="list every filled note")
    parser.set_defaults(func=lambda a: print(check_command(
        a.specs, pitches=parse_ints(a.pitches, "pitches"), velocities=parse_ints(a.velocities, "velocities"),
        verbose=a.verbose)) or 0)
