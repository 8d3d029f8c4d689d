"""The audio host process end to end, on a fake audio device (tests/device/fake_sounddevice.py, the hardware
edge): what it plays for events pushed through the shared ring is bit-identical to `render-midi`; a bank it cannot
open is refused and the old one plays on; `play` says so clearly, and exits with an error, when the host dies."""
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from device.bank import BankError, open_verified
from device.bank_state import BankSlot
from device.engine import EngineConfig
from device.host_link import AudioHost, HostEngine
from device.midi_file import midi_file_messages
from device.midi_map import MidiRouter
from device.offline import render_midi, xy_at

from synth_banks import write_bank, write_song

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def _wait(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_the_host_plays_bit_identical_to_render_midi(live_bank, tmp_path, monkeypatch):
    """The song's events and the X/Y sweep go through the shared ring, frame-stamped as `render-midi` stamps them,
    into the engine that plays in the host process behind the (fake) audio device's callback."""
    song = write_song(tmp_path / "s.mid")
    offline = render_midi(live_bank, song, tmp_path / "o.wav", xy="0.1,0.2:0.9,0.6")
    monkeypatch.setenv("FAKE_AUDIO_CAPTURE", str(tmp_path / "live.npy"))
    monkeypatch.syspath_prepend(str(HERE))
    host = AudioHost("fake_sounddevice")
    try:
        bank = open_verified(live_bank)
        info = host.open(bank.path, EngineConfig(), None, "fake out", None)
        assert info["out"] == "fake out" and info["whole"] and info["compiled"]
        engine = HostEngine(host, bank, EngineConfig())
        router, msgs = MidiRouter(), midi_file_messages(song, 48000)
        end = msgs[-1][0]
        for start in range(0, len(offline), 128):  # all of it queued before the stream starts (the ring holds it)
            for f, m in msgs:
                if start <= f < start + 128:
                    for ev in router.route(m):
                        engine.post(ev, f)
            x, y = xy_at([(0.1, 0.2), (0.9, 0.6)], start / end)
            engine.post_params(frame=start, x=x, y=y)
        assert engine.dropped == 0
        host.start(whole_s=30.0)  # every page in first: a voice muted waiting for one would differ from render-midi
        _wait(lambda: host.stats.callbacks * 128 > len(offline))
    finally:
        host.stop()
    live = np.load(tmp_path / "live.npy")
    assert np.abs(offline).max() > 0.05
    assert engine.starved == 0  # (HostEngine: the host's count)
    np.testing.assert_array_equal(live[:len(offline)], offline)
    assert host.stats.underflows == 0 and host.stats.callbacks * 128 >= len(live) - 128


def test_a_bank_the_host_cannot_open_is_refused_and_the_old_one_plays_on(live_bank, tmp_path, monkeypatch):
    other = tmp_path / "other"
    write_bank(other, pitches=(60,), velocities=(100,), note_length=1000)
    gone = tmp_path / "gone"
    write_bank(gone, pitches=(60,), velocities=(100,), note_length=1000)
    checked = open_verified(gone)
    os.remove(gone / "samples.i16")  # checked, then lost before the host opens it
    monkeypatch.syspath_prepend(str(HERE))
    host = AudioHost("fake_sounddevice")
    try:
        engine = HostEngine(host, open_verified(live_bank), EngineConfig())
        host.open(live_bank, EngineConfig(), None, None, None)
        host.start()
        slot = BankSlot(engine, live_bank, tmp_path / "state")
        with pytest.raises(BankError, match=f"the audio host refused {gone}: .*samples.i16"):
            slot.install(checked)
        assert slot.path == engine.bank.path == live_bank
        slot.install(open_verified(other))
        assert slot.path == engine.bank.path == other
        assert (tmp_path / "state" / "last_good_bank").read_text().strip() == str(other)
        engine.note_on(60, 100)
        calls = host.stats.callbacks
        _wait(lambda: host.stats.callbacks > calls + 10)
        assert engine.active_voices() == 1 and engine.held_voices() == 1
    finally:
        host.stop()


_DYING = textwrap.dedent('''
    import os, signal, sys, threading
    from device.play import play

    class Killer:
        def attach(self, engine, clock, slot):
            threading.Timer(0.5, lambda: os.kill(engine.host.process.pid, signal.SIGKILL)).start()
        def start(self, post):
            pass
        def stop(self):
            pass

    play(sys.argv[1], midi=None, uart=os.ttyname(os.openpty()[1]), control_sources=[Killer()], state=sys.argv[2],
         audio="fake_sounddevice")
''')


def test_play_stops_with_an_error_when_the_host_dies(live_bank, tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{ROOT}"}
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-c", _DYING, str(live_bank), str(tmp_path / "state")], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and time.monotonic() - t0 < 30
    assert re.search(r"HostDied: the audio host \(pid \d+\) was killed by SIGKILL", r.stderr), r.stderr
    m = re.search(r"stopped: (\d+) audio callbacks", r.stderr)
    assert m and int(m[1]) > 50, r.stderr  # the counts it left in shared memory
