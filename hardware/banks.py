"""Bank switching, pure: the four corner choices -> a bank name, and "swap only after the new bank opened and
verified": the old bank keeps playing until the loader hands back a verified one."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Generic, TypeVar

from hardware.errors import HardwareError
from hardware.mailbox import Mailbox

log = logging.getLogger(__name__)
B = TypeVar("B")


def bank_name(names: tuple[str, ...] | list[str]) -> str:
    """The original's naming: corner instrument names joined by "_" (top-left, top-right, bottom-left,
    bottom-right)."""
    return "_".join(names)


def bank_path(folder: str | Path, names: tuple[str, ...] | list[str], suffix: str = "") -> Path:
    """The bank of a corner combination in a folder of banks (`<folder>/<c0>_<c1>_<c2>_<c3><suffix>`), which
    must exist."""
    path = Path(folder) / (bank_name(names) + suffix)
    if not path.exists():
        raise HardwareError(f"{path}: no bank for the corners {', '.join(names)} in this folder")
    return path


class BankSwitcher(Generic[B]):
    """Opens banks on its own thread and swaps them in only when opened and verified.

    `loader(names)` opens and verifies the bank for a corner combination and returns it, or raises (the old bank
    stays). `swap(bank)` hands a verified bank to the engine. Requests that arrive while one is loading collapse to
    the newest. `on_error(names, exc)` is told about a bank that failed.
    """

    def __init__(self, loader: Callable[[tuple[str, ...]], B], swap: Callable[[B], None],
                 on_error: Callable[[tuple[str, ...], Exception], None] | None = None):
        self.loader, self.swap, self.on_error = loader, swap, on_error
        self.current: tuple[str, ...] | None = None
        self._mailbox: Mailbox[tuple[str, ...]] = Mailbox(self._switch, "bank-switcher")

    def request(self, names: tuple[str, ...]) -> None:
        self._mailbox.post(tuple(names))

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is pending or loading (tests, shutdown)."""
        return self._mailbox.wait_idle(timeout)

    def close(self) -> None:
        self._mailbox.close()

    def _switch(self, names: tuple[str, ...]) -> None:
        try:
            if names != self.current:
                bank = self.loader(names)
                if not self._mailbox.newer_waiting():  # superseded: load the newest request instead
                    self.swap(bank)
                    self.current = names
        except Exception as e:  # the old bank keeps playing; a broken bank never stops the instrument
            log.warning("bank %s not switched to: %s", bank_name(names), e)
            if self.on_error:
                self.on_error(names, e)
