"""Benchmark: decoding speed at each CPU thread count, against the count the commands choose (precompute/threads.py).

    python bench/threads.py [--rounds 5] [--steps 64]

For the bundled `compact` preset at batch 1 (`nsynth decode`) and CPU_BATCH (`nsynth render`'s CPU batch) and the `small`
preset at batch 64: samples/s of the packed stepper (precompute/stepper.py) with 1, 2, ... threads up to the
physical cores and torch's default count, in interleaved rounds (best and median round). Prints the load and the
count choose_threads() gives now, and how that count did against torch's default. Ends with one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.generate import cpu_name  # noqa: E402
from precompute.config import preset  # noqa: E402
from precompute.model import WaveNetAutoencoder  # noqa: E402
from precompute.sampling import GREEDY  # noqa: E402
from precompute.stepper import CPU_BATCH, Stepper  # noqa: E402
from precompute.threads import choose_threads, physical_cores  # noqa: E402

CASES = (("compact", 1), ("compact", CPU_BATCH), ("small", 64))


@torch.inference_mode()
def measure(name: str, batch: int, counts: list[int], steps: int, rounds: int) -> dict:
    torch.manual_seed(0)
    dec = WaveNetAutoencoder(preset(name)).decoder.eval()
    st = Stepper(dec, batch, chunk=steps, sampling=GREEDY)
    st.set_frame(torch.randn(batch, dec.cfg.bottleneck))
    if dec.cfg.exc_width:
        st.exc.normal_()
    times = {n: [] for n in counts}
    for _ in range(rounds):
        for n in counts:
            torch.set_num_threads(n)
            t = time.perf_counter()
            st.run_chunk()
            times[n].append(time.perf_counter() - t)
    rate = lambda t: round(batch * steps / t, 1)  # noqa: E731
    return {"preset": name, "batch": batch,
            "best": {n: rate(min(v)) for n, v in times.items()},
            "median": {n: rate(statistics.median(v)) for n, v in times.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=64, help="steps per timed round")
    args = ap.parse_args()
    default = torch.get_num_threads()
    chosen = choose_threads(None)
    load0 = os.getloadavg()[0]
    counts = sorted(set(range(1, physical_cores() + 1)) | {default, chosen})
    print(f"CPU: {cpu_name()}, {os.cpu_count()} logical CPUs, {physical_cores()} physical cores available, "
          f"load average {load0:.1f}; torch's default {default} threads, chosen now {chosen}", flush=True)
    rows = []
    for name, batch in CASES:
        rows.append(measure(name, batch, counts, args.steps, args.rounds))
        r = rows[-1]
        cells = "  ".join(f"{n} thr {r['median'][n]:>9,.0f}/s (best {r['best'][n]:,.0f})" for n in counts)
        print(f"{name:>7} B={batch:<3} samples/s, median round: {cells}", flush=True)
    load1 = os.getloadavg()[0]
    ratio = [round(r["median"][chosen] / r["median"][default], 2) for r in rows]
    print(f"chosen ({chosen}) vs torch's default ({default}), median rounds: " +
          ", ".join(f"{r['preset']} B={r['batch']} x{x}" for r, x in zip(rows, ratio)))
    print(json.dumps({"bench": "threads", "cpu": cpu_name(), "load_avg": [round(load0, 1), round(load1, 1)],
                      "default_threads": default, "chosen_threads": chosen,
                      "chosen_vs_default": ratio, "rows": rows}))


if __name__ == "__main__":
    main()
