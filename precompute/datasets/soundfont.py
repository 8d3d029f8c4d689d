"""`nsynth dataset soundfont`: an NSynth-style dataset rendered from a SoundFont.

Layout written into DIR:
  DIR/train/  examples.json + audio/<note_str>.wav   (an NSynth json/wav root: `load_examples(DIR / "train")`)
  DIR/valid/  the same, for the validation instruments (split by instrument, see precompute.datasets.split)
  DIR/render.json  what the renders depend on (SoundFont hash, gain, split settings) and the notes found silent
Notes are 4 s at 16 kHz (held 3 s, released 1 s), 16-bit mono. A note the preset does not sound is not
written; it is listed in render.json so that re-runs skip it. Re-running renders only notes whose WAV is
missing; a re-run with other render settings into the same DIR is refused rather than mixed.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from tqdm import tqdm

from nsynth.errors import NsynthError
from nsynth.fsutil import atomic_write_bytes
from precompute.datasets import gm
from precompute.datasets.fluid import DEFAULT_SOUNDFONT, GAIN, HOLD, NoteRenderer
from precompute.datasets.nsynth import (
    AUDIO_DIR,
    EXAMPLES_JSON,
    PITCHES,
    VELOCITIES,
    example_entry,
    note_str,
    read_examples_json,
    write_examples_json,
    write_note,
)
from precompute.datasets.split import SPLITS, valid_instruments

RENDER_JSON = "render.json"
VALID_FRACTION = 0.1


@dataclass
class RenderSummary:
    rendered: int = 0          # WAVs written by this run
    kept: int = 0              # notes already on disk
    moved: int = 0             # notes moved between splits (split settings unchanged, instrument set grew)
    silent: int = 0            # notes the preset does not sound (newly found + known from earlier runs)
    clipped: int = 0           # rendered notes that reached full scale
    missing_presets: list[tuple[int, int]] = field(default_factory=list)
    notes: dict[str, int] = field(default_factory=dict)  # split -> notes in its examples.json

    def report(self) -> str:
        lines = [f"rendered {self.rendered}, kept {self.kept}, moved {self.moved}, "
                 f"skipped {self.silent} silent notes; "
                 + ", ".join(f"{s}: {n} notes" for s, n in self.notes.items())]
        if self.clipped:
            lines.append(f"warning: {self.clipped} notes reached full scale (lower --gain)")
        if self.missing_presets:
            shown = ", ".join(f"{b}:{p}" for b, p in self.missing_presets[:10])
            lines.append(f"skipped {len(self.missing_presets)} programs absent from the SoundFont: {shown}"
                         + (" ..." if len(self.missing_presets) > 10 else ""))
        return "\n".join(lines)


@dataclass(frozen=True)
class _Task:
    key: str
    bank: int
    program: int
    pitch: int
    velocity: int
    wav: Path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _load_render_json(out: Path, settings: dict) -> set[str]:
    """Silent notes recorded by earlier runs; refuses a DIR rendered with other settings."""
    path = out / RENDER_JSON
    if not path.is_file():
        return set()
    try:
        old = json.loads(path.read_text())
        old_settings, silent = old["settings"], set(old["silent"])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise NsynthError(f"{path}: unreadable ({e!r}); remove it or pick another output folder") from None
    if old_settings != settings:
        diff = sorted(k for k in settings.keys() | old_settings.keys() if settings.get(k) != old_settings.get(k))
        raise NsynthError(f"{path}: {out} was rendered with other settings ({', '.join(diff)}); "
                          "use another output folder or the same settings")
    return silent


def _write_render_json(out: Path, settings: dict, silent: set[str]) -> None:
    atomic_write_bytes(out / RENDER_JSON, json.dumps({"settings": settings, "silent": sorted(silent)}, indent=1).encode())


_worker: NoteRenderer | None = None


def _init_worker(soundfont: str, gain: float) -> None:
    global _worker
    _worker = NoteRenderer(soundfont, gain=gain)


def _render_task(task: _Task, renderer: NoteRenderer | None = None) -> tuple[_Task, str]:
    audio = (renderer or _worker).render(task.bank, task.program, task.pitch, task.velocity)
    if audio is None:
        return task, "silent"
    write_note(task.wav, audio)
    return task, "clipped" if abs(audio).max() >= 1.0 else "ok"


def _existing_examples(root: Path) -> dict[str, dict]:
    """examples.json of an earlier run, less the notes whose WAV has since been deleted."""
    if not (root / EXAMPLES_JSON).is_file():
        return {}
    return {k: r for k, r in read_examples_json(root).items() if (root / AUDIO_DIR / f"{k}.wav").is_file()}


def _run(renderer: NoteRenderer, tasks: list[_Task], jobs: int | None, progress: bool):
    """Yield (task, status) as notes finish: in this process for one job, else in a pool of `jobs` workers."""
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(tasks) or 1))
    with tqdm(total=len(tasks), unit="note", disable=not progress, desc="rendering", file=sys.stderr) as bar:
        if jobs == 1:
            for task in tasks:
                yield _render_task(task, renderer)
                bar.update()
            return
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(jobs, _init_worker, (str(renderer.path), renderer.gain)) as pool:  # exit terminates
            for result in pool.imap_unordered(_render_task, tasks, chunksize=16):
                yield result
                bar.update()


def _entry(bank: int, program: int, pitch: int, velocity: int) -> tuple[str, dict]:
    inst = gm.gm_instrument_str(bank, program)
    key = note_str(inst, pitch, velocity)
    return key, example_entry(key, inst, gm.family(bank, program), gm.SOURCE, gm.instrument_index(bank, program),
                              pitch, velocity)


def render_soundfont_dataset(soundfont: str | os.PathLike, out_dir: str | os.PathLike, *,
                             programs: Sequence[tuple[int, int]] | None = None,
                             pitches: Iterable[int] = PITCHES, velocities: Iterable[int] = VELOCITIES,
                             valid_fraction: float = VALID_FRACTION, seed: int = 0, gain: float = GAIN,
                             jobs: int | None = None, progress: bool = True) -> RenderSummary:
    """Render (bank, program) presets x pitches x velocities into DIR/train and DIR/valid; returns counts."""
    soundfont, out = Path(soundfont), Path(out_dir)
    programs = list(programs or [(0, p) for p in gm.DEFAULT_PROGRAMS])
    pitches, velocities = sorted(set(pitches)), sorted(set(velocities))
    bad = [p for p in pitches if not 0 <= p <= 127] + [v for v in velocities if not 1 <= v <= 127]
    if bad or not pitches or not velocities:
        raise NsynthError(f"pitches must lie in 0-127 and velocities in 1-127 (got {bad or 'none'})")
    if not 0.0 <= valid_fraction < 1.0:
        raise NsynthError(f"--valid-fraction must be in [0, 1), got {valid_fraction}")
    with NoteRenderer(soundfont, gain=gain) as renderer:
        present = [bp for bp in programs if renderer.has_preset(*bp)]
        summary = RenderSummary(missing_presets=[bp for bp in programs if bp not in present])
        if not present:
            raise NsynthError(f"{soundfont}: none of the requested programs exist in it")
        _render_presets(renderer, out, present, pitches, velocities, valid_fraction, seed, jobs, progress, summary)
    return summary


def _render_presets(renderer: NoteRenderer, out: Path, present: list[tuple[int, int]], pitches: list[int],
                    velocities: list[int], valid_fraction: float, seed: int, jobs: int | None, progress: bool,
                    summary: RenderSummary) -> None:
    soundfont, gain = renderer.path, renderer.gain
    settings = {"soundfont_sha256": _sha256(soundfont), "gain": gain, "hold_samples": HOLD,
                "valid_fraction": valid_fraction, "seed": seed}
    out.mkdir(parents=True, exist_ok=True)
    silent = _load_render_json(out, settings)

    for stale in out.glob(f"*/{AUDIO_DIR}/.*.tmp"):  # left by a run that was killed mid-write
        stale.unlink()
    examples = {s: _existing_examples(out / s) for s in SPLITS}
    wanted = {}
    for bank, program in present:
        for pitch in pitches:
            for velocity in velocities:
                key, rec = _entry(bank, program, pitch, velocity)
                wanted[key] = (rec, (bank, program, pitch, velocity))
    instruments = {r["instrument_str"] for ex in examples.values() for r in ex.values()}
    instruments |= {rec["instrument_str"] for rec, _ in wanted.values()}
    valid = valid_instruments(instruments, valid_fraction, seed)

    def side(rec: dict) -> str:
        return "valid" if rec["instrument_str"] in valid else "train"

    # Earlier notes whose instrument changed side (the only-one-side guard of the split) move across.
    for split in SPLITS:
        for key, rec in list(examples[split].items()):
            if side(rec) != split:
                dest = out / side(rec) / AUDIO_DIR / f"{key}.wav"
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(out / split / AUDIO_DIR / f"{key}.wav", dest)
                examples[side(rec)][key] = examples[split].pop(key)
                summary.moved += 1

    tasks = []
    for key, (rec, args) in wanted.items():
        split = side(rec)
        wav = out / split / AUDIO_DIR / f"{key}.wav"
        if wav.is_file():
            examples[split][key] = rec
            summary.kept += 1
        elif key in silent:
            summary.silent += 1
        else:
            tasks.append((_Task(key, *args, wav), rec, split))

    by_key = {t.key: (rec, split) for t, rec, split in tasks}
    try:
        for task, status in _run(renderer, [t for t, _, _ in tasks], jobs, progress):
            if status == "silent":
                silent.add(task.key)
                summary.silent += 1
                continue
            rec, split = by_key[task.key]
            examples[split][task.key] = rec
            summary.rendered += 1
            summary.clipped += status == "clipped"
    finally:  # whatever was written so far is recorded, also on Ctrl-C
        for split in SPLITS:
            write_examples_json(out / split, examples[split])
        _write_render_json(out, settings, silent)
    summary.notes = {s: len(examples[s]) for s in SPLITS}


def parse_ints(text: str, what: str) -> list[int]:
    """'21-108', '24-84:4' (inclusive range with a step) or '25,50,75' -> list of ints."""
    out: list[int] = []
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            span, _, step = part.partition(":")
            lo, _, hi = span.partition("-")
            out += range(int(lo), int(hi or lo) + 1, int(step or 1))
    except ValueError:
        raise NsynthError(f"bad {what} {text!r}: expected numbers and ranges like 21-108,110 or 24-84:4") from None
    return out


def run(args: argparse.Namespace) -> int:
    try:
        programs = gm.parse_programs(args.programs) if args.programs else None
    except ValueError as e:
        raise NsynthError(f"--programs: {e}") from None
    summary = render_soundfont_dataset(
        args.soundfont, args.output, programs=programs, pitches=parse_ints(args.pitches, "pitches"),
        velocities=parse_ints(args.velocities, "velocities"), valid_fraction=args.valid_fraction,
        seed=args.seed, gain=args.gain, jobs=args.jobs, progress=not args.quiet)
    print(summary.report())
    return 0


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("soundfont", nargs="?", default=str(DEFAULT_SOUNDFONT),
                        help=f"SoundFont (.sf2) to render (default {DEFAULT_SOUNDFONT})")
    parser.add_argument("-o", "--output", required=True, help="dataset folder (train/, valid/, render.json)")
    parser.add_argument("--programs", help="GM programs: N, N-M, BANK:N, comma-separated "
                                           "(default 0-111, the melodic GM instruments)")
    parser.add_argument("--pitches", default="21-108", help="MIDI pitches (default 21-108)")
    parser.add_argument("--velocities", default="25,50,75,100,127", help="velocities (default NSynth's five)")
    parser.add_argument("--valid-fraction", type=float, default=VALID_FRACTION,
                        help=f"fraction of instruments held out for validation (default {VALID_FRACTION})")
    parser.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    parser.add_argument("--gain", type=float, default=GAIN, help=f"FluidSynth gain (default {GAIN})")
    parser.add_argument("-j", "--jobs", type=int, help="worker processes (default: all cores)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)
