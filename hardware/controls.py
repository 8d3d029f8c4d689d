"""BoardControls: the board as a control source for `nsynth play` (`start(post)` / `stop()`).

Its thread ticks at `rate_hz`: it takes the controller board's newest frame and encoder steps, maps them to engine
parameters (posted as `post(**changed)`, all 0..1), cycles corner instruments (reported through
`on_corners_changed(names)`), turns switch presses into patch loads/saves, shows a new USB import outcome
(`import_status`), and hands the OLED a new picture when the screen changed (never waiting for the panel).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from hardware.corners import CornerChoices
from hardware.debounce import PatchButton
from hardware.errors import HardwareError
from hardware.import_status import SHOW_S, ImportStatus
from hardware.mapping import BoardMapper
from hardware.patches import Patch, PatchStore
from hardware.platform import RASPBERRY_PI, Platform
from hardware.screens import ScreenState
from nsynth.params import DEFAULT_PARAMS, POT_PARAMS

log = logging.getLogger(__name__)
_SCREEN_FPS = 30.0


class BoardControls:
    def __init__(self, board, *, corners: CornerChoices, switches=None, display=None,
                 patches: PatchStore | None = None,
                 on_corners_changed: Callable[[tuple[str, ...]], None] | None = None,
                 on_patch: Callable[[str, int, Patch | None], None] | None = None,
                 import_status: ImportStatus | None = None, rate_hz: float = 100.0, glide_s: float = 0.04,
                 clock: Callable[[], float] = time.monotonic):
        self.board, self.corners, self.switches, self.display, self.patches = board, corners, switches, display, patches
        self.on_corners_changed, self.on_patch = on_corners_changed, on_patch
        self.import_status = import_status
        self.period, self.clock = 1.0 / rate_hz, clock
        self.mapper = BoardMapper(tau=glide_s)
        self.buttons = [PatchButton() for _ in range(4)]
        self.screen = ScreenState()
        self.image = None           # the newest picture (what the OLED shows; the simulator draws it too)
        self.params: dict[str, float] = {}  # everything posted so far, latest values
        self.sim = None             # the simulated twin's physical side (SimHandles) when kind="sim"
        self._post: Callable[..., None] = lambda **p: None
        self._primed = False
        self._drawn = None
        self._drawn_at = -1.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- control-source interface ------------------------------------------------------------------------
    def start(self, post: Callable[..., None], threads: bool = True) -> None:
        """Begin posting to `post`; `threads=False` leaves the polling to the caller (`board.poll_once()`,
        then `step(now)`), for tests that drive time themselves."""
        self._post = post
        self._report_corners()
        if not threads:
            return
        self.board.start()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="board-controls", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.board.stop()
        if self.display is not None:
            self.display.close()
        if self.switches is not None:
            self.switches.close()

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            try:
                self.step()
            except Exception:  # a bug in one tick must not silence the board for the rest of the set
                log.exception("board controls: tick failed")

    # -- one tick (tests call this directly with their own clock) -----------------------------------------
    def step(self, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        with self._lock:
            frame, steps = self.board.snapshot()
            params = self.mapper.update(frame, now)
            if frame is not None:
                self._screens_for(params, frame.touched, now)
                self._primed = True
            for corner, n in enumerate(steps):
                if n and self.corners.step(corner, n):
                    c = self.corners.corners[corner]
                    self.screen.show("instrument", now, corner=corner, names=[i.display for i in c],
                                     selected=self.corners.selected[corner])
                    self._report_corners()
            if params:
                self._send(params)
            if self.import_status is not None and (message := self.import_status.poll(now)) is not None:
                self.screen.show("message", now, duration=SHOW_S, **message)
            if self.switches is not None:
                for index, (button, pressed) in enumerate(zip(self.buttons, self.switches.read())):
                    action = button.update(pressed, now)
                    if action == "load":
                        self.load_patch(index, now)
                    elif action == "save":
                        self.save_patch(index, now)
                    elif button.progress is not None and button.progress * button.hold > 0.15:
                        self.screen.show("patch", now, index=index, state="HOLD TO SAVE",
                                         progress=button.progress)
            self._draw(now)

    def show(self, kind: str, duration: float | None = None, **data) -> None:
        """Show a transient screen from another thread (e.g. "message" with a title and lines)."""
        with self._lock:
            self.screen.show(kind, self.clock(), duration=duration, **data)

    def dismiss(self, title: str) -> None:
        """From another thread: end the message titled `title` if it still shows (one shown while work runs)."""
        with self._lock:
            if self.screen.kind == "message" and self.screen.data.get("title") == title:
                self.screen.home()

    def _send(self, params: dict[str, float]) -> None:
        self.params.update(params)
        self._post(**params)

    def _report_corners(self) -> None:
        if self.on_corners_changed is not None:
            self.on_corners_changed(self.corners.names())

    def _screens_for(self, params: dict[str, float], touched: bool, now: float) -> None:
        if not self._primed:
            return  # the first reading is where the pots are, not a change
        values = self.mapper.values()
        changed = [n for n in POT_PARAMS if n in params]
        if touched:
            self.screen.home()
        elif "volume" in changed or "position" in changed:
            name = "volume" if "volume" in changed else "position"
            self.screen.show(name, now, value=values[name])
        elif changed:
            stage = ("attack", "decay", "sustain", "release").index(changed[0])
            self.screen.show("envelope", now, stage=stage, **{k: values.get(k, DEFAULT_PARAMS[k])
                                                             for k in ("attack", "decay", "sustain", "release")})

    # -- patches ----------------------------------------------------------------------------------------
    def load_patch(self, index: int, now: float) -> None:
        patch = self.patches.get(index) if self.patches else None
        if patch is None:
            self.screen.show("patch", now, index=index, state="EMPTY")
            return
        try:
            changed = self.corners.select(patch.instruments)
        except HardwareError as e:
            log.warning("patch %d not loaded: %s", index + 1, e)
            self.screen.show("patch", now, index=index, state="NOT LOADED")
            return
        self.mapper.apply(patch.params)
        self._send(dict(patch.params))
        if changed:
            self._report_corners()
        self.screen.show("patch", now, index=index, state="LOADED")
        if self.on_patch:
            self.on_patch("load", index, patch)

    def save_patch(self, index: int, now: float) -> None:
        if self.patches is None:
            return
        values = {**{k: DEFAULT_PARAMS[k] for k in POT_PARAMS}, **self.mapper.values()}  # X/Y once touched
        patch = Patch(self.corners.names(), values)
        try:
            self.patches.save(index, patch)
        except HardwareError as e:
            log.warning("%s", e)
            self.screen.show("patch", now, index=index, state="NOT SAVED")
            return
        self.screen.show("patch", now, index=index, state="SAVED")
        if self.on_patch:
            self.on_patch("save", index, patch)

    # -- display ----------------------------------------------------------------------------------------
    def _draw(self, now: float) -> None:
        kind, data = self.screen.current(now)
        if kind == "home":
            data = {"corners": [i.abbr for i in self.corners.current()], "xy": self.mapper.glide.position}
        key = (kind, repr(sorted(data.items())))
        if key == self._drawn or now - self._drawn_at < 1.0 / _SCREEN_FPS:
            return
        from hardware.screens import render
        self.image = render(kind, data)
        self._drawn, self._drawn_at = key, now
        if self.display is not None:
            self.display.show(self.image)


@dataclass
class SimHandles:
    """The simulated twin's physical side, for the desktop simulator and tests."""
    board: object  # hardware.sim.SimulatedBoard
    gpio: object   # hardware.sim.SimulatedGPIO
    panel: object  # hardware.sim.SimulatedSSD1306
    bus: object    # hardware.sim.FakeSMBus (the shared I2C bus: controller at 0x47, OLED at 0x3d)


def open_board_controls(kind: str, *, corners: CornerChoices, patches_path: str | Path | None = None,
                        on_corners_changed=None, on_patch=None, import_status_path: str | Path | None = None,
                        i2c_port: int = 1, platform: Platform = RASPBERRY_PI) -> BoardControls:
    """`kind` "ons": the original hardware (I2C bus `i2c_port`, GPIO, the OLED if present), reached through
    `platform` (default: RPi.GPIO and smbus2); "sim": the simulated twin (the same drivers on a fake bus and GPIO;
    `controls.sim` holds its physical side). `import_status_path`: the USB import's status file, whose new
    outcomes the OLED shows."""
    from hardware.controller import ControllerBoard
    from hardware.oled import OLED_ADDRESS, open_oled
    from hardware.switches import Switches
    patches = PatchStore(patches_path) if patches_path else None
    if kind == "ons":
        gpio = platform.gpio()
        board = ControllerBoard(open_bus=lambda: platform.open_bus(i2c_port))
        switches, display, sim = Switches(gpio), open_oled(gpio, open_bus=lambda: platform.open_bus(i2c_port)), None
    elif kind == "sim":
        from hardware.frame import ADDRESS
        from hardware.sim import FakeSMBus, SimulatedBoard, SimulatedGPIO, SimulatedSSD1306
        twin, panel = SimulatedBoard(), SimulatedSSD1306()
        sim = SimHandles(twin, SimulatedGPIO(), panel, FakeSMBus({ADDRESS: twin, OLED_ADDRESS: panel}))
        board = ControllerBoard(sim.bus)
        switches, display = Switches(sim.gpio), open_oled(sim.gpio, bus=sim.bus)
    else:
        raise HardwareError(f"unknown board {kind!r}: use 'ons' (the original hardware) or 'sim'")
    controls = BoardControls(board, corners=corners, switches=switches, display=display, patches=patches,
                             on_corners_changed=on_corners_changed, on_patch=on_patch,
                             import_status=ImportStatus(import_status_path) if import_status_path else None)
    controls.sim = sim
    return controls
