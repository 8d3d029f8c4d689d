"""What a bank costs to render: the bundled model against the model before it (models/history/sine8), and the
bundled model at the CPU batch renders used before (32 notes), same notes, same machine, same threads, one run.

Renders, with each, a 2x2 grid of four SoundFont corners at the original instrument's 16 pitches (24-84 step 4)
and two velocities, 4-s notes (128 notes: one CPU shard at `nsynth render`'s CPU batch, four at 32), timed from
the command's start to the bank written (corners loaded, encoded and analysed, notes decoded, post-processed).
A note costs the same whatever grid it belongs to, so the time per note projects a 9x9 bank of those pitches at
one velocity (81 distinct cells x 16 pitches = 1,296 notes); the corners' loading and encoding, which do not grow
with the grid, are counted in every note, so the projection errs high.

    python bench/render_cost.py [--model models/compact] [--baseline models/history/sine8] [--threads 1]
Ends with one JSON line.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from precompute.render.render import ORIGINAL_PITCHES, render_bank  # noqa: E402
from precompute.stepper import CPU_BATCH  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CORNERS = ["sf2:0", "sf2:40", "sf2:73", "sf2:33"]  # piano, violin, flute, finger bass (the default SoundFont)
VELOCITIES = [64, 100]
NOTES = 4 * len(ORIGINAL_PITCHES) * len(VELOCITIES)
BANK_NOTES = 81 * len(ORIGINAL_PITCHES)  # a 9x9 bank of the original's pitches, one velocity
OLD_CPU_BATCH = 32


def seconds_per_note(model: str, out: Path, threads: int, batch: int | None) -> float:
    t0 = time.perf_counter()
    render_bank(CORNERS, model, out, grid=2, pitches=ORIGINAL_PITCHES, velocities=VELOCITIES, length=4.0,
                threads=threads, batch=batch, quiet=True)
    return (time.perf_counter() - t0) / NOTES


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "models" / "compact"))
    ap.add_argument("--baseline", default=str(ROOT / "models" / "history" / "sine8"))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    runs = {"model": (args.model, None), "baseline": (args.baseline, None),
            f"model_batch{OLD_CPU_BATCH}": (args.model, OLD_CPU_BATCH)}
    per_note = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (model, batch) in runs.items():
            per_note[name] = seconds_per_note(model, Path(tmp) / name, args.threads, batch)
            print(f"{name} ({model}, batch {batch or CPU_BATCH}): {per_note[name]:.2f} s per 4-s note, a 9x9 bank "
                  f"of 16 pitches {per_note[name] * BANK_NOTES / 3600:.2f} h", file=sys.stderr)
    print(json.dumps({"bench": "render_cost", "threads": args.threads, "batch": CPU_BATCH, "notes": NOTES,
                      **{f"seconds_per_note_{k}": round(v, 3) for k, v in per_note.items()},
                      **{f"bank_9x9_hours_{k}": round(v * BANK_NOTES / 3600, 3) for k, v in per_note.items()},
                      "ratio_to_baseline": round(per_note["model"] / per_note["baseline"], 3),
                      f"speedup_over_batch{OLD_CPU_BATCH}": round(per_note[f"model_batch{OLD_CPU_BATCH}"]
                                                                  / per_note["model"], 3),
                      "model": args.model, "baseline": args.baseline}))


if __name__ == "__main__":
    main()
