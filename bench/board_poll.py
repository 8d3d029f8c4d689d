"""Benchmark: the controller-board driver's achieved poll rate (target >= 100 Hz; the original polls at ~30 Hz)
and the CPU cost of one BoardControls tick, on the simulated twin (the real driver code on the fake bus).

    python bench/board_poll.py [--seconds 2]
Ends with one JSON line of the headline figures.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hardware.controller import ControllerBoard  # noqa: E402
from hardware.controls import BoardControls  # noqa: E402
from hardware.corners import CornerChoices, Instrument  # noqa: E402
from hardware.frame import ADDRESS  # noqa: E402
from hardware.sim import FakeSMBus, SimulatedBoard  # noqa: E402

ORIGINAL_HZ = 30.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args()

    twin = SimulatedBoard()
    bus = FakeSMBus({ADDRESS: twin})
    board = ControllerBoard(bus, poll_hz=200)
    board.start()
    t0 = time.monotonic()
    time.sleep(args.seconds)
    board.stop()
    poll_hz = board.counts["frames"] / (time.monotonic() - t0)

    corners = CornerChoices([[Instrument(n, n, n[:2]) for n in ("a", "b")]] * 4)
    controls = BoardControls(ControllerBoard(FakeSMBus({ADDRESS: twin})), corners=corners)
    controls.start(lambda **p: None, threads=False)
    n, t = 2000, 0.0
    start = time.perf_counter()
    for i in range(n):
        twin.set_touch((i % 11, (i // 11) % 11))
        twin.set_pot(i % 6, i % 256)
        controls.board.poll_once()
        t += 0.01
        controls.step(t)
    tick_us = (time.perf_counter() - start) / n * 1e6
    controls.stop()

    print(f"poll rate {poll_hz:.0f} Hz (original {ORIGINAL_HZ:.0f} Hz); "
          f"one poll + controls tick with a redraw-capable screen: {tick_us:.0f} us "
          f"= {tick_us * 100 / 1e4:.1f}% of one core at 100 Hz")
    print(json.dumps({"poll_hz": round(poll_hz, 1), "poll_ratio_vs_original": round(poll_hz / ORIGINAL_HZ, 2),
                      "tick_us": round(tick_us, 1), "cpu_pct_at_100hz": round(tick_us * 100 / 1e4, 2)}))


if __name__ == "__main__":
    main()
