"""The systemd notify protocol (sd_notify) and a watchdog fed by the audio callback.

systemd passes NOTIFY_SOCKET (a filesystem path, or '@name' for the abstract namespace) and, with WatchdogSec=,
WATCHDOG_USEC (and WATCHDOG_PID). A message is one datagram of newline-separated KEY=VALUE lines: READY=1,
STATUS=..., WATCHDOG=1, STOPPING=1. Everything here is a no-op when NOTIFY_SOCKET is unset.

The watchdog pings systemd only while the audio callback is alive: a callback in this process calls `heartbeat()`,
which stores the monotonic time in a preallocated slot (no lock, no allocation beyond the float the clock returns);
for a callback in another process (the audio host), `follow(counter)` has the ping thread heartbeat whenever the
callback count it reads has moved. The thread sends WATCHDOG=1 every WATCHDOG_USEC/2 only if the last heartbeat
is more recent than that. A stalled (or dead) audio loop therefore stops the pings and systemd restarts the
service.
"""
from __future__ import annotations

import os
import socket
import threading
import time
from array import array
from typing import Callable


def _address(path: str) -> str | bytes:
    """NOTIFY_SOCKET as a socket address: '@name' is the Linux abstract namespace (a leading NUL byte)."""
    return b"\0" + path[1:].encode() if path.startswith("@") else path


class Notifier:
    """Sends sd_notify datagrams to one socket; silently does nothing without a socket path."""

    def __init__(self, socket_path: str | None):
        self.socket_path = socket_path or None
        self._sock = None
        if self.socket_path:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.settimeout(1.0)  # a full queue (systemd busy) delays a message, never the audio thread
            self._address = _address(self.socket_path)

    def send(self, *fields: str) -> bool:
        """Send KEY=VALUE fields as one message; False if there is no socket or systemd is not listening."""
        if self._sock is None:
            return False
        try:
            self._sock.sendto("\n".join(fields).encode(), self._address)
            return True
        except OSError:
            return False

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class Watchdog:
    """READY/STATUS/STOPPING messages plus WATCHDOG=1 pings gated on the audio callback's heartbeat.

    Wiring: `wd = Watchdog.from_env(); wd.start()`; in the audio callback `wd.heartbeat()` (or
    `wd.follow(callback_count)` when the callback runs in another process); once the stream runs
    `wd.ready()`; on shutdown `wd.stop()`.
    """

    def __init__(self, socket_path: str | None, watchdog_usec: int = 0, status_prefix: str = "audio"):
        self.notifier = Notifier(socket_path)
        # Ping twice per watchdog period, and only when the last heartbeat is younger than one ping interval.
        self.interval = watchdog_usec / 2e6 if (watchdog_usec > 0 and self.notifier.socket_path) else 0.0
        self._last = array("d", [float("-inf")])
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._prefix = status_prefix
        self._counter: Callable[[], int] | None = None
        self._seen: int | None = None
        self.pings = 0

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "Watchdog":
        """A watchdog configured the way systemd starts us (NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID)."""
        env = os.environ if environ is None else environ
        usec = int(env.get("WATCHDOG_USEC", "0") or 0)
        pid = env.get("WATCHDOG_PID")
        if pid and pid.isdigit() and int(pid) != os.getpid():
            usec = 0  # the watchdog is meant for another process (e.g. a wrapper that exec'd us)
        return cls(env.get("NOTIFY_SOCKET"), usec)

    @property
    def enabled(self) -> bool:
        return self.notifier.socket_path is not None

    def heartbeat(self) -> None:
        """Called from the audio callback: O(1), lock-free, stores the time in a preallocated slot."""
        self._last[0] = time.monotonic()

    def follow(self, counter: Callable[[], int]) -> "Watchdog":
        """Heartbeat whenever `counter()` (the audio host's callback count) has moved since the last ping."""
        self._counter, self._seen = counter, counter()
        return self

    def healthy(self) -> bool:
        """True while the last heartbeat is younger than one ping interval."""
        return time.monotonic() - self._last[0] < self.interval

    def start(self) -> "Watchdog":
        """Start the ping thread (only when systemd asked for a watchdog)."""
        if self.interval > 0 and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="sd-watchdog", daemon=True)
            self._thread.start()
        return self

    def ready(self, status: str = "playing") -> bool:
        return self.notifier.send("READY=1", f"STATUS={status}")

    def status(self, text: str) -> bool:
        return self.notifier.send(f"STATUS={text}")

    def stop(self) -> None:
        """Tell systemd we are stopping, stop the thread and close the socket."""
        self.notifier.send("STOPPING=1")
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.notifier.close()

    def _run(self) -> None:
        stalled = False
        while not self._stop.wait(self.interval):
            if self._counter is not None:
                seen, self._seen = self._seen, self._counter()
                if self._seen != seen:
                    self.heartbeat()
            if self.healthy():
                if stalled:
                    self.notifier.send(f"STATUS={self._prefix} running again")
                    stalled = False
                self.notifier.send("WATCHDOG=1")
                self.pings += 1
            elif not stalled and self._last[0] > float("-inf"):
                age = time.monotonic() - self._last[0]
                self.notifier.send(f"STATUS={self._prefix} callback stalled for {age:.2f} s, watchdog pings held")
                stalled = True
