"""The desktop simulator (`nsynth play --board sim`): a Tk window over the simulated twin.

The window only moves the twin's physical side: a touch pad you click and drag (the 11x11 grid the real sensors
report), six knobs, four encoders (turn with the arrow buttons or the mouse wheel, push with the middle button)
and the OLED's picture, read back from the simulated SSD1306's memory. Everything in between is the real driver
and mapping code (hardware.controls.BoardControls). The computer keyboard plays notes through `note_on` /
`note_off` (see hardware.keys). Tk runs on the calling thread, which must be the main thread.
"""
from __future__ import annotations

import gc
from typing import Callable

from hardware.errors import HardwareError

try:
    import tkinter as tk
except ImportError as e:  # e.g. Debian's python3 without python3-tk
    raise HardwareError(f"the simulator window needs Tk ({e}): apt install python3-tk, or a Python with tkinter") from e

from hardware.frame import GRID
from hardware.keys import ComputerKeyboard
from hardware.switches import SWITCH_PINS
from nsynth.params import POT_PARAMS

CELL = 30                  # pad pixels per touch cell
PAD = CELL * GRID
OLED_SCALE = 3
_REFRESH_MS = 33
_KEY_RELEASE_MS = 30       # X11 auto-repeat sends release+press pairs; a release stands only after this long


class SimulatorWindow:
    def __init__(self, controls, note_on=None, note_off=None, root: tk.Tk | None = None):
        if getattr(controls, "sim", None) is None:
            raise ValueError("the simulator needs BoardControls opened with kind='sim'")
        self.controls, self.sim = controls, controls.sim
        self.root = root or tk.Tk()
        self.root.title("NSynth Super (simulated)")
        self.root.configure(bg="black")
        self.keyboard = ComputerKeyboard(note_on or (lambda p, v: None), note_off or (lambda p: None))
        self._release_jobs: dict[str, str] = {}
        self._closed = False

        self.pad = tk.Canvas(self.root, width=PAD, height=PAD, bg="#101010", highlightthickness=0)
        self.pad.grid(row=0, column=0, rowspan=3, padx=8, pady=8)
        for gy in range(GRID):
            for gx in range(GRID):
                cx, cy = (gx + 0.5) * CELL, (gy + 0.5) * CELL
                self.pad.create_oval(cx - 2, cy - 2, cx + 2, cy + 2, fill="#606060", outline="")
        self._cursor = self.pad.create_oval(0, 0, 0, 0, fill="white", outline="")
        self.pad.bind("<ButtonPress-1>", self._touch)
        self.pad.bind("<B1-Motion>", self._touch)
        self.pad.bind("<ButtonRelease-1>", lambda e: self.sim.board.set_touch(None))

        self.oled = tk.Label(self.root, bg="black", bd=0)
        self.oled.grid(row=0, column=1, padx=8, pady=8)
        self._oled_photo = None

        knobs = tk.Frame(self.root, bg="black")
        knobs.grid(row=1, column=1, sticky="n")
        self.knobs = []
        for i, (name, start) in enumerate(zip(POT_PARAMS, list(self.sim.board.pots))):
            scale = tk.Scale(knobs, from_=0, to=255, orient="horizontal", label=name, length=180,
                             command=lambda v, i=i: self.sim.board.set_pot(i, int(float(v))),
                             bg="black", fg="white", highlightthickness=0, takefocus=0)
            scale.set(start)
            scale.grid(row=i // 2, column=i % 2, padx=2)
            self.knobs.append(scale)

        encoders = tk.Frame(self.root, bg="black")
        encoders.grid(row=2, column=1, sticky="n", pady=4)
        self.encoders = []  # per encoder: (turn left, push, turn right) buttons
        for i, pin in enumerate(SWITCH_PINS):
            frame = tk.Frame(encoders, bg="black")
            frame.grid(row=0, column=i, padx=4)
            left = tk.Button(frame, text="<", width=1, takefocus=0, command=lambda i=i: self.sim.board.turn(i, -1))
            push = tk.Button(frame, text=f"E{i + 1}", width=2, takefocus=0)
            push.bind("<ButtonPress-1>", lambda e, pin=pin: self.sim.gpio.press(pin))
            push.bind("<ButtonRelease-1>", lambda e, pin=pin: self.sim.gpio.release(pin))
            right = tk.Button(frame, text=">", width=1, takefocus=0, command=lambda i=i: self.sim.board.turn(i, 1))
            for widget in (left, push, right):
                widget.pack(side="left")
            for widget in (frame, push):
                widget.bind("<Button-4>", lambda e, i=i: self.sim.board.turn(i, 1))
                widget.bind("<Button-5>", lambda e, i=i: self.sim.board.turn(i, -1))
                widget.bind("<MouseWheel>", lambda e, i=i: self.sim.board.turn(i, 1 if e.delta > 0 else -1))
            self.encoders.append((left, push, right))

        self.status = tk.Label(self.root, text="keys: a w s e d f t g y h u j k ... play, z/x octave",
                               bg="black", fg="#a0a0a0", anchor="w")
        self.status.grid(row=3, column=0, columnspan=2, sticky="we", padx=8)

        self.root.bind_all("<KeyPress>", self._key_press)
        self.root.bind_all("<KeyRelease>", self._key_release)
        self.root.protocol("WM_DELETE_WINDOW", self.close)
        self._refresh()

    # -- input -------------------------------------------------------------------------------------------
    def cell_at(self, px: float, py: float) -> tuple[int, int]:
        return (min(max(int(px // CELL), 0), GRID - 1), min(max(int(py // CELL), 0), GRID - 1))

    def _touch(self, event) -> None:
        self.sim.board.set_touch(self.cell_at(event.x, event.y))

    def _key_press(self, event) -> None:
        job = self._release_jobs.pop(event.keysym, None)
        if job is not None:
            self.root.after_cancel(job)  # auto-repeat: the key never went up
        self.keyboard.press(event.keysym)

    def _key_release(self, event) -> None:
        key = event.keysym
        self._release_jobs[key] = self.root.after(_KEY_RELEASE_MS, self._release_key, key)

    def _release_key(self, key: str) -> None:
        self._release_jobs.pop(key, None)
        self.keyboard.release(key)

    # -- output ------------------------------------------------------------------------------------------
    def _refresh(self) -> None:
        if not self._closed:
            self.update_picture()
            self.root.after(_REFRESH_MS, self._refresh)

    def update_picture(self) -> None:
        """Show the panel's current picture and the glided touch position."""
        from PIL import ImageTk
        img = self.sim.panel.image().convert("L")
        img = img.resize((img.width * OLED_SCALE, img.height * OLED_SCALE))
        self._oled_photo = ImageTk.PhotoImage(img, master=self.root)
        self.oled.configure(image=self._oled_photo)
        params = self.controls.params
        if "x" in params:
            cx, cy = params["x"] * (PAD - CELL) + CELL / 2, params["y"] * (PAD - CELL) + CELL / 2
            self.pad.coords(self._cursor, cx - 7, cy - 7, cx + 7, cy + 7)

    def screenshot(self, path) -> None:
        """Save the window as it is on screen (PNG), grabbed from the X server."""
        from PIL import ImageGrab
        self.root.update()
        x, y = self.root.winfo_rootx(), self.root.winfo_rooty()
        w, h = self.root.winfo_width(), self.root.winfo_height()
        ImageGrab.grab(bbox=(x, y, x + w, y + h)).save(path)

    def run(self, poll: Callable[[], bool] | None = None, every_ms: int = 50) -> None:
        """Run Tk until the window is closed, or until `poll()` (called every `every_ms` on this thread)
        returns False."""
        if poll is not None:
            def check() -> None:
                if self._closed:
                    return
                if not poll():
                    self.close()
                elif not self._closed:  # (poll may have closed the window)
                    self.root.after(every_ms, check)
            self.root.after(every_ms, check)
        self.root.mainloop()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.keyboard.release_all()
            self.root.destroy()
            # Tcl aborts the process when its objects are freed on another thread (as a garbage collection
            # started by the controls thread would): drop every Tk reference here, on the Tk thread.
            self.pad = self.oled = self.status = self._oled_photo = self.root = None
            self.knobs, self.encoders = [], []
            gc.collect()


def open_window(controls, note_on=None, note_off=None) -> SimulatorWindow:
    """The simulator window over started `controls` (on the main thread); HardwareError when no display."""
    try:
        return SimulatorWindow(controls, note_on, note_off)
    except tk.TclError as e:
        raise HardwareError(f"the simulator window cannot open ({e}); is there a display (DISPLAY)?") from e


def run_window(controls, note_on=None, note_off=None, seconds: float | None = None,
               poll: Callable[[], bool] | None = None) -> None:
    """Open the simulator window and block until it is closed, for `seconds`, or until `poll()` returns False
    (call on the main thread, with `controls` already started)."""
    window = open_window(controls, note_on, note_off)
    if seconds is not None:
        window.root.after(int(seconds * 1000), window.close)
    window.run(poll)
