"""Benchmark: the controller-board driver's polling, measured on the simulated twin (the real driver code on the
fake bus): the rate its thread achieves at the configured rate and the spread of its poll intervals (p99, max),
against the rate the same poll reaches in a bare loop (the ceiling of driver + bus), and the CPU cost of one
BoardControls tick.

    python bench/board_poll.py [--seconds 2] [--hz 200]
Ends with one JSON line of the headline figures. (The original NSynth Super polls at ~30 Hz by its documentation;
its code does not run here, so this bench does not compare against it.)
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hardware.controller import ControllerBoard  # noqa: E402
from hardware.controls import BoardControls  # noqa: E402
from hardware.corners import CornerChoices, Instrument  # noqa: E402
from hardware.frame import ADDRESS  # noqa: E402
from hardware.sim import FakeSMBus, SimulatedBoard  # noqa: E402


class Stamped(ControllerBoard):
    """The driver, recording when each poll completes."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.stamps: list[float] = []

    def poll_once(self) -> bool:
        ok = super().poll_once()
        self.stamps.append(time.monotonic())
        return ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--hz", type=float, default=200.0, help="the driver's configured poll rate")
    args = ap.parse_args()

    twin = SimulatedBoard()
    board = Stamped(FakeSMBus({ADDRESS: twin}), poll_hz=args.hz)
    board.start()
    time.sleep(args.seconds)
    board.stop()
    stamps = np.array(board.stamps)
    poll_hz = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    gaps_ms = np.diff(stamps) * 1e3

    bare = ControllerBoard(FakeSMBus({ADDRESS: twin}))
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < min(args.seconds, 1.0):
        bare.poll_once()
        n += 1
    ceiling_hz = n / (time.perf_counter() - start)

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

    p99, worst = float(np.percentile(gaps_ms, 99)), float(gaps_ms.max())
    print(f"poll rate {poll_hz:.1f} Hz of {args.hz:.0f} Hz configured (intervals: median {np.median(gaps_ms):.2f} ms, "
          f"p99 {p99:.2f} ms, max {worst:.2f} ms); the same poll in a bare loop: {ceiling_hz:,.0f} Hz; "
          f"one poll + controls tick with a redraw-capable screen: {tick_us:.0f} us "
          f"= {tick_us * 100 / 1e4:.1f}% of one core at 100 Hz")
    print(json.dumps({"poll_hz": round(poll_hz, 1), "configured_hz": args.hz,
                      "poll_ratio_vs_configured": round(poll_hz / args.hz, 3),
                      "interval_ms": {"median": round(float(np.median(gaps_ms)), 2), "p99": round(p99, 2),
                                      "max": round(worst, 2)},
                      "bare_loop_hz": round(ceiling_hz, 1), "tick_us": round(tick_us, 1),
                      "cpu_pct_at_100hz": round(tick_us * 100 / 1e4, 2)}))


if __name__ == "__main__":
    main()
