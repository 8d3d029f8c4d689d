"""The WaveNet autoencoder of Engel et al. 2017 (DESIGN.md), channels-last: audio [B, T], features [B, T, C].

Every dilated convolution is written as one matmul over its concatenated taps, so the decoder's full
(teacher-forced) pass and its cached one-step pass run the same `Decoder._stack` code and differ only in where
the past taps come from: shifted copies of the whole sequence, or per-layer rings of past inputs.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from precompute.config import ModelConfig
from precompute.mulaw import codes_to_input

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


class Decoder(nn.Module):
    """Causal WaveNet conditioned on embeddings held constant over each hop of samples."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        r, s = cfg.dec_channels, cfg.skip_channels
        self.cfg = cfg
        self.dilations = cfg.dilations("dec")
        self.start = nn.Linear(3, r)  # causal taps t-2, t-1, t
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

    def _stack(self, x: torch.Tensor, cond: Callable[[slice], torch.Tensor], taps: Taps) -> torch.Tensor:
        """x [B, T] decoder input; cond(channel slice) -> that slice of the conditioning, [B, T, n] (or [B, 1, n]);
        taps(stage, h) -> (h[t-2d], h[t-d]). -> logits [B, T, Q]."""
        r = self.cfg.dec_channels
        h = x.unsqueeze(-1)
        p2, p1 = taps(0, h)
        h = self.start(torch.cat([p2, p1, h], -1))
        skip = self.skip_start(h)
        for i, (dil, res_skip) in enumerate(zip(self.dilated, self.res_skip)):
            p2, p1 = taps(i + 1, h)
            z = dil(torch.cat([p2, p1, h], -1)) + cond(slice(2 * r * i, 2 * r * (i + 1)))
            rs = res_skip(torch.sigmoid(z[..., :r]) * torch.tanh(z[..., r:]))
            h = h + rs[..., :r]
            skip = skip + rs[..., r:]
        out = torch.relu(self.out1(torch.relu(skip)) + cond(slice(2 * r * len(self.dilated), None)))
        return self.logits(out)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """Teacher-forced pass. x [B, T] (input already shifted right by one); emb [B, F, E], F*hop >= T."""
        frames, hop, t = self.project(emb), self.cfg.hop, x.shape[1]
        periods = self.periods
        return self._stack(x, lambda c: frames[..., c].repeat_interleave(hop, dim=1)[:, :t],
                           lambda k, h: (shift(h, periods[k]), shift(h, periods[k] // 2)))

    # --- cached one-step pass -------------------------------------------------------------------------------
    def init_state(self, batch: int, device=None, dtype=torch.float32) -> list[torch.Tensor]:
        """Zeroed rings of past inputs, one per stage: [period, B, width] (time-major, so a read is contiguous)."""
        return [torch.zeros(p, batch, w, device=device, dtype=dtype) for p, w in zip(self.periods, self.widths)]

    def step(self, x: torch.Tensor, cond: torch.Tensor, state: list[torch.Tensor]):
        """Functional step (ONNX-exportable). x [B, 1]; cond [B, cond_width] for the current frame;
        state: rings [period, B, width] holding inputs t-period..t-1 oldest first.
        -> (logits [B, Q], new state)."""
        new_state: list[torch.Tensor] = []

        def taps(k: int, h: torch.Tensor):
            ring = state[k]
            d = ring.shape[0] // 2
            new_state.append(torch.cat([ring[1:], h.transpose(0, 1)], 0))
            return ring[0:1].transpose(0, 1), ring[d: d + 1].transpose(0, 1)

        cond = cond.unsqueeze(1)
        logits = self._stack(x, lambda c: cond[..., c], taps)
        return logits[:, 0], new_state


class WaveNetAutoencoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, T] mu-law in [-128, 127], T a multiple of hop -> logits [B, T, Q] predicting codes + 128."""
        x = codes_to_input(codes)
        emb = self.encoder(x)
        return self.decoder(shift(x.unsqueeze(-1), 1).squeeze(-1), emb)

    def encode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, T] -> embeddings [B, T // hop, E]."""
        return self.encoder(codes_to_input(codes))
