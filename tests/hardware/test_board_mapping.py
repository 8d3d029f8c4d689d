from hardware.frame import Frame
from hardware.mapping import BoardMapper, PotFilter, TouchGlide, rotary_steps
from nsynth.params import PARAMS


def frame(touch=(255, 255), rot=(0, 0, 0, 0), pots=(0, 0, 0, 0, 0, 0)):
    return Frame(touch, rot, pots)


def test_rotary_counters_unwrap_into_signed_steps():
    assert rotary_steps((250, 3, 0, 128), (3, 250, 0, 127)) == (9, -9, 0, -1)
    assert rotary_steps((0, 0, 0, 0), (127, 129, 255, 1)) == (127, -127, -1, 1)


def test_pot_hysteresis_ignores_one_count_of_jitter_but_reaches_both_ends():
    p = PotFilter(band=2)
    assert p.update(100) == 100 / 255
    assert [p.update(v) for v in (101, 100, 99, 100)] == [None] * 4
    assert p.update(102) == 102 / 255
    assert p.update(254) == 254 / 255
    assert p.update(255) == 1.0      # one count, but the end must be reachable
    assert p.update(1) == 1 / 255
    assert p.update(0) == 0.0


def test_pot_picks_up_after_a_patch_only_when_moved():
    p = PotFilter(band=2, pickup=4)
    p.update(200)
    p.hold(0.25)
    assert p.value == 0.25
    assert p.update(202) is None and p.value == 0.25   # jitter does not undo the patch
    assert p.update(190) == 190 / 255                  # a real move takes over


def test_glide_moves_smoothly_to_the_touched_cell_and_holds_after_release():
    g = TouchGlide(tau=0.04, start=(0.5, 0.5))
    g.advance(0.0)
    g.touch((10, 0))
    xs = [g.advance(t / 1000)[0] for t in range(10, 400, 10)]
    assert all(b >= a for a, b in zip(xs, xs[1:]))               # monotonic, never overshoots
    assert max(b - a for a, b in zip([0.5] + xs, xs)) < 0.15      # no jump: each 10 ms step is small
    assert xs[-1] == 1.0 and g.position == (1.0, 0.0)             # and it arrives
    g.advance(1.0)
    assert g.position == (1.0, 0.0)


def test_mapper_posts_every_pot_once_then_only_changes():
    m = BoardMapper(band=2, tau=0.04)
    params = m.update(frame(pots=(0, 51, 102, 153, 204, 255)), 0.0)
    assert set(params) == set(PARAMS)
    assert params["attack"] == 0.2 and params["volume"] == 1.0 and (params["x"], params["y"]) == (0.5, 0.5)
    params = m.update(frame(pots=(0, 52, 102, 153, 204, 255)), 0.01)
    assert params == {}
    params = m.update(frame(pots=(0, 51, 102, 153, 204, 0)), 0.02)
    assert params == {"volume": 0.0}


def test_mapper_touch_glides_xy_and_keeps_it_without_touch():
    m = BoardMapper(tau=0.04)
    m.update(frame(), 0.0)
    p1 = m.update(frame(touch=(0, 10)), 0.01)
    assert 0.0 < p1["x"] < 0.5 and 0.5 < p1["y"] < 1.0
    t = 0.01
    for _ in range(100):
        t += 0.01
        m.update(frame(touch=(0, 10)), t)
    assert m.values()["x"] == 0.0 and m.values()["y"] == 1.0
    params = m.update(frame(), t + 0.01)                       # finger lifted
    assert params == {} and (m.values()["x"], m.values()["y"]) == (0.0, 1.0)


def test_mapper_applies_a_patch():
    m = BoardMapper()
    m.update(frame(pots=(10, 10, 10, 10, 10, 10)), 0.0)
    m.apply({"position": 0.5, "x": 0.1, "y": 0.9})
    v = m.values()
    assert v["position"] == 0.5 and v["attack"] == 10 / 255 and (v["x"], v["y"]) == (0.1, 0.9)
