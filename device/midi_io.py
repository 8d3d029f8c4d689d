"""MIDI inputs: USB (mido + python-rtmidi, re-opened after an unplug), DIN from a UART (pyserial). (MIDI files:
device/midi_file.py.)

Each live input calls `on_message(msg)` for every channel message from a thread of its own (python-rtmidi's
callback thread for USB, a reader thread blocked in the serial read for DIN); the caller turns messages into engine
events (device.midi_map) and stamps them with frames (device.clock.FrameClock). Nothing polls in a tight loop: the
audio callback shares the GIL with these threads.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Callable

import mido

from device.midi_stream import MidiByteParser
from nsynth.errors import NsynthError

OnMessage = Callable[[mido.Message], None]
SEQ_DEVICE = "/dev/snd/seq"  # the ALSA sequencer, through which python-rtmidi's ALSA backend sees USB MIDI
log = logging.getLogger(__name__)
_said_no_sequencer = threading.Event()


def system_input_names() -> list[str]:
    """mido's input ports, except where its backend is ALSA's and this machine has no sequencer (a desktop running
    the simulator, a container): then none, said once in our words, instead of alsa-lib printing
    "snd_seq_hw_open ... No such file or directory" at every look."""
    if sys.platform.startswith("linux") and "JACK" not in os.environ.get("MIDO_BACKEND", "") \
            and not os.path.exists(SEQ_DEVICE):
        if not _said_no_sequencer.is_set():
            _said_no_sequencer.set()
            log.warning("no ALSA sequencer (%s): no USB MIDI on this machine", SEQ_DEVICE)
        return []
    return mido.get_input_names()


def input_names(lister: Callable[[], list[str]] = system_input_names) -> list[str]:
    """The MIDI input ports that exist ([] where there is no MIDI system at all, e.g. no ALSA sequencer)."""
    try:
        return list(lister())
    except (OSError, SystemError, RuntimeError):
        return []


def alsa_clients(path: str = "/proc/asound/seq/clients") -> bytes | None:
    """The ALSA sequencer's client list (it changes when a MIDI device comes or goes), or None where there is none."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def pick_port(name: str | None, names: list[str]) -> str | None:
    """The port to open: an exact name, else the first containing `name`, else (name None) the first port."""
    if name is None:
        return names[0] if names else None
    if name in names:
        return name
    return next((n for n in names if name.lower() in n.lower()), None)


def all_notes_off() -> list[mido.Message]:
    """CC 123 on every channel: what an input sends when its device goes away, so no note is left hanging."""
    return [mido.Message("control_change", channel=ch, control=123, value=0) for ch in range(16)]


def _listing(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names) if names else "none"


class _ReaderThread:
    """An input read by `_run` on its own daemon thread until `stop()`; subclasses set `thread_name`."""

    thread_name = "midi-in"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self):
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def _run(self) -> None:
        raise NotImplementedError


def _open_with_callback(name: str, callback: OnMessage) -> mido.ports.BaseInput:
    return mido.open_input(name, callback=callback)


class UsbMidiInput(_ReaderThread):
    """A USB MIDI input by name (or the first port found), re-opened when the device comes back after an unplug.
    A missing port is an error, unless `wait`: then the port is opened when it appears.

    Messages arrive through python-rtmidi's callback, on its own thread, as they come: nothing polls. This
    thread only lists the ports now and then: while a port is open, to notice an unplug, every `relist_s` if the
    ALSA sequencer's client list (/proc/asound/seq/clients; `watch`) changed, or every `relist_s` where there is
    no such list (listing ports makes a MIDI client, which under JACK can hold the GIL for a second); every
    `poll_s` while waiting for a port.

    `lister` (default: system_input_names) and `opener(name, callback)` (default: mido's, python-rtmidi backend)
    are replaceable; tests inject fakes with the same interface.
    """

    thread_name = "usb-midi"

    def __init__(self, name: str | None, on_message: OnMessage, *, lister: Callable[[], list[str]] | None = None,
                 opener: Callable[[str, OnMessage], mido.ports.BaseInput] | None = None, poll_s: float = 0.5,
                 relist_s: float = 2.0, wait: bool = False, watch: Callable[[], bytes | None] | None = None):
        super().__init__()
        self.name, self.on_message, self.poll_s, self.relist_s = name, on_message, poll_s, relist_s
        self._lister = lister or system_input_names
        self._opener = opener or _open_with_callback
        self._watch = watch or alsa_clients
        self.port_name: str | None = None
        self.opens = 0
        names = input_names(self._lister)
        self.port_name = pick_port(name, names)
        if self.port_name is None and not wait:
            what = f"MIDI input {name!r} not found" if name else "no MIDI input ports"
            raise NsynthError(f"{what}; MIDI inputs that exist: {_listing(names)}")

    def _deliver(self, msg: mido.Message) -> None:  # python-rtmidi's thread
        if not msg.is_realtime and msg.type != "sysex":
            self.on_message(msg)

    def _run(self) -> None:
        port = None
        seen = None
        while not self._stop.is_set():
            if port is not None:  # list ports again only when the MIDI system's clients changed (if it says)
                now = self._watch()
                if now is not None and now == seen:
                    self._stop.wait(self.relist_s)
                    continue
                seen = now
            names = input_names(self._lister)
            if port is None:
                target = pick_port(self.name, names)
                if target is not None:
                    try:
                        port = self._opener(target, self._deliver)
                        self.port_name, self.opens = target, self.opens + 1
                    except (OSError, SystemError, RuntimeError):
                        port = None
            elif self.port_name not in names:  # unplugged: release its notes, close, wait for it to come back
                _close(port)
                port = None
                for msg in all_notes_off():
                    self.on_message(msg)
                continue
            self._stop.wait(self.relist_s if port is not None else self.poll_s)
        if port is not None:
            _close(port)


def _close(port: mido.ports.BaseInput) -> None:
    """Close an input; one with a callback loses it first (closing python-rtmidi's port while its callback is
    set can crash the process: mido issue #368)."""
    if hasattr(port, "callback"):
        port.callback = None
    port.close()


class UartMidiInput(_ReaderThread):
    """DIN MIDI from a serial device at 31,250 baud (the Pi's /dev/ttyAMA0 with the midi-uart0 overlay).
    A sender that uses active sensing (0xFE) and then falls silent for 300 ms gets its notes released."""

    SENSING_TIMEOUT_S = 0.3
    thread_name = "uart-midi"

    def __init__(self, device: str, on_message: OnMessage, *, serial_factory: Callable | None = None,
                 baudrate: int = 31250, retry_s: float = 1.0):
        import serial  # pyserial; imported here so USB-only setups need not have it

        super().__init__()
        self.device, self.on_message, self.retry_s = device, on_message, retry_s
        factory = serial_factory or serial.Serial
        try:
            self._serial = factory(device, baudrate=baudrate, timeout=0.05)
        except (OSError, serial.SerialException) as e:
            from serial.tools import list_ports

            ports = [p.device for p in list_ports.comports()]
            raise NsynthError(f"cannot open MIDI UART {device}: {e}; serial ports that exist: "
                              f"{_listing(ports)}") from None
        self._parser = MidiByteParser()

    def stop(self) -> None:
        super().stop()
        self._serial.close()

    def _run(self) -> None:
        failing = False
        sensing_since: float | None = None  # last byte time, once the sender uses active sensing (0xFE)
        while not self._stop.is_set():
            if sensing_since is not None and time.monotonic() - sensing_since > self.SENSING_TIMEOUT_S:
                sensing_since = None  # the cable was pulled or the sender died: release its notes
                for msg in all_notes_off():
                    self.on_message(msg)
            try:
                data = self._serial.read(max(1, getattr(self._serial, "in_waiting", 0) or 1))
            except OSError as e:  # serial.SerialException is an OSError: report once, keep trying
                if not failing:
                    print(f"nsynth: MIDI UART {self.device}: {e}; retrying", file=sys.stderr, flush=True)
                failing = True
                self._stop.wait(self.retry_s)
                continue
            failing = False
            if data and (sensing_since is not None or 0xFE in data):
                sensing_since = time.monotonic()
            for msg in self._parser.feed(data):
                self.on_message(msg)


class PortInput(_ReaderThread):
    """An already-open mido input port (any `mido.ports.BaseInput`): through its callback where it has one (mido's
    rtmidi ports), else read on its own thread."""

    thread_name = "midi-port"

    def __init__(self, port: mido.ports.BaseInput, on_message: OnMessage, poll_s: float = 0.002):
        super().__init__()
        self.port, self.on_message, self.poll_s = port, on_message, poll_s
        self.port_name = getattr(port, "name", None)

    def _deliver(self, msg: mido.Message) -> None:
        if not msg.is_realtime and msg.type != "sysex":
            self.on_message(msg)

    def start(self):
        if hasattr(self.port, "callback"):
            self.port.callback = self._deliver
            return self
        return super().start()

    def stop(self) -> None:
        if hasattr(self.port, "callback") and self._thread is None:
            self.port.callback = None  # the port is the caller's to close
        super().stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self.port.poll()
            if msg is None:
                time.sleep(self.poll_s)
            else:
                self._deliver(msg)
