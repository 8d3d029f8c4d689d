"""The encoder push switches on GPIO 5, 6, 13, 26 (BCM; pulled up, pressed = LOW) through an injected RPi.GPIO-like
backend. On a Pi the backend is RPi.GPIO (or rpi-lgpio, same module name), imported only when asked for."""
from __future__ import annotations

from hardware.errors import HardwareError

SWITCH_PINS = (5, 6, 13, 26)


def load_gpio():
    """Import RPi.GPIO, or raise HardwareError saying why and what to do instead."""
    try:
        import RPi.GPIO as GPIO
    except (ImportError, RuntimeError) as e:
        raise HardwareError(
            f"GPIO: the board's switches and OLED reset need RPi.GPIO (pip install 'nsynth-super[pi]' on a "
            f"Raspberry Pi; rpi-lgpio on newer Pi OS), which is not usable here: {e}. "
            f"Without the hardware, use `--board sim`.") from e
    return GPIO


class Switches:
    """Reads the four switches; `read()` gives pressed states (True = pressed), one per encoder."""

    def __init__(self, gpio, pins: tuple[int, ...] = SWITCH_PINS):
        self.gpio, self.pins = gpio, pins
        gpio.setwarnings(False)
        gpio.setmode(gpio.BCM)
        for pin in pins:
            gpio.setup(pin, gpio.IN, pull_up_down=gpio.PUD_UP)

    def read(self) -> tuple[bool, ...]:
        return tuple(self.gpio.input(pin) == self.gpio.LOW for pin in self.pins)

    def close(self) -> None:
        self.gpio.cleanup(list(self.pins))
