"""Progress with a rate and an ETA for long jobs (core: the render pipeline and the device-side bank tools)."""
from __future__ import annotations

import sys
import time


class ETA:
    """Progress printer with rate and ETA, for long loops (steps, notes)."""

    def __init__(self, label: str, unit: str = "steps", stream=None, every: float = 2.0):
        self.label, self.unit, self.every = label, unit, every
        self.stream = stream or sys.stderr
        self.t0 = time.monotonic()
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self.last < self.every:
            return
        self.last = now
        rate = done / max(now - self.t0, 1e-9)
        eta = (total - done) / rate if rate > 0 else float("inf")
        print(f"\r{self.label}: {done}/{total} {self.unit} ({rate:,.{0 if rate >= 10 else 2}f}/s, ETA {eta:,.0f} s)",
              end="\n" if done >= total else "", file=self.stream, flush=True)
