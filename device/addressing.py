"""Where a voice reads in the bank: the tables the engine builds once per bank (`BankView`: a key's nearest rendered
pitch, a velocity's two layers, their crossfade weights and its gain, the flat samples, loops and resident pages)
and each voice's 8 streams (4 cells of its square x 2 velocity layers: `assign_streams`, the numpy reference of
kernels.assign_streams)."""
from __future__ import annotations

from typing import Iterable, NamedTuple

import numpy as np

from device.bank import Bank
from device.voices import Voices


class BankView(NamedTuple):
    bank: Bank
    flat: np.ndarray       # every sample, flat (int16)
    loops: np.ndarray      # [notes, 2] sustain loop start, end
    resident: np.ndarray   # a byte per page: in memory (empty: every page is)
    shift: int             # log2 of the page size in samples
    grid: int
    length: int            # note length in samples
    layers: int            # velocity layers
    nearest: np.ndarray    # [128] the pitch index each key plays
    vel_idx: np.ndarray    # [128, 2] the two velocity layers each velocity crossfades
    vel_w: np.ndarray      # [128, 2] their weights
    vel_gain: np.ndarray   # [128] the gain outside the layers' range (velocity_gains)


def bank_view(bank: Bank, velocity_curve: float) -> BankView:
    info = bank.info
    res = getattr(bank, "residency", None)
    pitches = np.array(info.pitches)
    vels = np.array(info.velocities, dtype=np.float64)
    v = np.arange(128, dtype=np.float64)
    hi = np.clip(np.searchsorted(vels, v), 0, len(vels) - 1)
    lo = np.clip(hi - 1, 0, None)
    span = np.where(vels[hi] > vels[lo], vels[hi] - vels[lo], 1.0)
    t = np.clip((v - vels[lo]) / span, 0.0, 1.0)  # 0 below the lowest layer, 1 above the highest
    lo = np.where(t == 1.0, hi, lo)  # on a layer: both streams read it (nothing read for a zero weight)
    return BankView(bank=bank, flat=np.asarray(bank.samples).reshape(-1),
                    loops=np.ascontiguousarray(bank.loops.reshape(-1, 2)),
                    resident=res.bits if res is not None else np.zeros(0, np.uint8),
                    shift=res.shift if res is not None else 0, grid=info.grid, length=info.note_length,
                    layers=len(info.velocities),
                    nearest=np.abs(np.arange(128)[:, None] - pitches[None, :]).argmin(1),
                    vel_idx=np.stack([lo, hi], 1), vel_w=np.stack([1.0 - t, t], 1),
                    vel_gain=velocity_gains(info.velocities, velocity_curve))


def velocity_gains(layers: Iterable[int], curve: float) -> np.ndarray:
    """Gain of each velocity 0..127 [128]: 1 from the lowest layer's velocity to the highest's (each layer is
    already levelled for its velocity, and between two the voice crossfades them); outside, the nearest layer
    scaled by (velocity / its velocity) ** curve (curve 0: no scaling)."""
    layers = list(layers)
    v = np.arange(128, dtype=np.float64)
    edge = np.clip(v, layers[0], layers[-1])
    return (v / edge) ** curve


def assign_streams(vo: Voices, idx: np.ndarray, b: BankView, loop_crossfade: int) -> None:
    """Point voices `idx` at the 8 streams of their current square (4 cells x 2 velocity layers)."""
    n, nv, length = b.grid, b.layers, b.length
    cx, cy = vo.square[idx, 0], vo.square[idx, 1]
    xs = np.stack([cx, cx + 1, cx, cx + 1], 1)  # corner order (0,0), (1,0), (0,1), (1,1)
    ys = np.stack([cy, cy, cy + 1, cy + 1], 1)
    p = vo.p_idx[idx][:, None, None]
    vl = vo.v_idx[idx][:, None, :]
    note = (((p * nv + vl) * n + ys[:, :, None]) * n + xs[:, :, None]).reshape(-1, 8)  # [m, 8]
    bad = (note < 0) | (note >= len(b.loops))
    loops = b.loops[np.where(bad, 0, note)]
    ls, le = loops[..., 0], loops[..., 1]
    xf = np.minimum(np.minimum(loop_crossfade, (le - ls) // 2), ls)
    off = np.where(bad, -1, note * length)  # a corrupt voice: marked unreadable (then freed)
    vo.streams[idx] = np.stack([off, ls, le, le - ls, xf, le - xf], -1)
