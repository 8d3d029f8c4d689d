"""The SSD1306 128x64 OLED at I2C 0x3d (reset on GPIO 4) through luma.oled, imported only when opened.

`Display.show(image)` never blocks: it leaves the newest picture in a one-slot mailbox that a worker thread sends
to the panel, so a slow or failing I2C write can delay only the picture, never the controls or the audio. A panel
that is absent or stops answering is logged and dropped; the instrument keeps playing. Pictures are packed into
the panel's page format by Pillow in C (`page_bytes`): luma's own `display()` loops over all 8192 pixels in
Python, holding the GIL for milliseconds per frame, time the audio callback may be waiting for.
"""
from __future__ import annotations

import logging
import time
from typing import Callable

from hardware.mailbox import Mailbox
from hardware.ratelog import RateLimitedLog

log = logging.getLogger(__name__)
OLED_ADDRESS = 0x3D
RESET_PIN = 4


def page_bytes(image) -> bytes:
    """A 1-bit image -> SSD1306 display RAM: pages of 8 rows, one byte per column, bit 0 the page's top row."""
    from PIL import Image
    pages = image.height // 8
    packed = image.transpose(Image.Transpose.TRANSPOSE).transpose(Image.Transpose.FLIP_LEFT_RIGHT).tobytes()
    # `packed` holds, per column, its pages bottom-up: byte j of column x is page (pages - 1 - j)
    return b"".join(packed[pages - 1 - p::pages] for p in range(pages))


class Panel:
    """A luma.oled ssd1306 fed through `page_bytes` (its init and I2C interface are luma's)."""

    def __init__(self, device):
        self.device = device

    def display(self, image) -> None:
        d = self.device
        d.command(0x21, 0, d.width - 1, 0x22, 0, d.height // 8 - 1)  # column and page address ranges
        d.data(page_bytes(image))


class Display:
    """Wraps anything with luma's `display(image)` (a Panel, or luma.core's dummy device)."""

    def __init__(self, device, max_failures: int = 20):
        self.device, self.max_failures = device, max_failures
        self.failed = False
        self.sent = 0
        self._failures = 0
        self._log = RateLimitedLog(log)
        self._mailbox = Mailbox(self._send, "oled")

    def show(self, image) -> None:
        self._mailbox.post(image)

    def flush(self, timeout: float = 2.0) -> bool:
        """Wait until the newest picture has been sent (tests)."""
        return self._mailbox.wait_idle(timeout)

    def close(self) -> None:
        self._mailbox.close()

    def _send(self, image) -> None:
        if self.failed:
            return
        try:
            self.device.display(image)
            self.sent += 1
            self._failures = 0
        except Exception as e:  # an I2C error must never reach the instrument
            self._failures += 1
            self._log.warning(f"OLED: picture not sent ({e})")
            if self._failures >= self.max_failures:
                self.failed = True
                log.warning("OLED: giving up after %d failures in a row; playing on without it", self._failures)


def reset_panel(gpio, pin: int = RESET_PIN, hold: float = 0.001, settle: float = 0.01) -> None:
    """Pulse the panel's reset line low, as the original does before talking to it."""
    gpio.setmode(gpio.BCM)
    gpio.setup(pin, gpio.OUT, initial=gpio.HIGH)
    gpio.output(pin, gpio.LOW)
    time.sleep(hold)
    gpio.output(pin, gpio.HIGH)
    time.sleep(settle)


def open_oled(gpio=None, *, bus=None, open_bus: Callable[[], object] | None = None, port: int = 1,
              address: int = OLED_ADDRESS) -> Display | None:
    """The real panel (reset through `gpio` when given; `bus` injected, or opened by `open_bus()`, or luma opens I2C
    `port`), or None with a logged reason when luma.oled is missing or no panel answers."""
    try:
        from luma.core.interface.serial import i2c
        from luma.oled.device import ssd1306
    except ImportError as e:
        log.warning("OLED: luma.oled is not installed (%s); playing without the display", e)
        return None
    try:
        if gpio is not None:
            reset_panel(gpio)
        if bus is None and open_bus is not None:
            bus = open_bus()
        device = ssd1306(i2c(bus=bus, port=port, address=address), width=128, height=64)
    except Exception as e:  # luma raises its own DeviceNotFoundError etc. for a silent bus
        log.warning("OLED: no SSD1306 at 0x%02x (%s); playing without the display", address, e)
        return None
    return Display(Panel(device))

