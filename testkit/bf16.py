"""bf16 matmuls emulated exactly as AMX and oneDNN compute them, for CPUs without native bf16 arithmetic (where
torch's own bf16 matmuls are ~10x slower than fp32): bench/bf16.py and bench/quality.py decode in bf16 through it,
tests/precompute/test_bf16_bench.py holds it to torch's bf16 matmul."""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from precompute.generate import cpu_has_bf16 as native_bf16


@contextlib.contextmanager
def emulated_bf16():
    """Within: torch.addmm, Tensor.addmm_ and F.linear on bf16 tensors compute in fp32 from the bf16 operands and
    round the result to bf16 (bf16 products are exact in fp32; the sum is accumulated in fp32, as AMX does).
    Yields a counter: {"bf16": how many bf16 calls it computed so far}."""
    addmm, addmm_, linear = torch.addmm, torch.Tensor.addmm_, F.linear
    calls = {"bf16": 0}

    def is_bf16(*ts):
        low = any(t is not None and t.dtype == torch.bfloat16 for t in ts)
        calls["bf16"] += low
        return low

    def em_addmm(bias, a, b, *, beta=1, alpha=1, out=None):
        if not is_bf16(bias, a, b):
            return addmm(bias, a, b, beta=beta, alpha=alpha, out=out)
        r = addmm(bias.float(), a.float(), b.float(), beta=beta, alpha=alpha).to(torch.bfloat16)
        return r if out is None else out.copy_(r)

    def em_addmm_(self, a, b, *, beta=1, alpha=1):
        if not is_bf16(self, a, b):
            return addmm_(self, a, b, beta=beta, alpha=alpha)
        return self.copy_(addmm(self.float(), a.float(), b.float(), beta=beta, alpha=alpha))

    def em_linear(x, w, b=None):
        if not is_bf16(x, w, b):
            return linear(x, w, b)
        return linear(x.float(), w.float(), None if b is None else b.float()).to(torch.bfloat16)

    torch.addmm, torch.Tensor.addmm_, F.linear = em_addmm, em_addmm_, em_linear
    try:
        yield calls
    finally:
        torch.addmm, torch.Tensor.addmm_, F.linear = addmm, addmm_, linear


def bf16_context():
    return contextlib.nullcontext() if native_bf16() else emulated_bf16()
