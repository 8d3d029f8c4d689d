"""The simulated twin at the hardware edge: a controller board that speaks the real 16-byte frames on a fake
smbus2 bus (so the real driver runs against it), and a GPIO backend that speaks RPi.GPIO's API."""
from __future__ import annotations

import ctypes
import errno
import struct
import threading

from hardware import frame as fr
from hardware.plausible import POWER_ON_ROTARIES

I2C_M_RD = 0x0001  # smbus2's read flag, as in linux/i2c.h


class SimulatedBoard:
    """The STM32's behaviour: physical state in, a frame latched by each write, read back as 16 bytes (then 0x00,
    as the firmware pads). Thread-safe: a GUI sets the state while the driver polls. The knobs start where a
    player would leave them: no offset, fast attack, half decay, full sustain, short release, 80% volume."""

    START_POTS = (0, 0, 128, 255, 40, 200)

    def __init__(self, pots: tuple[int, ...] = START_POTS):
        self._lock = threading.Lock()
        self.touch: tuple[int, int] = (fr.NO_TOUCH, fr.NO_TOUCH)
        self.rotaries = list(POWER_ON_ROTARIES)
        self.pots = list(pots)
        self._latched = bytes(fr.FRAME_LEN)  # the firmware's message buffer starts zeroed (its checksum is wrong)
        self._pos = 0

    def set_touch(self, cell: tuple[int, int] | None) -> None:
        with self._lock:
            self.touch = (fr.NO_TOUCH, fr.NO_TOUCH) if cell is None else tuple(
                min(max(int(c), 0), fr.GRID - 1) for c in cell)

    def turn(self, encoder: int, steps: int) -> None:
        with self._lock:
            self.rotaries[encoder] = (self.rotaries[encoder] + steps) & 0xFF

    def set_pot(self, pot: int, raw: int) -> None:
        with self._lock:
            self.pots[pot] = min(max(int(raw), 0), 255)

    def reset(self) -> None:
        """The STM32 restarts (brown-out, watchdog, its reset line): encoder counters back at their power-on
        values, the message buffer zeroed until the next latch. Touch and pots are read afresh: unchanged."""
        with self._lock:
            self.rotaries = list(POWER_ON_ROTARIES)
            self._latched = bytes(fr.FRAME_LEN)
        self._pos = 0

    # the device side of the bus
    def i2c_write(self, data: bytes) -> None:
        with self._lock:
            self._latched = fr.encode(fr.Frame(self.touch, tuple(self.rotaries), tuple(self.pots)))
        self._pos = 0

    def i2c_read(self, n: int) -> bytes:
        out = (self._latched + bytes(max(0, n)))[self._pos:self._pos + n]
        self._pos = 0
        return out


class FakeSMBus:
    """The part of smbus2.SMBus the drivers use (`i2c_rdwr` with `i2c_msg`, `read_i2c_block_data`,
    `write_i2c_block_data`, `close`), routed to simulated devices by address. An absent address NACKs with
    OSError(EREMOTEIO), like the kernel. `fail(kind, n)` injects faults into the next n transactions:
    "nack", "stuck" (every byte read is 0xFF), "checksum" (one payload bit flipped) or "cancel" (two errors the
    additive checksum cannot see: little-endian word 0 + 8 and word 2 - 8, i.e. touch x + 8 and pot 2 - 8 when
    no byte carries), optionally only for the transactions to one address (the OLED shares the bus)."""

    def __init__(self, devices: dict[int, object]):
        self.devices = devices
        self._lock = threading.RLock()  # one transaction at a time, as the kernel's adapter lock
        self._faults: list[str] = []
        self.transactions = 0
        self.closed = False

    def fail(self, kind: str, n: int = 1, addr: int | None = None) -> None:
        """Fault the next n transactions (to `addr` only, when given)."""
        assert kind in ("nack", "stuck", "checksum", "cancel")
        with self._lock:
            self._faults += [(kind, addr)] * n

    def _device(self, addr: int, fault: str | None):
        if fault == "nack" or addr not in self.devices:
            raise OSError(errno.EREMOTEIO, "Remote I/O error")
        return self.devices[addr]

    def _read(self, dev, n: int, fault: str | None) -> bytes:
        data = dev.i2c_read(n)
        if fault == "stuck":
            return b"\xff" * n
        if fault == "checksum" and n:
            data = bytes([data[0] ^ 0x01]) + data[1:]
        if fault == "cancel" and n >= 12:
            w0, w1, w2 = struct.unpack("<3I", data[:12])
            data = struct.pack("<3I", (w0 + 8) & 0xFFFFFFFF, w1, (w2 - 8) & 0xFFFFFFFF) + data[12:]
        return data

    def _next_fault(self, addr: int) -> str | None:
        self.transactions += 1
        for i, (kind, only) in enumerate(self._faults):
            if only is None or only == addr:
                del self._faults[i]
                return kind
        return None

    def i2c_rdwr(self, *msgs) -> None:
        with self._lock:
            self._rdwr(msgs, self._next_fault(msgs[0].addr if msgs else -1))

    def _rdwr(self, msgs, fault: str | None) -> None:
        for msg in msgs:
            dev = self._device(msg.addr, fault)
            if msg.flags & I2C_M_RD:
                data = self._read(dev, msg.len, fault)
                ctypes.memmove(msg.buf, data, msg.len)
            else:
                dev.i2c_write(bytes(msg))

    def read_i2c_block_data(self, addr: int, register: int, length: int) -> list[int]:
        with self._lock:
            fault = self._next_fault(addr)
            dev = self._device(addr, fault)
            dev.i2c_write(bytes([register]))
            return list(self._read(dev, length, fault))

    def write_i2c_block_data(self, addr: int, register: int, data: list[int]) -> None:
        with self._lock:
            fault = self._next_fault(addr)
            self._device(addr, fault).i2c_write(bytes([register, *data]))

    def close(self) -> None:
        self.closed = True


class SimulatedGPIO:
    """RPi.GPIO's API (BCM numbering) for the encoder switches and the OLED reset line. Inputs with a pull-up
    read HIGH until `press(pin)` pulls them LOW; `outputs` records what was driven."""

    BCM, BOARD = 11, 10
    IN, OUT = 1, 0
    HIGH, LOW = 1, 0
    PUD_OFF, PUD_DOWN, PUD_UP = 20, 21, 22

    def __init__(self):
        self._lock = threading.Lock()
        self.mode: int | None = None
        self._pulls: dict[int, int] = {}
        self._pressed: set[int] = set()
        self.outputs: dict[int, list[int]] = {}

    def setwarnings(self, flag: bool) -> None:
        pass

    def setmode(self, mode: int) -> None:
        self.mode = mode

    def setup(self, pin: int, direction: int, pull_up_down: int = PUD_OFF, initial: int | None = None) -> None:
        if self.mode is None:
            raise RuntimeError("Please set pin numbering mode using GPIO.setmode(GPIO.BOARD) or GPIO.setmode(GPIO.BCM)")
        with self._lock:
            if direction == self.IN:
                self._pulls[pin] = pull_up_down
            else:
                self.outputs.setdefault(pin, []).append(self.LOW if initial is None else initial)

    def input(self, pin: int) -> int:
        with self._lock:
            if pin not in self._pulls:
                raise RuntimeError("You must setup() the GPIO channel first")
            if pin in self._pressed:
                return self.LOW
            return self.HIGH if self._pulls[pin] == self.PUD_UP else self.LOW

    def output(self, pin: int, value: int) -> None:
        with self._lock:
            self.outputs.setdefault(pin, []).append(int(bool(value)))

    def cleanup(self, pins=None) -> None:
        with self._lock:
            for pin in ([pins] if isinstance(pins, int) else pins or list(self._pulls)):
                self._pulls.pop(pin, None)

    # the physical side
    def press(self, pin: int) -> None:
        with self._lock:
            self._pressed.add(pin)

    def release(self, pin: int) -> None:
        with self._lock:
            self._pressed.discard(pin)


class SimulatedSSD1306:
    """An SSD1306 128x64 panel as an I2C device: the control byte 0x00 starts commands, 0x40 starts data;
    horizontal addressing into 8 pages of 128 column bytes (bit 0 = top row of the page). Enough of the command
    set for luma.oled's ssd1306 driver; `pixels()` gives the panel as 64 rows of 128 0/1 values."""

    _ARGS = {0x81: 1, 0x20: 1, 0x21: 2, 0x22: 2, 0xA8: 1, 0xD3: 1, 0xD5: 1, 0xD9: 1, 0xDA: 1, 0xDB: 1, 0x8D: 1}

    def __init__(self, width: int = 128, height: int = 64):
        self.width, self.pages = width, height // 8
        self.ram = bytearray(width * self.pages)
        self.on = False
        self.commands: list[int] = []
        self._cols, self._page_range = (0, width - 1), (0, self.pages - 1)
        self._col, self._page = 0, 0

    def i2c_write(self, data: bytes) -> None:
        control, body = data[0], data[1:]
        if control == 0x40:
            for byte in body:
                self.ram[self._page * self.width + self._col] = byte
                self._advance()
            return
        i = 0
        while i < len(body):
            cmd, n = body[i], self._ARGS.get(body[i], 0)
            args, i = body[i + 1:i + 1 + n], i + 1 + n
            self.commands.append(cmd)
            if cmd == 0x21:
                self._cols, self._col = (args[0], args[1]), args[0]
            elif cmd == 0x22:
                self._page_range, self._page = (args[0], args[1]), args[0]
            elif cmd in (0xAE, 0xAF):
                self.on = cmd == 0xAF

    def _advance(self) -> None:
        self._col += 1
        if self._col > self._cols[1]:
            self._col = self._cols[0]
            self._page = self._page + 1 if self._page < self._page_range[1] else self._page_range[0]

    def i2c_read(self, n: int) -> bytes:
        return bytes(n)  # the write-only panel; a status read returns zeros

    def image(self):
        """The panel as a 1-bit PIL image (the inverse of hardware.oled.page_bytes, done by Pillow)."""
        from PIL import Image
        packed = bytearray(len(self.ram))
        for p in range(self.pages):
            packed[self.pages - 1 - p::self.pages] = self.ram[p * self.width:(p + 1) * self.width]
        img = Image.frombytes("1", (self.pages * 8, self.width), bytes(packed))
        return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT).transpose(Image.Transpose.TRANSPOSE)

    def pixels(self) -> list[list[int]]:
        return [[(self.ram[(y // 8) * self.width + x] >> (y % 8)) & 1 for x in range(self.width)]
                for y in range(self.pages * 8)]
