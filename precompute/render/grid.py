"""The XY grid: per-cell corner weights, and which cells are the same note (rendered once).

Corners are ordered as in the bank format, (x, y) = (0,0), (1,0), (0,1), (1,1): bottom-left, bottom-right,
top-left, top-right; cell [y][x] sits at (x / (N-1), y / (N-1)) in the unit square.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from device.bank import CORNER_ORDER
from nsynth.errors import NsynthError

MODES = ("bilinear", "distance")
_KEY_DECIMALS = 9  # weights equal to this many decimals are the same weights


def grid_weights(n: int, mode: str = "bilinear") -> np.ndarray:
    """-> float64 [N, N, 4] weights per cell [y][x] over the corners, each cell summing to 1.

    bilinear: (1-x)(1-y), x(1-y), (1-x)y, xy; a corner cell is exactly its corner.
    distance: the original NSynth Super's max(1 - Euclidean distance, 0), normalised.
    """
    if n < 2:
        raise NsynthError(f"grid must be at least 2x2, got {n}")
    if mode not in MODES:
        raise NsynthError(f"unknown interpolation {mode!r}; choose one of {', '.join(MODES)}")
    pos = np.arange(n) / (n - 1)
    y, x = np.meshgrid(pos, pos, indexing="ij")
    if mode == "bilinear":
        w = np.stack([(x if cx else 1 - x) * (y if cy else 1 - y) for cx, cy in CORNER_ORDER], -1)
    else:
        d = np.stack([np.hypot(x - cx, y - cy) for cx, cy in CORNER_ORDER], -1)
        w = np.maximum(1 - d, 0)
    return w / w.sum(-1, keepdims=True)


def unique_cells(weights: np.ndarray, corner_ids: Sequence[str]) -> tuple[list[tuple], np.ndarray]:
    """Group cells that make the same note: the same total weight on each distinct corner.

    weights [N, N, 4]; corner_ids: an identity per corner (equal ids: the same instrument).
    -> (keys, cell_index [N, N] int): keys[u] is ((corner id, weight), ...) sorted, for unique cell u,
    numbered in order of first appearance (row-major from the bottom-left cell).
    """
    n = weights.shape[0]
    keys: list[tuple] = []
    index = np.zeros((n, n), dtype=np.int64)
    seen: dict[tuple, int] = {}
    for y in range(n):
        for x in range(n):
            total: dict[str, float] = {}
            for cid, w in zip(corner_ids, weights[y, x]):
                total[cid] = total.get(cid, 0.0) + float(w)
            key = tuple(sorted((cid, round(w, _KEY_DECIMALS)) for cid, w in total.items() if round(w, _KEY_DECIMALS)))
            if key not in seen:
                seen[key] = len(keys)
                keys.append(key)
            index[y, x] = seen[key]
    return keys, index
