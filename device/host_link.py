"""The control process's side of the audio host (device/audio_host.py): `AudioHost` starts it and talks to it,
`HostEngine` is what the control sources and the MIDI feed see of its engine."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from typing import Any

from device.bank import Bank, BankError
from device.callback import FAILURES, FAULTS, HELD, STARVED, VOICES, CallbackStats
from device.engine import EngineConfig
from device.events import EventPoster
from device.shared_state import SharedState
from nsynth.errors import NsynthError

RING_CAPACITY = 4096  # events: seconds of a full DIN MIDI stream, far more than arrive between two callbacks


class HostDied(NsynthError):
    """The audio host process ended while the instrument was playing."""


class AudioHost:
    """Starts the audio host (`python -m device.audio_host`) with the shared memory and two pipes (socket pairs
    spoken as multiprocessing Connections): commands (request, reply; one at a time) and reports (contained
    failures, read by `FailureReporter`)."""

    def __init__(self, backend: str = "sounddevice", capacity: int = RING_CAPACITY):
        self.shm = SharedMemory(create=True, size=SharedState.nbytes(capacity))
        self.shared = SharedState(self.shm.buf, capacity)
        ours, theirs = socket.socketpair()
        reports, host_reports = socket.socketpair()
        fds = (theirs.fileno(), host_reports.fileno())
        # the host imports what this process would (its sys.path: the same checkout, a test's fake audio module)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p or os.getcwd() for p in sys.path)}
        self.process = subprocess.Popen([sys.executable, "-m", "device.audio_host", *map(str, fds), self.shm.name,
                                         str(capacity), backend], pass_fds=fds, env=env)
        theirs.close()  # the host's ends closed here: a host that dies is seen as the end of the pipe
        host_reports.close()
        self._commands, self.reports = Connection(ours.detach()), Connection(reports.detach())
        self._lock = threading.Lock()

    @property
    def stats(self) -> CallbackStats:
        return self.shared.stats

    def _ask(self, *msg: Any, timeout: float | None = None) -> tuple:
        with self._lock:
            try:
                self._commands.send(msg)
                while not self._commands.poll(0.2 if timeout is None else timeout):
                    if timeout is not None or self.process.poll() is not None:
                        raise HostDied(self.death() or f"the audio host did not answer {msg[0]!r} in {timeout} s")
                return self._commands.recv()
            except (EOFError, OSError):
                try:
                    self.process.wait(1.0)  # its pipe closed as it ended: its exit code says how
                except subprocess.TimeoutExpired:
                    pass
                raise HostDied(self.death() or "the audio host closed its pipe") from None

    def open(self, path: str | os.PathLike, config: EngineConfig, params: dict | None, device: str | int | None,
             preload_bytes: int | None) -> dict:
        """Have the host open a checked bank and its output; what it reports (NsynthError if it cannot)."""
        reply = self._ask("open", str(path), config, params, device, preload_bytes)
        if reply[0] == "error":
            raise NsynthError(reply[1])
        return reply[1]

    def start(self, timeout: float = 5.0, whole_s: float = 0.0) -> None:
        """Start the stream; returns once the first callback has run (or `timeout`). whole_s: first wait up to this
        long for a bank held whole to be all in (so that no voice is ever muted waiting for it)."""
        reply = self._ask("start", whole_s)
        if reply[0] == "error":
            raise NsynthError(reply[1])
        deadline = time.monotonic() + timeout
        while self.stats.callbacks == 0 and time.monotonic() < deadline:
            self.check()
            time.sleep(0.001)

    def switch(self, path: str | os.PathLike) -> None:
        """Hand a checked bank to the engine (its heads brought into memory first); BankError if refused."""
        refused = self._ask("bank", str(path))[1]
        if refused is not None:
            raise BankError(f"the audio host refused {path}: {refused}")

    def check(self) -> None:
        """Raise HostDied if the host is gone."""
        why = self.death()
        if why is not None:
            raise HostDied(why)

    def death(self) -> str | None:
        """Why the host is gone (its exit code or signal), or None while it runs."""
        code = self.process.poll()
        if code is None:
            return None
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        return f"the audio host (pid {self.process.pid}) {how}"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the stream and the host (killed if it does not stop within `timeout`), then let the shared memory
        go: the counts are copied out first, so `stats` reads on."""
        try:
            if self.process.poll() is None:
                self._ask("stop", timeout=timeout)
            self.process.wait(timeout)
        except (HostDied, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        finally:
            self.close()

    def close(self) -> None:
        """Keep a copy of the final counts and remove the shared memory's name (its pages go with the mappings)."""
        self.shared.stats = CallbackStats(self.shared.stats.cells.copy())
        self.shm.unlink()


class HostEngine(EventPoster):
    """The engine as the control process sees it: events go into the shared ring (checked here, by the engine's
    own rules: a bad one raises ValueError in the posting thread; a full ring drops it and counts it), bank
    switches go to the host by path, and the engine's counts come from the shared stats."""

    def __init__(self, host: AudioHost, bank: Bank, config: EngineConfig):
        self.host, self._bank, self.config = host, bank, config
        self.fs, self.block = config.sample_rate, config.block

    def post(self, event: tuple, frame: int | None = None) -> None:
        self.host.shared.ring.push(event, frame)

    def set_bank(self, bank: Bank) -> None:
        """Switch to a checked bank (the host opens it by path); BankError if the host refuses it."""
        self.host.switch(bank.path)
        self._bank = bank

    @property
    def bank(self) -> Bank:
        """The bank playing (this process's checked copy of it)."""
        return self._bank

    @property
    def dropped(self) -> int:
        """Events dropped because the ring was full."""
        return self.host.shared.ring.dropped

    @property
    def starved(self) -> int:
        return self.host.stats[STARVED]

    @property
    def faults(self) -> int:
        return self.host.stats[FAULTS]

    @property
    def failures(self) -> int:
        return self.host.stats[FAILURES]

    def active_voices(self) -> int:
        return self.host.stats[VOICES]

    def held_voices(self) -> int:
        return self.host.stats[HELD]
