"""Atomic loads and stores on int64 arrays in memory shared between processes, for numba-compiled code, and a
seqlock built on them (device/clock.py's frame mark, device/event_ring.py's indices).

On arm64 (the Pi) stores become visible to another core in any order and loads may be satisfied early, so the
writer of a record must publish its index with a release store (every earlier store is visible first) and the
reader must take the index with an acquire load (no later load is satisfied before it). These are LLVM's atomic
`store release` / `load acquire` (stlr / ldar on arm64; plain moves on x86-64, which orders stores already) and
`fence seq_cst`, emitted by numba intrinsics: no lock, no system call, no allocation. Where numba is missing (the
engine's numpy fallback; not the instrument's configuration) they are plain Python element reads and writes:
ordered on x86-64, whose stores are seen in program order, but not guaranteed on arm64.
"""
from __future__ import annotations

import numpy as np

from device.kernels import COMPILED, jit

if COMPILED:
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    def _pointer(context, builder, sig, args):
        aryty, idxty = sig.args[0], sig.args[1]
        ary = context.make_array(aryty)(context, builder, args[0])
        idx = context.cast(builder, args[1], idxty, types.intp)
        return cgutils.get_item_pointer(context, builder, aryty, ary, [idx], wraparound=False)

    @intrinsic
    def load_acquire(typingctx, arr, idx):
        """arr[idx] read with acquire ordering (int64 arrays)."""
        sig = types.int64(arr, idx)

        def codegen(context, builder, sig, args):
            return builder.load_atomic(_pointer(context, builder, sig, args), "acquire", 8)
        return sig, codegen

    @intrinsic
    def store_release(typingctx, arr, idx, value):
        """arr[idx] = value with release ordering (int64 arrays)."""
        sig = types.void(arr, idx, value)

        def codegen(context, builder, sig, args):
            val = context.cast(builder, args[2], sig.args[2], types.int64)
            builder.store_atomic(val, _pointer(context, builder, sig, args), "release", 8)
            return context.get_dummy_value()
        return sig, codegen

    @intrinsic
    def fence(typingctx):
        """A full memory barrier (LLVM `fence seq_cst`: dmb ish on arm64, mfence on x86-64)."""
        sig = types.void()

        def codegen(context, builder, sig, args):
            builder.fence("seq_cst")
            return context.get_dummy_value()
        return sig, codegen
else:  # pragma: no cover - exercised where numba is not installed
    def load_acquire(arr, idx):
        return int(arr[idx])

    def store_release(arr, idx, value):
        arr[idx] = value

    def fence():
        pass


@jit()
def seq_write(cells: np.ndarray, a: int, b: int) -> None:
    """Writer of a seqlock over cells [sequence, a, b] (one writer): the sequence is odd while a and b change."""
    s = load_acquire(cells, 0)
    store_release(cells, 0, s + 1)
    fence()  # the odd sequence is visible before either value changes
    store_release(cells, 1, a)
    store_release(cells, 2, b)
    store_release(cells, 0, s + 2)  # release: both values are visible before the even sequence


@jit()
def seq_read(cells: np.ndarray, out: np.ndarray) -> bool:
    """Reader of the seqlock: out[0], out[1] = a, b, as written by one `seq_write` (never half of two). A write
    takes nanoseconds; False (out unchanged) if none completed within a million tries (the writer died in one)."""
    for _ in range(1 << 20):
        s = load_acquire(cells, 0)
        if s & 1:
            continue
        a = load_acquire(cells, 1)
        b = load_acquire(cells, 2)
        fence()  # both values are read before the sequence is read again
        if load_acquire(cells, 0) == s:
            out[0], out[1] = a, b
            return True
    return False
