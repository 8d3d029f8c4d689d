"""The one exception type users see: a clear message naming the file and the problem."""


class NsynthError(Exception):
    """A user-facing error; the CLI prints its message and exits non-zero (no traceback)."""
