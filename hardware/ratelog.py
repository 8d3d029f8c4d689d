"""Logging at a rate limit: the first occurrence at once, then at most one line per interval with a count."""
from __future__ import annotations

import logging
import time
from typing import Callable


class RateLimitedLog:
    def __init__(self, logger: logging.Logger, interval: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self.logger, self.interval, self.clock = logger, interval, clock
        self._last: float | None = None
        self._suppressed = 0

    def warning(self, message: str) -> None:
        now = self.clock()
        if self._last is not None and now - self._last < self.interval:
            self._suppressed += 1
            return
        extra = f" (+{self._suppressed} more since the last report)" if self._suppressed else ""
        self.logger.warning("%s%s", message, extra)
        self._last, self._suppressed = now, 0
