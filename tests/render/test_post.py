import numpy as np

import nsynth.loops as sustain
from precompute.render import post

SR = 16000


def tone(pitch=60, seconds=1.0, amp=0.5, decay=1.0, delay=0):
    t = np.arange(int(seconds * SR)) / SR
    x = amp * np.exp(-decay * t) * np.sin(2 * np.pi * 440 * 2 ** ((pitch - 69) / 12) * t)
    return np.concatenate([np.zeros(delay), x])[: len(t)]


def test_click_repair_fixes_spikes_and_keeps_steps():
    x = np.stack([tone(), tone(), tone()])
    x[1, 5000] += 0.6
    x[2, 8000:] += 0.3
    y, n = post.repair_clicks(x)
    assert n == 1
    assert abs(y[1, 5000] - x[0, 5000]) < 0.01
    assert np.array_equal(y[2], x[2]) and np.array_equal(y[0], x[0])


def test_dc_is_removed():
    x = tone()[None] + 0.2
    y = post.remove_dc(x)
    assert abs(y[0, SR // 2:].mean()) < 1e-3


def _in_phase_cells(length=2 * SR, pitch=60):
    """Three cells as the decoder makes them: in phase, each with its own harmonics, after 300 samples of silence;
    a slow (150 ms, flute-like) attack, a fast one, and one that only starts 200 samples later."""
    t = np.arange(length) / SR
    f0 = 440 * 2 ** ((pitch - 69) / 12)
    wave = [np.sin(2 * np.pi * f0 * t) + a * np.sin(4 * np.pi * f0 * t) for a in (0.2, 0.5, 0.8)]
    slow = np.clip((t - 300 / SR) / 0.15, 0, 1)
    fast = np.clip((t - 300 / SR) / 0.003, 0, 1)
    late = np.clip((t - 500 / SR) / 0.003, 0, 1)
    return 0.3 * np.stack([wave[0] * slow, wave[1] * fast, wave[2] * late])


def _shift_of(y, x):
    """The s with y[:L - s] == x[s:] (searched), or None."""
    for s in range(x.shape[-1] // 2):
        if np.allclose(y[: len(y) - s], x[s:]):
            return s
    return None


def test_one_onset_shift_per_block_keeps_cells_in_phase():
    x = _in_phase_cells()
    y = post.shift_block(x, post.block_shift(x))
    shifts = {_shift_of(a, b) for a, b in zip(y, x)}
    assert len(shifts) == 1 and None not in shifts  # every cell moved alike
    s = shifts.pop()
    assert 250 <= s <= 300  # most of the leading silence trimmed ...
    assert np.abs(x[:, :s]).max() <= 0.011 * np.abs(x).max(1).min()  # ... and nothing of any attack
    aligned = np.stack([tone(delay=0), tone(delay=0, amp=0.2)])
    assert post.block_shift(aligned) == 0  # corners aligned already: nothing moves
    assert post.block_shift(np.zeros((2, 100))) == 0


def test_cells_mix_without_holes():
    """Cells with different attacks but generated in phase: their 50/50 mix keeps the mean level (the old
    per-note onset shift moved the slow cell hundreds of samples and made it cancel its neighbour)."""
    x = _in_phase_cells()
    out, loops, _ = post.postprocess_block(x, pitch=60, target_rms=0.1, sample_rate=SR)
    y = out / 32767
    part = slice(SR // 2, SR)
    for a, b in [(0, 1), (1, 2), (0, 2)]:
        mix = np.mean(((y[a] + y[b]) / 2)[part] ** 2)
        assert 10 * np.log10(mix / ((np.mean(y[a][part] ** 2) + np.mean(y[b][part] ** 2)) / 2)) > -0.5
    assert (loops == loops[0]).all()  # one loop: read together, the cells stay in phase through it


def test_level_matched_across_cells_keeping_velocity_layers():
    """Cells of one pitch and velocity come out at the block's target; two velocity layers keep their ratio
    (steady notes: a decaying one is leveled as generated, before its loop is compensated)."""
    quiet_cells = np.stack([tone(amp=0.05, decay=0), tone(amp=0.2, decay=0) + tone(72, amp=0.1, decay=0)])
    loud_cells = np.stack([tone(amp=0.1, decay=0), tone(amp=0.6, decay=0) + tone(72, amp=0.3, decay=0)])
    soft, _, _ = post.postprocess_block(quiet_cells, pitch=60, target_rms=0.02, sample_rate=SR)
    loud, _, _ = post.postprocess_block(loud_cells, pitch=60, target_rms=0.08, sample_rate=SR)
    soft_rms, loud_rms = post.rms(soft / 32767), post.rms(loud / 32767)
    assert np.allclose(soft_rms, 0.02, rtol=0.01) and np.allclose(loud_rms, 0.08, rtol=0.01)
    assert np.allclose(loud_rms / soft_rms, 4, rtol=0.02)


def test_peaks_are_limited():
    out = post.match_level(np.stack([tone(amp=0.5)]), target_rms=0.9)
    assert np.isclose(np.abs(out).max(), post.PEAK_LIMIT)


def test_loop_points_repeat_the_waveform():
    for pitch in (21, 60, 100):
        x = np.stack([tone(pitch, seconds=4.0, decay=0.3) + a * tone(pitch + 12, seconds=4.0, decay=0.3)
                      for a in (0.3, 0.6)])
        start, end = sustain.find_loop(x, sustain.pitch_period(pitch, SR), SR)
        assert 0.2 * x.shape[1] <= start < end <= 0.6 * x.shape[1]
        periods = (end - start) / sustain.pitch_period(pitch, SR)
        assert abs(periods - round(periods)) < 0.05 and round(periods) >= 1
        w = 64
        for row in x:
            a, b = row[start - w:start + w], row[end - w:end + w]
            assert a @ b / np.sqrt((a @ a) * (b @ b)) > 0.99


def _level_db(x, frame=512):
    n = len(x) // frame
    return 10 * np.log10(np.mean(x[: n * frame].reshape(n, frame) ** 2, 1))


def _wobbly(length, seconds, steady_from):
    """A note at pitch 60 whose first part wobbles (4 Hz, 3 dB peak to peak) and whose rest is steady."""
    t = np.arange(length) / SR
    wobble = 10 ** (1.5 * np.sin(2 * np.pi * 4 * t) / 20)
    return tone(60, seconds) / np.exp(-t) * np.where(t < steady_from * seconds, wobble, 1.0)


def test_loop_is_chosen_where_the_level_is_steady():
    x = _wobbly(4 * SR, 4.0, 0.3)
    start, end = sustain.find_loop(x[None], sustain.pitch_period(60, SR), SR)
    assert np.ptp(_level_db(x[start:end])) < 0.3


def test_loop_is_chosen_where_the_noise_band_is_steady():
    """Bursts of noise above 2.5 kHz, 20 dB below the note, 3 per second, until 30 % of the note: they hardly
    move its level, but would repeat with every loop."""
    rng = np.random.default_rng(0)
    from scipy.signal import butter, sosfilt

    t = np.arange(4 * SR) / SR
    hiss = sosfilt(butter(4, 3000, "highpass", fs=SR, output="sos"), rng.standard_normal(len(t)))
    hiss *= 0.1 * 0.35 / np.std(hiss) * (np.sin(2 * np.pi * 3 * t) > 0) * (t < 1.2)
    x = tone(60, 4.0) / np.exp(-t) + hiss
    start, end = sustain.find_loop(x[None], sustain.pitch_period(60, SR), SR)
    assert start - sustain.seam_window(start, end) >= 1.2 * SR


def _held_period(y, start, end):
    """One loop of y [..., L] as the engine holds it: from the start, its last h samples faded linearly, weight
    (k + 1) / (h + 1) at the k-th, into the h before the start (device/engine.py's crossfade)."""
    h = min(4000, (end - start) // 2, start)
    g = np.arange(1, h + 1) / (h + 1)
    return np.concatenate([y[..., start:end - h], (1 - g) * y[..., end - h:end] + g * y[..., start - h:start]], -1), h


def test_a_decaying_loop_meets_its_start_at_the_same_level():
    """A note decaying 8.7 dB a second: its loop is level-compensated, so what the engine plays straight before
    the crossfade meets the start, and the held loop stays level; before the compensation fades in (twice the
    seam window before the loop) the note is untouched."""
    x = tone(60, 4.0, decay=1.0)
    out, loops, _ = post.postprocess_block(x[None], pitch=60, target_rms=0.05, sample_rate=SR)
    y = out[0] / 32767
    start, end = loops[0]
    held, h = _held_period(y, start, end)
    w = 1024
    straight = end - start - h
    assert abs(10 * np.log10(np.mean(held[:w] ** 2) / np.mean(held[straight - w:straight] ** 2))) < 0.5
    assert np.ptp(_level_db(held)) < 0.5
    assert np.ptp(_level_db(_held_period(x, start, end)[0])) > 1.5  # as generated it would fall and jump back
    before = slice(2000, start - 2 * sustain.seam_window(start, end))  # the loop-rate gain fades in over h
    x = post.remove_dc(x[None])[0]
    gain = y[before] @ x[before] / (x[before] @ x[before])
    assert np.allclose(y[before], gain * x[before], atol=2 / 32767)
    assert np.isclose(gain, 0.05 / np.sqrt(np.mean(x ** 2)), rtol=0.01)  # leveled as generated: the lifted
    # loop does not turn the rest of the note down


HELD = {"attack": 0, "decay": 0, "sustain": 1, "release": 0}  # the engine's envelope held flat


def _held_song(path, hold):
    """A MIDI file holding key 60 at velocity 127 for `hold` seconds (120 bpm); returns its path."""
    import mido

    mid = mido.MidiFile(ticks_per_beat=480)
    off = int(mido.second2tick(hold, 480, 500000))
    mid.tracks.append(mido.MidiTrack([mido.Message("note_on", note=60, velocity=127, time=0),
                                      mido.Message("note_off", note=60, time=off)]))
    mid.save(path)
    return path


def _bank_2x2(path, notes, loops):
    """A 2x2 bank at key 60, velocity 127: int16 notes [2, 2, L] with their loops [2, 2, 2]."""
    from device.bank import BankWriter

    with BankWriter(path, grid=2, pitches=[60], velocities=[127], note_length=notes.shape[-1],
                    corners="abcd") as w:
        w.write_block(0, 0, notes, loops)
        w.close()
    return path


def test_held_notes_through_the_engine_neither_pump_nor_leave_holes(tmp_path):
    """A 2x2 block of in-phase decaying cells with their own attacks, post-processed into a bank and held
    through the engine (nsynth render-midi's path): at every cell and halfway between them the level stays
    within 1 dB peak to peak at the loop rate, and the mix keeps the cells' level."""
    from device.offline import render_midi

    length = 2 * SR
    t = np.arange(length) / SR
    x = np.concatenate([_in_phase_cells(length), _in_phase_cells(length)[1:2] * 0.5]) * np.exp(-1.5 * t)
    out, loops, _ = post.postprocess_block(x, pitch=60, target_rms=0.1, sample_rate=SR)
    bank = _bank_2x2(tmp_path / "bank", out.reshape(2, 2, length), loops.reshape(2, 2, 2))
    start, end = (int(v) for v in loops[0])
    hold = (start + 5 * (end - start)) / SR
    song = _held_song(tmp_path / "held.mid", hold)
    levels = {}
    for xy in [(0, 0), (1, 0), (0, 1), (1, 1), (0.5, 0), (0.5, 0.5)]:
        a = render_midi(bank, song, tmp_path / "out.wav", xy=[xy], tail_s=0.0, params=HELD)[:, 0].astype(np.float64)
        held = a[int(start / SR * 48000): int(hold * 48000)]
        frames = len(held) // 960
        db = 10 * np.log10(np.mean(held[: frames * 960].reshape(frames, 960) ** 2, 1))
        loop_frames = (end - start) / SR * 50  # 20-ms frames per loop
        phase = ((np.arange(frames) % loop_frames) / loop_frames * 16).astype(int)
        folded = [db[phase == k].mean() for k in range(16)]
        assert np.ptp(folded) <= 1.0, xy
        levels[xy] = np.mean(held ** 2)
    assert 10 * np.log10(levels[0.5, 0] / ((levels[0, 0] + levels[1, 0]) / 2)) > -1.0
    corners = np.mean([levels[c] for c in [(0, 0), (1, 0), (0, 1), (1, 1)]])
    assert 10 * np.log10(levels[0.5, 0.5] / corners) > -1.0


def _loop_rate_db(bank, song, xy, loop):
    """The peak-to-peak level at the loop rate (dB) of a note held through the engine: 20-ms levels every 5 ms
    from the loop's start to the note-off, a line and a sinusoid at the loop rate fitted over whole loops."""
    from device.offline import render_midi

    a = render_midi(bank, song, song.with_suffix(".wav"), xy=[xy], tail_s=0.0, params=HELD)[:, 0].astype(np.float64)
    at = np.arange(0, len(a) - 960, 240)
    e = np.concatenate([[0.0], np.cumsum(a * a)])
    level = 10 * np.log10((e[at + 960] - e[at]) / 960 + 1e-12)
    phase = ((at + 480) / 3 - loop[0]) / (loop[1] - loop[0])  # source samples: the engine runs at 48 kHz
    use = (phase >= 0) & (phase < np.floor(phase.max()))
    p = 2 * np.pi * phase[use]
    basis = np.stack([np.ones_like(p), phase[use], np.cos(p), np.sin(p)], 1)
    c = np.linalg.lstsq(basis, level[use], rcond=None)[0]
    return 2 * np.hypot(c[2], c[3])


def test_a_loop_with_no_waveform_to_match_does_not_pump(tmp_path):
    """Noise (breath, bow hiss: nothing a loop's end can match in phase): the engine's linear crossfade of two
    unrelated stretches dips up to 3 dB in its middle, once every loop. The post-processed note's crossfade
    keeps its level: held through the engine, it swings < 0.6 dB at the loop rate; the same note and loop
    levelled but not compensated swing > 1.2 dB."""
    length = 2 * SR
    x = np.random.default_rng(3).standard_normal(length) * 0.1 * np.exp(-0.3 * np.arange(length) / SR)
    out, loops, _ = post.postprocess_block(x[None], pitch=60, target_rms=0.1, sample_rate=SR)
    loop = tuple(int(v) for v in loops[0])
    plain = post.to_int16(post.match_level(post.remove_dc(x[None]), 0.1))
    song = _held_song(tmp_path / "held.mid", (loop[0] + 6.5 * (loop[1] - loop[0])) / SR)
    swing = {}
    for name, note in (("compensated", out), ("plain", plain)):
        bank = _bank_2x2(tmp_path / name, np.broadcast_to(note, (4, length)).reshape(2, 2, length),
                         np.tile(loop, (2, 2, 1)))
        swing[name] = _loop_rate_db(bank, song, (0, 0), loop)
    assert swing["compensated"] < 0.6 and swing["plain"] > 1.2, swing


def test_held_loop_levels_follow_the_engines_crossfade():
    """The loop chooser's held level (per-block sums) matches the held loop built sample by sample as the engine
    plays it: the last h samples fade linearly, weight (k + 1) / (h + 1), into the h before the start."""
    rng = np.random.default_rng(1)
    t = np.arange(2 * SR) / SR
    x = np.stack([np.sin(2 * np.pi * 262 * t * (1 + 0.004 * np.sin(2 * np.pi * 5 * t))) * (1 + 0.3 * t),
                  rng.standard_normal(len(t)) * np.exp(-t)])
    start, end = 9000, 16200
    held = _held_period(x, start, end)[0]
    block = 64
    power = np.mean(held[:, : (end - start) // block * block].reshape(2, -1, block) ** 2, 2)
    expect = 10 * np.log10(sum(np.roll(power, -i, 1) for i in range(sustain.HELD_BLOCKS)) / sustain.HELD_BLOCKS)
    energy = np.concatenate([np.zeros((2, 1)), np.cumsum(x ** 2, 1)], 1)
    got = sustain._held_levels(x, energy, lambda u: np.zeros((2, len(u))), start, end, block)
    assert np.abs(got - expect).max() < 0.2


def test_loop_falls_back_on_silence_and_short_notes():
    assert sustain.find_loop(np.zeros((2, SR)), 100.0, SR) == (3200, 6560)
    assert sustain.find_loop(tone(seconds=0.03)[None], sustain.pitch_period(60, SR), SR) == (96, 196)
    for length in (3000, 4000, 6000):  # room for the search's frames, but every loop it would try is too long
        for pitch in range(24, 85, 4):
            note = np.sin(np.arange(length) * 2 * np.pi * 440 / SR)[None]
            start, end = sustain.find_loop(note, sustain.pitch_period(pitch, SR), SR)
            assert 0 < start < end <= length


def test_fades():
    y = post.apply_fades(np.ones((1, 2000)), SR)
    assert y[0, 0] == 0 and y[0, -1] == 0 and y[0, 1000] == 1
