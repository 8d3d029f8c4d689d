"""Benchmark: bf16 against fp32 decoding of one model, in one run: does bf16 keep the model's output?

    python bench/bf16.py [--model RUN | --preset nsynth] [--seconds 1.0] [--free-seconds S] [--notes 2]

Real notes (held-out GM instruments rendered from the Debian SoundFont, pitches 48/60, the first `seconds`) are
encoded by the model, and its decoder is run in fp32 and in bf16:
  teacher-forced   the full pass over each note's own codes (every sample predicted from the true past), fp32
                   and bf16: argmax agreement, median (quantile 0.5) agreement, |logit error| (mean, p99, max,
                   beside the logits' spread), and the log-spectral distance between the two median one-step
                   decodes (precompute.quality), beside that between fp32's one-step decode and the note itself
  free runs        the packed stepper (generate()'s path, the model's recommended decoding) over `free-seconds`
                   in each dtype: fraction of equal codes, and the spectral distance between the two outputs,
                   beside two references in fp32: a run whose embeddings differ by a rounding error (x (1 + 2^-20):
                   how far any tiny difference carries in an autoregressive run) and two different notes' outputs
                   (the scale of a real difference)
On a CPU without native bf16 arithmetic (no AMX or AVX512-BF16) torch's bf16 matmuls are ~10x slower than fp32,
so bf16 matmuls are emulated exactly as AMX and oneDNN compute them: bf16 operands, products accumulated in fp32,
the result rounded to bf16 (testkit/bf16.py; tests/precompute/test_bf16_bench.py holds it to torch's own bf16
matmul); every other operation runs in bf16. Speed is then not measured. Without --model the preset's weights are
randomly initialised (seeded): the figures then speak for bf16 arithmetic at that size, not for a trained model.
Ends with one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.generate import cpu_name  # noqa: E402
from precompute.config import preset  # noqa: E402
from precompute.datasets.fluid import DEFAULT_SOUNDFONT  # noqa: E402
from precompute.datasets.nsynth import load_examples, read_note  # noqa: E402
from precompute.datasets.soundfont import render_soundfont_dataset  # noqa: E402
from precompute.generate import cpu_has_bf16 as native_bf16, generate  # noqa: E402
from precompute.model import Decoder, WaveNetAutoencoder, shift  # noqa: E402
from precompute.mulaw import codes_to_input, mulaw_decode, mulaw_encode  # noqa: E402
from precompute.quality import log_spectral_distance  # noqa: E402
from precompute.run import load_model  # noqa: E402
from precompute.sampling import GREEDY, Sampling  # noqa: E402
from precompute.threads import use_threads  # noqa: E402
from testkit.bf16 import bf16_context  # noqa: E402

PITCHES = (48, 60)


def held_out_notes(seconds: float, count: int, tmp: Path) -> tuple[np.ndarray, list[int]]:
    """`count` held-out GM notes (the validation split; pitches PITCHES, velocity 100) -> (audio [n, T], pitches)."""
    render_soundfont_dataset(DEFAULT_SOUNDFONT, tmp, pitches=PITCHES, velocities=[100], progress=False)
    notes = load_examples(tmp / "valid", pitches=PITCHES, velocities=[100])
    notes = [notes[i * len(notes) // count] for i in range(count)]  # spread over the instruments
    length = int(seconds * 16000) // 512 * 512
    return np.stack([read_note(n)[:length] for n in notes]), [n.pitch for n in notes]


def median(logits: torch.Tensor) -> torch.Tensor:
    """The median class of each prediction (quantile 0.5 decoding), logits [..., Q] -> [...]."""
    cdf = torch.softmax(logits.float(), -1).cumsum(-1)
    return (cdf < 0.5 * cdf[..., -1:]).sum(-1)


def spectral(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean log-spectral distance between two batches of mu-law codes [B, T] (in [-128, 127])."""
    return float(np.mean([log_spectral_distance(mulaw_decode(a).numpy(), mulaw_decode(b).numpy())
                          for a, b in zip(x, y)]))


@torch.inference_mode()
def teacher_forced(model: WaveNetAutoencoder, codes: torch.Tensor, pitch: torch.Tensor | None) -> dict:
    """fp32 and bf16 full passes over the notes' own codes [B, T]."""
    emb = model.encode(codes)
    exc = model.decoder.excitation(pitch, torch.arange(codes.shape[1]), align=mulaw_decode(codes), emb=emb)
    x = shift(codes_to_input(codes).unsqueeze(-1), 1).squeeze(-1)
    low = Decoder(model.cfg).eval()
    low.load_state_dict(model.decoder.state_dict())
    low = low.to(torch.bfloat16)
    t0 = time.perf_counter()
    a = model.decoder(x, emb, exc)
    t1 = time.perf_counter()
    with bf16_context():
        b = low(x.to(torch.bfloat16), emb.to(torch.bfloat16), None if exc is None else exc.to(torch.bfloat16)).float()
    t2 = time.perf_counter()
    err = (a - b).abs()
    ma, mb = median(a) - 128, median(b) - 128
    return {"argmax_agreement": round(float((a.argmax(-1) == b.argmax(-1)).float().mean()), 4),
            "median_agreement": round(float((ma == mb).float().mean()), 4),
            "median_off_by_one": round(float(((ma - mb).abs() == 1).float().mean()), 4),
            "logit_error_mean": round(float(err.mean()), 4),
            "logit_error_p99": round(float(err.flatten().kthvalue(int(err.numel() * 0.99)).values), 4),
            "logit_error_max": round(float(err.max()), 3), "logit_std": round(float(a.std(-1).mean()), 3),
            "median_decode_distance": round(spectral(ma, mb), 3),
            "fp32_step_vs_note_distance": round(spectral(ma, codes), 3),
            "seconds": [round(t1 - t0, 1), round(t2 - t1, 1)]}


def free_runs(model: WaveNetAutoencoder, codes: torch.Tensor, pitch: torch.Tensor | None, length: int,
              sampling: Sampling) -> dict:
    emb = model.encode(codes)[:, : length // model.cfg.hop]
    kw = dict(length=length, sampling=sampling, seeds=list(range(len(codes))), pitch=pitch)
    t0 = time.perf_counter()
    c32 = generate(model.decoder, emb, dtype=torch.float32, **kw)
    t1 = time.perf_counter()
    with bf16_context():
        c16 = generate(model.decoder, emb, dtype=torch.bfloat16, **kw)
    t2 = time.perf_counter()
    nudged = generate(model.decoder, emb * (1 + 2 ** -20), dtype=torch.float32, **kw)
    n = c32.numel()
    return {"free_agreement": round(float((c32 == c16).float().mean()), 4),
            "free_distance": round(spectral(c32, c16), 3),
            "free_nudged_agreement": round(float((c32 == nudged).float().mean()), 4),
            "free_nudged_distance": round(spectral(c32, nudged), 3),
            "free_other_note_distance": round(spectral(c32, c32.roll(1, 0)), 3) if len(c32) > 1 else None,
            "samples_per_s": {"float32": round(n / (t1 - t0), 1),
                              "bfloat16": round(n / (t2 - t1), 1) if native_bf16() else "emulated"}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="run folder (default: --preset, randomly initialised)")
    ap.add_argument("--preset", default="nsynth")
    ap.add_argument("--seconds", type=float, default=1.0, help="audio per note, teacher-forced")
    ap.add_argument("--free-seconds", type=float, default=None, help="audio per note, free runs (default: --seconds)")
    ap.add_argument("--notes", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    threads = use_threads(args.threads)
    load0 = os.getloadavg()[0]
    if args.model:
        model, name = load_model(args.model).eval(), args.model
        sampling = Sampling.resolve(args.model)
    else:
        torch.manual_seed(0)
        model, name = WaveNetAutoencoder(preset(args.preset)).eval(), f"{args.preset} (random init, seed 0)"
        sampling = GREEDY
    with tempfile.TemporaryDirectory() as tmp:
        audio, pitches = held_out_notes(args.seconds, args.notes, Path(tmp))
    codes = mulaw_encode(torch.from_numpy(audio))
    pitch = torch.tensor(pitches) if model.cfg.exc_width else None
    mode = sampling.describe()
    print(f"{name}: {len(codes)} held-out notes x {codes.shape[1]} samples; CPU {cpu_name()} "
          f"({torch.backends.cpu.get_cpu_capability()}; bf16 {'native' if native_bf16() else 'emulated'}), "
          f"{threads} threads, load average {load0:.1f}", flush=True)
    res = teacher_forced(model, codes, pitch)
    print(f"teacher-forced: argmax agreement {res['argmax_agreement']:.2%}, median agreement "
          f"{res['median_agreement']:.2%} ({res['median_off_by_one']:.2%} one class apart); |logit error| mean "
          f"{res['logit_error_mean']} p99 {res['logit_error_p99']} max {res['logit_error_max']} (logits' std "
          f"{res['logit_std']}); median one-step decodes apart by {res['median_decode_distance']} "
          f"(fp32's vs the note: {res['fp32_step_vs_note_distance']})", flush=True)
    free = int((args.free_seconds if args.free_seconds is not None else args.seconds) * 16000) // 512 * 512
    if free:
        res.update(free_runs(model, codes[:, :free], pitch, free, sampling))
        print(f"free runs ({mode}, {free} samples): {res['free_agreement']:.2%} equal codes, spectral distance "
              f"{res['free_distance']} (fp32 with embeddings nudged by 2^-20: {res['free_nudged_agreement']:.2%} "
              f"equal, {res['free_nudged_distance']}; two different notes: {res['free_other_note_distance']}); "
              f"samples/s {res['samples_per_s']}", flush=True)
    print(json.dumps({"bench": "bf16", "model": name, "decoding": mode, "notes": len(codes),
                      "samples": codes.shape[1], "free_samples": free, "cpu": cpu_name(),
                      "cpu_capability": torch.backends.cpu.get_cpu_capability(), "bf16_native": native_bf16(),
                      "threads": threads, "load_avg": [round(load0, 1), round(os.getloadavg()[0], 1)], **res}))


if __name__ == "__main__":
    main()
