import sys
import threading

import numpy as np
import pytest

from hardware.errors import HardwareError
from hardware.oled import OLED_ADDRESS, RESET_PIN, Display, open_oled, page_bytes
from hardware.screens import HEIGHT, WIDTH, ScreenState, render
from hardware.sim import FakeSMBus, SimulatedGPIO, SimulatedSSD1306
from hardware.switches import SWITCH_PINS, Switches, load_gpio


def test_switches_read_active_low_with_pull_ups():
    gpio = SimulatedGPIO()
    sw = Switches(gpio)
    assert sw.read() == (False,) * 4
    gpio.press(13)
    assert sw.read() == (False, False, True, False)
    gpio.release(13)
    assert sw.read() == (False,) * 4
    sw.close()
    with pytest.raises(RuntimeError, match="setup"):
        gpio.input(SWITCH_PINS[0])


def test_gpio_library_that_refuses_a_pc_gives_a_clear_message(monkeypatch):
    class RefusingFinder:
        """RPi.GPIO's own behaviour on a non-Pi: importing it raises RuntimeError."""
        def find_spec(self, name, path=None, target=None):
            if name == "RPi" or name.startswith("RPi."):
                raise RuntimeError("This module can only be run on a Raspberry Pi!")
    monkeypatch.setattr(sys, "meta_path", [RefusingFinder(), *sys.meta_path])
    for mod in [m for m in sys.modules if m == "RPi" or m.startswith("RPi.")]:
        monkeypatch.delitem(sys.modules, mod)
    with pytest.raises(HardwareError, match=r"RPi.GPIO.*only be run on a Raspberry Pi.*--board sim"):
        load_gpio()


def as_array(img):
    return np.array(img, dtype=np.uint8)


def test_home_screen_shows_the_cursor_where_the_touch_is():
    a = as_array(render("home", {"corners": ["CB", "EP", "MA", "DG"], "xy": (0.0, 0.0)}))
    b = as_array(render("home", {"corners": ["CB", "EP", "MA", "DG"], "xy": (1.0, 1.0)}))
    assert a.shape == (HEIGHT, WIDTH)
    assert a[5:10, 37:42].sum() > 15 and b[5:10, 37:42].sum() <= 1        # cursor over the top-left dot
    assert b[55:60, 87:92].sum() > 15 and a[55:60, 87:92].sum() <= 1      # ... and the bottom-right one
    assert a[0:10, 0:20].sum() > 10 and a[54:64, 108:128].sum() > 10      # corner labels drawn
    c = as_array(render("home", {"corners": ["XX", "EP", "MA", "DG"], "xy": (0.0, 0.0)}))
    assert (c[0:11, 0:32] != a[0:11, 0:32]).any() and (c[:, 32:] == a[:, 32:]).all()


def test_transient_screens_differ_and_reflect_their_values():
    lo, hi = (as_array(render("volume", {"value": v})) for v in (0.1, 0.9))
    assert hi.sum() > lo.sum() + 300
    env = as_array(render("envelope", {"stage": 0, "attack": 0.5, "decay": 0.5, "sustain": 0.5, "release": 0.5}))
    pos = as_array(render("position", {"value": 0.5}))
    patch = as_array(render("patch", {"index": 1, "state": "SAVED"}))
    inst = as_array(render("instrument", {"corner": 0, "names": ["CLN BASS", "SYN BASS"], "selected": 1}))
    shots = [lo, env, pos, patch, inst]
    assert all(s.sum() > 50 for s in shots)
    assert all((x != y).any() for i, x in enumerate(shots) for y in shots[i + 1:])


def test_screen_state_returns_home_after_the_timeout():
    s = ScreenState(timeout=1.0)
    s.show("volume", 10.0, value=0.5)
    assert s.current(10.5) == ("volume", {"value": 0.5})
    assert s.current(11.0)[0] == "home"


def test_page_bytes_is_the_ssd1306_ram_layout():
    img = render("home", {"corners": ["CB", "EP", "MA", "DG"], "xy": (0.3, 0.7)})
    a = as_array(img)
    expected = bytes(sum(int(a[p * 8 + b, x]) << b for b in range(8)) for p in range(8) for x in range(128))
    assert page_bytes(img) == expected and sum(expected) > 0


def test_luma_ssd1306_on_the_bus_puts_the_picture_in_the_panel():
    panel, gpio = SimulatedSSD1306(), SimulatedGPIO()
    display = open_oled(gpio, bus=FakeSMBus({OLED_ADDRESS: panel}))
    assert gpio.outputs[RESET_PIN] == [1, 0, 1]              # the reset pulse
    img = render("volume", {"value": 0.7})
    display.show(img)
    assert display.flush()
    assert panel.on and (np.array(panel.pixels(), dtype=np.uint8) == as_array(img)).all()
    assert (as_array(panel.image()) == as_array(img)).all()
    display.close()


def test_an_absent_panel_is_logged_and_skipped(caplog):
    assert open_oled(bus=FakeSMBus({})) is None
    assert "no SSD1306 at 0x3d" in caplog.text and "playing without the display" in caplog.text


class SlowPanel:
    def __init__(self, fail=False):
        self.gate, self.fail, self.shown = threading.Event(), fail, []

    def display(self, image):
        self.gate.wait(5)
        if self.fail:
            raise OSError(121, "Remote I/O error")
        self.shown.append(image)


def test_show_never_waits_for_the_panel_and_sends_the_newest_picture():
    panel = SlowPanel()
    d = Display(panel)
    for i in range(50):
        d.show(i)          # returns at once although the panel is stuck
    panel.gate.set()
    assert d.flush()
    assert panel.shown[-1] == 49 and len(panel.shown) <= 2
    d.close()


def test_a_panel_that_stops_answering_is_given_up_on(caplog):
    panel = SlowPanel(fail=True)
    panel.gate.set()
    d = Display(panel, max_failures=3)
    for i in range(3):
        d.show(i)
        assert d.flush()
    assert d.failed and "giving up" in caplog.text
    d.show(99)
    assert d.flush()
    d.close()
