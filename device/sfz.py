"""`nsynth bank export-sfz`: a bank as an SFZ instrument for software samplers (sfizz, Sforzando, DAWs).

Writes DIR/<name>.sfz and DIR/<name>_samples/ (one 16-bit WAV per note). The .sfz holds a <group> per pitch and
velocity layer and a <region> per grid cell, built to play what the engine (device/engine.py) plays:
- keys: a pitch plays the keys nearer to it than to its neighbours (a tie goes to the lower pitch), transposed
  from its pitch_keycenter, as the engine picks the nearest rendered pitch;
- velocity: a layer fades in from the layer below and out towards the layer above (xfin_/xfout_lovel/hivel with
  xf_velcurve=gain): the engine's linear crossfade of the two nearest layers; each layer plays at its own level
  (it is levelled for its velocity), scaled only outside the layers as the engine does (amp_velcurve_N);
- X/Y: two CCs (by default those of `nsynth play`'s CC map, 16 and 17) move over the grid. Grid point j of an axis
  sits at CC 127 j / (grid - 1); a cell fades in over the CC span from its lower neighbour's grid point to its own
  and out over the span to its upper neighbour's (xfin_/xfout_locc/hicc with xf_cccurve=gain). A player that
  multiplies its crossfades (sfizz does) gives cell (x, y) the gain fx * fy: the engine's bilinear weights, 1 at
  a grid point, summing to 1 everywhere. SFZ asks for whole CC values, so by default the grid points are rounded
  to them (the weights are then the engine's at the grid points and bilinear between them, within half a CC step
  of the engine's); `--exact-cc` writes the fractions, which sfizz reads, for the engine's weights at every CC;
- a note starts only the cells its X/Y gives a weight (locc/hicc): 4 cells x 2 layers at most, as the engine. A
  sampler cannot start a sample in the middle of a note, so moving X/Y while a note sounds crossfades only within
  the square it started in (beyond it the note fades out, where the engine moves on to the next cells);
  `--reach K` also starts the cells up to K grid steps further out (silent until X/Y gets there), at the cost of
  (2 + 2K)^2 voices per layer;
- loops: loop_continuous between the manifest's points (SFZ's loop_end is the loop's last sample), with the
  engine's loop crossfade (loop_crossfade, in seconds);
- the amplitude envelope and volume are the engine's defaults (ampeg_*, volume).
The samples folder is written aside and swapped in whole, the .sfz atomically after it.
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from device.addressing import velocity_gains
from device.bank import Bank, open_bank
from device.engine import EngineConfig
from device.envelopes import attack_seconds, decay_seconds, release_seconds
from device.midi_map import DEFAULT_CC_MAP, parse_cc_map
from nsynth.errors import NsynthError
from nsynth.fsutil import atomic_write_bytes, remove_stale_partials, replace_dir
from nsynth.params import DEFAULT_PARAMS
from nsynth.progress import ETA

X_CC, Y_CC = (next(cc for cc, name in DEFAULT_CC_MAP.items() if name == axis) for axis in ("x", "y"))


@dataclass(frozen=True)
class SfzOptions:
    x_cc: int = X_CC
    y_cc: int = Y_CC
    exact_cc: bool = False  # fractional grid-point CCs (sfizz) instead of whole ones (the SFZ spec)
    reach: int = 0          # also start the cells this many grid steps beyond the square of the note's X/Y

    def check(self, grid: int) -> None:
        parse_cc_map([f"{self.x_cc}=x", f"{self.y_cc}=y"])  # CCs `nsynth play --cc` could map X/Y to
        if self.x_cc == self.y_cc:
            raise NsynthError(f"X and Y need two different CCs, got {self.x_cc} for both")
        if self.reach < 0:
            raise NsynthError(f"--reach must be 0 or more, got {self.reach}")
        if grid > 128:
            raise NsynthError(f"a {grid}x{grid} grid has more points than a CC has values (128)")


def grid_ccs(grid: int, exact: bool) -> list[float]:
    """The CC value of each grid point of an axis: 127 j / (grid - 1), rounded to whole values unless exact."""
    points = [127 * j / (grid - 1) for j in range(grid)]
    return points if exact else [float(round(p)) for p in points]


def key_ranges(pitches: tuple[int, ...]) -> list[tuple[int, int]]:
    """(lokey, hikey) of each rendered pitch: the keys nearest to it, a tie going to the lower pitch."""
    bounds = [(a + b) // 2 for a, b in zip(pitches, pitches[1:])]
    return [(0 if i == 0 else bounds[i - 1] + 1, 127 if i == len(pitches) - 1 else bounds[i])
            for i in range(len(pitches))]


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.6f}".rstrip("0")


def velocity_opcodes(velocities: tuple[int, ...], i: int) -> list[str]:
    """Layer i sounds from just above the layer below to just below the layer above, fading linearly."""
    last = len(velocities) - 1
    ops = [f"lovel={1 if i == 0 else velocities[i - 1] + 1}", f"hivel={127 if i == last else velocities[i + 1] - 1}"]
    if i > 0:
        ops += [f"xfin_lovel={velocities[i - 1]}", f"xfin_hivel={velocities[i]}"]
    if i < last:
        ops += [f"xfout_lovel={velocities[i]}", f"xfout_hivel={velocities[i + 1]}"]
    return ops


def axis_opcodes(cc: int, j: int, points: list[float], reach: int) -> list[str]:
    """Grid point j of an axis on CC `cc`: the CC values that start it, and its fade in and out."""
    n = len(points)
    lo, hi = j - 1 - reach, j + 1 + reach
    ops = [f"locc{cc}={math.floor(points[lo]) + 1 if lo >= 0 else 0}",
           f"hicc{cc}={math.ceil(points[hi]) - 1 if hi < n else 127}"]
    if j > 0:
        ops += [f"xfin_locc{cc}={_num(points[j - 1])}", f"xfin_hicc{cc}={_num(points[j])}"]
    if j < n - 1:
        ops += [f"xfout_locc{cc}={_num(points[j])}", f"xfout_hicc{cc}={_num(points[j + 1])}"]
    return ops


def velocity_curve_opcodes(layers: Sequence[int], curve: float) -> list[str]:
    """The engine's velocity gain (velocity_gains: 1 across the layers, each levelled for its velocity; the nearest
    layer scaled by (velocity / its velocity) ** curve outside them) as amp_velcurve points (0: none)."""
    gains = velocity_gains(layers, curve)
    if np.all(gains[1:] == 1.0):
        return ["amp_veltrack=0"]
    lo, hi = min(layers), max(layers)
    points = [v for v in range(1, 128) if v <= lo or v >= hi]  # straight lines between: 1 across the layers
    return [f"amp_velcurve_{v}={_num(round(float(gains[v]), 6))}" for v in points]


def sample_name(pitch: int, velocity: int, y: int, x: int) -> str:
    return f"p{pitch:03d}_v{velocity:03d}_x{x}_y{y}.wav"


def sfz_text(bank: Bank, samples_dir: str, options: SfzOptions, config: EngineConfig = EngineConfig()) -> str:
    """The .sfz for a bank whose notes are in samples_dir (relative to the .sfz) as `sample_name` WAVs."""
    i = bank.info
    n, sr = i.grid, i.sample_rate
    points = grid_ccs(n, options.exact_cc)
    p = DEFAULT_PARAMS
    corners = ", ".join(f"{pos} {name}" for pos, name in zip(("bottom-left", "bottom-right", "top-left", "top-right"),
                                                               i.corners))
    lines = [
        f"// {bank.path.name}: exported by `nsynth bank export-sfz` from an NSynth Super bank",
        f"// corners: {corners}",
        f"// timbre grid {n}x{n}: X on CC {options.x_cc} (left..right), Y on CC {options.y_cc} (bottom..top);",
        f"// grid points at CC {', '.join(_num(v) for v in points)}",
        "<control>",
        f"set_cc{options.x_cc}=64 set_cc{options.y_cc}=64",
        f"label_cc{options.x_cc}=X (timbre grid) label_cc{options.y_cc}=Y (timbre grid)",
        "<global>",
        "loop_mode=loop_continuous xf_cccurve=gain xf_velcurve=gain",
        " ".join(velocity_curve_opcodes(i.velocities, config.velocity_curve)),
        f"ampeg_attack={attack_seconds(p['attack']):.4g} ampeg_decay={decay_seconds(p['decay']):.4g} "
        f"ampeg_sustain={100 * p['sustain']:.4g} ampeg_release={release_seconds(p['release']):.4g} "
        f"volume={20 * math.log10(p['volume']):.3f}",
    ]
    keys = key_ranges(i.pitches)
    for p_idx, pitch in enumerate(i.pitches):
        for v_idx, vel in enumerate(i.velocities):
            lines.append(" ".join([f"<group> lokey={keys[p_idx][0]} hikey={keys[p_idx][1]} pitch_keycenter={pitch}",
                                   *velocity_opcodes(i.velocities, v_idx)]))
            for y in range(n):
                for x in range(n):
                    ls, le = (int(v) for v in bank.loops[p_idx, v_idx, y, x])
                    xf = min(config.loop_crossfade, (le - ls) // 2, ls)
                    lines.append(" ".join([f"<region> sample={samples_dir}/{sample_name(pitch, vel, y, x)}",
                                           *axis_opcodes(options.x_cc, x, points, options.reach),
                                           *axis_opcodes(options.y_cc, y, points, options.reach),
                                           f"loop_start={ls} loop_end={le - 1} loop_crossfade={xf / sr:.6g}"]))
    return "\n".join(lines) + "\n"


def _write_wav(path: Path, audio, sample_rate: int) -> None:
    import soundfile as sf

    with open(path, "wb") as f:
        sf.write(f, audio, sample_rate, format="WAV", subtype="PCM_16")
        f.flush()
        os.fsync(f.fileno())


def export_sfz(bank_path: str | os.PathLike, out_dir: str | os.PathLike, *, name: str | None = None,
               options: SfzOptions = SfzOptions(), quiet: bool = False) -> Path:
    """Export a bank to out_dir/<name>.sfz + out_dir/<name>_samples/; returns the .sfz's path."""
    bank = open_bank(bank_path)
    i = bank.info
    options.check(i.grid)
    name = name or Path(os.path.abspath(bank.path)).name  # the bank's own name, not its store folder's
    out_dir = Path(out_dir)
    samples = out_dir / f"{name}_samples"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(samples)
        partial = samples.with_name(f"{samples.name}.partial-{os.getpid()}")
        partial.mkdir()
    except OSError as e:
        raise NsynthError(f"{out_dir}: cannot write there ({e.strerror or e})") from None
    total = len(i.pitches) * len(i.velocities) * i.grid * i.grid
    eta = None if quiet else ETA("export-sfz", unit="notes")
    done = 0
    try:
        for p_idx, pitch in enumerate(i.pitches):
            for v_idx, vel in enumerate(i.velocities):
                for y in range(i.grid):
                    for x in range(i.grid):
                        path = partial / sample_name(pitch, vel, y, x)
                        try:
                            _write_wav(path, bank.note(p_idx, v_idx, y, x), i.sample_rate)
                        except (OSError, RuntimeError) as e:
                            raise NsynthError(f"{path}: cannot write: {e}") from None
                        done += 1
                        if eta:
                            eta(done, total)
        replace_dir(partial, samples)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    sfz = out_dir / f"{name}.sfz"
    try:
        atomic_write_bytes(sfz, sfz_text(bank, samples.name, options).encode())
    except OSError as e:
        raise NsynthError(f"{sfz}: cannot write ({e.strerror or e})") from None
    return sfz


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bank", help="bank directory")
    parser.add_argument("-o", "--out", required=True, help="folder for <name>.sfz and <name>_samples/")
    parser.add_argument("--name", help="instrument name (default: the bank folder's name)")
    parser.add_argument("--x-cc", type=int, default=X_CC, help=f"CC that moves X (default {X_CC})")
    parser.add_argument("--y-cc", type=int, default=Y_CC, help=f"CC that moves Y (default {Y_CC})")
    parser.add_argument("--exact-cc", action="store_true",
                        help="grid points at fractional CC values (sfizz reads them): the engine's weights at "
                             "every CC value; default: whole values, as the SFZ spec asks")
    parser.add_argument("--reach", type=int, default=0,
                        help="also start the cells this many grid steps beyond the note's square, so X/Y can move "
                             "that far while it sounds (more voices)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    options = SfzOptions(x_cc=args.x_cc, y_cc=args.y_cc, exact_cc=args.exact_cc, reach=args.reach)
    sfz = export_sfz(args.bank, args.out, name=args.name, options=options, quiet=args.quiet)
    print(f"wrote {sfz} and {sfz.with_name(sfz.stem + '_samples')}/")
    return 0
