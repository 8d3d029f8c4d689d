"""The controller board's 16-byte frame (STM32F030 at I2C 0x47), pure: no bus, no driver library.

Layout: touch x, touch y (0-10, 255 = no touch), rotaries[4] (wrapping 8-bit counters), pots[6] (8-bit), then a
little-endian uint32 checksum = 0xAA55AA55 + the three preceding little-endian uint32 words (mod 2**32).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

ADDRESS = 0x47
FRAME_LEN = 16
NO_TOUCH = 255
GRID = 11  # the touch surface reports an 11x11 grid
CHECKSUM_SEED = 0xAA55AA55
_WORDS = struct.Struct("<4I")


class FrameError(ValueError):
    """A frame that must be dropped (wrong length, wrong checksum, stuck bus)."""


@dataclass(frozen=True)
class Frame:
    touch: tuple[int, int]
    rotaries: tuple[int, int, int, int]
    pots: tuple[int, int, int, int, int, int]

    @property
    def touched(self) -> bool:
        """Both axes report a cell (one sensor alone is not a touch)."""
        return all(0 <= t < GRID for t in self.touch)


def checksum(payload: bytes) -> int:
    words = struct.unpack("<3I", payload[:12])
    return (CHECKSUM_SEED + sum(words)) & 0xFFFFFFFF


def encode(frame: Frame) -> bytes:
    payload = bytes([*frame.touch, *frame.rotaries, *frame.pots])
    return payload + struct.pack("<I", checksum(payload))


def decode(data: bytes | bytearray | list[int]) -> Frame:
    """Parse and verify one frame; raise FrameError for anything that must not reach the instrument."""
    raw = bytes(data)
    if len(raw) != FRAME_LEN:
        raise FrameError(f"frame of {len(raw)} bytes, expected {FRAME_LEN}")
    if raw == b"\xff" * FRAME_LEN:
        raise FrameError("bus stuck at 0xFF")
    if _WORDS.unpack(raw)[3] != checksum(raw):
        raise FrameError("checksum mismatch")
    return Frame(touch=(raw[0], raw[1]), rotaries=tuple(raw[2:6]), pots=tuple(raw[6:12]))
