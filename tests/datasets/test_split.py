from dataclasses import dataclass

import pytest

from precompute.datasets.split import split_by_instrument, valid_instruments


@dataclass
class N:
    instrument_str: str
    pitch: int


def notes(n_instruments, pitches=(60, 64)):
    return [N(f"keyboard_synthetic_{i:03d}", p) for i in range(n_instruments) for p in pitches]


def test_instrument_disjoint_and_complete():
    ns = notes(200)
    train, valid = split_by_instrument(ns, 0.2, seed=1)
    assert len(train) + len(valid) == len(ns)
    assert not {n.instrument_str for n in train} & {n.instrument_str for n in valid}
    assert 0.1 < len({n.instrument_str for n in valid}) / 200 < 0.3


def test_deterministic_and_seeded():
    ns = notes(100)
    train, valid = split_by_instrument(ns, 0.2, 3)
    train_r, valid_r = split_by_instrument(list(reversed(ns)), 0.2, 3)
    assert {n.instrument_str for n in valid} == {n.instrument_str for n in valid_r}
    v3 = valid_instruments([n.instrument_str for n in ns], 0.2, 3)
    assert v3 == valid_instruments([n.instrument_str for n in reversed(ns)], 0.2, 3)
    assert v3 != valid_instruments([n.instrument_str for n in ns], 0.2, 4)


def test_growing_the_set_keeps_placements():
    small = {n.instrument_str for n in notes(50)}
    big = {n.instrument_str for n in notes(300)}
    v_small, v_big = valid_instruments(small, 0.1, 0), valid_instruments(big, 0.1, 0)
    assert v_big & small == v_small


def test_both_sides_non_empty_for_small_sets():
    for k in (2, 3, 5):
        names = [f"x_{i}" for i in range(k)]
        v = valid_instruments(names, 0.01, 0)
        assert 1 <= len(v) < k
        assert len(valid_instruments(names, 0.99, 0)) < k
    assert valid_instruments(["only"], 0.5, 0) <= {"only"}
    assert valid_instruments([f"x_{i}" for i in range(10)], 0.0, 0) == set()


def test_bad_fraction():
    with pytest.raises(ValueError):
        valid_instruments(["a"], 1.0, 0)
