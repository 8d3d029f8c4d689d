"""Do a bank's corners keep their instruments? Timbre of rendered banks against their corner originals.

Renders a small bank (3x3 grid, pitches 36/48/60/72, one velocity, 2-s notes) from four held-out instruments
(never trained on: the validation split of the GM programs, rendered from FluidR3_GM when installed, else
TimGM6mb), chosen automatically as the four of them that differ most in timbre among those that sustain and play
in tune (YIN within 50 cents) at every pitch (an instrument that does not play the pitch asked for, as FluidR3_GM's
orchestra hit, which sounds one pitch at every key, cannot show whether a bank is in tune), with the model and with
the baseline model (today's weights, kept under models/history/), and measures in one run:

  timbre_corner  mean over corner cells and pitches of the timbre distance (precompute.quality.timbre_distance:
                 mean |dB| over 64 mel bands of loudness-normalised sustain profiles) to the corner's original
  separation     mean pairwise timbre distance among the four bank corners / the same among the originals
  hnr_gap        originals' mean harmonic-to-noise ratio minus the bank corners' (dB)
  pitch_all      fraction of all cells within 50 cents of their pitch (YIN, as bench/quality.py)
  brightness     spectral centroid / f0 of each corner (originals beside)
  embedding_ratio  how well the encoder separates the four instruments: the mean distance between two corners'
                 mean sustain embeddings at a pitch over the mean spread of one note's frames about its mean
  family_probe   does the embedding carry the instrument? A linear probe (ridge, one class per GM family of 8
                 programs) fitted on the mean sustain embeddings of every training program's notes, scored on the
                 held-out programs' notes; beside it the same probe on the originals' mel profiles (what the
                 audio itself tells) and the majority family's share (chance)
  source rows    for a model with a harmonic source: that source alone (the sum of harmonics whose amplitudes it
                 predicts from each corner's own embeddings, plus its noise bands if it has them; no decoder),
                 measured as the bank corners are; "analysed_source": the same source with its amplitudes and
                 noise levels analysed from the originals themselves (what the source can hold at best)
  model_predicted  for a model with a harmonic source: its bank rendered with the source's levels predicted from
                 each cell's embeddings (`nsynth render --source predicted`) rather than analysed from the corners
                 (the default)
  pitch_originals  the fraction of the originals themselves that YIN finds within 50 cents
  conditioning_pull  does the decoder follow its conditioning? For each two corners A, B at a pitch: how much
                 nearer B's original the cell decoded from B's embeddings is than the one decoded from A's, as a
                 fraction of how far apart the two originals are (1: it moves all the way; 0: it ignores them)

and the same for a sine at the pitch. The last line is one JSON object.

    python bench/timbre.py [--model models/compact] [--baseline models/history/sine8] [--threads 1]
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from device.bank import open_bank  # noqa: E402
from precompute.corners import load_corners  # noqa: E402
from precompute.datasets.fluid import DEFAULT_SOUNDFONT  # noqa: E402
from precompute.datasets.gm import gm_instrument_str  # noqa: E402
from precompute.datasets.split import valid_instruments  # noqa: E402
from precompute.quality import (cents_off, estimate_f0, harmonic_to_noise, mel_profile,  # noqa: E402
                                timbre_distance)

ROOT = Path(__file__).resolve().parents[1]
FLUID = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
SR = 16000


def held_out_programs(programs=range(112)) -> list[int]:
    valid = valid_instruments([gm_instrument_str(0, p) for p in programs], 0.1)
    return [p for p in programs if gm_instrument_str(0, p) in valid]


def brightness(x: np.ndarray, pitch: int) -> float:
    """Spectral centroid of the sustain over f0."""
    a, b = int(0.25 * SR), int(1.5 * SR)
    spec = np.abs(np.fft.rfft(x[a:b] * np.hanning(b - a))) ** 2
    freqs = np.fft.rfftfreq(b - a, 1 / SR)
    return float((freqs * spec).sum() / max(spec.sum(), 1e-30) / (440.0 * 2 ** ((pitch - 69) / 12)))


def sustained(x: np.ndarray) -> bool:
    """The note still sounds in its sustain part (at most 30 dB below its peak)."""
    a, b = int(0.25 * SR), int(1.5 * SR)
    return np.sqrt(np.mean(x[a:b] ** 2)) > np.abs(x).max() * 10 ** (-30 / 20)


def choose_corners(soundfont: Path, pitches: list[int], velocity: int) -> tuple[list[str], np.ndarray]:
    """The four held-out programs (of those that sustain at every pitch) whose notes differ most in timbre ->
    (corner specs, their audio [4, pitch, samples])."""
    specs = [f"sf2:{soundfont}:{p}" for p in held_out_programs()]
    loaded = {s: load_corners([s], pitches=pitches, velocities=[velocity], length=2 * SR, sample_rate=SR)[0]
              for s in specs}
    ok = [s for s in specs if all(sustained(x) and abs(cents_off(estimate_f0(x, SR), pitch)) <= 50
                                  for x, pitch in zip(loaded[s].audio[:, 0], pitches))]
    profiles = {s: [mel_profile(x) for x in loaded[s].audio[:, 0]] for s in ok}

    def spread(four):
        return np.mean([timbre_distance(a, b) for s, t in itertools.combinations(four, 2)
                        for a, b in zip(profiles[s], profiles[t])])

    best = max(itertools.combinations(ok, 4), key=spread)
    return list(best), np.stack([loaded[s].audio[:, 0] for s in best])


def family_notes(soundfont: Path, programs: list[int], pitches: list[int], velocity: int) -> tuple[np.ndarray, np.ndarray]:
    """Every program's notes -> (audio [program * pitch, samples], GM family [program * pitch])."""
    audio = [load_corners([f"sf2:{soundfont}:{p}"], pitches=pitches, velocities=[velocity], length=2 * SR,
                          sample_rate=SR)[0].audio[:, 0] for p in programs]
    return np.concatenate(audio), np.repeat(np.array(programs) // 8, len(pitches))


def probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, ridge: float = 1.0) -> float:
    """A linear classifier (one-vs-rest ridge regression onto one-hot classes, features standardised on the
    training set) -> accuracy on the test set."""
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-9
    a, b = (train_x - mu) / sd, (test_x - mu) / sd
    a, b = (np.hstack([m, np.ones((len(m), 1))]) for m in (a, b))
    classes = np.unique(train_y)
    onehot = (train_y[:, None] == classes[None]).astype(np.float64)
    w = np.linalg.solve(a.T @ a + ridge * np.eye(a.shape[1]), a.T @ onehot)
    return float(np.mean(classes[np.argmax(b @ w, 1)] == test_y))


def encode(net, audio: np.ndarray) -> np.ndarray:
    """audio [..., samples] -> the model's embeddings [..., frames, E], 32 notes at a time."""
    import torch

    from precompute.mulaw import mulaw_encode

    flat = audio.reshape(-1, audio.shape[-1])
    with torch.no_grad():
        out = [net.encode(mulaw_encode(torch.from_numpy(c.astype(np.float32)))).numpy()
               for c in np.array_split(flat, max(1, len(flat) // 32))]
    emb = np.concatenate(out)
    return emb.reshape(*audio.shape[:-1], *emb.shape[1:])


def sustain_frames(net) -> slice:
    """The embedding frames of the sustain part (0.25 - 1.5 s)."""
    return slice(int(0.25 * SR) // net.cfg.hop, int(1.5 * SR) // net.cfg.hop)


def log_profiles(audio: np.ndarray) -> np.ndarray:
    return np.stack([10 * np.log10(np.maximum(mel_profile(x), 1e-9)) for x in audio])


def render(corners: list[str], model: str, out: Path, pitches: list[int], velocity: int, threads: int,
           source: str = "analysed") -> np.ndarray:
    """Render a 3x3 bank -> float cells [pitch, y, x, samples]."""
    from precompute.render.render import render_bank

    render_bank(corners, model, out, grid=3, pitches=pitches, velocities=[velocity], length=2.0, threads=threads,
                quiet=True, source=source)
    return open_bank(out).samples[:, 0].astype(np.float64) / 32768.0


def source_corners(net, emb: np.ndarray, pitches: list[int], samples: int,
                   originals: np.ndarray | None = None) -> np.ndarray | None:
    """The model's source alone (harmonics, and noise bands if it has them; no decoder) from each corner's own
    embeddings emb [4, pitch, frames, E] -> cells [pitch, 2, 2, samples] laid out as a 2x2 bank's corners (None for
    a model without a source). With the originals [4, pitch, samples]: the source analysed from them instead
    (NoteExcitation.analysed), what the source can hold at best."""
    import torch

    if not net.cfg.source_bands:
        return None
    cells = np.zeros((len(pitches), 2, 2, samples))
    with torch.no_grad():
        for p, pitch in enumerate(pitches):
            note = net.decoder.note_excitation(torch.full((4,), pitch), torch.from_numpy(emb[:, p]))
            if originals is not None:
                note = note.analysed(torch.from_numpy(originals[:, p]))
            src = note.source(torch.arange(samples))
            for c, (y, x) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):  # BL, BR, TL, TR, as measure() reads
                cells[p, y, x] = src[c].numpy()
    return cells


def embedding_ratio(net, emb: np.ndarray) -> float:
    """The corners' embeddings emb [4, pitch, frames, E] -> between-corner distance of mean sustain embeddings /
    within-note spread."""
    emb = emb[:, :, sustain_frames(net)]
    means = emb.mean(2)  # [corner, pitch, E]
    within = np.mean(np.linalg.norm(emb - means[:, :, None], axis=-1))
    between = np.mean([np.linalg.norm(means[i] - means[j], axis=-1).mean() for i, j in itertools.combinations(range(4), 2)])
    return float(between / within)


def measure(cells: np.ndarray | None, originals: np.ndarray, pitches: list[int]) -> dict:
    """cells [pitch, y, x, samples] (None: a sine at the pitch in every cell), originals [4, pitch, samples]."""
    n = 3 if cells is None else cells.shape[1]
    at = [(0, 0), (0, n - 1), (n - 1, 0), (n - 1, n - 1)]  # (y, x) of corners BL, BR, TL, TR
    t = np.arange(originals.shape[-1]) / SR

    def cell(p, y, x):
        if cells is None:
            return np.sin(2 * np.pi * 440.0 * 2 ** ((pitches[p] - 69) / 12) * t)
        return cells[p, y, x]

    corner_d, sep_bank, sep_orig, hnr_o, hnr_c, bright_c, bright_o, pull = [], [], [], [], [], [], [], []
    for p, pitch in enumerate(pitches):
        prof_o = [mel_profile(originals[c, p]) for c in range(4)]
        prof_c = [mel_profile(cell(p, *at[c])) for c in range(4)]
        corner_d += [timbre_distance(a, b) for a, b in zip(prof_c, prof_o)]
        sep_bank += [timbre_distance(prof_c[i], prof_c[j]) for i, j in itertools.combinations(range(4), 2)]
        sep_orig += [timbre_distance(prof_o[i], prof_o[j]) for i, j in itertools.combinations(range(4), 2)]
        pull += [(timbre_distance(prof_c[i], prof_o[j]) - timbre_distance(prof_c[j], prof_o[j]))
                 / max(timbre_distance(prof_o[i], prof_o[j]), 1e-9) for i, j in itertools.permutations(range(4), 2)]
        hnr_o += [harmonic_to_noise(originals[c, p], pitch) for c in range(4)]
        hnr_c += [harmonic_to_noise(cell(p, *at[c]), pitch) for c in range(4)]
        bright_o.append([brightness(originals[c, p], pitch) for c in range(4)])
        bright_c.append([brightness(cell(p, *at[c]), pitch) for c in range(4)])
    in_tune = [abs(cents_off(estimate_f0(cell(p, y, x), SR), pitch)) <= 50
               for p, pitch in enumerate(pitches) for y in range(n) for x in range(n)]
    return {"timbre_corner": float(np.mean(corner_d)), "separation": float(np.mean(sep_bank) / np.mean(sep_orig)),
            "corner_spread_db": float(np.mean(sep_bank)), "original_spread_db": float(np.mean(sep_orig)),
            "conditioning_pull": float(np.mean(pull)),
            "hnr_gap": float(np.mean(hnr_o) - np.mean(hnr_c)), "hnr": float(np.mean(hnr_c)),
            "original_hnr": float(np.mean(hnr_o)), "pitch_all": float(np.mean(in_tune)),
            "brightness": [round(float(b), 2) for b in np.mean(bright_c, 0)],
            "original_brightness": [round(float(b), 2) for b in np.mean(bright_o, 0)]}


def in_tune(originals: np.ndarray, pitches: list[int]) -> float:
    """The fraction of the originals [4, pitch, samples] themselves within 50 cents (YIN, as pitch_all): what a
    bank that reproduced its corners exactly would score on them."""
    return float(np.mean([abs(cents_off(estimate_f0(originals[c, p], SR), pitch)) <= 50
                          for c in range(len(originals)) for p, pitch in enumerate(pitches)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "models" / "compact"))
    ap.add_argument("--baseline", default=str(ROOT / "models" / "history" / "sine8"),
                    help="the model to compare with (default: the bundled model before this work; none: skip)")
    ap.add_argument("--soundfont", default=str(FLUID if FLUID.is_file() else DEFAULT_SOUNDFONT))
    ap.add_argument("--pitches", default="36,48,60,72")
    ap.add_argument("--velocity", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    from precompute.run import load_model

    pitches = [int(p) for p in args.pitches.split(",")]

    t0 = time.monotonic()
    corners, originals = choose_corners(Path(args.soundfont), pitches, args.velocity)
    print(f"corners: {', '.join(corners)}", file=sys.stderr)
    rows = {"sine": measure(None, originals, pitches)}
    held_out = held_out_programs()
    train_programs = [p for p in range(112) if p not in held_out]
    train_audio, train_family = family_notes(Path(args.soundfont), train_programs, pitches, args.velocity)
    test_audio, test_family = family_notes(Path(args.soundfont), held_out, pitches, args.velocity)
    probes = {"chance": float(np.mean(test_family == np.bincount(train_family).argmax())),
              "audio": probe(log_profiles(train_audio), train_family, log_profiles(test_audio), test_family)}
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in (("model", args.model), ("baseline", args.baseline)):
            if model == "none":
                rows[name] = {k: float("nan") for k in (*rows["sine"], "embedding_ratio")}
                probes[name] = float("nan")
                continue
            rows[name] = measure(render(corners, model, Path(tmp) / name, pitches, args.velocity, args.threads),
                                 originals, pitches)
            net = load_model(model).eval()
            emb = encode(net, originals)  # [corner, pitch, frames, E]
            rows[name]["embedding_ratio"] = embedding_ratio(net, emb)
            frames = sustain_frames(net)
            probes[name] = probe(encode(net, train_audio)[:, frames].mean(1), train_family,
                                 encode(net, test_audio)[:, frames].mean(1), test_family)
            source = source_corners(net, emb, pitches, originals.shape[-1])
            if source is not None:  # where timbre is lost: before the decoder, or in it?
                rows[f"{name}_source"] = {**measure(source, originals, pitches), "embedding_ratio": float("nan")}
                if name == "model":  # its bank with the source predicted; the source's ceiling, from the originals
                    rows["model_predicted"] = {**measure(render(corners, model, Path(tmp) / "predicted", pitches,
                                                                args.velocity, args.threads, "predicted"),
                                                         originals, pitches), "embedding_ratio": float("nan")}
                    analysed = source_corners(net, emb, pitches, originals.shape[-1], originals)
                    rows["analysed_source"] = {**measure(analysed, originals, pitches), "embedding_ratio": float("nan")}
    keys = ("timbre_corner", "separation", "hnr_gap", "pitch_all", "conditioning_pull")
    rows["sine"]["embedding_ratio"] = float("nan")
    print(f"{'':<16}" + "".join(f"{k:>18}" for k in keys) + "   brightness per corner (originals: "
          f"{rows['model']['original_brightness']})")
    for name, r in rows.items():
        print(f"{name:<16}" + "".join(f"{r[k]:>18.3f}" for k in keys) + f"   {r['brightness']}")
    summary = {**{k: rows["model"][k] for k in keys},
               **{f"{k}_{b}": rows[b][k] for b in ("baseline", "sine") for k in keys},
               **{f"{k}_{b}": rows[b][k] for b in ("model_predicted", "model_source", "baseline_source",
                                                   "analysed_source") if b in rows
                  for k in ("timbre_corner", "separation", "hnr_gap", "pitch_all")},
               "pitch_originals": in_tune(originals, pitches),
               "family_probe": probes["model"], "family_probe_baseline": probes["baseline"],
               "family_probe_audio": probes["audio"], "family_probe_chance": probes["chance"],
               "embedding_ratio": rows["model"]["embedding_ratio"],
               "embedding_ratio_baseline": rows["baseline"]["embedding_ratio"],
               "brightness": rows["model"]["brightness"], "original_brightness": rows["model"]["original_brightness"],
               "hnr": rows["model"]["hnr"], "original_hnr": rows["model"]["original_hnr"],
               "corner_spread_db": rows["model"]["corner_spread_db"],
               "original_spread_db": rows["model"]["original_spread_db"],
               "model": args.model, "baseline": args.baseline, "soundfont": Path(args.soundfont).name,
               "corners": corners, "pitches": pitches, "seconds": round(time.monotonic() - t0, 1)}
    print(f"family probe (held-out programs' notes): model {probes['model']:.2f}, baseline {probes['baseline']:.2f}, "
          f"the originals' mel profiles {probes['audio']:.2f}, chance {probes['chance']:.2f}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
