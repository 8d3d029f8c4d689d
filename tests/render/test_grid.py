import numpy as np
import pytest

from nsynth.errors import NsynthError
from precompute.render.grid import grid_weights, unique_cells


def test_bilinear_weights():
    w = grid_weights(9)
    assert w.shape == (9, 9, 4) and np.allclose(w.sum(-1), 1)
    for k, (y, x) in enumerate([(0, 0), (0, 8), (8, 0), (8, 8)]):  # BL, BR, TL, TR; cell [y][x]
        assert w[y, x].tolist() == np.eye(4)[k].tolist()
    assert np.allclose(w[4, 4], 0.25)
    y, x = 2 / 8, 6 / 8
    assert np.allclose(w[2, 6], [(1 - x) * (1 - y), x * (1 - y), (1 - x) * y, x * y])


def test_distance_weights_are_the_originals():
    w = grid_weights(9, "distance")
    x, y = 3 / 8, 1 / 8
    raw = np.maximum(1 - np.hypot(x - np.array([0, 1, 0, 1]), y - np.array([0, 0, 1, 1])), 0)
    assert np.allclose(w[1, 3], raw / raw.sum())
    assert w[0, 0].tolist() == [1, 0, 0, 0] and np.allclose(w[4, 4], 0.25)


def test_unique_cells():
    keys, index = unique_cells(grid_weights(5), ["a", "b", "c", "d"])
    assert len(keys) == 25
    keys, index = unique_cells(grid_weights(5), ["a", "a", "a", "a"])
    assert len(keys) == 1 and (index == 0).all()
    keys, index = unique_cells(grid_weights(5), ["a", "b", "b", "a"])
    x = np.arange(5) / 4
    weight_of_a = 1 - x[None] - x[:, None] + 2 * x[None] * x[:, None]  # (1-x)(1-y) + xy
    assert len(keys) == len(np.unique(weight_of_a.round(9)))
    assert all((index == index[y, x]).sum() == (weight_of_a.round(9) == weight_of_a[y, x].round(9)).sum()
               for y in range(5) for x in range(5))


def test_bad_grid():
    with pytest.raises(NsynthError, match="at least 2x2"):
        grid_weights(1)
    with pytest.raises(NsynthError, match="unknown interpolation 'cubic'"):
        grid_weights(3, "cubic")
