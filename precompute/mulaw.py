"""8-bit mu-law (mu = 255) as in DESIGN.md: q in [-128, 127]; network input q/128; targets q+128."""
from __future__ import annotations

import math

import torch

MU = 255


def mulaw_compress(x: torch.Tensor) -> torch.Tensor:
    """float audio -> mu-law companded values in [-1, 1] (clipped to [-1, 1] first), not yet quantised."""
    x = x.clamp(-1.0, 1.0)
    return torch.sign(x) * torch.log1p(MU * x.abs()) / math.log1p(MU)


def mulaw_encode(x: torch.Tensor) -> torch.Tensor:
    """float audio in [-1, 1] -> int64 codes q in [-128, 127]."""
    return torch.floor(128.0 * mulaw_compress(x)).clamp(-128, 127).to(torch.int64)


def mulaw_expand(y: torch.Tensor) -> torch.Tensor:
    """mu-law companded values in [-1, 1] -> float audio (mulaw_compress's inverse)."""
    return torch.sign(y) * torch.expm1(y.abs() * math.log1p(MU)) / MU


def mulaw_decode(q: torch.Tensor) -> torch.Tensor:
    """codes q in [-128, 127] -> float audio, taking each bin's centre (q + 0.5)."""
    return mulaw_expand((q.to(torch.float32) + 0.5) / 128.0)


def codes_to_input(q: torch.Tensor) -> torch.Tensor:
    """codes -> network input in [-1, 1)."""
    return q.to(torch.float32) / 128.0


def codes_to_target(q: torch.Tensor) -> torch.Tensor:
    """codes -> class indices 0..255."""
    return q + 128
