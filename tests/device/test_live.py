"""The live path: the audio callback, play() on a null ALSA output, on JACK and on a fake device (its audio host
process), bank fallback, clear errors for missing devices, and the render-midi command. (Across the process
boundary, live = offline: tests/device/test_audio_host.py.)"""
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import mido
import numpy as np
import pytest
import soundfile as sf

from device.bank import BankError, open_bank
from device.engine import Engine
from device.envelopes import release_seconds
from device.bank_state import HashNotice, load_bank, switch_bank
from device.callback import LiveAudio
from device.clock import FrameClock
from device.sdnotify import Watchdog
from nsynth.cli import main
from device.offline import render_midi

from synth_banks import write_bank, write_song
from testkit.jack import JackDummy

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def test_callback_survives_an_engine_error(live_bank):
    engine = Engine(open_bank(live_bank))
    audio = LiveAudio(engine, FrameClock(48000, 128))
    with pytest.raises(ValueError, match="unknown engine event"):
        engine.post(("no-such-event",))  # refused in the producer's thread
    with pytest.raises(ValueError, match="bad engine event"):
        engine.post(("on", 0))

    def broken(*args):
        raise IndexError("a bug in the engine")

    real = engine._segment
    engine._segment = broken  # every segment raises: contained by the engine, the segment silent
    engine.note_on(60, 100)
    buf = np.ones((128, 2), np.float32)
    audio.callback(buf, 128, None, None)
    assert not buf.any() and engine.active_voices() == 0 and engine.frame == 128
    assert [type(e) for _, e in engine.failure_log] == [IndexError, IndexError]  # the voice, then the segment
    assert audio.realtime is False  # NSYNTH_RT_PRIORITY unset: scheduling left alone
    engine._segment = real
    engine.process = broken  # what the engine cannot contain: the callback silences the buffer and resets it
    buf[:] = 1.0
    audio.callback(buf, 128, None, None)
    assert not buf.any() and engine.frame == 256 and engine.failures == 3
    del engine.process
    engine.note_on(60, 100)
    audio.callback(buf, 128, None, None)
    assert np.abs(buf).max() > 0  # plays on


def test_the_callback_imports_nothing(live_bank):
    """An import reads the disk: the audio callback's first call (which puts its thread on real-time scheduling,
    where allowed) and the ones after it import no module. In a fresh interpreter, so nothing imported it before."""
    script = textwrap.dedent('''
        import sys, threading
        import numpy as np
        from device.bank import open_bank
        from device.callback import LiveAudio
        from device.clock import FrameClock
        from device.engine import Engine
        audio = LiveAudio(Engine(open_bank(sys.argv[1])), FrameClock(48000, 128), rt_priority=10)
        audio.engine.note_on(60, 100)
        audio.realtime = False  # (this thread is not the audio thread: not promoted)
        audio.callback(np.zeros((128, 2), np.float32), 128, None, None)  # a block on this thread: numba loaded
        before = set(sys.modules)
        def play():
            for _ in range(3):
                audio.callback(np.zeros((128, 2), np.float32), 128, None, None)
        t = threading.Thread(target=play)  # a new thread: a first callback, promoted where allowed
        audio.realtime = None
        t.start(); t.join()
        print(sorted(set(sys.modules) - before))
    ''')
    r = subprocess.run([sys.executable, "-c", script, str(live_bank)], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_render_midi_command(live_bank, tmp_path, capsys):
    song = write_song(tmp_path / "s.mid")
    out = tmp_path / "x.wav"
    assert main(["render-midi", "--bank", str(live_bank), str(song), "-o", str(out), "--xy", "0,0:1,1"]) == 0
    assert sf.info(out).samplerate == 48000 and sf.info(out).channels == 2
    assert main(["render-midi", "--bank", str(tmp_path / "nobank"), str(song), "-o", str(out)]) == 1
    assert "not a bank directory" in capsys.readouterr().err
    assert main(["render-midi", "--bank", str(live_bank), str(song), "-o", str(out), "--xy", "2,0"]) == 1
    assert "outside 0..1" in capsys.readouterr().err


def test_render_midi_renders_every_release_to_its_end(live_bank, tmp_path, capsys):
    """A song that sets the release to its longest (CC 72 = 127: 10 s) is rendered until that release ends; a
    note the song leaves held is released at its end; the cap stops a render and says so."""
    mid = mido.MidiFile(ticks_per_beat=480)  # 120 bpm: 960 ticks a second
    mid.tracks.append(mido.MidiTrack([
        mido.Message("control_change", control=72, value=127, time=0),
        mido.Message("note_on", note=60, velocity=100, time=0), mido.Message("note_off", note=60, time=480),
        mido.Message("note_on", note=64, velocity=100, time=0),  # never released by the song
        mido.Message("control_change", control=16, value=0, time=480)]))  # the song's last event, at 1 s
    mid.save(tmp_path / "long.mid")
    audio = render_midi(live_bank, tmp_path / "long.mid", tmp_path / "long.wav")
    end = 1.0 + release_seconds(1.0)  # the song's end, then 10 s to -60 dB of full scale (from sustain: less)
    assert end - 0.5 < len(audio) / 48000 < end + 0.01
    assert np.abs(audio[-480:]).max() < 1e-3 and np.abs(audio[-48000:-24000]).max() > 1e-4  # a tail, to its end
    assert "still sounding" not in capsys.readouterr().err
    cut = render_midi(live_bank, tmp_path / "long.mid", tmp_path / "cut.wav", tail_s=2.0)
    assert len(cut) / 48000 == pytest.approx(3.0, abs=0.01)
    assert "2 voice(s) still sounding 2 s after the song's last event" in capsys.readouterr().err


def test_bad_bank_falls_back_to_last_good(live_bank, tmp_path):
    state = tmp_path / "state"
    assert load_bank(live_bank, state=state).path == live_bank
    bad = tmp_path / "bad"
    write_bank(bad, pitches=(60,), velocities=(100,), note_length=1000)
    with open(bad / "samples.i16", "r+b") as f:
        f.truncate(100)
    with pytest.raises(BankError, match="truncated"):
        load_bank(bad, state=tmp_path / "fresh-state")  # nothing to fall back to
    assert load_bank(bad, state=state).path == live_bank
    engine = Engine(open_bank(live_bank))
    assert switch_bank(engine, bad) is None
    engine.render(256)
    assert engine.bank.path == live_bank
    other = tmp_path / "other"
    write_bank(other, pitches=(60,), velocities=(100,), note_length=1000)
    assert switch_bank(engine, other).path == other
    engine.render(512)  # after the old voices' fade
    assert engine.bank.path == other


def test_a_corrupt_bank_is_refused_by_the_instrument_and_the_last_good_one_plays(live_bank, tmp_path, capsys):
    """Flipped bytes (the size unchanged, so only the sha256 tells): refused at start (the last good bank plays,
    with a warning naming the file and both digests) and by a switch (SIGHUP, the board), which keeps the current
    one playing."""
    state = tmp_path / "state"
    load_bank(live_bank, state=state)
    bad = tmp_path / "flipped"
    write_bank(bad, pitches=(60,), velocities=(100,), note_length=1000)
    with open(bad / "samples.i16", "r+b") as f:
        f.seek(100)
        f.write(b"\x12\x34")
    assert load_bank(bad, state=state).path == live_bank
    err = capsys.readouterr().err
    assert f"{bad / 'samples.i16'}: sha256 " in err and "does not match the manifest's" in err
    assert f"falling back to the last good bank {live_bank}" in err
    engine = Engine(open_bank(live_bank))
    assert switch_bank(engine, bad) is None
    assert f"keeping {live_bank}" in capsys.readouterr().err
    with pytest.raises(BankError, match="does not match"):
        load_bank(bad, state=tmp_path / "fresh-state")  # nothing to fall back to


def test_a_first_check_at_start_asks_systemd_for_time(tmp_path, capsys):
    """Hashing a bank on first use can outlast TimeoutStartSec on an SD card: while it runs, play says so and asks
    systemd for more time (EXTEND_TIMEOUT_USEC); a stamped bank is not hashed and asks for nothing."""
    fresh = tmp_path / "fresh"
    write_bank(fresh, pitches=(60,), velocities=(100,), note_length=1000)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(1.0)
    try:
        for expect in (True, False):
            notice = HashNotice(Watchdog(str(tmp_path / "notify")), every_s=0.05)
            load_bank(fresh, state=tmp_path / "state", on_hash=notice)
            time.sleep(0.12)
            notice.stop()
            got = []
            sock.settimeout(0.0)
            while True:
                try:
                    got.append(sock.recv(4096).decode())
                except BlockingIOError:
                    break
            if expect:
                assert got[0] == f"STATUS=checking {fresh} (first use)"
                assert got.count("EXTEND_TIMEOUT_USEC=30000000") >= 2
            else:
                assert got == []
    finally:
        sock.close()
    assert f"checking {fresh} (first use: hashing its samples" in capsys.readouterr().err


def test_fallback_survives_a_rewrite_of_the_last_good_bank(tmp_path):
    """The last good bank is remembered by its path, not by the version its symlink points at (which the next
    write of that bank removes)."""
    good, bad, state = tmp_path / "good", tmp_path / "bad", tmp_path / "state"
    write_bank(good, pitches=(60,), velocities=(100,), note_length=1000)
    load_bank(good, state=state)
    rewritten = write_bank(good, pitches=(60,), velocities=(100,), note_length=800)
    write_bank(bad, pitches=(60,), velocities=(100,), note_length=1000)
    os.truncate(bad / "samples.i16", 10)
    assert load_bank(bad, state=state).info == rewritten


_PRELUDE = textwrap.dedent('''
    import json, os, signal, sys, threading, mido
    from nsynth.errors import NsynthError
    from device.play import play

    class Port(mido.ports.BaseInput):
        def __init__(self):
            self.msgs = [mido.Message("note_on", note=60, velocity=100), mido.Message("control_change", control=7, value=90)]
            super().__init__("fake")
        def _receive(self, block=True):
            return self.msgs.pop(0) if self.msgs else None

    class Source:
        def start(self, post):
            self.started = True
            post(x=0.25, y=0.75)
        def stop(self):
            self.stopped = True
''')
_SCRIPT = _PRELUDE + textwrap.dedent('''
    res = {}
    src = Source()
    threading.Timer(0.2, lambda: os.kill(os.getpid(), signal.SIGHUP)).start()  # reload the (unchanged) bank
    res["rc"] = play(sys.argv[1], midi=Port(), block=128, control_sources=[src], duration=0.5, state=sys.argv[2])
    res["source"] = [getattr(src, "started", False), getattr(src, "stopped", False)]
    for kw in ({"device": "no-such-card"}, {"midi": "no-such-port"}):
        try:
            play(sys.argv[1], duration=0.1, state=sys.argv[2], **kw)
        except NsynthError as e:
            res[next(iter(kw))] = str(e)
    print(json.dumps(res))
''')


def test_play_on_a_null_alsa_output(live_bank, tmp_path):
    """play() end to end through real PortAudio/ALSA: a null output whose samples are captured to a WAV."""
    home = tmp_path / "home"
    home.mkdir()
    cap = tmp_path / "cap.wav"
    (home / ".asoundrc").write_text(
        'pcm.nullout { type null }\n'
        f'pcm.capture {{ type file slave.pcm "nullout" file "{cap}" format "wav" }}\n'
        'pcm.!default { type plug slave { pcm "capture" format S16_LE } }\n')
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # stands in for systemd's notify socket
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(0.05)
    messages, done = [], threading.Event()

    def listen():  # drain as systemd does (a datagram queue holds only a few messages)
        while not done.is_set():
            try:
                messages.append(notify.recv(4096).decode())
            except socket.timeout:
                pass

    listener = threading.Thread(target=listen)
    listener.start()
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(ROOT), "NOTIFY_SOCKET": str(tmp_path / "notify"),
           "WATCHDOG_USEC": "100000"}
    try:
        r = subprocess.run([sys.executable, "-c", _SCRIPT, str(live_bank), str(tmp_path / "state")], env=env,
                           capture_output=True, text=True, timeout=60)
    finally:
        done.set()
        listener.join()
        notify.close()
    assert messages[0].startswith("READY=1\nSTATUS=playing ")
    assert messages.count("WATCHDOG=1") >= 3  # pinged while the audio callback ran
    assert messages[-1] == "STOPPING=1"
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["rc"] == 0 and res["source"] == [True, True]
    assert "playing " in r.stderr and "MIDI: 'fake'" in r.stderr
    assert f"reloaded {live_bank}" in r.stderr
    assert "audio output 'no-such-card'" in res["device"] and "'default'" in res["device"]
    assert "MIDI input 'no-such-port' not found; MIDI inputs that exist: none" in res["midi"]
    audio, sr = sf.read(cap, dtype="float32")
    assert sr == 48000 and audio.shape[1] == 2
    assert np.abs(audio).max() > 0.05  # the note played


def test_play_command_errors(capsys):
    assert main(["play"]) == 1
    assert "--bank BANK is required" in capsys.readouterr().err
    assert main(["play", "--bank", "x", "--channel", "17"]) == 1
    assert "--channel must be 1-16 or omni" in capsys.readouterr().err
    assert main(["play", "--bank", "x", "--cc", "7=loud"]) == 1
    assert "bad CC mapping" in capsys.readouterr().err
    assert main(["play", "--list"]) == 0
    out = capsys.readouterr().out
    assert "audio outputs:" in out and "MIDI inputs:" in out


_JACK_SCRIPT = _PRELUDE + textwrap.dedent('''
    sys.exit(play(sys.argv[1], midi=Port(), duration=1.5, state=sys.argv[2]))
''')


@pytest.fixture
def jack_server():
    """jackd with its dummy backend: audio callbacks paced by a real-time clock, no sound card."""
    with JackDummy("test") as jack:
        yield jack.env


def test_play_in_real_time_on_jack(live_bank, tmp_path, jack_server):
    """The live path at the real rate: PortAudio on a JACK server (dummy clock) calls the engine in the audio
    host 375 times a second. (MIDI here comes from a mido port object; on the Pi MIDI goes through ALSA.)"""
    env = {**jack_server, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", _JACK_SCRIPT, str(live_bank), str(tmp_path / "state")], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    m = re.search(r"stopped: (\d+) audio callbacks \(\d+ with underflow\), (\d+) MIDI messages", r.stderr)
    assert m, r.stderr
    callbacks, midi = int(m[1]), int(m[2])
    assert midi == 2, r.stderr
    assert 0.5 * 1.5 * 48000 / 128 < callbacks < 1.5 * 1.5 * 48000 / 128  # paced by the clock, not free-running


_FAILING_SCRIPT = _PRELUDE + textwrap.dedent('''
    import time
    import numpy as np
    port = Port()
    port.msgs = [mido.Message("note_on", note=60, velocity=100), mido.Message("note_on", note=72, velocity=100)]

    class Board(Source):
        alerts = []
        def attach(self, engine, clock, slot):
            self.engine, self.clock = engine, clock
            threading.Thread(target=self.strike_again, daemon=True).start()
        def strike_again(self):  # key 72 again once its first failure is counted (not on a timer: under load the
            for _ in range(500):  # host may start late, and two strikes in one block are one voice)
                if self.engine.failures:
                    break
                time.sleep(0.01)
            time.sleep(0.1)
            self.engine.note_on(72, 90, frame=self.clock.frame_for())
        def alert(self, title, lines):
            self.alerts.append([title, *lines])

    board = Board()
    rc = play(sys.argv[1], midi=port, device="fake out", control_sources=[board], duration=1.0, state=sys.argv[2],
              audio="buggy_sounddevice")
    out = np.load(os.environ["FAKE_AUDIO_CAPTURE"])
    print(json.dumps({"rc": rc, "alerts": board.alerts, "failures": board.engine.failures,
                      "tail": float(np.abs(out[-4800:]).max()), "blocks": len(out) // 128}))
''')


def test_play_contains_a_failing_voice_and_plays_on(live_bank, tmp_path):
    """Through play() with a fake audio device: a bug in the audio host's engine that raises whenever one voice
    sounds (tests/device/buggy_sounddevice.py) silences that voice, is reported once by the control process
    (stderr, the systemd status line, the board's alert), and the other note plays on to the end; the bug firing
    again (the key struck again) is counted, not reported again."""
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    env = {**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{ROOT}", "NOTIFY_SOCKET": str(tmp_path / "notify"),
           "FAKE_AUDIO_CAPTURE": str(tmp_path / "captured.npy")}
    try:
        r = subprocess.run([sys.executable, "-c", _FAILING_SCRIPT, str(live_bank), str(tmp_path / "state")],
                           env=env, capture_output=True, text=True, timeout=60)
        notify.settimeout(0.0)
        messages = []
        while True:
            try:
                messages.append(notify.recv(4096).decode())
            except BlockingIOError:
                break
    finally:
        notify.close()
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["rc"] == 0 and res["blocks"] > 50
    assert res["failures"] == 2  # the voice silenced, twice
    assert r.stderr.count("audio error contained") == 1, r.stderr
    assert "ZeroDivisionError: a bug in voice rendering): voice of key 72 silenced; playing on" in r.stderr
    assert "2 audio errors contained" in r.stderr
    assert res["alerts"] == [["AUDIO ERROR", "voice of key 72 silen", "PLAYING ON"]]
    assert any(m.startswith("STATUS=audio error contained: voice of key 72 silenced") for m in messages)
    assert res["tail"] > 0.05  # key 60 still sounds at the end
