"""The render plan: every note to decode, in a fixed order, with its embedding recipe and seed.

Notes are (pitch, velocity, unique cell) in that nesting order, so one pitch and velocity's cells are
contiguous. Shards are fixed runs of `shard_size` notes, each decoded as one batch: the same plan gives the
same batches whether it is rendered in one go, resumed, or spread over processes, GPUs or Ray tasks.

A note's embedding is the cell's weights applied to the four corner embeddings in float64 (rounded once to
float32); so are its source's levels (linear amplitudes of each harmonic and noise band, analysed from the
corners' audio) when the request asks for analysed levels, so a cell's source is a crossfade of its corners'
spectra; its seed is a hash of the cell's weights over the distinct corners, the pitch, the velocity and
the user's seed: identical notes get identical seeds, whatever shard they fall in.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

PLAN_VERSION = 1


def request_key(request: dict) -> str:
    """The identity of a render request (what decides every note's samples)."""
    return hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()


def note_seed(cell_key: tuple, pitch: int, velocity: int, seed: int) -> int:
    blob = json.dumps([seed, cell_key, pitch, velocity]).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "little") & (2 ** 63 - 1)


@dataclass
class Plan:
    key: str                  # request_key of the request
    request: dict             # what the bank is made of (corners, model, grid, pitches, ... see render.py)
    shard_size: int
    pitches: list[int]
    velocities: list[int]
    grid: int
    length: int               # samples per note
    sample_rate: int
    corner_names: list[str]   # BL, BR, TL, TR
    cell_index: np.ndarray    # int64 [N, N]: unique cell of each grid cell [y][x]
    weights: np.ndarray       # float64 [U, 4]: corner weights of each unique cell
    seeds: np.ndarray         # int64 [P, V, U]
    corner_emb: np.ndarray    # float32 [4, P, V, F, E]
    target_rms: np.ndarray    # float64 [P, V]: the level every cell is brought to
    corner_harmonics: np.ndarray | None = None  # float16 [4, P, V, F, H]: analysed harmonic amplitudes, or None
    corner_noise: np.ndarray | None = None      # float16 [4, P, V, F, K]: analysed noise band amplitudes, or None

    ARRAYS = ("cell_index", "weights", "seeds", "corner_emb", "target_rms")
    OPTIONAL = ("corner_harmonics", "corner_noise")

    @property
    def n_cells(self) -> int:
        return len(self.weights)

    @property
    def n_notes(self) -> int:
        return len(self.pitches) * len(self.velocities) * self.n_cells

    @property
    def n_shards(self) -> int:
        return -(-self.n_notes // self.shard_size)

    def shard_notes(self, i: int) -> range:
        return range(i * self.shard_size, min((i + 1) * self.shard_size, self.n_notes))

    def note_coords(self, notes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """note indices -> (pitch index, velocity index, unique cell), each int64 arrays."""
        n = np.asarray(notes, dtype=np.int64)
        u = self.n_cells
        return n // (len(self.velocities) * u), (n // u) % len(self.velocities), n % u

    def shard_inputs(self, i: int) -> tuple[np.ndarray, list[int], np.ndarray, tuple | None]:
        """-> (embeddings float32 [n, F, E], seeds [n], MIDI pitches int64 [n], the source's levels: harmonic
        amplitudes float32 [n, F, H] and noise band amplitudes [n, F, K] or None; None when not analysed) of shard
        i's notes."""
        p, v, u = self.note_coords(self.shard_notes(i))
        w = self.weights[u]                                   # [n, 4]

        def mix(corner_values):  # [4, P, V, F, X] -> the notes' cells' weighted sums float32 [n, F, X]
            corners = corner_values[:, p, v].astype(np.float64)
            return sum(w[:, k, None, None] * corners[k] for k in range(4)).astype(np.float32)

        levels = None
        if self.corner_harmonics is not None:
            levels = (mix(self.corner_harmonics), None if self.corner_noise is None else mix(self.corner_noise))
        seeds = [int(s) for s in self.seeds[p, v, u]]
        return mix(self.corner_emb), seeds, np.asarray(self.pitches, np.int64)[p], levels

    def block_notes(self, p_idx: int, v_idx: int) -> range:
        """Note indices of all unique cells at one pitch and velocity."""
        start = (p_idx * len(self.velocities) + v_idx) * self.n_cells
        return range(start, start + self.n_cells)

    def header(self) -> dict:
        """Everything but the arrays (JSON)."""
        return {"plan_version": PLAN_VERSION, "key": self.key, "request": self.request,
                "shard_size": self.shard_size, "pitches": self.pitches, "velocities": self.velocities,
                "grid": self.grid, "length": self.length, "sample_rate": self.sample_rate,
                "corner_names": self.corner_names, "n_cells": self.n_cells, "n_notes": self.n_notes,
                "n_shards": self.n_shards}

    @classmethod
    def from_parts(cls, header: dict, arrays: dict) -> "Plan":
        fields = {k: header[k] for k in ("key", "request", "shard_size", "pitches", "velocities", "grid", "length",
                                         "sample_rate", "corner_names")}
        return cls(**fields, **{k: arrays[k] for k in cls.ARRAYS + cls.OPTIONAL if k in arrays})
