"""Bank switching, pure: the four corner choices -> a bank name, and "swap only after the new bank opened and
verified": the old bank keeps playing until the loader hands back a verified one."""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Callable, Generic, TypeVar

from hardware.errors import HardwareError

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
        self._pending: tuple[str, ...] | None = None
        self._cv = threading.Condition()
        self._busy = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="bank-switcher", daemon=True)
        self._thread.start()

    def request(self, names: tuple[str, ...]) -> None:
        with self._cv:
            self._pending = tuple(names)
            self._cv.notify()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is pending or loading (tests, shutdown)."""
        with self._cv:
            return self._cv.wait_for(lambda: self._pending is None and not self._busy, timeout)

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._pending is not None or self._closed)
                if self._closed:
                    return
                names, self._pending, self._busy = self._pending, None, True
            try:
                if names != self.current:
                    bank = self.loader(names)
                    with self._cv:
                        superseded = self._pending is not None
                    if not superseded:
                        self.swap(bank)
                        self.current = names
            except Exception as e:  # the old bank keeps playing; a broken bank never stops the instrument
                log.warning("bank %s not switched to: %s", bank_name(names), e)
                if self.on_error:
                    self.on_error(names, e)
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()
