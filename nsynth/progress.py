"""Progress with a rate and an ETA for long jobs (core: the render pipeline and the device-side bank tools): a
callback `progress(done, total)` drawn by tqdm on stderr."""
from __future__ import annotations

import sys

from tqdm import tqdm


class ETA:
    """progress(done, total) for long loops (steps, notes): a tqdm bar "label: done/total unit (rate, ETA ...)",
    redrawn at most every `every` seconds, closed when done reaches total (a new total starts a new bar)."""

    def __init__(self, label: str, unit: str = "steps", stream=None, every: float = 2.0):
        self.label, self.unit, self.every = label, unit, every
        self.stream = stream or sys.stderr
        self.bar: tqdm | None = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None or self.bar.total != total:
            if self.bar is not None:
                self.bar.close()
            self.bar = tqdm(total=total, desc=self.label, unit=f" {self.unit}", file=self.stream, mininterval=self.every,
                            bar_format="{desc}: {n_fmt}/{total_fmt}{unit} ({rate_noinv_fmt}, ETA {remaining})")
        self.bar.update(done - self.bar.n)
        if done >= total:
            self.bar.close()
            self.bar = None
