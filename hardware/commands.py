"""`nsynth board monitor`: check a board without the engine. Prints what the instrument would receive (engine
parameters, corner combinations, patch actions) and, at the end, the driver's frame and error counts."""
from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from hardware.corners import CornerChoices, Instrument, corners_from_banks, corners_from_settings
from hardware.errors import HardwareError


def default_corners() -> CornerChoices:
    """Placeholder choices (A1..A4, B1..B4, ...) when no bank folder or settings file is given."""
    return CornerChoices([[Instrument(f"{c}{i}", f"{c}{i}", f"{c}{i}") for i in range(1, 5)] for c in "ABCD"])


def load_corners(banks: str | None = None, settings: str | None = None) -> CornerChoices:
    if banks:
        return corners_from_banks(banks)
    if settings:
        return corners_from_settings(settings)
    return default_corners()


def monitor(kind: str = "ons", *, seconds: float | None = None, banks: str | None = None,
            settings: str | None = None, patches: str | None = None, window: bool = True,
            out: TextIO = sys.stdout) -> int:
    """Run the board (and for "sim", the window unless `window` is False) for `seconds` (None: until Ctrl-C or
    the window closes), printing changes. Returns 0."""
    from hardware.controls import open_board_controls
    lock = threading.Lock()

    def say(line: str) -> None:
        with lock:
            print(line, file=out, flush=True)

    last = [0.0]

    def post(**params) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.1 or not {"x", "y"} >= set(params):  # glide updates at most 10 lines a second
            last[0] = now
            say(" ".join(f"{k}={v:.3f}" for k, v in sorted(params.items())))

    controls = open_board_controls(
        kind, corners=load_corners(banks, settings), patches_path=patches,
        on_corners_changed=lambda names: say("corners: " + " ".join(names)),
        on_patch=lambda action, i, p: say(f"patch {i + 1}: {action}"))
    if controls.patches:
        for problem in controls.patches.problems:
            say(problem)
    controls.start(post)
    try:
        if kind == "sim" and window:
            from hardware.simulator import run_window
            run_window(controls, seconds=seconds)
        else:
            time.sleep(seconds) if seconds is not None else threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        controls.stop()
    counts = controls.board.counts
    say("frames {} | dropped: checksum {} stuck {} io_error {} implausible {} | reconnects {} resets {}".format(
        *(counts[k] for k in ("frames", "checksum", "stuck", "io_error", "implausible", "reconnects", "resets"))))
    return 0


def configure_monitor(parser) -> None:
    parser.add_argument("--board", choices=("ons", "sim"), default="ons",
                        help="ons: the original NSynth Super hardware; sim: the simulated twin (a window)")
    parser.add_argument("--banks", help="a folder of banks named <c0>_<c1>_<c2>_<c3> (the corners' choices)")
    parser.add_argument("--settings", help="the original's settings.json (its `corners` list)")
    parser.add_argument("--patches", help="the patch file (JSON) the switches load and save")
    parser.add_argument("--seconds", type=float, help="stop after this long (default: until Ctrl-C)")
    parser.add_argument("--no-window", action="store_true", help="with --board sim: no window")

    def run(args) -> int:
        try:
            return monitor(args.board, seconds=args.seconds, banks=args.banks, settings=args.settings,
                           patches=args.patches, window=not args.no_window)
        except HardwareError as e:
            print(f"nsynth board monitor: error: {e}", file=sys.stderr)
            return 1
    parser.set_defaults(func=run)
