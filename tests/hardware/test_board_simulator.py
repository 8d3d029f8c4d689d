"""The desktop simulator, driven headless under Xvfb with real X events."""
import os
import shutil
import time

import numpy as np
import pytest
from PIL import Image

from hardware.corners import CornerChoices, Instrument
from hardware.controls import open_board_controls
from tests.xvfb import xvfb_display


@pytest.fixture(scope="module")
def xdisplay():
    with xvfb_display() as display:
        yield display


class Session:
    def __init__(self, tmp_path):
        from hardware.simulator import SimulatorWindow
        names = [["bass", "organ"], ["flute", "brass"], ["marimba", "tom"], ["vox", "gtr"]]
        corners = CornerChoices([[Instrument(n, n.upper(), n[:2].upper()) for n in c] for c in names])
        self.params, self.corners, self.notes = {}, [], []
        self.controls = open_board_controls("sim", corners=corners, patches_path=tmp_path / "p.json",
                                            on_corners_changed=self.corners.append)
        self.controls.start(lambda **p: self.params.update(p))
        self.window = SimulatorWindow(self.controls, note_on=lambda p, v: self.notes.append(("on", p, v)),
                                      note_off=lambda p: self.notes.append(("off", p)))
        self.root = self.window.root

    def pump(self, until, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.root.update()
            if until():
                return True
            time.sleep(0.01)
        return False

    def close(self):
        self.window.close()
        self.controls.stop()


@pytest.fixture
def session(xdisplay, tmp_path):
    s = Session(tmp_path)
    s.pump(lambda: s.root.winfo_viewable())
    yield s
    s.close()


def test_drag_on_the_pad_moves_the_engines_xy(session):
    pad = session.window.pad
    assert session.pump(lambda: session.params.get("volume") == 200 / 255)   # the knobs' start positions
    pad.event_generate("<ButtonPress-1>", x=15, y=15)                        # cell (0, 0)
    assert session.pump(lambda: session.params.get("x") == 0.0 and session.params.get("y") == 0.0)
    for x in range(15, 300, 30):
        pad.event_generate("<B1-Motion>", x=x, y=x // 2)
        session.pump(lambda: False, timeout=0.02)
    pad.event_generate("<ButtonRelease-1>", x=285, y=142)
    assert session.pump(lambda: session.params.get("x") == 0.9 and session.params.get("y") == 0.4)
    session.pump(lambda: False, timeout=0.1)
    assert (session.params["x"], session.params["y"]) == (0.9, 0.4)           # released: the position holds


def test_knobs_encoders_and_switches(session):
    session.window.knobs[1].set(255)                                         # attack
    assert session.pump(lambda: session.params.get("attack") == 1.0)
    assert session.corners == [("bass", "flute", "marimba", "vox")]
    session.window.encoders[2][2].invoke()                                   # ">" of the third encoder
    assert session.pump(lambda: session.corners[-1] == ("bass", "flute", "tom", "vox"))
    push = session.window.encoders[0][1]
    push.event_generate("<ButtonPress-1>")
    assert session.pump(lambda: session.controls.screen.data.get("state") == "SAVED", timeout=3)
    push.event_generate("<ButtonRelease-1>")
    assert session.controls.patches.get(0).instruments == ("bass", "flute", "tom", "vox")


def test_the_computer_keyboard_plays_notes(session):
    session.root.focus_force()
    session.pump(lambda: session.root.focus_get() is not None, timeout=2)
    session.root.event_generate("<KeyPress>", keysym="a", when="tail")
    session.root.event_generate("<KeyPress>", keysym="e", when="tail")
    session.root.event_generate("<KeyRelease>", keysym="a", when="tail")
    session.root.event_generate("<KeyPress>", keysym="a", when="tail")  # auto-repeat: release + press
    session.root.event_generate("<KeyRelease>", keysym="a", when="tail")
    session.root.event_generate("<KeyRelease>", keysym="e", when="tail")
    assert session.pump(lambda: len(session.notes) == 4, timeout=2)
    assert session.notes == [("on", 60, 100), ("on", 63, 100), ("off", 60), ("off", 63)]


def test_screenshot_shows_the_oled_picture(session, tmp_path):
    session.window.pad.event_generate("<ButtonPress-1>", x=15, y=15)
    assert session.pump(lambda: session.params.get("x") == 0.0)
    assert session.controls.display.flush()
    session.window.update_picture()
    path = tmp_path / "sim.png"
    session.window.screenshot(path)
    if os.environ.get("NSYNTH_SHOT"):
        shutil.copy(path, os.environ["NSYNTH_SHOT"])
    shot = Image.open(path)
    assert shot.size == (session.root.winfo_width(), session.root.winfo_height())
    oled = session.window.oled
    x0, y0 = oled.winfo_rootx() - session.root.winfo_rootx(), oled.winfo_rooty() - session.root.winfo_rooty()
    picture = np.array(shot.convert("L").crop((x0, y0, x0 + 384, y0 + 192))) > 127
    expected = np.array(session.controls.image.resize((384, 192)), dtype=bool)
    assert expected.sum() > 1000 and (picture == expected).mean() > 0.99
    assert picture[15:30, 111:126].sum() > 100                               # the cursor at the top-left dot


def test_board_monitor_opens_the_window_and_closes_it_after_the_time(xdisplay):
    import io

    from hardware.commands import monitor
    out = io.StringIO()
    assert monitor("sim", seconds=1.0, out=out) == 0
    text = out.getvalue()
    assert text.startswith("corners: A1 B1 C1 D1") and "sustain=1.000" in text and "frames " in text
