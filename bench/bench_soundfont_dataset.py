"""Benchmark: SoundFont dataset rendering, all cores vs one worker (same notes, same machine, one run).

    python bench/bench_soundfont_dataset.py [--programs 0-7] [--velocities 25,127]
Ends with one JSON line: notes, seconds and notes/s for each, and the speed-up ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from precompute.datasets import gm  # noqa: E402
from precompute.datasets.fluid import DEFAULT_SOUNDFONT  # noqa: E402
from precompute.datasets.soundfont import parse_ints, render_soundfont_dataset  # noqa: E402


def timed(out: Path, jobs: int, programs, velocities) -> tuple[int, float]:
    t = time.perf_counter()
    s = render_soundfont_dataset(DEFAULT_SOUNDFONT, out, programs=programs, velocities=velocities, jobs=jobs,
                                 progress=False)
    return s.rendered, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--programs", default="0-7")
    ap.add_argument("--velocities", default="25,127")
    args = ap.parse_args()
    programs, velocities = gm.parse_programs(args.programs), parse_ints(args.velocities, "velocities")
    jobs = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        n1, t1 = timed(Path(tmp) / "one", 1, programs, velocities)
        nn, tn = timed(Path(tmp) / "all", jobs, programs, velocities)
    assert n1 == nn
    print(f"{n1} notes: 1 worker {t1:.2f} s ({n1 / t1:.0f} notes/s), {jobs} workers {tn:.2f} s ({nn / tn:.0f} notes/s)")
    print(json.dumps({"bench": "soundfont_dataset", "notes": n1, "workers": jobs, "one_worker_s": round(t1, 3),
                      "all_workers_s": round(tn, 3), "notes_per_s": round(nn / tn, 1), "speedup": round(t1 / tn, 2)}))


if __name__ == "__main__":
    main()
