"""The engine, offline: XY weights and sweeps, loops, stealing, timing, pitch, velocity, envelope, pedal."""
import numpy as np
import pytest

from device.bank import BankWriter, open_bank
from device.engine import Engine, EngineConfig
from testkit.sfz_player import stream_weights, write_harmonic_bank

from synth_banks import render_events, synth_note, write_bank

FS = 48000


pytestmark = pytest.mark.usefixtures("engine_path")  # every test here: compiled kernel and numpy reference


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    path = tmp_path_factory.mktemp("eng") / "bank"
    write_bank(path, grid=3, pitches=(48, 60, 72), velocities=(50, 100), note_length=80000, loop=(64000, 72000))
    return open_bank(path)  # 5 s notes: the loop starts after 4 s at the rendered pitch


def freq(x, fs=FS):
    """Frequency of the strongest component (parabolic peak interpolation on a Hann-windowed FFT)."""
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    k = int(np.argmax(spec[1:])) + 1
    a, b, c = np.log(spec[k - 1:k + 2] + 1e-12)
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * fs / len(x)


def max_step(x):
    return float(np.abs(np.diff(x)).max())


def max_kink(x):
    """Largest second difference: a discontinuity stands out even when interpolation spreads its step."""
    return float(np.abs(np.diff(x, 2)).max())


@pytest.fixture(scope="module")
def harmonic_bank(tmp_path_factory):
    """Every cell and velocity layer one harmonic of a 62.5 Hz tone (bench/sfz_player.py): the output's
    spectrum gives each stream's weight."""
    path = tmp_path_factory.mktemp("harm") / "bank"
    write_harmonic_bank(path, grid=3)  # harmonics below 1.2 kHz, where the resampler is flat
    return open_bank(path)


@pytest.mark.parametrize("x, y", [(0.0, 0.0), (0.3, 0.8), (0.5, 0.5), (1.0, 0.25), (0.77, 1.0), (0.999, 0.001)])
def test_the_cell_weights_are_bilinear_and_sum_to_one(harmonic_bank, x, y):
    """What the engine plays at (x, y), read off the output: the four cells around it, weighted (1 - u)(1 - v),
    u(1 - v), (1 - u)v and uv at its local position (u, v), and nothing else."""
    unity = {"x": x, "y": y, "decay": 0.0, "sustain": 1.0, "volume": 1.0}  # the note at its own level
    out = render_events(harmonic_bank, [(0, ("params", unity)), (0, ("on", 0, 60, 127))], FS)
    w = stream_weights(out, 0.0, 3)[1] / 0.3  # the top layer (velocity 127); each harmonic written at 0.3
    gx, gy = x * 2, y * 2
    cx, cy = min(int(gx), 1), min(int(gy), 1)
    u, v = gx - cx, gy - cy
    expected = np.zeros((3, 3))
    expected[cy, cx], expected[cy, cx + 1], expected[cy + 1, cx], expected[cy + 1, cx + 1] = \
        (1 - u) * (1 - v), u * (1 - v), (1 - u) * v, u * v
    np.testing.assert_allclose(w, expected, atol=0.005)


@pytest.mark.parametrize("cx, cy", [(0, 0), (1, 1), (2, 0), (0, 2), (2, 2), (1, 2)])
def test_grid_points_give_the_exact_cell(tmp_path, bank, cx, cy):
    # a bank whose every cell holds this cell's notes sounds the same as the real bank at this grid point
    path = tmp_path / "uniform"
    with BankWriter(path, grid=3, pitches=(48, 60, 72), velocities=(50, 100), note_length=80000,
                    corners="abcd") as wr:
        for p in range(3):
            for v in range(2):
                wr.write_block(p, v, np.broadcast_to(bank.samples[p, v, cy, cx], (3, 3, 80000)).copy(),
                               loops=bank.loops[p, v])
    events = [(0, ("params", {"x": cx / 2, "y": cy / 2})), (0, ("on", 0, 62, 75))]
    a = render_events(bank, events, 9600)
    b = render_events(open_bank(path), events, 9600)
    assert np.abs(a).max() > 0.05
    np.testing.assert_array_equal(a, b)


def _steady_step(bank, x, y, key=60, vel=100, frames=9600):
    out = render_events(bank, [(0, ("params", {"x": x, "y": y, "attack": 0.3})), (0, ("on", 0, key, vel))], frames)
    return max_step(out[4800:, 0])


def test_xy_sweep_has_no_clicks(bank):
    """Jumping X/Y from corner to corner (the fastest possible swipe) and sweeping back: the output never
    steps further per sample than the steepest corner timbre does on its own."""
    bound = max(_steady_step(bank, x, y) for x in (0, 1) for y in (0, 1))
    events = [(0, ("params", {"x": 0.0, "y": 0.0, "attack": 0.3})), (0, ("on", 0, 60, 100))]
    events += [(6000, ("params", {"x": 1.0, "y": 1.0})), (9001, ("params", {"x": 0.0, "y": 1.0})),
               (9002, ("params", {"x": 1.0, "y": 0.0}))]
    events += [(12000 + 64 * i, ("params", {"x": i / 100, "y": 1 - i / 100})) for i in range(101)]
    out = render_events(bank, events, 24000)[:, 0]
    assert max_step(out[4800:]) <= 1.05 * bound
    # control: switching cells outright (the original's nearest-cell behaviour) is caught by this bound
    corner = lambda x, y: render_events(bank, [(0, ("params", {"x": x, "y": y, "attack": 0.3})),
                                              (0, ("on", 0, 60, 100))], 9600)[:, 0]
    a, b = corner(0.0, 0.0), corner(1.0, 1.0)
    cut = 4800 + int(np.argmax(np.abs(a[4800:] - b[4800:])))
    assert max_step(np.concatenate([a[:cut], b[cut:]])) > 3 * bound
    # it did move: the timbre at the end differs from the start
    start = np.abs(np.fft.rfft(out[4800:5824])).argmax()
    end = np.abs(np.fft.rfft(out[-1024:])).argmax()
    assert start != end


def test_voices_follow_xy_while_sounding(bank):
    """A held note at corner (0,0) has the fundamental; moved to (1,1) it has the 4th harmonic."""
    events = [(0, ("params", {"x": 0.0, "y": 0.0})), (0, ("on", 0, 60, 100)), (9600, ("params", {"x": 1.0, "y": 1.0}))]
    out = render_events(bank, events, 24000)[:, 0]
    f0 = 440 * 2 ** ((60 - 69) / 12)
    assert abs(freq(out[4000:8096]) - f0) < 2
    assert abs(freq(out[-4096:]) - 4 * f0) < 4


def test_held_note_loops_without_clicks(tmp_path):
    path = tmp_path / "loopbank"
    write_bank(path, note_length=8000, loop=(1600, 4000))
    b = open_bank(path)
    events = [(0, ("params", {"sustain": 1.0, "decay": 0.0})), (0, ("on", 0, 60, 100))]
    out = render_events(b, events, 3 * FS)[:, 0]  # 3 s held; the note is 0.5 s long
    early = max_step(out[480:4800])  # before the first loop
    assert max_step(out[4800:]) <= 1.1 * early
    assert max_kink(out[4800:]) <= 1.2 * max_kink(out[480:4800])
    rms = [np.sqrt(np.mean(out[i:i + 2400] ** 2)) for i in range(2400, len(out) - 2400, 2400)]
    assert min(rms) > 0.3 * max(rms)  # still sounding at the end: held forever
    # control: the same loop without the crossfade does click
    raw = render_events(b, events, 3 * FS, config=EngineConfig(loop_crossfade=0))[:, 0]
    assert max_kink(raw[4800:]) > 3 * max_kink(out[480:4800])


def test_stealing_fades_the_oldest_voice(bank):
    cfg = EngineConfig(max_voices=2)
    on = [(0, ("on", 0, 48, 100)), (100, ("on", 0, 55, 100))]
    steal_at = 9600
    both = render_events(bank, on + [(steal_at, ("on", 0, 67, 100))], 19200, config=cfg)[:, 0]
    # the same without the oldest voice (48) and without the stealing note: the difference is 48 fading out
    rest = render_events(bank, [(100, ("on", 0, 55, 100)), (steal_at, ("on", 0, 67, 100))], 19200, config=cfg)[:, 0]
    diff = both - rest
    fade = int(0.005 * FS)
    assert np.abs(diff[steal_at + fade + 2:]).max() == 0.0  # gone after the fade
    seg = np.abs(diff[steal_at - 500:steal_at + fade])
    assert seg[:500].max() > 0.02  # it was sounding
    assert max_step(diff) <= 1.1 * max_step(diff[:steal_at])  # no click when it is cut
    env = np.abs(diff[steal_at:steal_at + fade])
    assert env[-50:].max() < 0.2 * env[:50].max()  # it fades


def test_engine_keeps_at_most_max_voices(bank):
    e = Engine(bank, EngineConfig(max_voices=32))
    for k in range(100):
        e.note_on(30 + k % 60, 90, frame=k)
    e.render(480)
    assert e.held_voices() == 32


@pytest.mark.parametrize("at", [0, 1, 127, 128, 300, 1037])
def test_sample_accurate_onset(bank, at):
    out = render_events(bank, [(at, ("on", 0, 60, 100))], 2048)[:, 0]
    assert not out[:at].any()
    assert out[at] != 0.0


def test_events_inside_a_block_keep_their_offset(bank):
    """A note-on 37 frames into a block and one at the next block start sound 91 frames apart exactly."""
    out = render_events(bank, [(37, ("on", 0, 60, 100)), (128, ("off", 0, 60))], 4096)[:, 0]
    assert np.flatnonzero(out)[0] == 37
    env_cut = render_events(bank, [(37, ("on", 0, 60, 100))], 4096)[:, 0]
    assert np.flatnonzero(out != env_cut)[0] == 128


@pytest.mark.parametrize("key, bend, expect", [(60, 0.0, 60), (62, 0.0, 62), (58, 0.0, 58), (54, 0.0, 54),
                                               (60, 2.0, 62), (66, -1.5, 64.5)])
def test_pitch_and_bend(bank, key, bend, expect):
    events = [(0, ("params", {"x": 0.0, "y": 0.0})), (0, ("bend", 0, bend)), (0, ("on", 0, key, 100))]
    out = render_events(bank, events, FS)[:, 0]
    assert abs(freq(out[4800:]) / (440 * 2 ** ((expect - 69) / 12)) - 1) < 0.002


def test_release_and_sustain_pedal(bank):
    e = Engine(bank, params={"release": 0.0})
    e.note_on(60, 100)
    e.render(4800)
    e.post(("pedal", True))
    e.note_off(60)
    e.render(4800)
    assert e.held_voices() == 1  # held by the pedal
    e.post(("pedal", False))
    e.render(4800)
    assert e.active_voices() == 0  # released (1 ms) and freed


def test_note_on_velocity_zero_is_note_off(bank):
    e = Engine(bank, params={"release": 0.0})
    e.note_on(60, 100)
    e.render(1000)
    e.note_on(60, 0)
    e.render(1000)
    assert e.active_voices() == 0


def test_retrigger_replaces_the_held_voice(bank):
    e = Engine(bank, params={"release": 0.0})
    e.note_on(60, 100)
    e.render(1000)
    e.note_on(60, 100)
    e.render(1000)
    assert e.held_voices() == 1 and e.active_voices() == 1  # the old one faded out
    e.note_off(60)
    e.render(1000)
    assert e.active_voices() == 0  # one note-off ends the key


def test_all_notes_off_and_all_sound_off(bank):
    e = Engine(bank, params={"release": 1.0})
    for k in (60, 64, 67):
        e.note_on(k, 100)
    e.render(1000)
    e.post(("all_notes_off",))
    e.render(1000)
    assert e.held_voices() == 0 and e.active_voices() == 3  # releasing (10 s release)
    e.post(("all_sound_off",))
    e.render(1000)
    assert e.active_voices() == 0


def test_envelope_times(bank):
    """Attack a=0.5 -> 1 s rise; release r=0.5 -> 1.251 s to -60 dB."""
    out = render_events(bank, [(0, ("params", {"attack": 0.5, "sustain": 1.0, "release": 0.5})),
                               (0, ("on", 0, 60, 127)), (2 * FS, ("off", 0, 60))], 4 * FS)[:, 0]
    peak = lambda a, b: np.abs(out[a:b]).max()
    full = peak(int(1.5 * FS), 2 * FS)
    assert 0.45 < peak(int(0.49 * FS), int(0.51 * FS)) / full < 0.55
    assert peak(int(0.99 * FS), int(1.0 * FS)) / full > 0.97
    rel_end = 2 * FS + int(1.251 * FS)
    assert peak(rel_end - 480, rel_end) / full < 0.002


def test_mpe_per_note_bend_and_xy(bank):
    f = lambda k: 440 * 2 ** ((k - 69) / 12)
    events = [(0, ("params", {"x": 0.0, "y": 0.0})), (0, ("on", 1, 60, 100)), (0, ("on", 2, 72, 100)),
              (0, ("bend", 1, 1.0)), (0, ("note_xy", 2, 1.0, 1.0))]
    both = render_events(bank, events, FS)[:, 0]
    alone = render_events(bank, events[:2] + events[3:4], FS)[:, 0]
    assert abs(freq(alone[4800:]) / f(61) - 1) < 0.002  # the bent note
    other = both - alone  # note 72 on channel 2, moved to corner (1,1): 4th harmonic of 72
    assert abs(freq(other[9600:]) / (4 * f(72)) - 1) < 0.002


def test_bank_swap_fades_then_switches(bank, tmp_path):
    path = tmp_path / "other"
    write_bank(path, pitches=(60,), velocities=(100,), note_length=4000)
    other = open_bank(path)
    e = Engine(bank)
    e.note_on(60, 100)
    a = e.render(4800)
    e.set_bank(other)
    e.note_on(64, 100)
    b = e.render(4800)
    assert e.bank is other and e.active_voices() == 1
    assert max_step(np.concatenate([a, b])[:, 0]) < 0.1


def test_extreme_pitch_reads_through_many_loop_wraps(bank):
    """Key 127 bent up 48 semitones reads ~125 source samples per output sample: many loop wraps per block."""
    out = render_events(bank, [(0, ("bend", 0, 48.0)), (0, ("on", 0, 127, 100)), (0, ("on", 0, 0, 100))], 9600)
    assert np.isfinite(out).all() and np.abs(out).max() > 0.01


def test_rate_cap_bounds_a_voice_whatever_the_midi(tmp_path):
    """RPN 0 to its largest value, a full bend and key 127 on a one-pitch bank of short notes (the five messages
    that stopped the instrument): the voice plays, and reads at most max_rate source samples per output sample
    (its read position advances by at most max_rate x frames per block, which bounds its work per block). A bend
    posted from code beyond any range is clamped, not a fault."""
    import mido
    from device.midi_map import MidiRouter

    path = tmp_path / "tiny"
    write_bank(path, grid=2, pitches=(36,), velocities=(100,), note_length=2000, loop=(1000, 1003))
    bank = open_bank(path)
    for bend_event in (None, ("bend", 0, 1e9)):
        e, r = Engine(bank), MidiRouter()
        msgs = [mido.Message("control_change", control=c, value=v) for c, v in ((101, 0), (100, 0), (6, 127))]
        msgs += [mido.Message("pitchwheel", pitch=8191), mido.Message("note_on", note=127, velocity=127)]
        for m in msgs:
            for ev in r.route(m):
                e.post(ev)
        if bend_event:
            e.post(bend_event)
        pos = []
        for _ in range(50):
            out = e.render(e.block)
            assert np.isfinite(out).all()
            pos.append(float(e.pos[np.flatnonzero(e.stage)[0]]))
        assert e.faults == 0 and e.active_voices() == 1
        steps = np.diff(pos)
        assert steps.max() <= e.config.max_rate * e.block + 1e-6
        assert steps.min() >= 0.99 * e.config.max_rate * e.block  # capped, not slower


def _bug(engine, fires):
    """Make the engine's segment rendering raise whenever `fires(engine)` (a stand-in for a bug in it)."""
    real = engine._segment

    def segment(out, at, n):
        if fires(engine):
            raise FloatingPointError("a bug")
        real(out, at, n)

    engine._segment = segment


def test_a_failing_voice_is_silenced_and_the_rest_plays_on(bank):
    notes = [(0, ("on", 0, 48, 100)), (0, ("on", 0, 60, 90)), (300, ("params", {"x": 0.2}))]
    want = render_events(bank, notes, 4800)
    e = Engine(bank)
    _bug(e, lambda e: ((e.key == 72) & (e.stage != 0)).any())  # any voice of key 72
    for frame, ev in notes[:2] + [(0, ("on", 0, 72, 100))] + notes[2:]:
        e.post(ev, frame)
    got = e.render(4800)
    np.testing.assert_array_equal(got, want)  # as if key 72 had never been struck
    assert e.failures == 1 and e.active_voices() == 2
    (what, err), = e.failure_log
    assert what == "voice of key 72 silenced" and isinstance(err, FloatingPointError)


def test_a_failure_no_voice_explains_silences_the_segment_and_frees_the_voices(bank):
    e = Engine(bank)
    _bug(e, lambda e: e.active_voices() >= 2)  # only the two together fail
    e.note_on(48, 100)
    e.note_on(60, 100)
    assert not e.render(256).any() and e.active_voices() == 0
    assert [w for w, _ in e.failure_log] == ["a segment silenced and every voice freed"]
    e.note_on(60, 100)
    assert np.abs(e.render(2400)).max() > 0.05  # plays on


def test_an_event_that_raises_is_dropped(bank):
    e = Engine(bank)
    real = e._note_on
    e._note_on = lambda ch, key, vel: (_ for _ in ()).throw(KeyError(key)) if key == 72 else real(ch, key, vel)
    for key in (48, 72, 60):
        e.note_on(key, 100)
    e.render(256)
    assert e.active_voices() == 2 and set(e.key[e.stage != 0]) == {48, 60}
    assert [w for w, _ in e.failure_log] == ["event 'on' dropped"]


def test_loop_crossfade_reads_the_same_at_any_offset_in_the_file(tmp_path):
    """A note renders the same whether it is the first note of the samples file or further in: the crossfade's
    reads one loop earlier never wrap round to the file's end."""
    def bank_with(pitches):
        path = tmp_path / "-".join(map(str, pitches))
        write_bank(path, grid=2, pitches=pitches, velocities=(100,), note_length=4000, loop=(1000, 3000))
        return open_bank(path)

    first, later = bank_with((72,)), bank_with((48, 72))  # the 72s: at sample 0, and after the 48s
    np.testing.assert_array_equal(first.samples[0], later.samples[1])
    events = [(0, ("params", {"x": 0.0, "y": 0.0, "sustain": 1.0})), (0, ("on", 0, 96, 100))]
    a, b = render_events(first, events, FS), render_events(later, events, FS)
    assert np.abs(a).max() > 0.05
    np.testing.assert_array_equal(a, b)


def test_mpe_xy_does_not_carry_into_the_next_note_on_its_channel(bank):
    """A member channel's X/Y belongs to its note: the channel's next note starts at the global X/Y."""
    glob = [(0, ("params", {"x": 0.0, "y": 0.0, "release": 0.0}))]
    second = [(24000, ("on", 2, 72, 100))]
    first = [(0, ("note_xy", 2, 1.0, 1.0)), (0, ("on", 2, 72, 100)), (9600, ("off", 2, 72))]
    both = render_events(bank, glob + first + second, 2 * FS)[:, 0]
    alone = render_events(bank, glob + second, 2 * FS)[:, 0]
    assert np.abs(both[:9600]).max() > 0.05
    np.testing.assert_array_equal(both[24000:], alone[24000:])
    # while it sounds, the first note follows its own X/Y, and keeps it through its release
    held = render_events(bank, glob + first[:2], 9600)[:, 0]
    f0 = 440 * 2 ** ((72 - 69) / 12)
    assert abs(freq(held[4800:]) / (4 * f0) - 1) < 0.002


@pytest.mark.parametrize("event", [("on", 0, 60, 128), ("on", 0, 60, -1), ("on", 0, 128, 100), ("on", 16, 60, 100),
                                   ("on", 0, 60, 100.5), ("on", 0, 60), ("off", 0, -1), ("off", 0),
                                   ("bend", 0, float("nan")), ("bend", 99, 1.0), ("params", {"x": float("inf")}),
                                   ("params", {"loudness": 1.0}), ("note_xy", 0, float("nan"), None),
                                   ("pedal",), ("bank", "not a bank"), ("all_notes_off", 1)])
def test_bad_events_are_refused_when_posted(bank, event):
    """What the audio thread could not apply is refused in the thread that posts it."""
    e = Engine(bank)
    with pytest.raises(ValueError, match="engine event"):
        e.post(event)
    e.render(256)  # nothing reached the queue


def test_velocity_is_the_layer_level(tmp_path):
    """Each velocity layer is already levelled for its velocity: on a layer the voice plays it as it is, between
    two layers it crossfades them, and only below the lowest (or above the highest) is it scaled, by
    (velocity / layer velocity) ** velocity_curve."""
    path = tmp_path / "vb"
    with BankWriter(path, grid=2, pitches=[60], velocities=[40, 120], note_length=8000, corners="abcd") as w:
        for vi, v in enumerate([40, 120]):
            for y in range(2):
                for x in range(2):
                    w.write(0, vi, y, x, synth_note(60 + 12 * vi, v, y, x, 2, 8000))  # layers differ in pitch
    b = open_bank(path)
    start = {"sustain": 1.0, "volume": 1.0, "x": 0.0, "y": 0.0}  # from the first sample (no slew)
    one = lambda v, **kw: render_events(b, [(0, ("on", 0, 60, v))], 4800, params=start, **kw)[:, 0]
    lo, hi, mid = one(40), one(120), one(80)
    np.testing.assert_allclose(mid, 0.5 * (lo + hi), atol=2e-6)
    np.testing.assert_allclose(one(20), 0.5 * lo, atol=2e-6)
    np.testing.assert_allclose(one(20, config=EngineConfig(velocity_curve=2.0)), 0.25 * lo, atol=2e-6)
    np.testing.assert_allclose(one(127), hi * 127 / 120, atol=2e-6)
    # on its layer, a note is as loud as the layer's samples (after the attack, at sustain 1 and volume 1)
    assert abs(np.abs(lo[2400:]).max() / (np.abs(b.samples[0, 0, 0, 0]).max() / 32768) - 1) < 0.02


def test_output_never_exceeds_full_scale(tmp_path):
    """32 voices at velocity 127 on loud notes, full volume: a soft limiter keeps every sample within +-1, and
    leaves a quiet signal untouched."""
    path = tmp_path / "loud"
    write_bank(path, grid=2, pitches=(48, 60, 72), velocities=(127,), note_length=8000)
    b = open_bank(path)
    loud = [(0, ("params", {"volume": 1.0, "sustain": 1.0}))] + [(0, ("on", 0, 40 + k, 127)) for k in range(32)]
    out = render_events(b, loud, FS)
    assert np.abs(out).max() <= 1.0
    assert np.mean(np.abs(out) > 0.8) > 0.01  # it is loud: the limiter is working, not idle
    quiet = [(0, ("params", {"volume": 0.3})), (0, ("on", 0, 60, 100))]
    q = render_events(b, quiet, FS)
    ref = render_events(b, quiet, FS, config=EngineConfig(limiter=False))
    assert 0.05 < np.abs(q).max() < 0.5
    np.testing.assert_array_equal(q, ref)

