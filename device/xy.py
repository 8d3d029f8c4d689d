"""Where on the timbre grid a voice sounds: the X/Y it heads for (its channel's MPE X/Y, else the global one), its
glide there (one-pole, EngineConfig.xy_smooth_s) and the stream weights at its position: bilinear across the 4
cells of its square times its velocity layers' crossfade. The numpy reference of what kernels.render_segment does
per voice."""
from __future__ import annotations

import numpy as np

from device.addressing import BankView, assign_streams
from device.voices import Voices


def voice_targets(own: np.ndarray, g: np.ndarray, grid: int) -> np.ndarray:
    """The X/Y voices head for, in grid units, from their own X/Y `own` ([2] or [a, 2], 0..1, NaN: none) and the
    global X/Y g [2]: [2], or [a, 2] (or broadcastable to it)."""
    if np.isnan(own).all():  # every voice follows the global X/Y: [2], broadcasting against [a, 2]
        return g * (grid - 1)
    return np.where(np.isnan(own), g, own) * (grid - 1)


def corner_weights(uv: np.ndarray) -> np.ndarray:
    """Bilinear weights [m, 4] (float32) of the corners (0,0), (1,0), (0,1), (1,1) at local positions uv [m, 2]."""
    f = np.empty((uv.shape[0], 2, 2), np.float32)  # [voice, axis (x, y), (1 - t, t)]
    f[:, :, 1] = uv
    np.subtract(1.0, uv, out=f[:, :, 0])
    return (f[:, 1, :, None] * f[:, 0, None, :]).reshape(-1, 4)  # y-major, x-minor


def weights8(vo: Voices, idx: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Stream weights [m, 8] (cell-major, layer-minor) of voices idx at local square positions uv [m, 2]."""
    return (corner_weights(uv)[:, :, None] * vo.v_w[idx][:, None, :]).reshape(-1, 8)


def xy_weights(vo: Voices, act: np.ndarray, g: np.ndarray, k_xy: float, b: BankView,
               loop_crossfade: int) -> tuple[np.ndarray, np.ndarray]:
    """Move each voice towards its X/Y target (global X/Y g [2]; smoothing factor k_xy over the segment), staying
    inside its square for this segment: stream weights at the segment start [a, 8] and their change over the
    segment [a, 8] (zero for a voice that is settled)."""
    tgt = np.broadcast_to(voice_targets(vo.vxy[act], g, b.grid), (act.size, 2))
    s0 = vo.sxy[act]
    settled = (s0 == tgt).all(1)
    redo = ~(settled & (vo.square[act, 0] >= 0))
    if redo.any():
        r, s0r = act[redo], s0[redo]
        sq = np.clip(np.floor(s0r + 1e-9 * np.sign(tgt[redo] - s0r)), 0, b.grid - 2).astype(np.int64)
        changed = (sq != vo.square[r]).any(1)
        if changed.any():  # entering a new square (or a new voice): same cells, same weights at the boundary
            idx = r[changed]
            vo.square[idx] = sq[changed]
            assign_streams(vo, idx, b, loop_crossfade)
            vo.w8[idx] = weights8(vo, idx, s0r[changed] - sq[changed])
    w0 = vo.w8[act]
    dw = np.zeros_like(w0)
    moving = ~settled
    if moving.any():
        m, t, sq = act[moving], tgt[moving], vo.square[act[moving]]
        s1 = t + (s0[moving] - t) * k_xy
        s1 = np.where(np.abs(s1 - t) < 1e-7, t, s1)  # settle exactly
        s1 = np.clip(s1, sq, sq + 1)
        vo.sxy[m] = s1
        w1 = weights8(vo, m, s1 - sq)
        vo.w8[m] = w1
        dw[moving] = w1 - w0[moving]
    return w0, dw
