"""Benchmark: Python time per OLED frame, ours (Pillow packs the page bytes in C) vs luma.oled's ssd1306
display() (a Python loop over every pixel), both through luma's I2C interface into a device that accepts the
bytes and does nothing (so the figure is the Python work, which holds the GIL the audio callback may be waiting
for). The two paths are first checked to leave the same picture in a simulated SSD1306.

    python bench/oled_frame.py [--frames 100]
Ends with one JSON line of the headline figures.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hardware.oled import OLED_ADDRESS, Panel  # noqa: E402
from hardware.screens import render  # noqa: E402
from hardware.sim import FakeSMBus, SimulatedSSD1306  # noqa: E402


class Sink:
    """An I2C device that takes every byte and keeps none."""

    def i2c_write(self, data: bytes) -> None:
        pass


def per_frame(show, images) -> float:
    start = time.perf_counter()
    for img in images:
        show(img)
    return (time.perf_counter() - start) / len(images)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=100)
    args = ap.parse_args()
    from luma.core.interface.serial import i2c
    from luma.oled.device import ssd1306
    warnings.simplefilter("ignore", DeprecationWarning)  # luma's getdata() on Pillow >= 12

    images = [render("home", {"corners": ["CB", "EP", "MA", "DG"], "xy": (i % 11 / 10, i % 7 / 6)})
              for i in range(args.frames)]
    def device(sink):
        return ssd1306(i2c(bus=FakeSMBus({OLED_ADDRESS: sink}), address=OLED_ADDRESS))

    panels = [SimulatedSSD1306(), SimulatedSSD1306()]
    device(panels[0]).display(images[-1])
    Panel(device(panels[1])).display(images[-1])
    assert panels[0].ram == panels[1].ram and any(panels[0].ram), "both paths must draw the same picture"

    luma_s = per_frame(device(Sink()).display, images)
    ours_s = per_frame(Panel(device(Sink())).display, images)
    print(f"Python time per frame: luma display() {luma_s * 1e6:.0f} us, ours {ours_s * 1e6:.0f} us "
          f"({luma_s / ours_s:.1f}x less); luma's 32-byte I2C blocks included in both")
    print(json.dumps({"luma_us": round(luma_s * 1e6, 1), "ours_us": round(ours_s * 1e6, 1),
                      "speedup": round(luma_s / ours_s, 2)}))


if __name__ == "__main__":
    main()
