"""Benchmark: decoding a shard of notes as one batch (what `nsynth render` does) vs one note at a time (same
notes, same model, same machine, one run).

    python bench/bench_render_batching.py [--preset small] [--notes 16] [--samples 1024] [--threads 2]
Ends with one JSON line: notes/s each way and the speed-up ratio; the batched codes equal the one-at-a-time ones.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from precompute.config import preset  # noqa: E402
from precompute.model import WaveNetAutoencoder  # noqa: E402
from precompute.render.backends import TorchBackend  # noqa: E402
from precompute.sampling import Sampling  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--notes", type=int, default=16)
    ap.add_argument("--samples", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = WaveNetAutoencoder(preset(args.preset)).eval()
    backend = TorchBackend(model, "cuda" if torch.cuda.is_available() else "cpu")
    frames = -(-args.samples // model.cfg.hop)
    emb = np.random.default_rng(0).normal(size=(args.notes, frames, model.cfg.bottleneck)).astype(np.float32)
    seeds = list(range(args.notes))
    kw = dict(length=args.samples, sampling=Sampling())

    t = time.perf_counter()
    batched = backend.decode(emb, seeds, **kw)
    t_batch = time.perf_counter() - t
    t = time.perf_counter()
    single = np.concatenate([backend.decode(emb[i:i + 1], seeds[i:i + 1], **kw) for i in range(args.notes)])
    t_single = time.perf_counter() - t
    same = float((batched == single).mean())
    print(f"{args.notes} notes x {args.samples} samples ({args.preset}, {backend.device}): batched {t_batch:.2f} s, "
          f"one at a time {t_single:.2f} s, speed-up {t_single / t_batch:.1f}x; codes equal: {same:.4f}")
    print(json.dumps({"bench": "render_batching", "preset": args.preset, "device": str(backend.device),
                      "notes": args.notes, "samples": args.samples, "batched_notes_per_s": round(args.notes / t_batch, 3),
                      "single_notes_per_s": round(args.notes / t_single, 3), "speedup": round(t_single / t_batch, 2),
                      "codes_equal_fraction": same}))


if __name__ == "__main__":
    main()
