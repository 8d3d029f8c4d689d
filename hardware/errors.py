"""The one exception type the board layer raises for user-facing problems (a clear message, no traceback)."""


class HardwareError(Exception):
    """A board, GPIO, display or patch-file problem the user must fix; the message names the part and the cause."""
