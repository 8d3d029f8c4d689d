"""Batched autoregressive decoding: B notes at once from embeddings [B, F, E], with the cached one-step pass.

Sampling draws one uniform per note per step from that note's own seeded stream (inverse-CDF sampling), so a
note's audio does not depend on which batch it was rendered in. On CUDA the step is captured once as a CUDA graph
and replayed; the CPU path runs the same step eagerly.
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

import torch

from precompute.model import Decoder
from precompute.mulaw import codes_to_input

NOISE_CHUNK = 512  # steps of per-note uniforms drawn at a time


class _NoteNoise:
    """Per-note uniform streams: note b's u[t] depends only on (seeds[b], t)."""

    def __init__(self, seeds: Sequence[int], device):
        self.gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.device = device
        self.block = None
        self.start = -NOISE_CHUNK

    def at(self, t: int) -> torch.Tensor:
        if t >= self.start + NOISE_CHUNK:
            self.start = t - t % NOISE_CHUNK
            self.block = torch.stack([torch.rand(NOISE_CHUNK, generator=g) for g in self.gens], 1).to(self.device)
        return self.block[t - self.start]


def sample_codes(logits: torch.Tensor, u: torch.Tensor | None, temperature: float = 1.0) -> torch.Tensor:
    """logits [B, Q]; u [B] uniforms (None: greedy) -> codes [B] in [-Q/2, Q/2)."""
    q = logits.shape[-1]
    if u is None:
        idx = logits.argmax(-1)
    else:
        cdf = torch.softmax(logits.float() / temperature, -1).cumsum(-1)
        idx = (cdf < u.unsqueeze(-1) * cdf[:, -1:]).sum(-1).clamp_(max=q - 1)
    return idx - q // 2


class _Stepper:
    """One decoding step over persistent buffers (so CUDA can capture it as a graph)."""

    def __init__(self, decoder: Decoder, cond: torch.Tensor, dtype: torch.dtype):
        b = cond.shape[0]
        dev = cond.device
        self.decoder = decoder
        self.state = decoder.init_state(b, device=dev, dtype=dtype)
        self.t = torch.zeros((), dtype=torch.int64, device=dev)
        self.x = torch.zeros(b, 1, device=dev, dtype=dtype)
        self.cond = torch.zeros(b, cond.shape[-1], device=dev, dtype=dtype)
        self.logits = None
        self.graph = None

    def _run(self):
        self.logits = self.decoder.step_inplace(self.x, self.cond, self.state, self.t)
        self.t += 1

    def capture(self):
        """Record the step as a CUDA graph (after a warm-up on a side stream), resetting the state it touched."""
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                self._run()
        torch.cuda.current_stream().wait_stream(s)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self._run()
        for ring in self.state:
            ring.zero_()
        self.t.zero_()

    def __call__(self) -> torch.Tensor:
        if self.graph is not None:
            self.graph.replay()
        else:
            self._run()
        return self.logits


@torch.no_grad()
def generate(
    decoder: Decoder,
    emb: torch.Tensor,
    *,
    length: int | None = None,
    greedy: bool = False,
    temperature: float = 1.0,
    seeds: Sequence[int] | None = None,
    dtype: torch.dtype | None = None,
    cuda_graph: bool | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """emb [B, F, E] -> mu-law codes [B, length] (int64 in [-128, 127]); length defaults to F * hop.

    dtype: compute dtype (default fp32 on CPU, bf16 on CUDA); cuda_graph: default on for CUDA.
    progress(done_steps, total_steps) is called every few hundred steps.
    """
    hop = decoder.cfg.hop
    b, frames, _ = emb.shape
    length = frames * hop if length is None else length
    if length > frames * hop:
        raise ValueError(f"length {length} needs {-(-length // hop)} frames, got {frames}")
    dev = emb.device
    on_cuda = dev.type == "cuda"
    dtype = dtype or (torch.bfloat16 if on_cuda else torch.float32)
    dec = decoder.to(dtype) if dtype != next(decoder.parameters()).dtype else decoder
    cond_frames = dec.project(emb.to(dtype))  # [B, F, C]: conditioning computed once per frame
    stepper = _Stepper(dec, cond_frames, dtype)
    if on_cuda and (cuda_graph is None or cuda_graph):
        stepper.cond.copy_(cond_frames[:, 0])
        stepper.capture()
    noise = None if greedy else _NoteNoise(seeds if seeds is not None else [0] * b, dev)
    out = torch.empty(b, length, dtype=torch.int64, device=dev)
    for t in range(length):
        if t % hop == 0:
            stepper.cond.copy_(cond_frames[:, t // hop])
        logits = stepper()
        q = sample_codes(logits, None if noise is None else noise.at(t), temperature)
        out[:, t] = q
        stepper.x.copy_(codes_to_input(q).unsqueeze(1))
        if progress is not None and (t + 1) % 256 == 0:
            progress(t + 1, length)
    if progress is not None:
        progress(length, length)
    return out


class ETA:
    """Progress printer with rate and ETA, for long loops (steps, notes)."""

    def __init__(self, label: str, unit: str = "steps", stream=None, every: float = 2.0):
        import sys

        self.label, self.unit, self.every = label, unit, every
        self.stream = stream or sys.stderr
        self.t0 = time.monotonic()
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self.last < self.every:
            return
        self.last = now
        rate = done / max(now - self.t0, 1e-9)
        eta = (total - done) / rate if rate > 0 else float("inf")
        print(f"\r{self.label}: {done}/{total} {self.unit} ({rate:,.0f}/s, ETA {eta:,.0f} s)",
              end="\n" if done >= total else "", file=self.stream, flush=True)
