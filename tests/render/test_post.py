import numpy as np

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


def test_onsets_are_aligned():
    x = np.stack([tone(delay=300), tone(delay=40), tone(delay=0)])
    y = post.align_onsets(x)
    onsets = [int(np.argmax(np.abs(r) >= 0.1 * np.abs(r).max())) for r in y]
    assert onsets == [post.ONSET_AT] * 3


def test_level_matched_across_cells_keeping_velocity_layers():
    """Cells of one pitch and velocity come out at the block's target; two velocity layers keep their ratio."""
    quiet_cells = np.stack([tone(amp=0.05), tone(amp=0.2, decay=3)])
    loud_cells = np.stack([tone(amp=0.1), tone(amp=0.6, decay=3)])
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
        x = tone(pitch, seconds=4.0, decay=0.3) + 0.3 * tone(pitch + 12, seconds=4.0, decay=0.3)
        start, end = post.find_loop(x, post.pitch_period(pitch, SR))
        assert 0.2 * len(x) <= start < end <= 0.6 * len(x)
        periods = (end - start) / post.pitch_period(pitch, SR)
        assert abs(periods - round(periods)) < 0.05 and round(periods) >= 1
        w = 64
        a, b = x[start - w:start + w], x[end - w:end + w]
        assert a @ b / np.sqrt((a @ a) * (b @ b)) > 0.99


def test_loop_falls_back_on_silence_and_short_notes():
    assert post.find_loop(np.zeros(SR), 100.0) == (3200, 6560)
    assert post.find_loop(tone(seconds=0.03), post.pitch_period(60, SR)) == (96, 196)


def test_fades():
    y = post.apply_fades(np.ones((1, 2000)), SR)
    assert y[0, 0] == 0 and y[0, -1] == 0 and y[0, 1000] == 1
