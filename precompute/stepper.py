"""The decoder packed for fast cached generation: fused weights, preallocated buffers, in-place rings.

Per step and layer, six operations and no allocation: gather the three taps [t-2d, t-d, t] from the layer's
time-major ring [2d+1, B, R] (one `index_select` into a contiguous [B, 3R] buffer), one matmul with the
conditioning as its bias, the gate as tanh on one half and `glu` (tanh(b)·sigmoid(a)) written straight into its
column block of G, the residual matmul, and an `index_copy_` of the result into the next layer's ring. All skip
connections (and skip_start) are one matmul over G = [h0, g_1, ..., g_L] after the stack. Biases are folded away:
the residual biases accumulate into constants c_i (rings hold h_i - c_i and start at -c_i, the image of the zero
padding; c_i's effect on the taps joins the dilated bias), every dilated and skip bias joins a per-frame
conditioning vector or a single skip bias, and 1/temperature is folded into the logits layer. Where torch's tanh
is several times slower than its sigmoid (fp32 on CPUs without AVX-512: 3-6x on an AVX2 EPYC, while on an AVX-512
Xeon they cost alike), tanh(b) is computed as 2·sigmoid(2b) - 1 (the 2 folded into the weights); not in bf16,
whose 8-bit mantissa would lose small gate values near sigmoid's 0.5.

With an excitation (cfg.exc_width), its values for a chunk's steps are written into `exc` [chunk, B, exc_width]
before the chunk runs (as the uniforms into `noise`), computed by the same NoteExcitation as the teacher-forced
pass; step k's row joins the start matmul. A residual decoder (cfg.source_residual) draws the audio minus the
source: each step's drawn class becomes the code of the source (read from exc) plus that residual.

Ring slots are computed on the device from a step counter, so a run of many steps has fixed addresses and CUDA
can capture it once as a graph and replay it at any position; the CPU runs the same steps eagerly.
"""
from __future__ import annotations

import torch

from precompute.config import ModelConfig
from precompute.model import Decoder, add_to_source, source_of
from precompute.sampling import Sampling


class Stepper:
    """Batched, sampled or greedy decoding of `batch` notes, `chunk` steps per call of `run_chunk`."""

    def __init__(self, decoder: Decoder, batch: int, *, chunk: int, sampling: Sampling,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                 tanh_by_sigmoid: bool | None = None):
        """sampling: greedy (argmax) or not (inverse CDF of the uniforms written into `noise`, which a quantile
        fills with itself), at sampling.temperature; tanh_by_sigmoid: the gate's tanh as 2·sigmoid(2b) - 1
        (None: where tanh_is_slow)."""
        cfg = decoder.cfg
        r, s, q = cfg.dec_channels, cfg.skip_channels, cfg.quant
        self.r, self.q, self.batch, self.chunk, self.greedy = r, q, batch, chunk, sampling.greedy
        self.cfg = cfg
        self.dilations = list(decoder.dilations)
        n = len(self.dilations)
        dev = torch.device(device)
        kw = dict(device=dev, dtype=dtype)
        self._tanh_by_sigmoid = tanh_is_slow(dev, dtype) if tanh_by_sigmoid is None else tanh_by_sigmoid
        self._pack(decoder, sampling.temperature, kw)

        # Rings: stage 0 holds the decoder input x (taps t-2, t-1, t), stage i+1 the input of dilated layer i.
        # Period 2d+1, so the slot written at t never holds a tap still to be read at t.
        self.periods = [3] + [2 * d + 1 for d in self.dilations]
        self.x_ring = torch.zeros(batch, 3, **kw)
        self.rings = [torch.empty(p, batch, r, **kw) for p in self.periods[1:]]  # time-major: slots contiguous
        offs, pers = [], []
        for p, d in zip(self.periods, [1] + self.dilations):
            offs += [-2 * d, -d, 0]
            pers += [p] * 3
        offs.append(1)  # slot of x at t+1, written once x is sampled
        pers.append(3)
        self.t = torch.zeros((), dtype=torch.int64, device=dev)
        self._offs = torch.tensor(offs, device=dev)
        self._pers = torch.tensor(pers, device=dev)
        self._tmp = torch.empty_like(self._offs)
        self.slots = torch.empty_like(self._offs)
        self._taps = [self.slots[3 * k: 3 * k + 3] for k in range(n + 1)]
        self._now = [self.slots[3 * k + 2: 3 * k + 3] for k in range(n + 1)]
        self._x_next = self.slots[-1:]

        self.cond = torch.zeros(batch, n * 2 * r + s, **kw)
        self._cond_layers = [self.cond[:, 2 * r * i: 2 * r * (i + 1)] for i in range(n)]
        self._cond_out = self.cond[:, 2 * r * n:]
        self.g = torch.empty(batch, (n + 1) * r, **kw)  # [h0, g_1 .. g_L]
        self._g_blocks = [self.g[:, r * i: r * (i + 1)] for i in range(n + 1)]
        self._x3 = torch.empty(batch, 3, r, **kw)
        self._x3_by_tap = self._x3.permute(1, 0, 2)  # the gather writes tap-major into the [B, 3R] layout
        self._x3_flat = self._x3.view(batch, 3 * r)
        self._x3_now = self._x3[:, 2]
        self._x0 = torch.empty(batch, 3, **kw)
        self._z = torch.empty(batch, 2 * r, **kw)
        self._z_tanh = self._z[:, :r]
        self._h = torch.empty(1, batch, r, **kw)
        self._skip = torch.empty(batch, s, **kw)
        self._out = torch.empty(batch, s, **kw)
        self.logits = torch.empty(batch, q, **kw)
        self._probs = torch.empty(batch, q, device=dev, dtype=torch.float32)
        self._cdf = torch.empty(batch, q, device=dev, dtype=torch.float32)
        self._v = torch.empty(batch, 1, device=dev, dtype=torch.float32)
        self._idx = torch.empty(batch, 1, device=dev, dtype=torch.int64)
        self._x_new = torch.empty(batch, 1, **kw)
        self.noise = torch.zeros(chunk, batch, 1, device=dev, dtype=torch.float32)  # uniforms per step, note
        self.codes = torch.zeros(chunk, batch, 1, device=dev, dtype=torch.int64)  # class index per step, note
        self.exc = torch.zeros(chunk, batch, cfg.exc_width, **kw)  # the excitation per step, note
        self.reset()

    def _pack(self, dec: Decoder, temperature: float, kw: dict) -> None:
        r = self.r
        n = len(self.dilations)
        with torch.no_grad():
            p = {k: v.detach().to(device=kw["device"], dtype=torch.float64) for k, v in dec.state_dict().items()}
            swap = torch.cat([torch.arange(r, 2 * r), torch.arange(r)])  # gate halves as [tanh, sigmoid] for glu
            scale = torch.ones(2 * r, 1, dtype=torch.float64, device=kw["device"])
            if self._tanh_by_sigmoid:
                scale[:r] = 2.0
            c = torch.zeros(r, dtype=torch.float64, device=kw["device"])
            consts, w_dil, w_res = [], [], []
            w_skip = [p["skip_start.weight"].T]
            b_skip = p["skip_start.bias"].clone()
            cw, cb = p["cond.weight"].clone(), p["cond.bias"].clone()
            for i in range(n):
                w, b = p[f"dilated.{i}.weight"], p[f"dilated.{i}.bias"]
                consts.append(c.clone())
                w_dil.append((w[swap] * scale).T)
                rw, rb = p[f"res_skip.{i}.weight"], p[f"res_skip.{i}.bias"]
                w_res.append(rw[:r].T)
                w_skip.append(rw[r:].T)
                b_skip += rb[r:]
                c = c + rb[:r]
                sl = slice(2 * r * i, 2 * r * (i + 1))
                cw[sl], cb[sl] = cw[sl][swap] * scale, (cb[sl] + b + w @ consts[-1].repeat(3))[swap] * scale[:, 0]
            cb[2 * r * n:] += p["out1.bias"]
            cast = lambda x: x.to(**kw).contiguous()  # noqa: E731
            self._w_start, self._b_start = cast(p["start.weight"][:, :3].T), cast(p["start.bias"])
            self._w_exc = cast(p["start.weight"][:, 3:].T)
            self._w_dil = [cast(w) for w in w_dil]
            self._w_res = [cast(w) for w in w_res[:-1]]  # the last layer's residual is never read
            self._w_skip, self._b_skip = cast(torch.cat(w_skip)), cast(b_skip)
            self._w_out1 = cast(p["out1.weight"].T)
            self._w_logits = cast(p["logits.weight"].T / temperature)
            self._b_logits = cast(p["logits.bias"] / temperature)
            self._w_cond, self._b_cond = cast(cw.T), cast(cb)
            self._ring_init = [cast(-ci) for ci in consts]
            self._minus_one = torch.full((r,), -1.0, **kw)

    @staticmethod
    def bytes_per_note(cfg: ModelConfig, dtype: torch.dtype) -> int:
        """Device memory one note of a batch needs (rings and buffers)."""
        r, s, q, n = cfg.dec_channels, cfg.skip_channels, cfg.quant, cfg.dec_layers
        elems = sum(2 * d + 1 for d in cfg.dilations("dec")) * r + (n + 1) * r + n * 2 * r + s + 6 * r + 2 * s + q
        return (elems + 128 * cfg.exc_width) * torch.finfo(dtype).bits // 8 + 8 * q + 16 * 128  # 128: a chunk

    def reset(self) -> None:
        """Back to t = 0 with the zero history (as after construction)."""
        self.t.zero_()
        self.x_ring.zero_()
        for ring, init in zip(self.rings, self._ring_init):
            ring.copy_(init)

    def set_frame(self, emb_frame: torch.Tensor) -> None:
        """emb_frame [B, E]: conditioning for the following steps (one matmul per frame, not per step)."""
        torch.addmm(self._b_cond, emb_frame.to(self._w_cond.dtype), self._w_cond, out=self.cond)

    def step(self, k: int) -> None:
        """One step at the device counter t; sample k of the chunk reads noise[k] and exc[k], writes codes[k]."""
        torch.add(self._offs, self.t, out=self._tmp)
        torch.remainder(self._tmp, self._pers, out=self.slots)
        torch.index_select(self.x_ring, 1, self._taps[0], out=self._x0)
        torch.addmm(self._b_start, self._x0, self._w_start, out=self._g_blocks[0])
        if self.cfg.exc_width:
            self._g_blocks[0].addmm_(self.exc[k], self._w_exc)
        self.rings[0].index_copy_(0, self._now[1], self._g_blocks[0].unsqueeze(0))
        last = len(self.dilations) - 1
        for i, ring in enumerate(self.rings):
            torch.index_select(ring, 0, self._taps[i + 1], out=self._x3_by_tap)
            torch.addmm(self._cond_layers[i], self._x3_flat, self._w_dil[i], out=self._z)
            if self._tanh_by_sigmoid:
                self._z_tanh.sigmoid_()
                torch.add(self._minus_one, self._z_tanh, alpha=2, out=self._z_tanh)
            else:
                self._z_tanh.tanh_()
            g = self._g_blocks[i + 1]
            torch._C._nn.glu(self._z, -1, out=g)
            if i < last:
                torch.addmm(self._x3_now, g, self._w_res[i], out=self._h[0])
                self.rings[i + 1].index_copy_(0, self._now[i + 2], self._h)
        torch.addmm(self._b_skip, self.g, self._w_skip, out=self._skip)
        self._skip.relu_()
        torch.addmm(self._cond_out, self._skip, self._w_out1, out=self._out)
        self._out.relu_()
        torch.addmm(self._b_logits, self._out, self._w_logits, out=self.logits)
        self._sample(k)
        self.t.add_(1)

    U_MIN, U_MAX = 2.0 ** -25, 1.0 - 2.0 ** -23  # the range u is held in (see _sample)

    def _sample(self, k: int) -> None:
        """Inverse CDF: the first class whose cumulative probability exceeds u (of the total), with u held in
        [U_MIN, U_MAX]. So u = 0 (torch.rand's lowest value, drawn once in 2^24) acts as half a step of its 2^-24
        grid and never picks a leading class of (near-)zero probability, and u·total stays below the float32
        total, so u near 1 picks the last class that adds to it, never a trailing class of (near-)zero mass."""
        idx = self._idx
        if self.greedy:
            torch.argmax(self.logits, -1, keepdim=True, out=idx)
        else:
            torch.softmax(self.logits, -1, dtype=torch.float32, out=self._probs)
            torch.cumsum(self._probs, -1, out=self._cdf)
            torch.clamp(self.noise[k], self.U_MIN, self.U_MAX, out=self._v)
            self._v.mul_(self._cdf[:, -1:])
            torch.searchsorted(self._cdf, self._v, right=True, out=idx)
            idx.clamp_(max=self.q - 1)  # only NaN logits get past the last class
        if self.cfg.source_residual:
            idx.copy_(add_to_source(idx - self.q // 2, source_of(self.exc[k].float())[:, None]) + self.q // 2)
        self.codes[k].copy_(idx)
        torch.mul(idx, 2.0 / self.q, out=self._x_new)  # network input (idx - q/2) / (q/2)
        self._x_new.sub_(1.0)
        self.x_ring.index_copy_(1, self._x_next, self._x_new)

    def run_chunk(self) -> None:
        """`chunk` steps; the unit captured as one CUDA graph."""
        for k in range(self.chunk):
            self.step(k)


def tanh_is_slow(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether the gate takes tanh through sigmoid: fp32 on a CPU without AVX-512 (measured in the module doc)."""
    return device.type == "cpu" and dtype == torch.float32 and "AVX512" not in torch.backends.cpu.get_cpu_capability()


MEMORY_FRACTION = 0.7  # of a GPU's free memory, what a batch's buffers and outputs may take
MAX_BATCH = 4096
CPU_BATCH = 128  # on a CPU, where memory does not bound the batch: 1.8x the samples/s of 32 (bench/render_cost.py)


def auto_batch(cfg: ModelConfig, device: torch.device, *, length: int, dtype: torch.dtype,
               free_bytes: int | None = None) -> int:
    """Notes decoded at once (the render plan's shard size, generate's parts): on CUDA the largest batch whose
    stepper buffers, embeddings and output codes (`length` int64 per note) fit in MEMORY_FRACTION of the free
    memory (free_bytes: that memory; None asks the device), a multiple of 8 from 8 up, at most MAX_BATCH, at
    least 1; CPU_BATCH elsewhere."""
    if device.type != "cuda":
        return CPU_BATCH
    free = torch.cuda.mem_get_info(device)[0] if free_bytes is None else free_bytes
    frames = -(-length // cfg.hop)
    per_note = (Stepper.bytes_per_note(cfg, dtype) + 8 * length
                + frames * cfg.bottleneck * (4 + torch.finfo(dtype).bits // 8))  # embeddings: float32 + a copy in dtype
    batch = min(MAX_BATCH, int(free * MEMORY_FRACTION) // per_note)
    return max(1, batch - batch % 8 if batch >= 8 else batch)


def split_batch(n: int, max_batch: int) -> list[slice]:
    """n notes -> the fewest batches of at most max_batch, sizes as equal as possible."""
    parts = -(-n // max_batch)
    if parts == 0:
        return []
    bounds = [n * i // parts for i in range(parts + 1)]
    return [slice(a, b) for a, b in zip(bounds, bounds[1:])]
