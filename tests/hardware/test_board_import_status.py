"""The USB import's outcome on the OLED: a new status file becomes a message screen, once."""
import json
import os

import numpy as np

from hardware.import_status import ImportStatus, import_message
from hardware.screens import ScreenState, render


def write(path, doc):
    tmp = path.with_name(".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)  # as bank_import.write_status does


def test_only_a_new_outcome_is_shown_once(tmp_path):
    path = tmp_path / "import.json"
    write(path, {"installed": ["old"], "refused": {}})
    status = ImportStatus(path, interval=1.0)
    assert status.poll(0.0) is None                     # the outcome there at start is old news
    write(path, {"installed": ["pads"], "refused": {}})
    assert status.poll(0.5) is None                     # not looked at again before the interval
    assert status.poll(1.0) == {"title": "USB IMPORT", "lines": ["1 BANK INSTALLED"]}
    assert status.poll(2.0) is None                     # shown once
    path.write_text("{half")
    assert status.poll(3.0) is None                     # unreadable: nothing shown


def test_messages_and_their_screen():
    assert import_message({"installed": [], "refused": {}}) == {"title": "USB IMPORT", "lines": ["NO BANKS FOUND"]}
    msg = import_message({"installed": ["a", "b"], "refused": {"c": "bad", "d": "worse"}})
    assert msg["lines"] == ["2 BANKS INSTALLED", "2 REFUSED:", "c, d"]
    screen = ScreenState()
    screen.show("message", 10.0, duration=6.0, **msg)
    assert screen.current(15.9)[0] == "message" and screen.current(16.0)[0] == "home"
    img = render("message", msg)
    assert img.size == (128, 64) and np.array(img).sum() > 300  # lit pixels: the title and three lines
