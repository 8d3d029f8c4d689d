"""MIDI: the DIN byte framer (fuzzed), the router (CC map, channels, MPE, RPN), USB re-open, UART, files."""
import threading
import time

import mido
import numpy as np
import pytest

from device.bank import open_bank
from device.engine import Engine
from device.midi_file import midi_file_messages
from device.midi_io import UartMidiInput, UsbMidiInput, pick_port
from device.midi_map import DEFAULT_CC_MAP, MAX_BEND, MAX_MPE_BEND, MidiRouter, parse_cc_map
from nsynth.errors import NsynthError
from device.midi_stream import MidiByteParser


def _stream(rng, n_bytes):
    """A DIN-like stream: note pairs, CCs, bends, with running status, realtime bytes anywhere and SysEx
    between messages. Returns (bytes, the channel messages it encodes)."""
    out, msgs, status, held = bytearray(), [], None, {}
    while len(out) < n_bytes:
        r = rng.random()
        ch = int(rng.integers(0, 3))
        if r < 0.15:  # a SysEx, sometimes unterminated (ended by the next status byte)
            body = rng.integers(0, 128, int(rng.integers(0, 40))).tolist()
            out += bytes([0xF0, *body] + ([0xF7] if rng.random() < 0.7 else []))
            status = None
            continue
        if r < 0.2 and held:
            key, hch = held.popitem()
            msg = (mido.Message("note_on", channel=hch, note=key, velocity=0) if rng.random() < 0.5
                   else mido.Message("note_off", channel=hch, note=key, velocity=int(rng.integers(0, 128))))
        elif r < 0.55:
            key = int(rng.integers(0, 128))
            if key in held:
                continue
            held[key] = ch
            msg = mido.Message("note_on", channel=ch, note=key, velocity=int(rng.integers(1, 128)))
        elif r < 0.75 and held:
            key, hch = held.popitem()
            msg = mido.Message("note_off", channel=hch, note=key)
        elif r < 0.9:
            msg = mido.Message("control_change", channel=ch, control=int(rng.choice([7, 16, 17, 73, 1, 74])),
                               value=int(rng.integers(0, 128)))
        else:
            msg = mido.Message("pitchwheel", channel=ch, pitch=int(rng.integers(-8192, 8192)))
        raw = msg.bytes()
        if raw[0] == status and rng.random() < 0.8:
            raw = raw[1:]  # running status
        status = msg.bytes()[0]
        for b in raw:
            if rng.random() < 0.1:
                out.append(int(rng.choice([0xF8, 0xFA, 0xFB, 0xFC, 0xFE, 0xFF, 0xF9, 0xFD])))
            out.append(b)
        msgs.append(msg)
    for key, hch in held.items():
        m = mido.Message("note_off", channel=hch, note=key)
        out += bytes(m.bytes())
        msgs.append(m)
    return bytes(out), msgs


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    from synth_banks import write_bank

    path = tmp_path_factory.mktemp("midi") / "bank"
    write_bank(path, grid=2, pitches=(36, 60, 84), velocities=(100,), note_length=4000)
    return open_bank(path)


def test_parser_survives_a_million_bytes_and_leaves_no_stuck_note(bank):
    rng = np.random.default_rng(7)
    data, sent = _stream(rng, 1_000_000)
    assert len(data) >= 1_000_000
    parser, router = MidiByteParser(), MidiRouter()
    engine = Engine(bank, params={"release": 0.0})
    got, pos = [], 0
    while pos < len(data):  # arbitrary chunking, as reads from a UART return
        step = int(rng.integers(1, 5000))
        for msg in parser.feed(data[pos:pos + step]):
            got.append(msg)
            for ev in router.route(msg):
                engine.post(ev)
        engine.render(128)
        pos += step
    assert [m.bytes() for m in got] == [m.bytes() for m in sent]
    assert sum(m.type == "note_on" and m.velocity for m in got) > 10_000
    engine.render(4800)
    assert engine.held_voices() == 0 and engine.active_voices() == 0


def test_parser_survives_pure_noise(bank):
    rng = np.random.default_rng(3)
    parser, router = MidiByteParser(), MidiRouter()
    engine = Engine(bank, params={"release": 0.0})
    data = rng.integers(0, 256, 300_000, dtype=np.uint8).tobytes()
    for i in range(0, len(data), 3000):
        for msg in parser.feed(data[i:i + 3000]):
            for ev in router.route(msg):
                engine.post(ev)
        engine.render(128)
    for ev in router.route(mido.Message("control_change", control=123, value=0)):  # all notes off
        engine.post(ev)
    engine.render(128)
    assert engine.held_voices() == 0  # (noise may have set a 10 s release: voices may still ring)
    for ev in router.route(mido.Message("control_change", control=120, value=0)):  # all sound off
        engine.post(ev)
    engine.render(480)
    assert engine.active_voices() == 0


def test_running_status_and_realtime_inside_messages():
    p = MidiByteParser()
    got = p.feed(bytes([0x90, 60, 0xF8, 100, 62, 0xFE, 90, 0xF0, 1, 2, 0xF7, 0x80, 60, 0, 62, 0, 0xF1, 5, 64]))
    assert [m.bytes() for m in got] == [[0x90, 60, 100], [0x90, 62, 90], [0x80, 60, 0], [0x80, 62, 0]]
    # an unterminated SysEx is ended by the next status byte; program change has one data byte
    assert [m.bytes() for m in p.feed(bytes([0xF0, 1, 2, 0xC3, 5, 6]))] == [[0xC3, 5], [0xC3, 6]]


def test_default_cc_map_and_specials():
    r = MidiRouter()
    cc = lambda c, v, ch=0: r.route(mido.Message("control_change", channel=ch, control=c, value=v))
    for num, name in DEFAULT_CC_MAP.items():
        assert cc(num, 127) == [("params", {name: 1.0})]
    assert cc(16, 0, ch=9) == [("params", {"x": 0.0})]  # omni
    assert cc(64, 64) == [("pedal", True)] and cc(64, 63) == [("pedal", False)]
    assert cc(120, 0) == [("all_sound_off",)] and cc(123, 0) == [("all_notes_off",)]
    assert cc(121, 0) == [("reset_controllers",)]
    assert cc(1, 50) == []
    assert r.route(mido.Message("note_on", channel=5, note=60, velocity=0)) == [("on", 0, 60, 0)]
    assert r.route(mido.Message("pitchwheel", channel=3, pitch=8191))[0][2] == pytest.approx(2.0, abs=1e-3)
    assert r.route(mido.Message("pitchwheel", pitch=-8192)) == [("bend", 0, -2.0)]


def test_cc_map_is_configurable():
    m = parse_cc_map(["1=y", "16=none", "20=volume"])
    assert m[1] == "y" and 16 not in m and m[20] == "volume"
    r = MidiRouter(cc_map=m)
    assert r.route(mido.Message("control_change", control=1, value=127)) == [("params", {"y": 1.0})]
    for bad in (["1=loudness"], ["200=x"], ["x=1"], ["64=x"]):
        with pytest.raises(NsynthError, match="CC mapping"):
            parse_cc_map(bad)


def test_channel_filter():
    r = MidiRouter(channel=2)
    assert r.route(mido.Message("note_on", channel=1, note=60, velocity=9)) == []
    assert r.route(mido.Message("note_on", channel=2, note=60, velocity=9)) == [("on", 2, 60, 9)]
    assert r.route(mido.Message("pitchwheel", channel=2, pitch=4096)) == [("bend", 2, 1.0)]


def test_rpn_sets_bend_range():
    r = MidiRouter()
    for c, v in ((101, 0), (100, 0), (6, 12), (38, 50)):
        r.route(mido.Message("control_change", control=c, value=v))
    assert r.route(mido.Message("pitchwheel", pitch=-8192)) == [("bend", 0, -12.5)]


def _cc(router, pairs, ch=0):
    for c, v in pairs:
        assert router.route(mido.Message("control_change", channel=ch, control=c, value=v)) == []


def _bend(router, ch=0, pitch=8191):
    return router.route(mido.Message("pitchwheel", channel=ch, pitch=pitch))[0][2]


def test_rpn_bend_range_is_bounded():
    """RPN 0 can say 127 semitones: an ordinary (or MPE manager) channel stops at 24, MPE members at 96."""
    top = 8191 / 8192
    r = MidiRouter()
    _cc(r, ((101, 0), (100, 0), (6, 127), (38, 127)), ch=4)
    assert _bend(r, ch=4) == pytest.approx(MAX_BEND * top) and MAX_BEND == 24
    assert _bend(r, ch=5) == pytest.approx(2.0 * top)  # another channel keeps its own
    m = MidiRouter(mpe=True)
    _cc(m, ((101, 0), (100, 0), (6, 127)), ch=0)
    assert m.route(mido.Message("pitchwheel", channel=0, pitch=-8192)) == [("bend", None, -MAX_BEND)]
    _cc(m, ((101, 0), (100, 0), (6, 127)), ch=3)  # a member's RPN 0 sets every member channel (MPE spec)
    for ch in (3, 9, 15):
        assert _bend(m, ch=ch) == pytest.approx(MAX_MPE_BEND * top) and MAX_MPE_BEND == 96
    _cc(m, ((101, 0), (100, 0), (6, 12), (38, 120)), ch=9)  # cents beyond 99 count as 99
    assert _bend(m, ch=2, pitch=-8192) == pytest.approx(-12.99)
    for kw in ({"bend_range": 25}, {"bend_range": -1}, {"mpe_bend_range": 97}):
        with pytest.raises(NsynthError, match="bend range must be"):
            MidiRouter(**kw)


def test_nrpn_and_null_rpn_keep_data_entry_off_the_bend_range():
    r = MidiRouter()
    _cc(r, ((101, 0), (100, 0), (99, 0), (98, 0), (6, 127), (38, 64)))  # RPN 0, then an NRPN selected
    assert _bend(r) == pytest.approx(2.0 * 8191 / 8192)
    _cc(r, ((101, 0), (100, 0), (6, 7), (101, 127), (100, 127), (6, 127)))  # RPN 0 = 7, then the null RPN
    assert _bend(r, pitch=-8192) == -7.0
    _cc(r, ((99, 5), (98, 0), (101, 0), (100, 0), (6, 3)))  # an RPN selected after an NRPN: data entry is its
    assert _bend(r, pitch=-8192) == -3.0
    _cc(r, ((101, 0), (100, 1), (6, 100), (96, 0), (97, 0)))  # RPN 1 (fine tuning) and increments: ignored
    assert _bend(r, pitch=-8192) == -3.0
    for reserved in (96, 97, 98, 99):
        with pytest.raises(NsynthError, match="reserved"):
            parse_cc_map([f"{reserved}=x"])


def test_mpe_routing():
    r = MidiRouter(mpe=True)
    assert r.route(mido.Message("note_on", channel=3, note=60, velocity=9)) == [("on", 3, 60, 9)]
    assert r.route(mido.Message("pitchwheel", channel=3, pitch=8192 // 2)) == [("bend", 3, 24.0)]  # +-48
    assert r.route(mido.Message("pitchwheel", channel=0, pitch=-8192)) == [("bend", None, -2.0)]  # manager
    assert r.route(mido.Message("control_change", channel=3, control=74, value=127)) == [("note_xy", 3, None, 1.0)]
    assert r.route(mido.Message("aftertouch", channel=3, value=0)) == [("note_xy", 3, 0.0, None)]
    assert r.route(mido.Message("control_change", channel=3, control=7, value=1)) == []  # member: expression only
    assert r.route(mido.Message("control_change", channel=0, control=7, value=127)) == [("params", {"volume": 1.0})]
    assert r.route(mido.Message("aftertouch", channel=0, value=3)) == []


class FakePort(mido.ports.BaseInput):
    """A mido input port fed by the test (the hardware edge); with a callback, its messages arrive on a thread of
    the port's own, as python-rtmidi delivers them."""

    def __init__(self, name, messages=()):
        self._pending = list(messages)
        super().__init__(name)

    def deliver_to(self, callback):
        threading.Thread(target=lambda: [callback(m) for m in self._pending], daemon=True).start()
        return self

    def _receive(self, block=True):
        return self._pending.pop(0) if self._pending else None


def test_usb_port_is_reopened_after_unplug():
    names = {"now": ["Keys MIDI 1 20:0"]}
    opened = []

    def opener(name, callback):
        port = FakePort(name, [mido.Message("note_on", note=60 + len(opened), velocity=1),
                               mido.Message("clock")])  # realtime messages are dropped
        opened.append(port)
        return port.deliver_to(callback)

    got = []
    listed = []

    def lister():
        listed.append(1)
        return names["now"]

    clients = {"now": b"Client 20 : Keys"}  # the ALSA sequencer's client list: ports are listed when it changes
    inp = UsbMidiInput("keys", got.append, lister=lister, opener=opener, poll_s=0.02, relist_s=0.02,
                       watch=lambda: clients["now"]).start()
    try:
        _wait(lambda: len(got) == 1)
        time.sleep(0.2)
        n = len(listed)
        time.sleep(0.2)
        assert len(listed) == n  # nothing changed: no listing
        names["now"] = []  # unplugged
        clients["now"] = b""
        _wait(lambda: opened[0].closed)
        names["now"] = ["Keys MIDI 1 24:0"]  # back, with a new ALSA client number
        clients["now"] = b"Client 24 : Keys"
        _wait(lambda: len(got) == 18)
    finally:
        inp.stop()
    notes = [m for m in got if m.type == "note_on"]
    assert [m.note for m in notes] == [60, 61] and inp.opens == 2 and inp.port_name == "Keys MIDI 1 24:0"
    # the unplug released whatever was held, on every channel
    offs = got[1:17]
    assert [(m.type, m.control, m.channel) for m in offs] == [("control_change", 123, ch) for ch in range(16)]


def _wait(cond, timeout=5.0):
    t = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < t, "timed out"
        time.sleep(0.005)


def test_missing_port_lists_what_exists():
    with pytest.raises(NsynthError, match=r"'nope' not found; MIDI inputs that exist: 'A', 'B'"):
        UsbMidiInput("nope", print, lister=lambda: ["A", "B"])
    with pytest.raises(NsynthError, match="no MIDI input ports; MIDI inputs that exist: none"):
        UsbMidiInput(None, print, lister=lambda: [])
    assert pick_port(None, ["A", "B"]) == "A" and pick_port("b", ["A", "xB"]) == "xB"


class FakeSerial:
    """pyserial's interface over a byte string (the UART edge)."""

    def __init__(self, data):
        self.data, self.closed = bytearray(data), False

    @property
    def in_waiting(self):
        return len(self.data)

    def read(self, n=1):
        if not self.data:
            time.sleep(0.01)
            return b""
        chunk, self.data[:n] = bytes(self.data[:n]), b""
        return chunk

    def close(self):
        self.closed = True


def test_uart_input_parses_din_bytes():
    data = bytes([0xB0, 7, 100, 0xF8, 16, 0x90, 60, 0xFE, 100, 62, 100, 0x80, 60, 0])
    got = []
    ser = FakeSerial(data)
    inp = UartMidiInput("/dev/ttyAMA0", got.append, serial_factory=lambda dev, **kw: ser).start()
    _wait(lambda: len(got) == 4)
    inp.stop()
    assert [m.bytes() for m in got] == [[0xB0, 7, 100], [0x90, 60, 100], [0x90, 62, 100], [0x80, 60, 0]]
    assert ser.closed


def test_missing_uart_is_reported():
    with pytest.raises(NsynthError, match="cannot open MIDI UART /dev/nonexistent-uart.*serial ports that exist"):
        UartMidiInput("/dev/nonexistent-uart", print)


def test_midi_file_frames(tmp_path):
    mid = mido.MidiFile(ticks_per_beat=480)
    tr = mido.MidiTrack()
    mid.tracks.append(tr)
    tr.append(mido.MetaMessage("set_tempo", tempo=500000))
    tr.append(mido.Message("note_on", note=60, velocity=90, time=480))  # 0.5 s at 120 bpm
    tr.append(mido.Message("note_off", note=60, time=240))
    mid.save(tmp_path / "a.mid")
    got = midi_file_messages(tmp_path / "a.mid", 48000)
    assert [(f, m.type) for f, m in got] == [(24000, "note_on"), (36000, "note_off")]
    (tmp_path / "bad.mid").write_bytes(b"MThd garbage")
    with pytest.raises(NsynthError, match="bad.mid: not a readable MIDI file"):
        midi_file_messages(tmp_path / "bad.mid", 48000)


def test_usb_input_waits_for_a_first_port():
    names = {"now": []}
    got = []
    opener = lambda name, callback: FakePort(name, [mido.Message("note_on", note=64, velocity=5)]).deliver_to(callback)
    inp = UsbMidiInput(None, got.append, lister=lambda: names["now"], opener=opener, poll_s=0.02, wait=True)
    inp.start()
    try:
        time.sleep(0.1)
        assert got == [] and inp.port_name is None
        names["now"] = ["Synth 1"]
        _wait(lambda: len(got) == 1)
    finally:
        inp.stop()
    assert inp.port_name == "Synth 1"


def test_no_alsa_sequencer_is_said_once_and_never_asked(monkeypatch, caplog):
    """A machine without /dev/snd/seq (a desktop running the simulator): waiting for a USB port does not ask
    ALSA every half second (alsa-lib would print an error each time); the instrument says it once."""
    from device import midi_io

    asked = []
    monkeypatch.setattr(midi_io, "SEQ_DEVICE", "/nonexistent/snd/seq")
    monkeypatch.setattr(midi_io.mido, "get_input_names", lambda: asked.append(1) or [])
    monkeypatch.setattr(midi_io, "_said_no_sequencer", threading.Event())
    monkeypatch.delenv("MIDO_BACKEND", raising=False)
    inp = UsbMidiInput(None, print, poll_s=0.01, wait=True)
    inp.start()
    try:
        time.sleep(0.2)
    finally:
        inp.stop()
    assert asked == [] and inp.port_name is None
    said = [r.getMessage() for r in caplog.records if "no ALSA sequencer" in r.getMessage()]
    assert said == ["no ALSA sequencer (/nonexistent/snd/seq): no USB MIDI on this machine"]


def test_uart_read_errors_are_survived(capsys):
    class Flaky(FakeSerial):
        fails = 2

        def read(self, n=1):
            if self.fails:
                self.fails -= 1
                raise OSError("device reports readiness to read but returned no data")
            return super().read(n)

    got = []
    ser = Flaky(bytes([0x90, 60, 100]))
    inp = UartMidiInput("/dev/ttyAMA0", got.append, serial_factory=lambda dev, **kw: ser, retry_s=0.01).start()
    _wait(lambda: len(got) == 1)
    inp.stop()
    assert "MIDI UART /dev/ttyAMA0: device reports readiness" in capsys.readouterr().err


def test_uart_silence_after_active_sensing_releases_notes():
    got = []
    ser = FakeSerial(bytes([0xFE, 0x90, 60, 100, 0xFE]))  # then the cable is pulled
    inp = UartMidiInput("/dev/ttyAMA0", got.append, serial_factory=lambda dev, **kw: ser).start()
    _wait(lambda: len(got) == 17)
    inp.stop()
    assert got[0].type == "note_on"
    assert {(m.control, m.channel) for m in got[1:]} == {(123, ch) for ch in range(16)}
    # and a sender without active sensing may stay silent as long as it likes
    got.clear()
    quiet = UartMidiInput("/dev/ttyAMA0", got.append, serial_factory=lambda dev, **kw: FakeSerial(b"\x90\x3c\x64"))
    quiet.start()
    time.sleep(0.5)
    quiet.stop()
    assert [m.type for m in got] == ["note_on"]
