"""Encoding and decoding backends: `torch` (precompute.generate) and `onnxruntime` (the exported ONNX models).

Both take float audio / float32 embeddings as numpy arrays and return numpy arrays, sample with the same
per-note seeded streams (precompute.generate), and so give the same greedy output up to float rounding.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from precompute.config import ModelConfig
from precompute.generate import _NoteNoise, check_pitch, generate, sample_codes
from precompute.model import (NoteExcitation, SourceLevels, WaveNetAutoencoder, add_to_source, source_of,
                             source_rates)
from precompute.mulaw import codes_to_input, mulaw_encode
from precompute.onnx_export import FILES, check_onnx_dir
from precompute.sampling import Sampling

Progress = Callable[[int, int], None]
Levels = tuple  # (harmonic amplitudes [n, F, H], noise band amplitudes [n, F, K] or None), numpy: SourceLevels
ENCODE_BATCH = {"cpu": 8, "cuda": 16}  # notes encoded at once (full-length activations)
EXC_BLOCK = 128            # steps whose excitation is computed at once
ORT_PREFERENCE = ("CUDAExecutionProvider", "ROCMExecutionProvider", "CPUExecutionProvider")


class TorchBackend:
    name = "torch"

    def __init__(self, model: WaveNetAutoencoder, device: str | torch.device = "cpu",
                 dtype: torch.dtype | None = None):
        self.device = torch.device(device)
        self.dtype = dtype  # decoding dtype (None: generate's default for the device)
        self.model = model.to(self.device).eval()
        self.hop = model.cfg.hop

    @torch.no_grad()
    def encode(self, audio: np.ndarray) -> np.ndarray:
        """float audio [B, T] (T a multiple of hop) -> embeddings float32 [B, T // hop, E]."""
        step = ENCODE_BATCH.get(self.device.type, 8)
        out = []
        for i in range(0, len(audio), step):
            codes = mulaw_encode(torch.from_numpy(np.ascontiguousarray(audio[i:i + step])))
            out.append(self.model.encode(codes.to(self.device)).float().cpu().numpy())
        return np.concatenate(out)

    @torch.no_grad()
    def analyse(self, audio: np.ndarray, emb: np.ndarray, pitch: np.ndarray) -> Levels:
        """Whole notes: float audio [B, F * hop], their embeddings [B, F, E] and MIDI pitches [B] -> their source's
        levels analysed from the audio (analysed_levels)."""
        params = self.model.decoder.source(torch.from_numpy(emb).to(self.device)).cpu()
        return analysed_levels(self.model.cfg, audio, params, pitch)

    def decode(self, emb: np.ndarray, seeds: Sequence[int], *, length: int, sampling: Sampling,
               pitch: np.ndarray | None = None, progress: Progress | None = None,
               levels: Levels | None = None) -> np.ndarray:
        """embeddings float32 [n, F, E] (and MIDI pitches [n], which excited decoders need; a source's levels,
        given instead of predicted) -> mu-law codes int8 [n, length], all n decoded at once (the caller's batch:
        a render shard is sized by the plan)."""
        codes = generate(self.model.decoder, torch.from_numpy(emb).to(self.device), sampling=sampling, length=length,
                         seeds=seeds, pitch=pitch, dtype=self.dtype, max_batch=max(len(emb), 1), progress=progress,
                         levels=None if levels is None else _torch_levels(levels, self.device))
        return codes.cpu().numpy().astype(np.int8)


def analysed_levels(cfg: ModelConfig, audio: np.ndarray, params: torch.Tensor, pitch: np.ndarray,
                    batch: int = 8) -> Levels:
    """Whole notes' float audio [B, F * hop], the source MLP's parameters for them [B, F, P] and their MIDI
    pitches [B] -> (harmonic amplitudes float16 [B, F, H], noise band amplitudes float16 [B, F, K] or None):
    NoteExcitation.analysed(whole=True), so every frame is read from the audio; H is the source's harmonic count
    for the lowest of the pitches (a higher note's harmonics above Nyquist are 0)."""
    pitch = torch.as_tensor(np.asarray(pitch, np.int64))
    h = source_rates(pitch, cfg).shape[1] if len(pitch) else 0
    harm = np.zeros(params.shape[:2] + (h,), np.float16)
    noise = np.zeros(params.shape[:2] + (cfg.source_noise,), np.float16) if cfg.source_noise else None
    for i in range(0, len(audio), batch):
        note = NoteExcitation(cfg, pitch[i:i + batch], params[i:i + batch])
        levels = note.analysed(torch.from_numpy(np.ascontiguousarray(audio[i:i + batch])), whole=True).levels()
        harm[i:i + batch, :, :levels.harmonics.shape[-1]] = levels.harmonics.numpy()
        if noise is not None:
            noise[i:i + batch] = levels.noise.numpy()
    return harm, noise


def _torch_levels(levels: Levels, device: torch.device) -> SourceLevels:
    harm, noise = levels
    return SourceLevels(torch.from_numpy(harm.astype(np.float32)).to(device),
                        None if noise is None else torch.from_numpy(noise.astype(np.float32)).to(device))


def ort_providers(device_id: int = 0) -> list:
    """Execution providers in order of preference among those installed (CUDA on GPU `device_id`)."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    chosen = [p for p in ORT_PREFERENCE if p in available] or available
    return [(p, {"device_id": device_id}) if p in ("CUDAExecutionProvider", "ROCMExecutionProvider") else p
            for p in chosen]


class OnnxBackend:
    """Runs encoder.onnx, project.onnx and decoder_step.onnx (rings passed in and out each step)."""

    name = "onnxruntime"

    def __init__(self, files: dict[str, bytes], config: dict, device_id: int = 0):
        import onnxruntime as ort

        self.cfg = ModelConfig.from_dict(config)
        self.hop = self.cfg.hop
        providers = ort_providers(device_id)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()  # as chosen for torch (precompute/threads.py)
        self.sessions = {k: ort.InferenceSession(blob, opts, providers=providers) for k, blob in files.items()}
        step = self.sessions["step"]
        self.state_inputs = [(i.name, i.shape) for i in step.get_inputs() if i.name.startswith("state_in_")]
        self.providers = step.get_providers()

    @staticmethod
    def read_files(onnx_dir: str | Path) -> tuple[dict[str, bytes], dict]:
        """An export folder's model files (bytes, so they can travel to Ray workers) and its model config."""
        doc = check_onnx_dir(onnx_dir)
        return {k: (Path(onnx_dir) / name).read_bytes() for k, name in FILES.items()}, doc["config"]

    def encode(self, audio: np.ndarray) -> np.ndarray:
        x = codes_to_input(mulaw_encode(torch.from_numpy(np.ascontiguousarray(audio)))).numpy()
        enc = self.sessions["encoder"]
        return np.concatenate([enc.run(None, {"audio": x[i:i + 8]})[0] for i in range(0, len(x), 8)])

    def analyse(self, audio: np.ndarray, emb: np.ndarray, pitch: np.ndarray) -> Levels:
        """As TorchBackend.analyse, the source's MLP run by project.onnx."""
        _, params = self.sessions["project"].run(None, {"embeddings": emb})
        return analysed_levels(self.cfg, audio, torch.from_numpy(params), pitch)

    def decode(self, emb: np.ndarray, seeds: Sequence[int], *, length: int, sampling: Sampling,
               pitch: np.ndarray | None = None, progress: Progress | None = None,
               levels: Levels | None = None) -> np.ndarray:
        n = emb.shape[0]
        if length > emb.shape[1] * self.hop:
            raise ValueError(f"length {length} needs {-(-length // self.hop)} frames, got {emb.shape[1]}")
        pitch = check_pitch(self.cfg, pitch, n)
        cond, *source = self.sessions["project"].run(None, {"embeddings": emb})
        note_exc = None if pitch is None else NoteExcitation(
            self.cfg, pitch, torch.from_numpy(source[0]) if source else None,
            None if levels is None else _torch_levels(levels, torch.device("cpu")))
        state = {name: np.zeros((shape[0], n, shape[2]), np.float32) for name, shape in self.state_inputs}
        step = self.sessions["step"]
        noise = _NoteNoise(seeds, torch.device("cpu"), sampling.quantile) if sampling.draws else None
        x = np.zeros((n, 1), np.float32)
        out = np.empty((n, length), np.int8)
        for t in range(length):
            feed = {"x": x, "cond": cond[:, t // self.hop], **state}
            if note_exc is not None:
                if t % EXC_BLOCK == 0:
                    exc = note_exc.at(torch.arange(t, t + EXC_BLOCK)).float().numpy()
                feed["exc"] = exc[:, t % EXC_BLOCK]
            logits, *rings = step.run(None, feed)
            state = dict(zip(state, rings))
            q = sample_codes(torch.from_numpy(logits), None if noise is None else noise.steps(t, 1)[0, :, 0],
                             sampling.temperature)
            if self.cfg.source_residual:
                q = add_to_source(q, source_of(torch.from_numpy(feed["exc"])))
            out[:, t] = q.numpy()
            x = codes_to_input(q).numpy().reshape(n, 1)
            if progress is not None and (t + 1) % 256 == 0:
                progress(t + 1, length)
        if progress is not None:
            progress(length, length)
        return out


def describe(backend) -> str:
    threads = f", {torch.get_num_threads()} CPU thread{'s' * (torch.get_num_threads() > 1)}"
    if isinstance(backend, OnnxBackend):
        return f"onnxruntime ({', '.join(backend.providers)}{threads})"
    return f"torch ({backend.device}{threads if torch.device(backend.device).type == 'cpu' else ''})"

