"""The precompute side's `nsynth` subcommands: typed functions, each with a thin argparse wrapper."""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from device.errors import NsynthError
from device.fsutil import atomic_path

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
    from precompute.audio import write_audio
    from precompute.generate import ETA, generate
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


BUNDLED_MODEL = Path(__file__).resolve().parents[1] / "models" / "compact"
DEMO_CORNERS = ("sf2:0", "sf2:73", "sf2:19", "sf2:81")  # piano, flute, church organ, sawtooth lead (TimGM6mb)
DEMO_PITCHES = (48, 52, 55, 60, 64, 67, 72)


def demo_phrase(path: str | os.PathLike, bpm: float = 120.0) -> Path:
    """Write a short MIDI phrase (an arpeggio then a held chord, within the demo bank's pitches)."""
    import mido

    beat = 480
    mid = mido.MidiFile(ticks_per_beat=beat)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm)))
    events = []  # (tick, message)
    for i, pitch in enumerate([48, 55, 60, 64, 67, 64, 60, 55, 52, 55, 60, 64, 67, 72, 67, 64]):
        events += [(i * beat // 2, mido.Message("note_on", note=pitch, velocity=90 + 8 * (i % 4 == 0))),
                   (i * beat // 2 + beat * 2 // 5, mido.Message("note_off", note=pitch))]
    for pitch in (48, 55, 60, 64):
        events += [(8 * beat, mido.Message("note_on", note=pitch, velocity=80)),
                   (12 * beat, mido.Message("note_off", note=pitch))]
    now = 0
    for tick, msg in sorted(events, key=lambda e: (e[0], e[1].type == "note_on")):
        track.append(msg.copy(time=tick - now))
        now = tick
    path = Path(path)
    with atomic_path(path) as tmp:
        mid.save(str(tmp))
    return path


def demo(out: str | os.PathLike, run: str | os.PathLike | None = None, work: str | os.PathLike | None = None,
         quiet: bool = False, threads: int | None = None) -> Path:
    """The built-in default: render a small bank (four SoundFont corners, 3x3 grid, 7 pitches, 1 s notes) with
    the bundled model (decoded as its config recommends, on `threads` CPU threads: None chooses them,
    precompute.threads), then play a phrase through the device engine while sweeping XY across the grid."""
    from device.offline import render_midi
    from precompute.render.render import render_bank

    out = Path(out)
    work = Path(work) if work else out.with_suffix("")
    work.mkdir(parents=True, exist_ok=True)
    bank = work / "bank"
    render_bank(list(DEMO_CORNERS), run or BUNDLED_MODEL, bank, grid=3, pitches=list(DEMO_PITCHES),
                velocities=[100], length=1.0, threads=threads, quiet=quiet)
    render_midi(bank, demo_phrase(work / "phrase.mid"), out, xy="0,0:1,0:1,1:0,1")
    return out


# --- argparse wrappers ---------------------------------------------------------------------------------------
def configure_demo(p) -> None:
    p.add_argument("-o", "--out", default="demo/demo.wav", help="output WAV (default: demo/demo.wav)")
    p.add_argument("--model", default=None, help="run folder (default: the bundled model, models/compact)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default: the idle physical cores, at least 1; see docs/performance.md)")
    p.set_defaults(func=lambda a: print(demo(a.out, a.model, threads=a.threads)) or 0)


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
