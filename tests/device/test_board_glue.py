"""The board wired into the live instrument: the real driver code on the simulated board (fake I2C bus and GPIO)
feeding a real engine; bank switching from the encoders; patches and USB import status; and `nsynth play
--board sim` end to end (Tk window under Xvfb, audio through PortAudio/ALSA to a null output)."""
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from device.bank import BankError, open_bank
from device.board_glue import (board_corners, board_source, engine_params, manifest_corners, open_combination,
                               patch_file)
from device.engine import Engine
from device.bank_state import STATE_FILE, BankSlot
from device.clock import FrameClock

from synth_banks import write_bank
from tests.xvfb import xvfb_display

ROOT = Path(__file__).resolve().parents[2]
F0 = 440.0 * 2 ** ((60 - 69) / 12)
SMALL = dict(grid=3, pitches=(60,), velocities=(100,), note_length=4000)


def harmonics(audio: np.ndarray, fs: int = 48000) -> np.ndarray:
    """Spectral peaks near harmonics 1..4 of middle C (within 3 %: the sustain loop turns the lines into the
    loop rate's nearest multiples) in a mono signal. The synthetic banks' corner timbres: BL = 1st, BR = 2nd,
    TL = 3rd, TR = 4th harmonic."""
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(audio.size)))
    f = np.fft.rfftfreq(audio.size, 1 / fs)
    return np.array([spectrum[np.abs(f - k * F0) < 0.03 * k * F0].max() for k in (1, 2, 3, 4)])


@pytest.fixture(scope="module")
def banks(tmp_path_factory):
    """A folder of corner-combination banks, named TL_TR_BL_BR; the manifests list BL, BR, TL, TR."""
    folder = tmp_path_factory.mktemp("glue") / "banks"
    for tl in ("tl", "tl2", "tl3"):
        write_bank(folder / f"{tl}_tr_bl_br", corners=("bl", "br", tl, "tr"), **SMALL)
    with open(folder / "tl3_tr_bl_br" / "samples.i16", "r+b") as f:  # a broken bank: refused when chosen
        f.truncate(100)
    return folder


class Rig:
    """A running engine with the simulated board attached, rendered by the test (no audio device)."""

    def __init__(self, bank, tmp_path, **kw):
        self.engine = Engine(open_bank(bank))
        self.slot = BankSlot(self.engine, bank, tmp_path / "state")
        self.slot.state.mkdir(exist_ok=True)
        self.source = board_source("sim", patches=tmp_path / "patches.json", **kw)
        self.source.attach(self.engine, FrameClock(48000, 128), self.slot)
        self.source.start(self.engine.post_params)
        self.board = self.source.controls.sim.board

    def render_until(self, ok, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.engine.render(128)
            if ok():
                return True
            time.sleep(0.005)
        return False

    def note(self, seconds=0.2):
        self.engine.note_on(60, 100)
        out = self.engine.render(int(seconds * 48000))[:, 0]
        self.engine.note_off(60)
        self.engine.render(48000 // 10)
        return harmonics(out[4800:])  # past the attack

    def stop(self):
        self.source.stop()


@pytest.fixture
def rig(banks, tmp_path):
    r = Rig(banks / "tl_tr_bl_br", tmp_path)
    yield r
    r.stop()


def test_corner_orders_and_the_pad_orientation():
    assert manifest_corners(("TL", "TR", "BL", "BR")) == ("BL", "BR", "TL", "TR")
    assert board_corners(manifest_corners(("a", "b", "c", "d"))) == ("a", "b", "c", "d")
    assert engine_params({"x": 0.2, "y": 0.0, "volume": 0.5}) == {"x": 0.2, "y": 1.0, "volume": 0.5}
    assert engine_params({"attack": 0.3}) == {"attack": 0.3}


@pytest.mark.parametrize("cell, loudest", [((0, 0), 2), ((10, 0), 3), ((0, 10), 0), ((10, 10), 1)])
def test_touching_a_pad_corner_sounds_that_corner_of_the_bank(rig, cell, loudest):
    """Top-left of the pad (board cell (0, 0), y = 0 at the top) is the bank's top-left corner cell (y = grid-1)."""
    rig.board.set_touch(cell)
    want = {"x": cell[0] / 10, "y": 1.0 - cell[1] / 10}
    assert rig.render_until(lambda: all(rig.engine.params[k] == v for k, v in want.items()))
    h = rig.note()
    assert h.argmax() == loudest and h[loudest] > 10 * np.delete(h, loudest).max(), h


def test_the_knobs_reach_the_engine(rig):
    assert rig.render_until(lambda: rig.engine.params["volume"] == 200 / 255)  # the simulated knobs' start
    rig.board.set_pot(1, 255)
    assert rig.render_until(lambda: rig.engine.params["attack"] == 1.0)


def test_encoders_switch_banks_and_a_refused_bank_keeps_the_old_one(rig, banks, tmp_path, capsys):
    corners = rig.source.controls.corners
    assert corners.names() == ("tl", "tr", "bl", "br")  # the board starts on the combination that plays
    assert corners.corners[0][corners.selected[0]].name == "tl"
    rig.render_until(lambda: False, timeout=0.1)
    assert rig.engine.bank.path == banks / "tl_tr_bl_br"  # the start report switched nothing
    # the top-left choices are tl2, tl3, tl (the folder's order): one step on from tl is tl2
    rig.board.turn(0, 1)
    assert rig.render_until(lambda: rig.engine.bank.path == banks / "tl2_tr_bl_br")
    assert rig.slot.path == banks / "tl2_tr_bl_br"
    assert (tmp_path / "state" / STATE_FILE).read_text().strip() == str(banks / "tl2_tr_bl_br")
    rig.board.turn(0, 1)  # tl3: truncated
    assert rig.render_until(lambda: rig.source.controls.screen.kind == "message")
    assert rig.source.controls.screen.data["title"] == "BANK REFUSED"
    rig.source.switcher.wait_idle(5)
    rig.render_until(lambda: False, timeout=0.05)
    assert rig.engine.bank.path == rig.slot.path == banks / "tl2_tr_bl_br"
    assert "bank tl3_tr_bl_br refused" in capsys.readouterr().err
    rig.board.set_touch((0, 0))
    assert rig.render_until(lambda: rig.engine.params["y"] == 1.0)
    assert rig.note().argmax() == 2  # still playing, the top-left still the top-left


def test_a_bank_whose_manifest_has_the_corners_in_board_order_is_refused(tmp_path):
    write_bank(tmp_path / "a_b_c_d", corners=("a", "b", "c", "d"), **SMALL)
    with pytest.raises(BankError, match="upside down"):
        open_combination(tmp_path, ("a", "b", "c", "d"))
    write_bank(tmp_path / "e_f_g_h", corners=("Piano 1", "Organ", "x", "y"), **SMALL)  # names not comparable
    assert open_combination(tmp_path, ("e", "f", "g", "h")).info.corners == ("Piano 1", "Organ", "x", "y")


def test_a_bank_named_otherwise_starts_the_board_on_its_manifests_corners(banks, tmp_path):
    write_bank(tmp_path / "default", corners=("bl", "br", "tl2", "tr"), **SMALL)
    r = Rig(tmp_path / "default", tmp_path, banks=banks)
    try:
        assert r.source.controls.corners.names() == ("tl2", "tr", "bl", "br")
    finally:
        r.stop()


def test_a_bank_outside_the_combinations_still_plays(banks, tmp_path, capsys):
    write_bank(tmp_path / "default", corners=("p", "q", "r", "s"), **SMALL)
    r = Rig(tmp_path / "default", tmp_path, banks=banks)
    try:
        assert "is not one of the corner combinations" in capsys.readouterr().err
        r.render_until(lambda: False, timeout=0.1)
        assert r.engine.bank.path == tmp_path / "default"
        r.board.turn(0, -1)  # from the first choices (tl2, tr, bl, br) to (tl, tr, bl, br)
        assert r.render_until(lambda: r.engine.bank.path == banks / "tl_tr_bl_br")
    finally:
        r.stop()


def test_patch_file_location(monkeypatch, tmp_path):
    monkeypatch.setenv("NSYNTH_PATCH_DIR", str(tmp_path / "patches"))
    assert patch_file() == tmp_path / "patches" / "patches.json"
    monkeypatch.delenv("NSYNTH_PATCH_DIR")
    monkeypatch.setenv("NSYNTH_STATE_DIR", str(tmp_path / "state"))
    assert patch_file() == tmp_path / "state" / "patches.json"
    monkeypatch.delenv("NSYNTH_STATE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert patch_file() == tmp_path / "home" / ".local" / "state" / "nsynth" / "patches.json"


def test_patches_default_to_the_patch_dir_and_keep_the_pad_orientation(banks, tmp_path, monkeypatch):
    monkeypatch.setenv("NSYNTH_PATCH_DIR", str(tmp_path / "pd"))
    engine = Engine(open_bank(banks / "tl_tr_bl_br"))
    source = board_source("sim")
    source.attach(engine, FrameClock(48000, 128), BankSlot(engine, engine.bank.path, tmp_path))
    try:
        assert source.controls.patches.path == tmp_path / "pd" / "patches.json"
    finally:
        source.stop()


def test_a_new_usb_import_outcome_shows_on_the_oled(rig, tmp_path):
    assert rig.render_until(lambda: rig.source.controls.image is not None)
    status = rig.slot.state / "import.json"
    tmp = status.with_name(".import.json.tmp")
    tmp.write_text(json.dumps({"installed": ["pads", "bells"], "refused": {"bad": "sha256 mismatch"}}))
    os.replace(tmp, status)
    controls = rig.source.controls
    assert rig.render_until(lambda: controls.screen.kind == "message")
    assert controls.screen.data == {"title": "USB IMPORT", "lines": ["2 BANKS INSTALLED", "1 REFUSED:", "bad"]}
    assert controls.display.flush()
    assert sum(map(sum, controls.sim.panel.pixels())) > 100  # drawn on the simulated panel


_SIM_SCRIPT = textwrap.dedent('''
    import sys, time
    from device import board_glue
    from nsynth.cli import main

    run = board_glue.SimulatorSource.foreground

    def foreground(self, poll):
        """The player: touch the pad's top-left, hold a key once the glide is there (the board reads it on its
        own thread: late on a loaded machine), let go, close the window. Each step's time counts from the last."""
        t0 = [time.monotonic()]
        arrived = lambda w: max(w.controls.params.get("x", 1), w.controls.params.get("y", 1)) < 0.05
        steps = [(0.3, None, lambda w: w.root.focus_force()),
                 (0.2, None, lambda w: w.pad.event_generate("<ButtonPress-1>", x=15, y=15)),
                 (0.5, arrived, lambda w: w.root.event_generate("<KeyPress>", keysym="a", when="tail")),
                 (0.8, None, lambda w: w.root.event_generate("<KeyRelease>", keysym="a", when="tail")),
                 (0.4, None, lambda w: w.root.tk.call(w.root.protocol("WM_DELETE_WINDOW")))]  # the close button

        def player():
            while steps and time.monotonic() - t0[0] >= steps[0][0] and (steps[0][1] or bool)(self.window):
                steps.pop(0)[2](self.window)
                t0[0] = time.monotonic()
            return poll()
        run(self, player)

    board_glue.SimulatorSource.foreground = foreground
    sys.exit(main(["play", "--bank", sys.argv[1], "--board", "sim"]))
''')


def test_play_with_the_simulator_window(banks, tmp_path):
    """`nsynth play --board sim`: the window on the main thread, the keyboard playing into the engine, audio
    through real PortAudio/ALSA into a file; closing the window stops play."""
    home = tmp_path / "home"
    home.mkdir()
    cap = tmp_path / "cap.wav"
    (home / ".asoundrc").write_text(
        'pcm.nullout { type null }\n'
        f'pcm.capture {{ type file slave.pcm "nullout" file "{cap}" format "wav" }}\n'
        'pcm.!default { type plug slave { pcm "capture" format S16_LE } }\n')
    with xvfb_display():
        env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(ROOT), "NSYNTH_STATE_DIR": str(tmp_path / "st"),
               "NSYNTH_PATCH_DIR": str(tmp_path / "pd")}
        r = subprocess.run([sys.executable, "-c", _SIM_SCRIPT, str(banks / "tl_tr_bl_br")], env=env,
                           capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "playing " in r.stderr and "stopped: " in r.stderr
    audio, sr = sf.read(cap, dtype="float32")
    mono = audio[:, 0]
    loud = np.flatnonzero(np.abs(mono) > 0.02)
    assert sr == 48000 and loud.size > 0.5 * sr  # the key was held ~0.8 s
    h = harmonics(mono[loud[0] + 4800:loud[0] + 4800 + sr // 4])
    assert h.argmax() == 2 and h[2] > 10 * np.delete(h, 2).max(), h  # the bank's top-left corner


def test_sighup_reloads_the_bank_the_encoders_chose(rig, banks):
    rig.board.turn(0, 1)
    assert rig.render_until(lambda: rig.engine.bank.path == banks / "tl2_tr_bl_br")
    bank = rig.slot.reload()
    assert bank is not None and bank.path == banks / "tl2_tr_bl_br"
    rig.render_until(lambda: False, timeout=0.05)
    assert rig.engine.bank is bank


def test_an_error_in_the_foreground_poll_stops_play_and_is_raised():
    from nsynth.errors import NsynthError
    from device.play import _run_foreground
    polls = []

    def window(poll):  # a window's event loop: polls until told to stop (a Tk callback would only print errors)
        while poll():
            polls.append(1)
    with pytest.raises(NsynthError, match="audio callback failed"):
        _run_foreground(window, lambda: len(polls) < 3 or (_ for _ in ()).throw(NsynthError("audio callback failed")))
    assert len(polls) == 3


def test_banks_needs_board(capsys):
    from nsynth.cli import main
    assert main(["play", "--bank", "x", "--banks", "y"]) == 1
    assert "--banks needs --board" in capsys.readouterr().err


def test_ons_runs_the_real_drivers_on_i2c_bus_1(banks, tmp_path):
    """--board ons: the GPIO module and the I2C bus injected at the top (speaking the GPIO API and the board's
    frames)."""
    from hardware.frame import ADDRESS
    from hardware.oled import OLED_ADDRESS
    from hardware.platform import Platform
    from hardware.sim import FakeSMBus, SimulatedBoard, SimulatedGPIO, SimulatedSSD1306
    gpio, twin, panel, opened = SimulatedGPIO(), SimulatedBoard(), SimulatedSSD1306(), []

    def smbus(port):
        opened.append(port)
        return FakeSMBus({ADDRESS: twin, OLED_ADDRESS: panel})
    platform = Platform(gpio=lambda: gpio, open_bus=smbus)  # injected, as gpiozero's pin factories
    engine = Engine(open_bank(banks / "tl_tr_bl_br"))
    source = board_source("ons", patches=tmp_path / "p.json", platform=platform)
    source.attach(engine, FrameClock(48000, 128), BankSlot(engine, engine.bank.path, tmp_path))
    source.start(engine.post_params)
    try:
        twin.set_touch((10, 0))  # top-right
        deadline = time.monotonic() + 5
        while engine.params["x"] != 1.0 or engine.params["y"] != 1.0:
            assert time.monotonic() < deadline, engine.params
            engine.render(128)
            time.sleep(0.005)
        assert opened == [1, 1]  # the OLED and the controller on bus 1
    finally:
        source.stop()
