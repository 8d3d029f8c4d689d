"""Failures the audio thread contained, reported from elsewhere: the audio host forwards them over a pipe
(`forward_failures`, on its command thread), the control process reports them (`FailureReporter`)."""
from __future__ import annotations

from multiprocessing.connection import Connection
from typing import Any, Callable, Iterable

from device.bank_state import warn
from device.engine import Engine


def forward_failures(engine: Engine, conn: Connection) -> None:
    """Send each failure the engine logged (`engine.failure_log`) as (what, "Type: message")."""
    log = engine.failure_log
    while log:
        what, error = log.popleft()
        conn.send((what, f"{type(error).__name__}: {error}"))


class FailureReporter:
    """Reports the failures the host forwards (`messages`): the first of each kind (exception type and message)
    once, on stderr, the systemd status line (`status`) and each `alerts` callable (title, lines) (the board's
    OLED); later ones of a kind are only counted (by the host's engine)."""

    def __init__(self, messages: Connection, status: Callable[[str], Any] | None = None,
                 alerts: Iterable[Callable[[str, list[str]], Any]] = ()):
        self.messages, self.status, self.alerts = messages, status, list(alerts)
        self.seen: set[str] = set()

    def poll(self) -> None:
        try:
            while self.messages.poll():
                self.report(*self.messages.recv())
        except (EOFError, OSError):  # the host is gone: play's own check says so
            pass

    def report(self, what: str, kind: str) -> None:
        if kind in self.seen:
            return
        self.seen.add(kind)
        warn(f"audio error contained ({kind}): {what}; playing on (only the first of its kind is reported)")
        if self.status is not None:
            self.status(f"audio error contained: {what}; playing on")
        for alert in self.alerts:
            alert("AUDIO ERROR", [what[:21], "PLAYING ON"])
