"""The WaveNet autoencoder of Engel et al. 2017 (DESIGN.md), channels-last: audio [B, T], features [B, T, C].

Every dilated convolution is written as one matmul over its concatenated taps, so the decoder's full
(teacher-forced) pass and its cached one-step pass run the same `Decoder._stack` code and differ only in where
the past taps come from: shifted copies of the whole sequence, or per-layer rings of past inputs.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from precompute.config import ModelConfig
from precompute.mulaw import codes_to_input, mulaw_decode

Taps = Callable[[int, torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]


def shift(x: torch.Tensor, k: int) -> torch.Tensor:
    """x [B, T, C] -> x delayed by k samples (k > 0: x[t-k]; k < 0: x[t+|k|]), zero-filled."""
    if k > 0:
        return F.pad(x, (0, 0, k, 0))[:, : x.shape[1]]
    return F.pad(x, (0, 0, 0, -k))[:, -k:]


class Encoder(nn.Module):
    """Non-causal dilated stack: audio input [B, T] (mu-law q/128) -> embeddings [B, T // hop, bottleneck]."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        c = cfg.enc_channels
        self.hop = cfg.hop
        self.dilations = cfg.dilations("enc")
        self.start = nn.Linear(3, c)  # taps t-1, t, t+1
        self.dilated = nn.ModuleList(nn.Linear(3 * c, c) for _ in self.dilations)  # taps t-d, t, t+d
        self.res = nn.ModuleList(nn.Linear(c, c) for _ in self.dilations)
        self.bottleneck = nn.Linear(c, cfg.bottleneck)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.unsqueeze(-1)
        en = self.start(torch.cat([shift(h, 1), h, shift(h, -1)], -1))
        for d, dil, res in zip(self.dilations, self.dilated, self.res):
            r = torch.relu(en)
            en = en + res(torch.relu(dil(torch.cat([shift(r, d), r, shift(r, -d)], -1))))
        en = self.bottleneck(en)
        frames = en.shape[1] // self.hop
        return en[:, : frames * self.hop].reshape(en.shape[0], frames, self.hop, -1).mean(2)


def excitation_rates(pitch: torch.Tensor, harmonics: int, sample_rate: int) -> torch.Tensor:
    """MIDI pitches [B] -> angular rates [B, harmonics] float64, radians per sample of h * f0 for h = 1..harmonics;
    0 for a harmonic at or above Nyquist (its excitation is silent)."""
    f0 = 440.0 * 2 ** ((pitch.to(torch.float64) - 69) / 12)
    w = 2 * math.pi * f0[:, None] * torch.arange(1, harmonics + 1, dtype=torch.float64, device=pitch.device)
    w = w / sample_rate
    return torch.where(w < math.pi, w, torch.zeros_like(w))


def excitation(rates: torch.Tensor, t: torch.Tensor, phase: torch.Tensor | None = None) -> torch.Tensor:
    """rates [B, H] (excitation_rates), t [T] or [B, T] sample indices, phase [B, H] (default 0)
    -> sin(rates * t + phase) [B, T, H] float64."""
    t = t.to(torch.float64)
    arg = rates[:, None, :] * (t if t.dim() == 2 else t[None])[..., None]
    return torch.sin(arg if phase is None else arg + phase[:, None, :])


def aligned_phase(audio: torch.Tensor, rates: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """audio [B, T] at sample indices t [B, T] -> phases [B, H] that put each excitation harmonic in phase with
    that harmonic of the audio (its DFT phase there, plus pi/2 since the excitation is a sine); 0 where silent."""
    arg = rates[:, None, :] * t.to(torch.float64)[..., None]
    x = audio.to(torch.float64)[..., None]
    phase = torch.atan2(-(x * torch.sin(arg)).sum(1), (x * torch.cos(arg)).sum(1)) + math.pi / 2
    return torch.where(rates > 0, phase, torch.zeros_like(phase))


class Decoder(nn.Module):
    """Causal WaveNet conditioned on embeddings held constant over each hop of samples; with cfg.harmonics, its
    input at sample t also holds the sine excitation at t (the note's pitch and its harmonics)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        r, s = cfg.dec_channels, cfg.skip_channels
        self.cfg = cfg
        self.dilations = cfg.dilations("dec")
        self.start = nn.Linear(3 + cfg.harmonics, r)  # causal taps t-2, t-1, t [+ the excitation at t]
        self.skip_start = nn.Linear(r, s)
        self.dilated = nn.ModuleList(nn.Linear(3 * r, 2 * r) for _ in self.dilations)  # taps t-2d, t-d, t
        self.res_skip = nn.ModuleList(nn.Linear(r, r + s) for _ in self.dilations)  # residual and skip 1x1, fused
        # All embedding projections (cond_map_1..L and cond_map_out1) in one matmul, done once per frame.
        self.cond = nn.Linear(cfg.bottleneck, len(self.dilations) * 2 * r + s)
        self.out1 = nn.Linear(s, s)
        self.logits = nn.Linear(s, cfg.quant)

    @property
    def periods(self) -> list[int]:
        """Ring length per stage: stage 0 is the start conv (dilation 1), stage i+1 is dilated layer i."""
        return [2] + [2 * d for d in self.dilations]

    @property
    def widths(self) -> list[int]:
        return [1] + [self.cfg.dec_channels] * len(self.dilations)

    def project(self, emb: torch.Tensor) -> torch.Tensor:
        """emb [B, F, bottleneck] -> per-frame conditioning [B, F, cond_width]."""
        return self.cond(emb)

    def _check_exc(self, exc: torch.Tensor | None) -> None:
        if (exc is None) != (self.cfg.harmonics == 0):
            raise ValueError(f"a decoder with {self.cfg.harmonics} harmonics takes "
                             f"{'an excitation' if self.cfg.harmonics else 'no excitation'}")

    def _stack(self, x: torch.Tensor, cond: Callable[[slice], torch.Tensor], taps: Taps,
               exc: torch.Tensor | None) -> torch.Tensor:
        """x [B, T] decoder input; cond(channel slice) -> that slice of the conditioning, [B, T, n] (or [B, 1, n]);
        taps(stage, h) -> (h[t-2d], h[t-d]); exc [B, T, harmonics] or None. -> logits [B, T, Q]."""
        self._check_exc(exc)
        r = self.cfg.dec_channels
        h = x.unsqueeze(-1)
        p2, p1 = taps(0, h)
        h = self.start(torch.cat([p2, p1, h] if exc is None else [p2, p1, h, exc.to(h.dtype)], -1))
        skip = self.skip_start(h)
        for i, (dil, res_skip) in enumerate(zip(self.dilated, self.res_skip)):
            p2, p1 = taps(i + 1, h)
            z = dil(torch.cat([p2, p1, h], -1)) + cond(slice(2 * r * i, 2 * r * (i + 1)))
            rs = res_skip(torch.sigmoid(z[..., :r]) * torch.tanh(z[..., r:]))
            h = h + rs[..., :r]
            skip = skip + rs[..., r:]
        out = torch.relu(self.out1(torch.relu(skip)) + cond(slice(2 * r * len(self.dilated), None)))
        return self.logits(out)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, exc: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced pass. x [B, T] (input already shifted right by one); emb [B, F, E], F*hop >= T;
        exc [B, T, harmonics] (see excitation) when cfg.harmonics."""
        frames, hop, t = self.project(emb), self.cfg.hop, x.shape[1]
        periods = self.periods
        return self._stack(x, lambda c: frames[..., c].repeat_interleave(hop, dim=1)[:, :t],
                           lambda k, h: (shift(h, periods[k]), shift(h, periods[k] // 2)), exc)

    def excitation(self, pitch: torch.Tensor | None, t: torch.Tensor,
                   align: torch.Tensor | None = None) -> torch.Tensor | None:
        """MIDI pitches [B] and sample indices [T] or [B, T] -> the excitation [B, T, harmonics] (None without
        harmonics): from phase 0 (generation), or in phase with the audio `align` [B, T] (teacher forcing)."""
        if not self.cfg.harmonics:
            return None
        if pitch is None:
            raise ValueError(f"a decoder with {self.cfg.harmonics} harmonics needs the notes' pitches")
        rates = excitation_rates(pitch, self.cfg.harmonics, self.cfg.sample_rate)
        if align is None:
            return excitation(rates, t)
        t = t if t.dim() == 2 else t[None].expand(len(pitch), -1)
        return excitation(rates, t, aligned_phase(align, rates, t))

    # --- cached one-step pass -------------------------------------------------------------------------------
    def init_state(self, batch: int, device=None, dtype=torch.float32) -> list[torch.Tensor]:
        """Zeroed rings of past inputs, one per stage: [period, B, width] (time-major, so a read is contiguous)."""
        return [torch.zeros(p, batch, w, device=device, dtype=dtype) for p, w in zip(self.periods, self.widths)]

    def step(self, x: torch.Tensor, cond: torch.Tensor, state: list[torch.Tensor], exc: torch.Tensor | None = None):
        """Functional step (ONNX-exportable). x [B, 1]; cond [B, cond_width] for the current frame;
        state: rings [period, B, width] holding inputs t-period..t-1 oldest first; exc [B, harmonics] at t
        when cfg.harmonics. -> (logits [B, Q], new state)."""
        new_state: list[torch.Tensor] = []

        def taps(k: int, h: torch.Tensor):
            ring = state[k]
            d = ring.shape[0] // 2
            new_state.append(torch.cat([ring[1:], h.transpose(0, 1)], 0))
            return ring[0:1].transpose(0, 1), ring[d: d + 1].transpose(0, 1)

        cond = cond.unsqueeze(1)
        logits = self._stack(x, lambda c: cond[..., c], taps, None if exc is None else exc.unsqueeze(1))
        return logits[:, 0], new_state


class WaveNetAutoencoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    def forward(self, codes: torch.Tensor, pitch: torch.Tensor | None = None,
                noise: torch.Tensor | None = None) -> torch.Tensor:
        """codes [B, T] mu-law in [-128, 127], T a multiple of hop -> logits [B, T, Q] predicting codes + 128.
        With cfg.harmonics: pitch [B] (MIDI); the excitation is put in phase with each harmonic of the codes (a
        generated note instead starts its excitation at phase 0 and follows it). noise [B, T]: added to the
        decoder's past-sample input only (training with injected noise, as FFTNet: the decoder learns not to
        trust its own past samples blindly, since in generation they are its own noisy draws)."""
        x = codes_to_input(codes)
        emb = self.encoder(x)
        exc = self.decoder.excitation(pitch, torch.arange(codes.shape[1], device=codes.device),
                                      align=mulaw_decode(codes))
        past = shift(x.unsqueeze(-1), 1).squeeze(-1)
        return self.decoder(past if noise is None else past + noise, emb, exc)

    def encode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, T] -> embeddings [B, T // hop, E]."""
        return self.encoder(codes_to_input(codes))
