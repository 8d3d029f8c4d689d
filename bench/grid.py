"""A grid you can rest anywhere on: today's post-processing beside the new one, on one decoded bank.

Renders a small bank (default 3x3, three pitches, one velocity, 2-s notes) whose corners are four held-out GM
instruments of the Debian SoundFont (the validation split of `nsynth dataset soundfont`, never trained on), with
the bundled model, decoded as its config recommends. The decoded audio is post-processed twice, by the old
pipeline (each note shifted to its own onset, each note's loop chosen by waveform correlation alone; kept here
as the baseline) and by precompute/render/post.py, into two banks, and both are measured:

- hole_db: the worst, over every adjacent pair of cells at every pitch, of the level of their 50/50 mix against
  the mean of their two levels (powers), in the sustain part (20-60 % of the note, up to the loop's crossfade,
  after which the engine plays a note only faded into its loop's start): 0 in phase and alike, -3
  uncorrelated, lower for cells out of phase;
- hole_engine_db: the same through the engine (`nsynth render-midi`'s path), a held note with XY halfway between
  the two cells against the same note held on each cell, from the loop start to the note-off;
- attack_cut_ms: the worst of what the onset shift cut off a note's own start (the shift found by
  cross-correlating the bank note with the decoded note; the start is where the decoded note's 2-ms RMS
  envelope first reaches -40 dB of its maximum);
- seam_step_db: the worst level step across a loop's seam as the engine plays it: the last 64 ms it plays
  straight before the loop's crossfade against the loop's first 64 ms (what the crossfade bridges every loop);
- pumping_db: the worst peak-to-peak level at the loop rate of a note held on each cell through the engine (the
  20-ms level in dB from the loop start on, a sinusoid at the loop rate fitted with a line over whole loops),
  and the median over the cells; a held loop repeats every level change inside it at the loop rate, a tremolo
  of the note's own included;
- seam_clicks: clicks within 3 ms of the loop's seams (its end and its crossfade's start) in those renders that
  the bank note does not hold at that place (down to half as sharp): outliers of the second difference of what
  one period earlier does not predict (over 10x its local mean over 10 ms); note_clicks: what that detector
  finds in the bank's notes themselves; clicks_repaired: what the post-processing repaired (the same step in
  both); post_seconds: the post-processing's time (assembly of the bank).

Targets: hole_db >= -3, seam_step_db <= 1, pumping_db <= 1, no clicks. The last line is one JSON object.

    python bench/grid.py [--model models/compact] [--programs 6,68,57,92] [--pitches 36,60,72] [--seconds 2]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mido
import numpy as np
import torch
from scipy.ndimage import uniform_filter1d
from scipy.signal import correlate, correlation_lags

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from device.bank import open_bank  # noqa: E402
from nsynth.loops import default_loop, pitch_period  # noqa: E402
from device.offline import render_midi  # noqa: E402
from precompute.datasets import gm  # noqa: E402
from precompute.datasets.soundfont import VALID_FRACTION  # noqa: E402
from precompute.datasets.split import valid_instruments  # noqa: E402
from precompute.mulaw import mulaw_decode  # noqa: E402
from precompute.render import post  # noqa: E402
from precompute.render.assemble import assemble  # noqa: E402
from precompute.render.job import Job  # noqa: E402
from precompute.render.render import render_bank  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SUSTAIN = (0.2, 0.6)      # the part of a note whose level the hole figure compares
SEAM_MS = 64              # windows either side of a loop's seam
ENGINE_RATE = 48000
HOLD_LOOPS = 6            # a held note lasts past its loop start this many loops
CLICK_RATIO = 10.0
SEAM_XFADE = 4000         # the engine's default loop crossfade (source samples), whose start is a seam too
SEAM_CLICK_S = 0.003      # a click this close to a seam (source time) is the loop's

# -- today's post-processing (before issue 16), the baseline ----------------------------------------------------
OLD_ONSET_THRESHOLD = 0.1  # onset: first sample at or above this fraction of the peak ...
OLD_ONSET_AT = 16          # ... placed this many samples into the note
OLD_LOOP_REGION, OLD_LOOP_FRACTION, OLD_LOOP_STARTS, OLD_LOOP_SLACK = (0.2, 0.6), 0.21, 8, 64


def old_align_onsets(x: np.ndarray) -> np.ndarray:
    """Each note shifted so its own onset sits at OLD_ONSET_AT (zeros shifted in)."""
    out = np.zeros_like(x)
    length = x.shape[1]
    peak = np.abs(x).max(1)
    for i, row in enumerate(x):
        if peak[i] == 0:
            continue
        shift = int(np.argmax(np.abs(row) >= OLD_ONSET_THRESHOLD * peak[i])) - OLD_ONSET_AT
        if shift >= 0:
            out[i, : length - shift] = row[shift:]
        else:
            out[i, -shift:] = row[: length + shift]
    return out


def old_find_loop(x: np.ndarray, period: float) -> tuple[int, int]:
    """Each note's own loop, where the windows around start and end correlate best."""
    length = len(x)
    lo, hi = int(OLD_LOOP_REGION[0] * length), int(OLD_LOOP_REGION[1] * length)
    span = max(1, round(OLD_LOOP_FRACTION * length / period)) * period
    while span > (hi - lo) / 2 and span > period:
        span -= period
    half_w = int(np.clip(period, 32, 256))
    slack = max(int(np.ceil(period / 2)), OLD_LOOP_SLACK)
    first, last = lo + half_w, hi - half_w - int(round(span)) - slack
    if last < first or np.abs(x[lo:hi]).max() == 0:
        return default_loop(length)
    energy = np.concatenate([[0.0], np.cumsum(np.square(x, dtype=np.float64))])
    best, best_score = default_loop(length), -np.inf
    for start in np.unique(np.linspace(first, last, OLD_LOOP_STARTS).astype(int)):
        a = x[start - half_w: start + half_w]
        e0 = start + int(round(span)) - slack
        dots = np.correlate(x[e0 - half_w: e0 + 2 * slack + half_w], a, mode="valid")
        ends = np.arange(e0, e0 + len(dots))
        den = np.sqrt((a @ a) * (energy[ends + half_w] - energy[ends - half_w]))
        score = np.where(den > 0, dots / np.maximum(den, 1e-30), -1.0)
        j = int(np.argmax(score))
        if score[j] > best_score:
            best, best_score = (int(start), int(ends[j])), float(score[j])
    return best


def old_postprocess_block(audio: np.ndarray, *, pitch: int, target_rms: float, sample_rate: int
                          ) -> tuple[np.ndarray, np.ndarray, int]:
    x = post.remove_dc(audio.astype(np.float64))
    x, clicks = post.repair_clicks(x)
    x = post.match_level(post.apply_fades(old_align_onsets(x), sample_rate), target_rms)
    period = pitch_period(pitch, sample_rate)
    loops = np.array([old_find_loop(row, period) for row in x], dtype=np.int64).reshape(len(x), 2)
    return post.to_int16(x), loops, clicks


# -- measurements -------------------------------------------------------------------------------------------------
def pairs(n: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Adjacent cells (y, x) of an n x n grid, horizontal and vertical."""
    return ([((y, x), (y, x + 1)) for y in range(n) for x in range(n - 1)]
            + [((y, x), (y + 1, x)) for y in range(n - 1) for x in range(n)])


def power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64)))


def db(ratio: float) -> float:
    return float(10 * np.log10(max(ratio, 1e-12)))


def hole_db(samples: np.ndarray, loops: np.ndarray) -> float:
    """samples [P, V, N, N, L], loops [P, V, N, N, 2] -> the worst 50/50 mix of adjacent cells against their mean
    power, in dB, over the sustain part the engine plays straight (up to its loop crossfade: the samples
    after it are heard only faded into the loop's start, which hole_engine_db measures)."""
    length = samples.shape[-1]
    worst = 0.0
    for block, loop in zip(samples.reshape(-1, *samples.shape[2:]), loops.reshape(-1, *loops.shape[2:])):
        ls, le = (int(v) for v in loop[0, 0])
        straight = le - min(SEAM_XFADE, (le - ls) // 2, ls)
        part = slice(int(SUSTAIN[0] * length), min(int(SUSTAIN[1] * length), straight))
        for a, b in pairs(block.shape[0]):
            xa, xb = block[a][part], block[b][part]
            worst = min(worst, db(power((xa + xb) / 2) / ((power(xa) + power(xb)) / 2)))
    return worst


def note_shift(x: np.ndarray, y: np.ndarray) -> int:
    """How far the bank note y was moved earlier than the decoded note x (samples, >= 0; pad x to see moves
    later): the lag where the head of y (its first tenth, before any loop compensation) correlates best,
    normalised, with x."""
    head = y[: len(y) // 10]
    lags = correlation_lags(len(x), len(head), mode="valid")  # x[lag: lag + len(head)] against head
    c = correlate(x, head, mode="valid", method="fft")
    e = np.concatenate([[0.0], np.cumsum(x * x)])
    c /= np.sqrt(np.maximum(e[len(head):] - e[: len(e) - len(head)], 1e-30))
    return int(lags[np.argmax(c[: len(x) // 4])])


def attack_cut_ms(decoded: np.ndarray, samples: np.ndarray, sr: int) -> float:
    """The worst cut into a note's own start (ms): [P, V, N, N, L] decoded and bank notes. The cut is the shift
    (note_shift) past the decoded note's start, where its 2-ms RMS envelope first reaches -40 dB of its
    maximum."""
    worst = 0.0
    for x, y in zip(decoded.reshape(-1, decoded.shape[-1]), samples.reshape(-1, samples.shape[-1])):
        x = x - x.mean()
        pad = OLD_ONSET_AT  # the old pipeline moves a note with an onset before this later
        shift = note_shift(np.concatenate([np.zeros(pad), x]), y) - pad
        env = np.sqrt(uniform_filter1d(x * x, int(0.002 * sr)))
        start = int(np.argmax(env >= 0.01 * env.max()))
        worst = max(worst, (shift - start) * 1000.0 / sr)
    return worst


def seam_step_db(samples: np.ndarray, loops: np.ndarray, sr: int) -> tuple[float, float]:
    """(worst, median) |level step| across the loops' seams, in dB, as the engine plays them: the last SEAM_MS it
    plays straight before a loop's crossfade against the loop's first SEAM_MS (what the crossfade bridges, every
    loop; the samples after the crossfade's start are heard only faded into those before the loop's start)."""
    w = int(SEAM_MS * sr / 1000)
    steps = []
    for x, (s, e) in zip(samples.reshape(-1, samples.shape[-1]), loops.reshape(-1, 2)):
        straight = e - min(SEAM_XFADE, (e - s) // 2, s)
        steps.append(abs(db(power(x[s: s + w]) / max(power(x[straight - w: straight]), 1e-20))))
    return max(steps), float(np.median(steps))


def _song(path: Path, pitch: int, velocity: int, hold_s: float) -> None:
    mid = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    ticks = int(round(mido.second2tick(hold_s, 480, 500000)))
    track += [mido.Message("note_on", note=pitch, velocity=velocity, time=0),
              mido.Message("note_off", note=pitch, velocity=0, time=ticks)]
    mid.save(path)


def level_db(audio: np.ndarray, frame: int, hop: int) -> tuple[np.ndarray, np.ndarray]:
    """Mono audio -> (frame centres in samples, level in dB of frames `frame` long every `hop`)."""
    at = np.arange(0, len(audio) - frame + 1, hop)
    e = np.concatenate([[0.0], np.cumsum(np.square(audio, dtype=np.float64))])
    return at + frame / 2, 10 * np.log10((e[at + frame] - e[at]) / frame + 1e-12)


def click_hits(audio: np.ndarray, sr: int, f0: float, ratio: float = CLICK_RATIO) -> np.ndarray:
    """Sample indices of clicks in a note at pitch f0: outliers (ratio x the local mean over 10 ms) of the
    second difference of what one period earlier does not predict (a sharp but periodic waveform is no click),
    one per 1 ms."""
    t = np.arange(len(audio), dtype=np.float64)
    r = audio - np.interp(t - sr / f0, t, audio, left=0.0)
    d2 = np.abs(np.diff(r, 2))
    hits = np.flatnonzero((d2 > ratio * uniform_filter1d(d2, int(0.01 * sr))) & (d2 > 1e-4)) + 1
    return hits[np.diff(hits, prepend=-sr) > sr // 1000]


def loop_rate(level: np.ndarray, src: np.ndarray, loop: tuple[int, int]) -> complex:
    """A held note's level (dB at source positions src) from the loop start on -> its component at the loop
    rate (complex amplitude), fitted with a line over whole loops."""
    ls, le = loop
    phase = (src - ls) / (le - ls)
    use = (phase >= 0) & (phase < np.floor(phase.max()))
    phase = phase[use]
    basis = np.stack([np.ones_like(phase), phase, np.cos(2 * np.pi * phase), np.sin(2 * np.pi * phase)], 1)
    coef = np.linalg.lstsq(basis, level[use], rcond=None)[0]
    return complex(coef[2], coef[3])


class EngineRuns:
    """Held notes through the engine's offline path (device.offline.render_midi), one bank."""

    PARAMS = {"attack": 0.0, "decay": 0.0, "sustain": 1.0, "release": 0.0, "volume": 1.0}

    def __init__(self, bank_path: Path, tmp: Path):
        self.bank_path, self.tmp = bank_path, tmp
        self.bank = open_bank(bank_path)
        self.sr = self.bank.info.sample_rate

    def hold(self, p_idx: int, v_idx: int, xy: tuple[float, float], loop: tuple[int, int]) -> np.ndarray:
        """The held note's mono output (note-off after HOLD_LOOPS loops past the loop start)."""
        info = self.bank.info
        ls, le = loop
        hold_s = (ls + (HOLD_LOOPS + 0.5) * (le - ls)) / self.sr  # note-off away from a seam
        song = self.tmp / "held.mid"
        _song(song, info.pitches[p_idx], info.velocities[v_idx], hold_s)
        out = render_midi(self.bank_path, song, self.tmp / "held.wav", xy=[xy], params=self.PARAMS, tail_s=0.0)
        return out[: int((hold_s - 0.01) * ENGINE_RATE), 0].astype(np.float64)  # before the note-off

    def cells(self) -> list[dict]:
        """Per held note (every cell, pitch and velocity): pumping, clicks at the seams (not in the note itself),
        and the holes halfway to its right and upper neighbours."""
        info, n = self.bank.info, self.bank.info.grid
        ratio = ENGINE_RATE / self.sr
        rows = []
        for p_idx, pitch in enumerate(info.pitches):
            f0 = 440.0 * 2 ** ((pitch - 69) / 12)
            for v_idx in range(len(info.velocities)):
                loops = self.bank.loops[p_idx, v_idx]
                held = {}
                for y in range(n):
                    for x in range(n):
                        ls, le = loop = tuple(int(v) for v in loops[y, x])
                        audio = held[y, x] = self.hold(p_idx, v_idx, (x / (n - 1), y / (n - 1)), loop)
                        centres, level = level_db(audio, int(0.02 * ENGINE_RATE), int(0.005 * ENGINE_RATE))
                        note = self.bank.samples[p_idx, v_idx, y, x].astype(np.float64) / 32767
                        rows.append({"pitch": pitch, "velocity": info.velocities[v_idx], "cell": (y, x),
                                     "loop": loop, "pumping": 2 * abs(loop_rate(level, centres / ratio, loop)),
                                     "holes": [], "clicks": seam_clicks(audio, note, loop, f0, self.sr)})
                cell_rows = rows[-n * n:]
                for a, b in pairs(n):
                    mid = ((a[1] + b[1]) / 2 / (n - 1), (a[0] + b[0]) / 2 / (n - 1))
                    both = self.hold(p_idx, v_idx, mid, tuple(int(v) for v in loops[a]))
                    part = slice(int(min(loops[a][0], loops[b][0]) * ratio), min(len(both), len(held[a]), len(held[b])))
                    hole = db(power(both[part]) / ((power(held[a][part]) + power(held[b][part])) / 2))
                    cell_rows[a[0] * n + a[1]]["holes"].append(hole)
        return rows


def seam_clicks(audio: np.ndarray, note: np.ndarray, loop: tuple[int, int], f0: float, sr: int) -> int:
    """Clicks in a held note's output (48 kHz, at the note's own pitch) within SEAM_CLICK_S of its loop's seams
    (the wrap and the crossfade's start, at the engine's default crossfade) that are not clicks of the bank
    note itself (16 kHz) read at that place (or, in the crossfade, one loop earlier)."""
    ls, le = loop
    ll, xf = le - ls, min(SEAM_XFADE, (le - ls) // 2, ls)
    v = click_hits(audio, ENGINE_RATE, f0) * sr / ENGINE_RATE  # virtual read positions
    phys = np.where(v >= le, ls + (v - ls) % ll, v)
    own = click_hits(note, sr, f0, CLICK_RATIO / 2).astype(np.float64)  # the note's own, down to half as sharp
    if own.size:
        near = lambda q: np.min(np.abs(q[:, None] - own[None]), 1) <= 2  # noqa: E731
        ours = near(phys) | ((phys >= le - xf) & near(phys - ll))
        phys = phys[~ours]
    seam = np.minimum(np.abs(phys - le), np.abs(phys - (le - xf)))
    seam = np.minimum(seam, np.abs(phys - ls))
    return int(np.sum(seam <= SEAM_CLICK_S * sr))


def note_clicks(samples: np.ndarray, pitches: list[int], sr: int) -> int:
    """Clicks in the bank's notes themselves (the same detector): [P, V, N, N, L]."""
    return sum(len(click_hits(note.astype(np.float64), sr, 440.0 * 2 ** ((pitch - 69) / 12)))
               for pitch, block in zip(pitches, samples) for note in block.reshape(-1, samples.shape[-1]))


# -- the run ------------------------------------------------------------------------------------------------------
def held_out_programs() -> list[int]:
    names = {gm.gm_instrument_str(0, p): p for p in gm.DEFAULT_PROGRAMS}
    return sorted(names[s] for s in valid_instruments(names, VALID_FRACTION))


def decoded_audio(job: Job) -> np.ndarray:
    """The job's decoded notes as float [P, V, N, N, L] (before any post-processing)."""
    plan = job.load_plan()
    codes = np.concatenate([job.read_shard(plan, i) for i in range(plan.n_shards)])
    audio = mulaw_decode(torch.from_numpy(codes.astype(np.int64))).numpy()
    return np.stack([np.stack([audio[list(plan.block_notes(p, v))][plan.cell_index]
                               for v in range(len(plan.velocities))]) for p in range(len(plan.pitches))])


def engine_figures(rows: list[dict], show: bool) -> dict:
    if show:
        for r in rows:
            print(f"  pitch {r['pitch']} cell {r['cell']} loop {r['loop']}: pumping {r['pumping']:.2f} dB, seam "
                  f"clicks {r['clicks']}, holes " + " ".join(f"{h:.1f}" for h in r["holes"]), file=sys.stderr)
    pumping = [r["pumping"] for r in rows]
    return {"pumping_db": round(max(pumping), 2), "pumping_median_db": round(float(np.median(pumping)), 2),
            "seam_clicks": sum(r["clicks"] for r in rows),
            "hole_engine_db": round(min(min(r["holes"], default=0.0) for r in rows), 2)}


def measure(bank_path: Path, decoded: np.ndarray, tmp: Path, cells: bool) -> dict:
    bank = open_bank(bank_path, verify=True)
    sr = bank.info.sample_rate
    samples = np.asarray(bank.samples, dtype=np.float64) / 32767
    worst_step, median_step = seam_step_db(samples, bank.loops, sr)
    return {"hole_db": round(hole_db(samples, bank.loops), 2),
            "attack_cut_ms": round(attack_cut_ms(decoded, samples, sr), 1),
            "seam_step_db": round(worst_step, 2), "seam_step_median_db": round(median_step, 2),
            **engine_figures(EngineRuns(bank_path, tmp).cells(), cells),
            "note_clicks": note_clicks(samples, bank.info.pitches, sr)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "models" / "compact"))
    ap.add_argument("--programs", default="6,68,57,92",
                    help="four GM programs of the held-out split, bottom-left, bottom-right, top-left, top-right "
                         "(default: harpsichord, oboe, trombone, bowed pad)")
    ap.add_argument("--soundfont", default=None, help="SoundFont for the corners (default: Debian's TimGM6mb)")
    ap.add_argument("--pitches", default="36,60,72")
    ap.add_argument("--velocity", type=int, default=100)
    ap.add_argument("--grid", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--keep", default=None, help="keep the banks and the decoded codes in this folder (a second "
                                                 "run with the same settings post-processes them again)")
    ap.add_argument("--cells", action="store_true", help="print every held note's figures (stderr)")
    args = ap.parse_args()
    programs = [int(p) for p in args.programs.split(",")]
    held_out = held_out_programs()
    if len(programs) != 4 or not set(programs) <= set(held_out):
        sys.exit(f"--programs: four of the held-out programs {held_out}")
    sf = f"{args.soundfont}:" if args.soundfont else ""
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(args.keep) if args.keep else Path(tmp_name)
        tmp.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        render_bank([f"sf2:{sf}{p}" for p in programs], args.model, tmp / "render", grid=args.grid,
                    pitches=[int(p) for p in args.pitches.split(",")], velocities=[args.velocity],
                    length=args.seconds, threads=args.threads, keep_job=True, batch=64)
        render_s = time.monotonic() - t0
        job = Job(tmp / "render.job")  # the decoded codes (kept: --keep runs again without decoding)
        info = open_bank(tmp / "render").info
        steps = {}
        for name, fn in (("old", old_postprocess_block), ("new", post.postprocess_block)):
            counted, t0 = [], time.monotonic()

            def counting(audio, fn=fn, **kw):
                out = fn(audio, **kw)
                counted.append(out[2])
                return out
            assemble(job, job.load_plan(), tmp / name, model=info.model, config_hash=info.config_hash,
                     extra=info.extra, post=counting)
            steps[name] = {"clicks_repaired": sum(counted), "post_seconds": round(time.monotonic() - t0, 1)}
        decoded = decoded_audio(job)
        rows = {}
        for name in ("old", "new"):
            if args.cells:
                print(f"{name}:", file=sys.stderr)
            rows[name] = {**measure(tmp / name, decoded, tmp, args.cells), **steps[name]}
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    keys = list(rows["old"])
    print(f"{'figure':<22}{'old':>10}{'new':>10}")
    for k in keys:
        print(f"{k:<22}{rows['old'][k]:>10}{rows['new'][k]:>10}")
    print(f"corners: GM programs {programs} ({', '.join(info.corners)}); {args.grid}x{args.grid}, pitches "
          f"{args.pitches}, velocity {args.velocity}, {args.seconds} s; decode {render_s:.0f} s; load: {load}")
    print(json.dumps({"model": str(args.model), "programs": programs, "grid": args.grid, "pitches": args.pitches,
                      "velocity": args.velocity, "seconds": args.seconds, "decode_seconds": round(render_s, 1),
                      "old": rows["old"], "new": rows["new"]}))


if __name__ == "__main__":
    main()
