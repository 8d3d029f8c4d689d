"""WaveNet decoding as the textbooks write it, on the same Decoder weights: the baselines of bench/generate.py and
the oracles of tests/precompute/test_generate_speed.py.

`TextbookGenerator` is the incremental generator of Magenta's fastgen and r9y9's `incremental_forward`: a Python
loop over layers, one queue of past inputs per layer, and unfused operations allocating their results: the
conditioning projected per layer and per sample, separate sigmoid, tanh and product, separate residual and skip
projections and sums. `queue="fifo"` keeps each queue as a deque of past inputs (fastgen's FIFO queues: push the
new input, the oldest falls out); `queue="shift"` keeps r9y9's input buffer [B, 2d+1, C], shifted by one sample
every step and read at stride d.

`naive_step` re-runs the full teacher-forced pass over (at least) the receptive field for every sample.
"""
from __future__ import annotations

from collections import deque

import torch
import torch.nn.functional as F

from precompute.model import Decoder


class TextbookGenerator:
    def __init__(self, decoder: Decoder, batch: int, queue: str = "fifo"):
        if queue not in ("fifo", "shift"):
            raise ValueError(f"queue must be 'fifo' or 'shift', got {queue!r}")
        self.dec, self.queue = decoder, queue
        w = next(decoder.parameters())
        widths, dilations = [1] + [decoder.cfg.dec_channels] * len(decoder.dilations), [1] + decoder.dilations
        if queue == "fifo":
            self.queues = [deque([w.new_zeros(batch, c) for _ in range(2 * d)], maxlen=2 * d)
                           for c, d in zip(widths, dilations)]
        else:
            self.queues = [w.new_zeros(batch, 2 * d + 1, c) for c, d in zip(widths, dilations)]
        self.dilations = dilations

    def _taps(self, k: int, h: torch.Tensor) -> torch.Tensor:
        """Push stage k's new input h [B, C]; -> its taps [t-2d, t-d, t] concatenated, [B, 3C]."""
        d = self.dilations[k]
        if self.queue == "fifo":
            q = self.queues[k]
            taps = torch.cat([q[0], q[d], h], 1)
            q.append(h)
            return taps
        buf = self.queues[k]
        buf[:, :-1] = buf[:, 1:].clone()
        buf[:, -1] = h
        return buf[:, 0::d].reshape(buf.shape[0], -1)

    def step(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """x [B, 1] decoder input at t; emb [B, E] the embedding at t -> logits [B, Q]."""
        dec, r = self.dec, self.dec.cfg.dec_channels
        cw, cb = dec.cond.weight, dec.cond.bias
        h = F.linear(self._taps(0, x), dec.start.weight, dec.start.bias)
        skip = F.linear(h, dec.skip_start.weight, dec.skip_start.bias)
        for i, (dil, rs) in enumerate(zip(dec.dilated, dec.res_skip)):
            sl = slice(2 * r * i, 2 * r * (i + 1))
            z = F.linear(self._taps(i + 1, h), dil.weight, dil.bias) + F.linear(emb, cw[sl], cb[sl])
            g = torch.sigmoid(z[:, :r]) * torch.tanh(z[:, r:])
            h = h + F.linear(g, rs.weight[:r], rs.bias[:r])
            skip = skip + F.linear(g, rs.weight[r:], rs.bias[r:])
        sl = slice(2 * r * len(dec.dilated), None)
        out = torch.relu(F.linear(torch.relu(skip), dec.out1.weight, dec.out1.bias) + F.linear(emb, cw[sl], cb[sl]))
        return F.linear(out, dec.logits.weight, dec.logits.bias)


@torch.no_grad()
def textbook_generate(decoder: Decoder, emb: torch.Tensor, length: int, queue: str = "fifo") -> torch.Tensor:
    """Greedy decoding with the textbook generator: emb [B, F, E] -> codes [B, length]."""
    gen = TextbookGenerator(decoder, emb.shape[0], queue)
    hop, half = decoder.cfg.hop, decoder.cfg.quant // 2
    x = emb.new_zeros(emb.shape[0], 1)
    codes = []
    for t in range(length):
        q = gen.step(x, emb[:, t // hop]).argmax(-1) - half
        codes.append(q)
        x = (q.to(x.dtype) / half).unsqueeze(1)
    return torch.stack(codes, 1)


@torch.no_grad()
def naive_step(decoder: Decoder, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    """Logits for the sample after x [B, t] (the inputs so far), re-running the full pass from the last frame
    boundary at least one receptive field back."""
    hop, t = decoder.cfg.hop, x.shape[1]
    start = max(0, t - decoder.cfg.receptive_field) // hop * hop
    return decoder(x[:, start:], emb[:, start // hop:])[:, -1]
