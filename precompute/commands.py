"""The precompute side's `nsynth` subcommands: typed functions, each with a thin argparse wrapper."""
from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING

import numpy as np

from nsynth.errors import NsynthError
from nsynth.fsutil import atomic_path

if TYPE_CHECKING:
    from precompute.sampling import Sampling


def _torch():
    import torch

    return torch


def encode_file(wav: str | os.PathLike, run: str | os.PathLike, out: str | os.PathLike | None = None) -> np.ndarray:
    """A WAV -> embeddings [frames, bottleneck] (float32); saved to `out` (.npy) when given."""
    torch = _torch()
    from precompute.audio import read_audio
    from precompute.mulaw import mulaw_encode
    from precompute.run import load_model

    model = load_model(run)
    audio = read_audio(wav, model.cfg.sample_rate)
    if len(audio) < model.cfg.hop:
        raise NsynthError(f"{wav}: {len(audio)} samples is shorter than one frame ({model.cfg.hop})")
    with torch.no_grad():
        emb = model.encode(mulaw_encode(torch.from_numpy(audio))[None])[0].numpy().astype(np.float32)
    if out is not None:
        with atomic_path(out) as tmp, open(tmp, "wb") as f:
            np.save(f, emb)
    return emb


def decode_embeddings(emb_path: str | os.PathLike, run: str | os.PathLike, out: str | os.PathLike | None = None, *,
                      sampling: Sampling | None = None, pitch: int | None = None, threads: int | None = None,
                      progress: bool = True) -> np.ndarray:
    """Embeddings .npy [frames, bottleneck] -> float32 audio [frames * hop] at 16 kHz; written as WAV when `out`.
    pitch: the note's MIDI pitch, which a model with an excited decoder (sines, harmonic source) needs.
    sampling: a precompute.sampling.Sampling, its seed the note's (None: as the model's config recommends, seed 0).
    threads: torch's CPU threads (None: precompute.threads.choose_threads)."""
    torch = _torch()
    from nsynth.progress import ETA
    from precompute.audio import write_audio
    from precompute.generate import generate
    from precompute.mulaw import mulaw_decode
    from precompute.run import load_model
    from precompute.sampling import Sampling
    from precompute.threads import use_threads

    use_threads(threads)

    model = load_model(run)
    sampling = Sampling.resolve(run) if sampling is None else sampling
    try:
        emb = np.load(emb_path)
    except Exception as e:
        raise NsynthError(f"{emb_path}: cannot read embeddings: {e}") from None
    if emb.ndim != 2 or emb.shape[1] != model.cfg.bottleneck or emb.shape[0] == 0:
        raise NsynthError(f"{emb_path}: expected embeddings [frames, {model.cfg.bottleneck}], got {list(emb.shape)}")
    if not np.isfinite(emb).all():
        raise NsynthError(f"{emb_path}: embeddings hold NaN or infinite values")
    if model.cfg.exc_width and pitch is None:
        raise NsynthError(f"{run}: this model's decoder plays at a given pitch (its excitation); give the note's "
                          "MIDI pitch (--pitch)")
    codes = generate(model.decoder, torch.from_numpy(emb.astype(np.float32))[None], sampling=sampling,
                     seeds=[sampling.seed], pitch=None if pitch is None else [pitch],
                     progress=ETA("decode") if progress else None)
    audio = mulaw_decode(codes[0]).numpy()
    if out is not None:
        write_audio(out, audio, model.cfg.sample_rate)
    return audio


# --- argparse wrappers ---------------------------------------------------------------------------------------
def configure_encode(p) -> None:
    p.add_argument("wav")
    p.add_argument("--model", required=True, help="run folder")
    p.add_argument("-o", "--out", required=True, help="embeddings .npy [frames, 16]")
    p.set_defaults(func=lambda a: encode_file(a.wav, a.model, a.out) is None)


def configure_decode(p) -> None:
    p.add_argument("embeddings")
    p.add_argument("--model", required=True, help="run folder")
    p.add_argument("-o", "--out", required=True, help="output 16 kHz WAV")
    p.add_argument("--greedy", action="store_true", default=None, help="argmax instead of sampling")
    p.add_argument("--temperature", type=float, default=None,
                   help="sample at this temperature (no sampling flag: as the model's config.json recommends)")
    p.add_argument("--quantile", type=float, default=None,
                   help="decode deterministically: each sample the Q-quantile of its prediction (0.5: the median)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pitch", type=int, default=None,
                   help="the note's MIDI pitch (needed by a model with a sine-excited decoder)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default: the idle physical cores, at least 1; see docs/performance.md)")

    def run(a) -> int:
        from precompute.sampling import Sampling

        sampling = Sampling.resolve(a.model, a.greedy, a.temperature, a.quantile, a.seed)
        decode_embeddings(a.embeddings, a.model, a.out, sampling=sampling, pitch=a.pitch, threads=a.threads)
        return 0

    p.set_defaults(func=run)


def configure_model_new(p) -> None:
    from precompute.config import PRESETS

    p.add_argument("--preset", required=True, choices=sorted(PRESETS))
    p.add_argument("-o", "--out", required=True, help="run folder to create")
    p.add_argument("--seed", type=int, default=0)

    def run(a):
        from precompute.config import preset
        from precompute.run import new_run

        new_run(a.out, preset(a.preset), seed=a.seed)
        print(a.out)
        return 0

    p.set_defaults(func=run)


def configure_model_info(p) -> None:
    p.add_argument("run")

    def run(a):
        from precompute.run import checkpoint_step, load_model

        m = load_model(a.run)
        n_dec = sum(t.numel() for t in m.decoder.parameters())
        n_enc = sum(t.numel() for t in m.encoder.parameters())
        print(f"{a.run}: preset {m.cfg.preset}, step {checkpoint_step(a.run)}, decoder {n_dec:,} + encoder "
              f"{n_enc:,} parameters, receptive field {m.cfg.receptive_field} samples, config {m.cfg.hash()}"
              + (f", sine excitation of {m.cfg.harmonics} harmonics" if m.cfg.harmonics else "")
              + (f", harmonic source ({m.cfg.source_bands} bands)" if m.cfg.source_bands else "")
              + (" (decoding needs the pitch)" if m.cfg.exc_width else ""))
        return 0

    p.set_defaults(func=run)


def configure_export_onnx(p) -> None:
    p.add_argument("run")
    p.add_argument("-o", "--out", required=True, help="output folder")

    def run(a):
        from precompute.onnx_export import export_onnx
        from precompute.run import load_model

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for path in export_onnx(load_model(a.run), a.out).values():
                print(path)
        return 0

    p.set_defaults(func=run)
