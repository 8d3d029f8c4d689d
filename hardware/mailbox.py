"""A one-slot mailbox served by its own thread: `post` never blocks, and items posted while one is being handled
collapse to the newest (a slow consumer skips stale work instead of queueing it)."""
from __future__ import annotations

import threading
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class Mailbox(Generic[T]):
    def __init__(self, handle: Callable[[T], None], name: str):
        self._handle = handle
        self._cv = threading.Condition()
        self._pending: T | None = None
        self._busy = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def post(self, item: T) -> None:
        with self._cv:
            self._pending = item
            self._cv.notify()

    def newer_waiting(self) -> bool:
        """Whether an item was posted after the one being handled (it will be handled next)."""
        with self._cv:
            return self._pending is not None

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is waiting or being handled (tests, shutdown)."""
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
                item, self._pending, self._busy = self._pending, None, True
            try:
                self._handle(item)
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()
