"""The board (hardware/) wired into the live instrument: `nsynth play --board ons|sim`.

`board_source(kind)` makes the control source `play()` runs (see its `attach` / `start` / `foreground`):
- the board's parameters go to the engine, with the touch position turned the engine's way up: the board
  reports y = 0 at the top of the pad, the engine and the bank count y = 0 from the bottom row;
- the encoders choose corner instruments; the bank of that combination (`<folder>/<TL>_<TR>_<BL>_<BR>`, corners
  in the board's order: top-left, top-right, bottom-left, bottom-right) is opened, validated and checked against
  its sha256 (hashed on first use only, then stamped: device/bank.py) on the bank switcher's thread and only then
  handed to the engine (the old bank plays until then; a refused bank is reported and the old one stays). A bank's manifest lists its corners the other way round (bottom-left,
  bottom-right, top-left, top-right): `manifest_corners` converts, and a bank whose manifest names the folder's
  instruments in another order is refused, since it would play upside down;
- patches live in `$NSYNTH_PATCH_DIR/patches.json` (set by systemd/nsynth.service), else in the per-user state
  directory; the OLED shows each new USB import outcome from `$NSYNTH_STATE_DIR/import.json`;
- `--board sim`: the simulator window runs on the main thread, its computer keyboard playing notes into the
  engine's event ring (stamped by the frame clock, like MIDI); closing the window stops `play`.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable

from device.bank import MANIFEST, Bank, BankError, open_verified
from device.engine import Engine
from device.bank_state import BankSlot, state_dir
from device.clock import FrameClock
from hardware.platform import RASPBERRY_PI, Platform
from hardware.banks import BankSwitcher, bank_name, bank_path
from hardware.corners import CornerChoices, Instrument, bank_stem, corners_from_banks
from hardware.errors import HardwareError
from nsynth.errors import NsynthError

PATCH_FILE = "patches.json"
IMPORT_STATUS = "import.json"  # written by `nsynth bank import --status` (hardware/image/bank_import.py)
_MESSAGE_S = 3.0
_CHECKING, _CHECK_S = "CHECKING BANK", 600.0  # shown while a bank is hashed on first use, until it is done


def _say(msg: str) -> None:
    print(f"nsynth play: {msg}", file=sys.stderr, flush=True)


def patch_file() -> Path:
    """Where the patches are kept: $NSYNTH_PATCH_DIR/patches.json, else in the per-user state directory."""
    return Path(os.environ.get("NSYNTH_PATCH_DIR") or state_dir()) / PATCH_FILE


def manifest_corners(names: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Corner names in the board's order (TL, TR, BL, BR) -> a bank manifest's order (BL, BR, TL, TR)."""
    tl, tr, bl, br = names
    return bl, br, tl, tr


def board_corners(corners: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """A bank manifest's corners (BL, BR, TL, TR) -> the board's order (TL, TR, BL, BR)."""
    bl, br, tl, tr = corners
    return tl, tr, bl, br


def engine_params(params: dict[str, float]) -> dict[str, float]:
    """Board parameters -> engine parameters: the same, but y counted from the bottom of the pad."""
    return {**params, "y": 1.0 - params["y"]} if "y" in params else params


def open_combination(folder: str | Path, names: tuple[str, ...],
                     on_hash: Callable[[Path], None] | None = None) -> Bank:
    """Open, validate and check (sha256, once: `open_verified`) the bank of a corner combination (board order);
    BankError or HardwareError if refused. `on_hash(path)` is told before a bank is hashed (it takes a while)."""
    path = bank_path(folder, names)
    bank = open_verified(path, on_hash)
    expected = manifest_corners(names)
    if set(bank.info.corners) == set(expected) and bank.info.corners != expected:
        raise BankError(f"{path / MANIFEST}: corners {list(bank.info.corners)} (bottom-left, bottom-right, "
                        f"top-left, top-right) are not the folder name's {list(expected)}: it would play "
                        f"upside down")
    return bank


def playing_corners(bank: Bank, corners: CornerChoices) -> bool:
    """Point the corner choices at the bank that plays (by its folder name, else its manifest); False if
    neither names a combination of the choices."""
    for names in (bank_stem(bank.path).split("_"), board_corners(bank.info.corners)):
        try:
            corners.select(names)
            return True
        except HardwareError:
            pass
    return False


class BoardSource:
    """The control board as a `play()` control source. `kind`: "ons" (the original hardware) or "sim" (the
    simulated twin; `SimulatorSource` adds its window). `banks`: the folder of corner-combination banks
    (default: the folder holding the bank that plays)."""

    def __init__(self, kind: str, *, banks: str | Path | None = None, patches: str | Path | None = None,
                 platform: Platform = RASPBERRY_PI):
        self.kind, self.banks, self.patches, self.platform = kind, banks, patches, platform
        self.engine: Engine | None = None
        self.clock: FrameClock | None = None
        self.slot: BankSlot | None = None
        self.controls = None  # hardware.controls.BoardControls, once attached
        self.switcher: BankSwitcher | None = None

    def attach(self, engine: Engine, clock: FrameClock, slot: BankSlot) -> None:
        from hardware.controls import open_board_controls
        self.engine, self.clock, self.slot = engine, clock, slot
        folder = Path(self.banks) if self.banks else slot.path.parent
        try:
            corners = corners_from_banks(folder)
        except HardwareError as e:
            _say(f"{e}; the encoders have nothing to switch to")
            corners = CornerChoices([[Instrument(n, n.upper()[:10], n.upper()[:4])]
                                     for n in board_corners(engine.bank.info.corners)])
        if not playing_corners(engine.bank, corners):
            _say(f"{engine.bank.path} is not one of the corner combinations in {folder}; "
                 f"turning an encoder switches to one")
        self.controls = open_board_controls(
            self.kind, corners=corners, patches_path=self.patches or patch_file(),
            on_corners_changed=self._corners_changed, on_patch=lambda action, i, p: _say(f"patch {i + 1}: {action}"),
            import_status_path=slot.state / IMPORT_STATUS, platform=self.platform)
        for problem in self.controls.patches.problems:
            _say(problem)
        self.switcher = BankSwitcher(lambda names: open_combination(folder, names, self._checking), self._swap,
                                     self._refused)
        self.switcher.current = corners.names()  # what plays now (or what the board shows, if neither matched)

    def start(self, post: Callable[..., None]) -> None:
        self.controls.start(lambda **params: post(**engine_params(params)))

    def stop(self) -> None:
        if self.controls is not None:
            self.controls.stop()
        if self.switcher is not None:
            self.switcher.close()

    def alert(self, title: str, lines: list[str]) -> None:
        """Show a problem on the OLED for a few seconds (`play` reports contained audio errors here)."""
        if self.controls is not None:
            self.controls.show("message", duration=_MESSAGE_S, title=title, lines=lines)

    def _corners_changed(self, names: tuple[str, ...]) -> None:
        if self.switcher is not None:
            self.switcher.request(names)

    def _swap(self, bank: Bank) -> None:  # the switcher's thread, with a bank that opened (one the player refuses
        # raises BankError: the switcher keeps the old one and tells `_refused`)
        self.controls.dismiss(_CHECKING)
        self.slot.install(bank)
        _say(f"playing {bank.path}")

    def _checking(self, path: Path) -> None:  # the switcher's thread, before a bank's first sha256 check
        _say(f"checking {path} (first use); still playing {self.slot.path}")
        self.controls.show("message", duration=_CHECK_S, title=_CHECKING, lines=[path.name[:21], "OLD ONE PLAYS"])

    def _refused(self, names: tuple[str, ...], error: Exception) -> None:  # the switcher's thread
        _say(f"bank {bank_name(names)} refused ({error}); still playing {self.slot.path}")
        self.controls.show("message", duration=_MESSAGE_S, title="BANK REFUSED",
                           lines=[bank_name(names)[:21], "PLAYING THE OLD ONE"])


class SimulatorSource(BoardSource):
    """The simulated board with its window, which runs on the main thread (`foreground`); the computer keyboard
    plays notes into the engine."""

    def __init__(self, **kwargs):
        super().__init__("sim", **kwargs)
        self.window = None  # hardware.simulator.SimulatorWindow, while it runs

    def foreground(self, poll: Callable[[], bool]) -> None:
        from hardware.simulator import open_window
        self.window = open_window(self.controls, note_on=self.note_on, note_off=self.note_off)
        self.window.run(poll)

    def note_on(self, pitch: int, velocity: int) -> None:
        self.engine.post(("on", 0, pitch, velocity), self.clock.frame_for())

    def note_off(self, pitch: int) -> None:
        self.engine.post(("off", 0, pitch), self.clock.frame_for())


def board_source(kind: str, *, banks: str | Path | None = None, patches: str | Path | None = None,
                 platform: Platform = RASPBERRY_PI) -> BoardSource:
    """The control source for `nsynth play --board KIND` ("ons" or "sim"); `platform`: how "ons" reaches GPIO and
    I2C (hardware.platform; default RPi.GPIO and smbus2)."""
    if kind == "sim":
        return SimulatorSource(banks=banks, patches=patches)
    if kind == "ons":
        return BoardSource(kind, banks=banks, patches=patches, platform=platform)
    raise NsynthError(f"unknown board {kind!r}: use 'ons' (the original hardware) or 'sim'")
