import json
import threading

import numpy as np
import pytest

from hardware.controls import BoardControls, open_board_controls
from hardware.controller import ControllerBoard
from hardware.corners import CornerChoices, Instrument
from hardware.frame import ADDRESS
from hardware.sim import FakeSMBus, SimulatedBoard
from hardware.switches import SWITCH_PINS


def corners():
    names = [["bass", "organ", "pad"], ["flute", "brass"], ["marimba", "tom"], ["vox", "gtr"]]
    return CornerChoices([[Instrument(n, n.upper(), n[:2].upper()) for n in c] for c in names])


class Rig:
    """The sim board driven tick by tick: `tick()` = one poll + one controls step at a fixed 10 ms clock."""

    def __init__(self, tmp_path, **kw):
        self.posts, self.corner_reports, self.patch_events = [], [], []
        self.controls = open_board_controls(
            "sim", corners=corners(), patches_path=tmp_path / "patches.json",
            on_corners_changed=self.corner_reports.append,
            on_patch=lambda a, i, p: self.patch_events.append((a, i)), **kw)
        self.sim = self.controls.sim
        self.t = 0.0
        self.controls.start(lambda **p: self.posts.append(p), threads=False)

    def tick(self, n=1):
        for _ in range(n):
            self.t += 0.01
            self.controls.board.poll_once()
            self.controls.step(self.t)

    def posted(self):
        out = {}
        for p in self.posts:
            out.update(p)
        return out

    def close(self):
        self.controls.stop()


@pytest.fixture
def rig(tmp_path):
    r = Rig(tmp_path)
    yield r
    r.close()


def test_pots_and_touch_become_engine_parameters(rig):
    for i, raw in enumerate((0, 51, 102, 153, 204, 255)):
        rig.sim.board.set_pot(i, raw)
    rig.tick()
    assert rig.posted() == {"position": 0.0, "attack": 0.2, "decay": 0.4, "sustain": 0.6, "release": 0.8,
                            "volume": 1.0, "x": 0.5, "y": 0.5}
    rig.posts.clear()
    rig.sim.board.set_touch((10, 0))
    rig.tick(50)
    xs = [p["x"] for p in rig.posts if "x" in p]
    assert len(xs) > 5 and max(b - a for a, b in zip([0.5] + xs, xs)) < 0.2   # a glide, not a jump
    assert rig.posted()["x"] == 1.0 and rig.posted()["y"] == 0.0
    assert set().union(*rig.posts) == {"x", "y"}                                 # the pots did not move


def test_bus_trouble_never_moves_the_instrument(rig):
    rig.sim.board.set_touch((2, 8))
    rig.tick(60)
    before = rig.posted()
    rig.posts.clear()
    rig.sim.board.set_touch((9, 1))
    rig.sim.board.set_pot(5, 17)
    for kind in ("nack", "stuck", "checksum"):
        rig.sim.bus.fail(kind, 20, addr=ADDRESS)   # the OLED's writes on the same bus go through
    rig.tick(60)
    assert rig.posts == [] and rig.controls.board.counts["reconnects"] >= 1
    rig.tick(60)                                                     # the bus is back
    assert rig.posted()["volume"] == 17 / 255 and rig.posted()["x"] == 0.9
    assert before["x"] == 0.2


def test_an_encoder_cycles_its_corner_and_reports_the_new_combination(rig):
    rig.tick()
    assert rig.corner_reports == [("bass", "flute", "marimba", "vox")]   # reported once at start
    rig.sim.board.turn(0, 1)
    rig.tick()
    rig.sim.board.turn(3, -1)
    rig.sim.board.turn(1, 2)                                             # two choices: back where it was
    rig.tick()
    assert rig.corner_reports[1:] == [("organ", "flute", "marimba", "vox"), ("organ", "flute", "marimba", "gtr")]
    assert rig.controls.screen.kind == "instrument"


def press(rig, switch, seconds):
    rig.sim.gpio.press(SWITCH_PINS[switch])
    rig.tick(round(seconds / 0.01))
    rig.sim.gpio.release(SWITCH_PINS[switch])
    rig.tick(5)


def test_hold_saves_a_patch_and_a_short_press_loads_it_back(rig, tmp_path):
    for i, raw in enumerate((10, 20, 30, 40, 50, 60)):
        rig.sim.board.set_pot(i, raw)
    rig.sim.board.set_touch((3, 7))
    rig.tick()                                   # the first frame is the encoders' baseline
    rig.sim.board.turn(2, 1)
    rig.tick(60)
    press(rig, 1, 0.9)
    assert rig.patch_events == [("save", 1)]
    saved = json.loads((tmp_path / "patches.json").read_text())["patches"][1]
    assert saved["instruments"] == ["bass", "flute", "tom", "vox"]
    assert saved["attack"] == 20 / 255 and saved["grid"] == [0.3, 0.7]

    rig.sim.board.turn(2, 1)                     # change everything
    rig.sim.board.set_pot(1, 200)
    rig.sim.board.set_touch((10, 10))
    rig.tick(60)
    rig.sim.board.set_touch(None)
    rig.posts.clear()
    press(rig, 1, 0.2)
    assert rig.patch_events[-1] == ("load", 1)
    assert rig.corner_reports[-1] == ("bass", "flute", "tom", "vox")
    got = rig.posted()
    assert got["attack"] == 20 / 255 and (got["x"], got["y"]) == (0.3, 0.7)
    rig.tick(20)
    assert rig.posted()["attack"] == 20 / 255    # the pot at 200 does not undo the patch until it moves


def test_an_empty_or_corrupt_patch_loads_nothing(tmp_path):
    (tmp_path / "patches.json").write_text("{not json")
    r = Rig(tmp_path)
    try:
        r.tick(3)
        r.posts.clear()
        press(r, 0, 0.1)
        assert r.posts == [] and r.patch_events == []
        assert r.controls.screen.data == {"index": 0, "state": "EMPTY"}
        assert "corrupt patch file" in r.controls.patches.problems[0]
    finally:
        r.close()


def test_the_oled_shows_the_home_screen_then_transient_screens(rig):
    rig.sim.board.set_touch((0, 0))
    rig.tick(40)
    assert rig.controls.display.flush()
    panel = np.array(rig.sim.panel.pixels(), dtype=np.uint8)
    assert (panel == np.array(rig.controls.image, dtype=np.uint8)).all()   # the panel got the picture
    assert panel[5:10, 37:42].sum() > 15                                    # cursor top-left
    rig.sim.board.set_touch(None)
    rig.sim.board.set_pot(5, 250)
    rig.tick(2)
    assert rig.controls.screen.kind == "volume"
    rig.tick(110)
    assert rig.controls.screen.kind == "home"


def test_plays_without_a_display_or_switches():
    twin = SimulatedBoard()
    posts = []
    c = BoardControls(ControllerBoard(FakeSMBus({ADDRESS: twin})), corners=corners())
    c.start(lambda **p: posts.append(p), threads=False)
    twin.set_pot(5, 255)
    c.board.poll_once()
    c.step(0.0)
    assert posts[0]["volume"] == 1.0 and c.image is not None
    c.stop()


def test_threads_post_from_their_own_thread(tmp_path):
    r = Rig(tmp_path)
    got, seen = threading.Event(), []

    def post(**p):
        seen.append(threading.current_thread().name)
        if p.get("volume") == 1.0:
            got.set()
    r.controls.start(post)
    r.sim.board.set_pot(5, 255)
    assert got.wait(5)
    r.close()
    assert "board-controls" in seen
    assert not r.controls.board._thread


def test_ons_wires_the_real_drivers_to_bus_1_the_switch_pins_and_the_oled(tmp_path):
    """The original hardware's path, with fakes only at the edge (the GPIO module and the I2C bus, injected)."""
    from hardware.oled import OLED_ADDRESS
    from hardware.platform import Platform
    from hardware.sim import SimulatedGPIO, SimulatedSSD1306
    gpio, twin, panel, opened = SimulatedGPIO(), SimulatedBoard(), SimulatedSSD1306(), []

    def smbus(port):
        opened.append(port)
        return FakeSMBus({ADDRESS: twin, OLED_ADDRESS: panel})
    platform = Platform(gpio=lambda: gpio, open_bus=smbus)  # injected, as gpiozero's pin factories

    posts = []
    c = open_board_controls("ons", corners=corners(), patches_path=tmp_path / "p.json", platform=platform)
    c.start(lambda **p: posts.append(p), threads=False)
    twin.set_pot(0, 255)
    gpio.press(26)
    for i in range(100):
        c.board.poll_once()
        c.step(i * 0.01)
    assert posts[0]["position"] == 1.0 and opened == [1, 1]       # the OLED and the controller on bus 1
    assert gpio.outputs[4] == [1, 0, 1]                           # the OLED's reset pulse
    assert c.patches.get(3) is not None                           # GPIO 26 held: patch 4 saved
    assert c.display.flush() and panel.on and sum(map(sum, panel.pixels())) > 50
    c.stop()


def test_ons_on_a_pc_without_rpi_gpio_says_so():
    from hardware.errors import HardwareError
    with pytest.raises(HardwareError, match="--board sim"):
        open_board_controls("ons", corners=corners())
    with pytest.raises(HardwareError, match="unknown board 'usb'"):
        open_board_controls("usb", corners=corners())


def test_board_monitor_prints_what_the_engine_would_get(tmp_path):
    import io

    from nsynth.cli import main
    from hardware.commands import monitor
    for name in ("bass_flute_marimba_vox", "organ_flute_marimba_vox"):
        (tmp_path / name).mkdir()
    out = io.StringIO()
    assert monitor("sim", seconds=0.3, banks=str(tmp_path), window=False, out=out) == 0
    lines = out.getvalue().splitlines()
    assert lines[0] == "corners: bass flute marimba vox"
    assert "volume=0.784" in lines[1] and "x=0.500" in lines[1]
    frames = int(lines[-1].split()[1])
    assert frames > 20 and "checksum 0 stuck 0 io_error 0" in lines[-1]
    assert main(["board", "monitor", "--board", "sim", "--no-window", "--banks", str(tmp_path / "none")]) == 1
