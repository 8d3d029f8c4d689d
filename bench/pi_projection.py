"""A Raspberry Pi 4 projection of the engine's block cost from instruction counts, which do not depend on how busy
this machine is: valgrind's callgrind counts the instructions of N blocks (Python, the numba dispatcher and the
compiled kernel together), compiled for a 128-bit SIMD target (SSE4.2: the width of the Cortex-A72's NEON; not
this machine's AVX-512).

    python bench/pi_projection.py [--blocks 300]          (needs valgrind: apt-get install valgrind)

Cases (128-frame blocks): no voice; 32 held voices; 32 with X/Y moving every block; the same with 3 pitch-bend
events a block (a 1,000 message/s MIDI stream: 4 segments a block). The projection: time = instructions x R /
(IPC x clock), with R = 1.1 AArch64 instructions per x86-64 instruction, a Pi 4's 1.5 GHz, and an IPC of 1.0
(conservative for an out-of-order 3-wide Cortex-A72 on this code) and 1.5, as fractions of the 2.67 ms period.
Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PERIOD = 128 / 48000
CLOCK_HZ = 1.5e9
R_ARM = 1.1
IPCS = (1.0, 1.5)
TARGET = {"NUMBA_CPU_NAME": "nehalem",
          "NUMBA_CPU_FEATURES": "+64bit,+cx16,+fxsr,+mmx,+popcnt,+sahf,+sse,+sse2,+sse3,+sse4.1,+sse4.2,+ssse3"}
CASES = ("idle", "held", "moving", "events")


def inner(bank: str, case: str, blocks: int) -> None:
    """Under callgrind: set up, then count only the blocks (callgrind_control toggles collection)."""
    import numpy as np
    from device.bank import open_bank
    from device.engine import Engine, EngineConfig

    e = Engine(open_bank(bank), EngineConfig(), params={"attack": 0.0, "decay": 0.2, "sustain": 0.8,
                                                         "x": 0.37, "y": 0.61})
    if case != "idle":
        for i in range(32):
            e.note_on(34 + (i * 53) % 56, 75)
    e.render(48000)
    buf = np.zeros((128, 2), np.float32)
    toggle = lambda how: subprocess.run(["callgrind_control", "-i", how, str(os.getpid())], capture_output=True)
    toggle("on")
    for i in range(blocks):
        if case in ("moving", "events"):
            ph = i / 100.0
            e.post_params(x=0.5 + 0.45 * math.sin(ph), y=0.5 + 0.45 * math.cos(0.7 * ph))
        if case == "events":
            for j in range(3):
                e.post(("bend", 0, 0.1 * math.sin(i / 10 + j)), e.frame + 20 + 40 * j)
        e.process(buf)
    toggle("off")


def count(bank: Path, case: str, blocks: int) -> float:
    """Instructions per block of one case (callgrind, collection on only around the blocks)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cg.out"
        env = {**os.environ, **TARGET, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "0"}
        subprocess.run(["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
                        sys.executable, __file__, "--inner", str(bank), case, str(blocks)],
                       env=env, check=True, capture_output=True)
        ann = subprocess.run(["callgrind_annotate", str(out)], capture_output=True, text=True, check=True).stdout
    total = next(line for line in ann.splitlines() if "PROGRAM TOTALS" in line).split()[0]
    return int(total.replace(",", "")) / blocks


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--blocks", type=int, default=300)
    ap.add_argument("--inner", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inner:
        inner(args.inner[0], args.inner[1], int(args.inner[2]))
        return 0
    if not shutil.which("valgrind"):
        print("needs valgrind (apt-get install valgrind)", file=sys.stderr)
        return 1
    sys.path.insert(0, str(ROOT / "bench"))
    from engine import write_bank  # bench/engine.py's bank, on a 3x3 grid (the same code paths, written fast)
    res: dict[str, object] = {"clock_ghz": CLOCK_HZ / 1e9, "aarch64_per_x86": R_ARM, "ipc": list(IPCS)}
    with tempfile.TemporaryDirectory(prefix="nsynth-pi-") as tmp:
        bank = Path(tmp) / "bank"
        write_bank(bank, grid=3)
        env = {**os.environ, **TARGET, "PYTHONPATH": str(ROOT)}
        subprocess.run([sys.executable, "-m", "device.kernels"], env=env, check=True, capture_output=True)
        for case in CASES:
            n = count(bank, case, args.blocks)
            frac = [n * R_ARM / (ipc * CLOCK_HZ) / PERIOD for ipc in IPCS]
            res[case] = {"instructions_per_block": round(n), "pi4_fraction": [round(f, 4) for f in frac]}
            print(f"{case:7s} {n:9,.0f} instructions per block -> Pi 4: {frac[0]:6.1%} (IPC {IPCS[0]}) .. "
                  f"{frac[1]:6.1%} (IPC {IPCS[1]}) of the period", flush=True)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
