from hardware.debounce import Debouncer, PatchButton


def feed(button, samples):
    """samples: (time, pressed) pairs; returns the actions with their times."""
    return [(t, a) for t, p in samples if (a := button.update(p, t))]


def test_bounces_shorter_than_the_interval_do_not_count():
    d = Debouncer(interval=0.02)
    assert [d.update(level, t) for t, level in [(0.0, True), (0.005, False), (0.01, True), (0.015, False)]] == [None] * 4
    assert d.update(True, 0.02) is None
    assert d.update(True, 0.041) is True


def test_short_press_loads_once():
    b = PatchButton(hold=0.75, interval=0.02)
    samples = [(0.0, True), (0.003, False), (0.006, True)] + [(t / 100, True) for t in range(1, 30)]
    samples += [(0.30, False), (0.303, True), (0.306, False)] + [(t / 100, False) for t in range(31, 60)]
    assert feed(b, samples) == [(0.33, "load")]


def test_hold_saves_at_075_s_and_the_release_does_not_load():
    b = PatchButton(hold=0.75, interval=0.02)
    samples = [(t / 100, True) for t in range(0, 150)] + [(t / 100, False) for t in range(150, 170)]
    actions = feed(b, samples)
    assert [a for _, a in actions] == ["save"]
    assert 0.77 <= actions[0][0] <= 0.78  # 0.75 s after the debounced press (at 0.02)


def test_progress_while_holding():
    b = PatchButton(hold=0.75, interval=0.0)
    b.update(True, 0.0)
    b.update(True, 0.375)
    assert b.progress == 0.5
    b.update(True, 0.8)
    assert b.progress is None  # saved
