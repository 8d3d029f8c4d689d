"""Where the original hardware's drivers meet the machine, injected at the top like gpiozero's pin factories: an
RPi.GPIO-like module for the switches and the OLED's reset, and an smbus2.SMBus-like bus per I2C port for the
controller and the OLED. The default imports the real libraries on first use; tests and other boards pass their
own (the simulated twins in hardware/sim.py speak the same calls and bytes)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from hardware.switches import load_gpio


def open_smbus(port: int):
    """smbus2.SMBus(port): /dev/i2c-<port>."""
    import smbus2
    return smbus2.SMBus(port)


@dataclass(frozen=True)
class Platform:
    """`gpio()`: the GPIO module (HardwareError saying why where there is none); `open_bus(port)`: an open I2C bus."""

    gpio: Callable[[], object] = load_gpio
    open_bus: Callable[[int], object] = open_smbus


RASPBERRY_PI = Platform()
