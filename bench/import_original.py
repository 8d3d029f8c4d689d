"""`nsynth bank import-original` on a full-size sound file (81 cells x 16 pitches x 60,000 samples, 155.5 MB):
time, and the memory the process holds while importing (peak anonymous RSS, sampled every 10 ms; file pages the
kernel caches for the bank being written are counted apart), against a baseline that loads the whole file first
(as a straightforward converter would: np.fromfile, then reorder and write).

    python bench/import_original.py [--files 1] [--dir DIR]

Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from device.original import Layout  # noqa: E402

CHILD = r"""
import os, sys, threading, time, json
sys.path.insert(0, sys.argv[1])
peak = {"anon": 0, "file": 0}
def sample():
    while True:
        fields = dict(l.split(":", 1) for l in open("/proc/self/status") if l.startswith(("RssAnon", "RssFile")))
        peak["anon"] = max(peak["anon"], int(fields["RssAnon"].split()[0]))
        peak["file"] = max(peak["file"], int(fields["RssFile"].split()[0]))
        time.sleep(0.01)
threading.Thread(target=sample, daemon=True).start()
import numpy as np
from device.original import Layout, import_original, bank_cell, corner_names, MODEL, VELOCITY, manifest_corners
from device.bank import BankWriter
from nsynth.loops import find_loop, pitch_period
src, out, mode = sys.argv[2], sys.argv[3], sys.argv[4]
time.sleep(0.05)
base = dict(peak)
t0 = time.perf_counter()
if mode == "ours":
    import_original(src, out, quiet=True)
else:  # baseline: the whole file in memory, then reordered and written
    lay = Layout()
    for path in sorted(os.listdir(src)):
        data = np.fromfile(os.path.join(src, path), dtype="<i2").reshape(lay.grid * lay.grid, len(lay.pitches), -1)
        names = corner_names(__import__("pathlib").Path(path))
        with BankWriter(os.path.join(out, path[:-4]), grid=lay.grid, pitches=lay.pitches, velocities=[VELOCITY],
                        note_length=lay.note_length, corners=manifest_corners(names), model=MODEL) as w:
            for cell in range(lay.grid * lay.grid):
                y, x = bank_cell(cell, lay.grid)
                for p, pitch in enumerate(lay.pitches):
                    w.write(p, 0, y, x, data[cell, p],
                            find_loop(data[cell, p] / 32768.0, pitch_period(pitch, lay.sample_rate)))
            w.close()
dt = time.perf_counter() - t0
time.sleep(0.05)
print(json.dumps({"seconds": dt, "peak_anon_mb": (peak["anon"] - base["anon"]) / 1024,
                  "peak_file_mb": peak["file"] / 1024}))
"""


def write_sound_file(path: Path, layout: Layout, seed: int) -> None:
    """Decaying harmonic notes (distinct per cell and pitch), written a cell at a time."""
    rng = np.random.default_rng(seed)
    t = np.arange(layout.note_length) / layout.sample_rate
    with open(path, "wb") as f:
        for _ in range(layout.grid * layout.grid):
            for pitch in layout.pitches:
                f0 = 440 * 2 ** ((pitch - 69) / 12)
                amps = rng.random(4)
                note = sum(a * np.sin(2 * np.pi * f0 * (k + 1) * t) for k, a in enumerate(amps))
                note *= np.exp(-t * 0.5) * 6000 / amps.sum()
                f.write(note.astype("<i2").tobytes())


def run(src: Path, out: Path, mode: str) -> dict:
    out.mkdir()
    r = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), str(src), str(out), mode], capture_output=True,
                       text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=1, help="sound files (corner combinations) to import")
    ap.add_argument("--dir", help="scratch folder (needs about 3 x 155.5 MB per file)")
    args = ap.parse_args()
    layout = Layout()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        src = Path(tmp) / "pads"
        src.mkdir()
        for i in range(args.files):
            write_sound_file(src / f"a_b_c_{i}.bin", layout, i)
        ours = run(src, Path(tmp) / "ours", "ours")
        base = run(src, Path(tmp) / "base", "baseline")
    mb = args.files * layout.file_bytes / 1e6
    for name, r in (("streaming import", ours), ("whole-file baseline", base)):
        print(f"{name:20s} {r['seconds']:6.2f} s ({mb / r['seconds']:5.1f} MB/s), held {r['peak_anon_mb']:6.1f} MB, "
              f"file pages mapped {r['peak_file_mb']:6.1f} MB")
    print(json.dumps({"files": args.files, "source_mb": round(mb, 1), "ours_s": round(ours["seconds"], 2),
                      "ours_mb_per_s": round(mb / ours["seconds"], 1), "ours_peak_anon_mb": round(ours["peak_anon_mb"], 1),
                      "baseline_s": round(base["seconds"], 2), "baseline_peak_anon_mb": round(base["peak_anon_mb"], 1),
                      "load": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
