"""The USB bank import's outcome on the OLED: watches the status file `nsynth bank import --status` writes
(hardware/image/bank_import.py `write_status`, replaced atomically) and turns a new outcome into a message screen."""
from __future__ import annotations

import json
from pathlib import Path

SHOW_S = 6.0  # long enough to read


def import_message(doc: dict) -> dict:
    """The message screen's data for one import outcome: {"title", "lines"}."""
    installed, refused = doc.get("installed") or [], doc.get("refused") or {}
    lines = []
    if installed:
        lines.append(f"{len(installed)} BANK{'S' if len(installed) != 1 else ''} INSTALLED")
    if refused:
        lines.append(f"{len(refused)} REFUSED:")
        lines.append(", ".join(refused)[:21])
    return {"title": "USB IMPORT", "lines": lines or ["NO BANKS FOUND"]}


class ImportStatus:
    """`poll(now)` looks at the file at most once per `interval` seconds and returns the message screen's data
    when the file changed since the last look (the outcome already there at start is not shown again)."""

    def __init__(self, path: str | Path, interval: float = 1.0):
        self.path, self.interval = Path(path), interval
        self._seen = self._stamp()
        self._next = float("-inf")

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def poll(self, now: float) -> dict | None:
        if now < self._next:
            return None
        self._next = now + self.interval
        stamp = self._stamp()
        if stamp is None or stamp == self._seen:
            self._seen = stamp
            return None
        self._seen = stamp
        try:
            doc = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None  # unreadable: nothing to show (the importer's journal has the outcome)
        return import_message(doc) if isinstance(doc, dict) else None
