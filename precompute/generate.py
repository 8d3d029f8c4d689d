"""Batched autoregressive decoding: B notes at once from embeddings [B, F, E], with the packed cached step.

Sampling draws one uniform per note per step from that note's own seeded stream (inverse-CDF sampling), so a
note's audio does not depend on which batch it was rendered in. The steps run in chunks of CHUNK_STEPS on fixed
buffers (precompute/stepper.py); on CUDA a chunk is captured once as a CUDA graph and replayed with no host sync,
and a batch larger than the free GPU memory holds is rendered in parts. The CPU runs the same chunks eagerly.
"""
from __future__ import annotations

import math
import os
from typing import Callable, Sequence

import torch

from nsynth.errors import NsynthError
from precompute.config import ModelConfig
from precompute.model import Decoder, SourceLevels
from precompute.sampling import Sampling
from precompute.stepper import Stepper, auto_batch, split_batch

NOISE_CHUNK = 512  # steps of per-note uniforms drawn at a time
CHUNK_STEPS = 128  # steps per captured graph (its gcd with the hop and NOISE_CHUNK is used)


class _NoteNoise:
    """Per-note uniform streams: note b's u[t] depends only on (seeds[b], t). quantile: every u is that constant
    instead (deterministic decoding: each sample the quantile of its predicted distribution; 0.5: the median)."""

    def __init__(self, seeds: Sequence[int], device: torch.device, quantile: float | None = None):
        self.gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.device = device
        self.block = None
        self.start = -NOISE_CHUNK
        self.quantile = quantile
        if quantile is not None:
            self.block = torch.full((NOISE_CHUNK, len(self.gens), 1), float(quantile), device=device)

    def steps(self, t: int, n: int) -> torch.Tensor:
        """Uniforms for steps t..t+n-1 (within one NOISE_CHUNK block) -> [n, B, 1] on the device."""
        if self.quantile is not None:
            return self.block[:n]
        if t >= self.start + NOISE_CHUNK:
            self.start = t - t % NOISE_CHUNK
            block = torch.stack([torch.rand(NOISE_CHUNK, generator=g) for g in self.gens], 1).unsqueeze(-1)
            if self.device.type == "cuda":  # pinned + async: no host sync in the loop
                block = block.pin_memory()
            self.block = block.to(self.device, non_blocking=True)
        return self.block[t - self.start: t - self.start + n]


def sample_codes(logits: torch.Tensor, u: torch.Tensor | None, temperature: float = 1.0) -> torch.Tensor:
    """The stepper's sampling rule (Stepper._sample) for one step outside it (e.g. onnxruntime): logits [B, Q];
    u [B] uniforms (None: greedy) -> codes [B] in [-Q/2, Q/2)."""
    q = logits.shape[-1]
    if u is None:
        idx = logits.argmax(-1)
    else:
        cdf = torch.softmax(logits.float() / temperature, -1).cumsum(-1)
        v = (u.float().clamp(Stepper.U_MIN, Stepper.U_MAX) * cdf[:, -1]).unsqueeze(-1)
        idx = torch.searchsorted(cdf, v, right=True).squeeze(-1).clamp_(max=q - 1)
    return idx - q // 2


def capture_chunk(stepper: Stepper) -> Callable[[], None]:
    """Record one chunk of steps as a CUDA graph (after a warm-up on a side stream); -> its replay."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        stepper.run_chunk()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        stepper.run_chunk()
    stepper.reset()
    return graph.replay


class BatchDecoding:
    """One batch's decoding: the packed stepper, the notes' uniforms and excitation; `chunk(t)` decodes steps
    t .. t + chunk - 1 (t a multiple of `chunk`, in order from 0) into stepper.codes. The per-chunk inputs are
    named for profilers (torch.profiler.record_function: "noise", "excitation")."""

    def __init__(self, decoder: Decoder, emb: torch.Tensor, seeds: Sequence[int], *, pitch: torch.Tensor | None,
                 sampling: Sampling, dtype: torch.dtype, graph: bool, levels: SourceLevels | None = None):
        self.hop = decoder.cfg.hop
        self.steps = math.gcd(self.hop, NOISE_CHUNK, CHUNK_STEPS)
        self.stepper = Stepper(decoder, emb.shape[0], chunk=self.steps, sampling=sampling, dtype=dtype,
                               device=emb.device)
        self.frames = emb.transpose(0, 1).to(dtype).contiguous()  # [F, B, E]
        self.note_exc = decoder.note_excitation(pitch, emb, levels)
        self.run = self.stepper.run_chunk
        if graph:
            self.stepper.set_frame(self.frames[0])
            self.run = capture_chunk(self.stepper)
        self.noise = _NoteNoise(seeds, emb.device, sampling.quantile) if sampling.draws else None

    def chunk(self, t: int) -> None:
        st = self.stepper
        if t % self.hop == 0:
            st.set_frame(self.frames[t // self.hop])
        if self.noise is not None:
            with torch.profiler.record_function("noise"):
                st.noise.copy_(self.noise.steps(t, self.steps))
        if self.note_exc is not None:
            with torch.profiler.record_function("excitation"):
                st.exc.copy_(self.note_exc.at(torch.arange(t, t + self.steps, device=st.exc.device)).transpose(0, 1))
        self.run()


def _render(decoder: Decoder, emb: torch.Tensor, seeds: Sequence[int], out: torch.Tensor, *, pitch: torch.Tensor | None,
            sampling: Sampling, dtype: torch.dtype, graph: bool, progress: Callable[[int], None],
            levels: SourceLevels | None) -> None:
    """Decode one batch: emb [B, F, E] (pitch [B] with an excitation) -> class indices written into out [B, length]."""
    dec = BatchDecoding(decoder, emb, seeds, pitch=pitch, sampling=sampling, dtype=dtype, graph=graph, levels=levels)
    length = out.shape[1]
    for t in range(0, length, dec.steps):
        dec.chunk(t)
        n = min(dec.steps, length - t)
        out[:, t:t + n].copy_(dec.stepper.codes[:n, :, 0].T)
        progress(t + n)


@torch.no_grad()
def generate(
    decoder: Decoder,
    emb: torch.Tensor,
    *,
    sampling: Sampling = Sampling(),
    length: int | None = None,
    seeds: Sequence[int] | None = None,
    pitch: torch.Tensor | Sequence[int] | None = None,
    dtype: torch.dtype | None = None,
    cuda_graph: bool | None = None,
    max_batch: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    levels: SourceLevels | None = None,
) -> torch.Tensor:
    """emb [B, F, E] -> mu-law codes [B, length] (int64 in [-128, 127]); length defaults to F * hop.

    sampling: greedy, a draw at a temperature, or a quantile (its seed is not read here: seeds are per note).
    seeds: note b's uniforms come from seeds[b] (default 0 for every note).
    pitch: the notes' MIDI pitches [B], for a decoder with an excitation (cfg.exc_width).
    dtype: compute dtype (default: decode_dtype); cuda_graph: default on for CUDA.
    max_batch: notes decoded at once (a render shard passes its own size); None: all on the CPU, and on CUDA
    stepper.auto_batch's share of the free memory.
    progress(done_steps, total_steps) is called every chunk of steps (all parts of the batch counted).
    levels: the source's levels per frame given instead of predicted from emb (a model with a harmonic source;
    NoteExcitation.given).
    """
    hop = decoder.cfg.hop
    b, frames, _ = emb.shape
    length = frames * hop if length is None else length
    if length > frames * hop:
        raise ValueError(f"length {length} needs {-(-length // hop)} frames, got {frames}")
    seeds = list(seeds) if seeds is not None else [0] * b
    if len(seeds) != b:
        raise ValueError(f"{len(seeds)} seeds for {b} notes")
    pitch = check_pitch(decoder.cfg, pitch, b)
    dev = emb.device
    on_cuda = dev.type == "cuda"
    dtype = dtype or decode_dtype(dev)
    return render_parts(decoder, emb, seeds, length, max_batch, pitch=pitch, sampling=sampling, dtype=dtype,
                        graph=on_cuda and cuda_graph is not False, progress=progress, levels=levels)


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AMX tiles or AVX512-BF16)."""
    return torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()


DTYPE_ENV = "NSYNTH_DTYPE"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def decode_dtype(device: torch.device) -> torch.dtype:
    """The default decoding dtype: $NSYNTH_DTYPE where set (float32 or bfloat16: the same codes on every machine);
    else bf16 on CUDA and on CPUs with bf16 in hardware, where it keeps the output (bench/bf16.py,
    bench/quality.py --dtypes; docs/performance.md) and runs faster; fp32 elsewhere (without hardware bf16 a
    CPU's bf16 matmuls are ~10x slower than its fp32 ones)."""
    name = os.environ.get(DTYPE_ENV)
    if name:
        if name not in DTYPES:
            raise NsynthError(f"${DTYPE_ENV}={name!r}: it must be one of {', '.join(DTYPES)}")
        return DTYPES[name]
    return torch.bfloat16 if device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16()) else torch.float32


def check_pitch(cfg: ModelConfig, pitch, b: int) -> torch.Tensor | None:
    """The notes' pitches as int64 [b] for a decoder with an excitation (None for one without); errors otherwise."""
    if not cfg.exc_width:
        return None
    if pitch is None:
        raise ValueError(f"this model's decoder is excited at the notes' pitches ({cfg.exc_width} "
                         "excitation channels): give their pitches")
    pitch = torch.as_tensor(pitch, dtype=torch.int64).reshape(-1)
    if len(pitch) != b:
        raise ValueError(f"{len(pitch)} pitches for {b} notes")
    return pitch


@torch.no_grad()
def render_parts(decoder: Decoder, emb: torch.Tensor, seeds: Sequence[int], length: int, max_batch: int | None, *,
                 pitch: torch.Tensor | None = None, sampling: Sampling, dtype: torch.dtype, graph: bool,
                 progress: Callable[[int, int], None] | None, levels: SourceLevels | None = None) -> torch.Tensor:
    """generate() for validated arguments, max_batch notes at a time -> codes [B, length].
    max_batch None: all at once on the CPU; on CUDA auto_batch's count for the memory left free after `out`."""
    b = emb.shape[0]
    out = torch.empty(b, length, dtype=torch.int64, device=emb.device)
    if max_batch is None:
        max_batch = max(b, 1)
        if emb.device.type == "cuda":
            max_batch = auto_batch(decoder.cfg, emb.device, length=length, dtype=dtype)
    parts = split_batch(b, max_batch)
    for i, part in enumerate(parts):
        report = (lambda done, i=i: progress(i * length + done, len(parts) * length)) if progress else (lambda _: None)
        with torch.inference_mode():  # the stepper's buffers as inference tensors: less work per operation
            _render(decoder, emb[part], seeds[part], out[part], pitch=None if pitch is None else pitch[part],
                    sampling=sampling, dtype=dtype, graph=graph, progress=report,
                    levels=None if levels is None else levels.part(part))
    return out.sub_(decoder.cfg.quant // 2)

