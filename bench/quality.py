"""Reconstruction quality of a model on held-out instruments (never trained on).

Renders notes of the validation-split GM instruments from the Debian SoundFont (the split is by instrument, the
same one `nsynth dataset soundfont` uses), encodes and decodes them with the model, and measures:
pitch accuracy (fraction of reconstructions whose YIN fundamental is within 50 cents of the true pitch) and the
multi-resolution log-spectral distance to the input, beside two baselines measured in the same run: white noise at
the note's loudness, and a sine at the note's pitch. Two more rows frame the scale: silence (what a model that
has learned nothing but to be quiet would score) and the input through 8-bit mu-law and back (the best any model
of this kind can score). With --dtypes float32,bfloat16 the notes are decoded in each dtype in the same run (bf16
matmuls emulated exactly where the CPU has no native bf16: bench/bf16.py), each scored, and the two decodes
compared (equal codes, spectral distance between them). A model with a harmonic source is given its source's
levels analysed from each input note (as `nsynth render` reads them from its corners; --source predicted: from the
embeddings). The last line is one JSON object.

    python bench/quality.py [--model models/compact] [--pitches 40,52,64,76] [--seconds 1.0] [--dtypes float32]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from precompute.datasets.fluid import DEFAULT_SOUNDFONT  # noqa: E402
from precompute.datasets.nsynth import load_examples, read_note  # noqa: E402
from precompute.datasets.soundfont import render_soundfont_dataset  # noqa: E402
from nsynth.progress import ETA  # noqa: E402
from precompute.generate import generate  # noqa: E402
from precompute.mulaw import mulaw_decode, mulaw_encode  # noqa: E402
from precompute.quality import (cents_off, estimate_f0, log_spectral_distance, noise_baseline,  # noqa: E402
                                sine_baseline)
from precompute.run import load_model  # noqa: E402
from precompute.sampling import Sampling  # noqa: E402
from testkit.bf16 import bf16_context  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "models" / "compact"))
    ap.add_argument("--data", default=None, help="dataset folder with valid/ (default: render held-out GM notes)")
    ap.add_argument("--pitches", default="40,52,64,76")
    ap.add_argument("--velocity", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=1.0, help="length of each note that is reconstructed")
    ap.add_argument("--max-notes", type=int, default=48)
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--temperature", type=float, default=None,
                    help="sampling temperature (0: greedy; default: as the model's config.json recommends)")
    ap.add_argument("--quantile", type=float, default=None,
                    help="deterministic decoding: each sample the Q-quantile of its prediction (0.5: the median)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (small matmuls: 1 is fastest)")
    ap.add_argument("--source", choices=("analysed", "predicted"), default="analysed",
                    help="a model with a harmonic source: its levels analysed from each note (default) or predicted")
    ap.add_argument("--dtypes", default="float32", help="decoding dtypes, each scored (e.g. float32,bfloat16)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dtypes = [getattr(torch, d) for d in args.dtypes.split(",")]

    model = load_model(args.model)
    sampling = Sampling.resolve(args.model, args.temperature == 0 or None, args.temperature or None, args.quantile)
    sr, hop = model.cfg.sample_rate, model.cfg.hop
    pitches = [int(p) for p in args.pitches.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data) if args.data else Path(tmp)
        if args.data is None:  # same programs and split as the bundled model's training set
            render_soundfont_dataset(DEFAULT_SOUNDFONT, data, pitches=pitches, velocities=[args.velocity],
                                     progress=False)
        notes = load_examples(data / "valid", pitches=pitches, velocities=[args.velocity])[: args.max_notes]
        length = int(args.seconds * sr) // hop * hop
        audio = np.stack([read_note(n)[:length] for n in notes])
    print(f"{len(notes)} held-out notes from {len({n.instrument_str for n in notes})} instruments, "
          f"{length} samples each, model {args.model} ({model.cfg.preset})", file=sys.stderr)

    recons, seconds = {}, {}
    for dtype in dtypes:
        t0 = time.monotonic()
        recon = []
        with torch.no_grad(), (bf16_context() if dtype == torch.bfloat16 else contextlib.nullcontext()):
            for i in range(0, len(notes), args.batch):
                codes = mulaw_encode(torch.from_numpy(audio[i: i + args.batch]))
                emb = model.encode(codes)
                pitch = [n.pitch for n in notes[i: i + len(codes)]]
                levels = None
                if model.cfg.source_bands and args.source == "analysed":
                    note = model.decoder.note_excitation(torch.tensor(pitch), emb)
                    levels = note.analysed(torch.from_numpy(audio[i: i + args.batch])).levels()
                out = generate(model.decoder, emb, sampling=sampling, levels=levels,
                               seeds=list(range(i, i + len(codes))), dtype=dtype,
                               pitch=pitch,
                               progress=ETA(f"decode notes {i}-{i + len(codes)} ({str(dtype)[6:]})"))
                recon.append(out)
        recons[dtype] = torch.cat(recon)
        seconds[dtype] = time.monotonic() - t0
    by_dtype = {}
    for dtype in reversed(dtypes):  # the first dtype's rows last: they are the table's
        rows = score(notes, audio, mulaw_decode(recons[dtype]).numpy(), sr)
        by_dtype[str(dtype)[6:]] = {"pitch_accuracy": float(np.mean([abs(r["cents"]) <= 50 for r in rows])),
                                    "spectral_distance": float(np.mean([r["model"] for r in rows])),
                                    "decode_seconds": round(seconds[dtype], 1)}
    decode_s = seconds[dtypes[0]]
    print(f"{'note':<34}{'cents':>9}{'input':>9}{'model':>8}{'noise':>8}{'sine':>8}")
    for r in rows:
        print(f"{r['note']:<34}{r['cents']:>9.1f}{r['input_cents']:>9.1f}{r['model']:>8.3f}{r['noise']:>8.3f}"
              f"{r['sine']:>8.3f}")
    summary = {
        "model": str(args.model), "source": args.source if model.cfg.source_bands else None, "notes": len(rows),
        "seconds": length / sr,
        "temperature": 0.0 if sampling.greedy else sampling.temperature, "quantile": sampling.quantile,
        "pitch_accuracy": float(np.mean([abs(r["cents"]) <= 50 for r in rows])),
        "input_pitch_accuracy": float(np.mean([abs(r["input_cents"]) <= 50 for r in rows])),
        "spectral_distance": float(np.mean([r["model"] for r in rows])),
        "noise_baseline_distance": float(np.mean([r["noise"] for r in rows])),
        "sine_baseline_distance": float(np.mean([r["sine"] for r in rows])),
        "silence_distance": float(np.mean([r["silence"] for r in rows])),
        "mulaw_roundtrip_distance": float(np.mean([r["mulaw"] for r in rows])),
        "decode_seconds": round(decode_s, 1),
    }
    if len(dtypes) > 1:
        a, b = (recons[d] for d in dtypes[:2])
        summary["by_dtype"] = by_dtype
        summary["dtype_comparison"] = {
            "dtypes": [str(d)[6:] for d in dtypes[:2]], "equal_codes": round(float((a == b).float().mean()), 4),
            "spectral_distance_between": round(float(np.mean([log_spectral_distance(x, y) for x, y in zip(
                mulaw_decode(a).numpy(), mulaw_decode(b).numpy())])), 3)}
        for d, v in by_dtype.items():
            print(f"{d}: pitch accuracy {v['pitch_accuracy']:.2f}, spectral distance {v['spectral_distance']:.3f}, "
                  f"decoded in {v['decode_seconds']} s")
        print(f"{summary['dtype_comparison']}")
    print(json.dumps(summary))


def score(notes, audio: np.ndarray, recon: np.ndarray, sr: int) -> list[dict]:
    """Per note: the reconstruction's and the input's pitch error, and the spectral distances of the
    reconstruction and the baselines to the input."""
    rng = np.random.default_rng(0)
    rows = []
    for note, x, y in zip(notes, audio, recon):
        rows.append({"note": note.note_str, "pitch": note.pitch,
                     "cents": cents_off(estimate_f0(y, sr), note.pitch),
                     "input_cents": cents_off(estimate_f0(x, sr), note.pitch),
                     "model": log_spectral_distance(x, y),
                     "noise": log_spectral_distance(x, noise_baseline(x, rng)),
                     "sine": log_spectral_distance(x, sine_baseline(x, note.pitch, sr)),
                     "silence": log_spectral_distance(x, np.zeros_like(x)),
                     "mulaw": log_spectral_distance(x, mulaw_decode(mulaw_encode(torch.from_numpy(x))).numpy())})
    return rows


if __name__ == "__main__":
    main()
