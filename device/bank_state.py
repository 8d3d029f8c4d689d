"""Which bank the instrument plays: the last good bank remembered across starts, and the switches while it plays.
All of it runs in the control process: banks are opened and checked (`open_verified`, sha256 on first use) here,
and only a checked bank is handed to the player (the engine, or the audio host's proxy: device/host_link.py)."""
from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any, Callable

from device.bank import Bank, BankError, open_verified
from device.sdnotify import Watchdog
from nsynth.fsutil import atomic_write_bytes

STATE_FILE = "last_good_bank"


def warn(msg: str) -> None:
    """A line on stderr in the instrument's words."""
    print(f"nsynth play: {msg}", file=sys.stderr, flush=True)


def state_dir() -> Path:
    """Where the instrument remembers its last good bank ($NSYNTH_STATE_DIR, else ~/.local/state/nsynth)."""
    return Path(os.environ.get("NSYNTH_STATE_DIR") or Path.home() / ".local" / "state" / "nsynth")


def load_bank(path: str | os.PathLike, *, state: str | Path | None = None,
              on_hash: Callable[[Path], None] | None = None) -> Bank:
    """Open a bank to play it (`open_verified`: validated, and its samples checked against the manifest's sha256
    on first use, then stamped); if it is refused, fall back to the last bank that opened (with a warning), checked
    the same way. A bank that opens is remembered (atomically) as the new last good bank. `on_hash(path)` is told
    before a bank is hashed (it takes a while)."""
    state = state_dir() if state is None else Path(state)
    record = state / STATE_FILE
    try:
        bank = open_verified(path, on_hash)
    except BankError as e:
        try:
            last = record.read_text().strip()
        except OSError:
            raise e from None
        if not last or Path(last).resolve() == Path(path).resolve():
            raise
        try:
            bank = open_verified(last, on_hash)
        except BankError:
            raise e from None
        warn(f"{e}; falling back to the last good bank {last}")
        return bank
    remember_bank(path, state)
    return bank


def remember_bank(path: str | os.PathLike, state: Path) -> None:
    """Record `path` (atomically) as the last good bank in the state directory."""
    record = state / STATE_FILE
    try:  # the path as given (made absolute), not where its symlink points: a rewrite replaces that version
        atomic_write_bytes(record, f"{os.path.abspath(path)}\n".encode())
    except OSError as e:
        warn(f"cannot remember the last good bank in {record}: {e}")


def switch_bank(player: Any, path: str | os.PathLike) -> Bank | None:
    """Switch a running player (`set_bank(bank)`, which raises BankError if it cannot take the bank) to another
    bank (returned), checked first (`open_verified`); a refused bank leaves the current one playing (None)."""
    try:
        bank = open_verified(path, lambda p: warn(f"checking {p} (first use); still playing {player.bank.path}"))
        player.set_bank(bank)
    except BankError as e:
        warn(f"{e}; keeping {player.bank.path}")
        return None
    return bank


class BankSlot:
    """Which bank a running player plays, by path, for the threads that switch it (the board's bank switcher,
    SIGHUP). `install(bank)` hands a checked bank over and remembers it as the last good bank (BankError, and the
    current one kept, if the player refuses it); `reload()` re-opens the path (a refused bank keeps the current
    one). A lock keeps the switches in order."""

    def __init__(self, player: Any, path: str | os.PathLike, state: Path):
        self.player, self.path, self.state = player, Path(path), state
        self._lock = threading.Lock()

    def install(self, bank: Bank) -> None:
        with self._lock:
            self.player.set_bank(bank)
            self.path = bank.path
            remember_bank(bank.path, self.state)

    def reload(self) -> Bank | None:
        with self._lock:
            bank = switch_bank(self.player, self.path)
            if bank is not None:
                remember_bank(self.path, self.state)
            return bank


class HashNotice:
    """`on_hash` for opening banks before the instrument is ready: a bank's first sha256 check reads all of it
    (minutes for a multi-GB bank on an SD card), so it is said on stderr and the systemd status line, and until
    `stop()` systemd is asked every `every_s` for `extend_s` more to start (EXTEND_TIMEOUT_USEC), so the unit's
    TimeoutStartSec (meant for a start with nothing to hash) does not kill the check."""

    def __init__(self, watchdog: Watchdog, every_s: float = 10.0, extend_s: float = 30.0):
        self.watchdog, self.every_s, self.extend_s = watchdog, every_s, extend_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __call__(self, path: Path) -> None:
        warn(f"checking {path} (first use: hashing its samples; later starts trust the stamp)")
        self.watchdog.status(f"checking {path} (first use)")
        if self._thread is None and self.watchdog.enabled:
            self._thread = threading.Thread(target=self._run, name="hash-notice", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            self.watchdog.notifier.send(f"EXTEND_TIMEOUT_USEC={int(self.extend_s * 1e6)}")
            if self._stop.wait(self.every_s):
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
