"""Assembly: finished shards -> post-processed int16 blocks -> the bank (device.bank.BankWriter, atomic) with
its timbre map."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from device.bank import TIMBRE_MAP, BankInfo, BankWriter
from nsynth.errors import NsynthError
from precompute.mulaw import mulaw_decode
from precompute.render.job import Job, remove_stale
from precompute.render.plan import Plan
from precompute.render.post import postprocess_block
from precompute.render.timbre_map import draw_timbre_map

log = logging.getLogger(__name__)


class _Shards:
    """Codes of notes by index, reading each shard once (blocks are visited in note order)."""

    def __init__(self, job: Job, plan: Plan):
        self.job, self.plan, self.loaded = job, plan, {}

    def codes(self, notes: range) -> np.ndarray:
        s = self.plan.shard_size
        wanted = range(notes.start // s, (notes.stop - 1) // s + 1)
        self.loaded = {i: c for i, c in self.loaded.items() if i in wanted}
        for i in wanted:
            if i not in self.loaded:
                codes = self.job.read_shard(self.plan, i)
                if codes is None:
                    raise NsynthError(f"{self.job.path}: shard {i} is missing or damaged; run the same command "
                                      "again to render it")
                self.loaded[i] = codes
        return np.concatenate([self.loaded[n // s][n % s][None] for n in notes])


def timbre_cell(plan: Plan) -> tuple[int, int]:
    """(pitch index, velocity index) drawn in the timbre map: pitch nearest to 60, the highest velocity."""
    p = min(range(len(plan.pitches)), key=lambda i: (abs(plan.pitches[i] - 60), plan.pitches[i]))
    return p, len(plan.velocities) - 1


def assemble(job: Job, plan: Plan, out: str | os.PathLike, *, model: str, config_hash: str, extra: dict,
             post: Callable[..., tuple[np.ndarray, np.ndarray, int]] = postprocess_block) -> BankInfo:
    """Post-process every block (with `post`, postprocess_block's signature) and write the bank at `out`
    (replacing any bank there only when complete)."""
    out = Path(out)
    remove_stale(out.parent, f"{out.name}.partial-")  # BankWriters of killed renders
    shards = _Shards(job, plan)
    clicks = 0
    try:
        with BankWriter(out, grid=plan.grid, pitches=plan.pitches, velocities=plan.velocities,
                        note_length=plan.length, sample_rate=plan.sample_rate, corners=plan.corner_names,
                        model=model, config_hash=config_hash, extra=extra) as writer:
            for p_idx, pitch in enumerate(plan.pitches):
                for v_idx in range(len(plan.velocities)):
                    audio = mulaw_decode(torch.from_numpy(shards.codes(plan.block_notes(p_idx, v_idx)))).numpy()
                    notes, loops, n = post(audio, pitch=pitch, sample_rate=plan.sample_rate,
                                           target_rms=float(plan.target_rms[p_idx, v_idx]))
                    clicks += n
                    writer.write_block(p_idx, v_idx, notes[plan.cell_index], loops[plan.cell_index])
            log.info("%s: %d clicks repaired", out, clicks)
            p_idx, v_idx = timbre_cell(plan)
            draw_timbre_map(np.asarray(writer.samples[p_idx, v_idx]), plan.corner_names, writer.partial / TIMBRE_MAP,
                            title=f"{out.name}: pitch {plan.pitches[p_idx]}, velocity {plan.velocities[v_idx]}",
                            sample_rate=plan.sample_rate)
            return writer.close()
    except OSError as e:
        raise NsynthError(f"{e.filename or out}: cannot write the bank ({e.strerror or e}); nothing was put at "
                          f"{out}; free space and run the same command again (finished notes are kept in "
                          f"{job.path})") from None
