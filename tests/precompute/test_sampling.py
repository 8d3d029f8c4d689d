"""The sampling settings as one value: validated in one place, written into render requests with the keys plans
have always had, described for messages. (Sampling.resolve: tests/precompute/test_run_and_cli.py.)"""
import pytest

from nsynth.errors import NsynthError
from precompute.render.plan import request_key
from precompute.sampling import GREEDY, Sampling


@pytest.mark.parametrize("kw,message", [
    ({"temperature": 0}, r"temperature must be > 0, got 0"),
    ({"temperature": -1.0}, r"temperature must be > 0"),
    ({"temperature": "hot"}, r"temperature must be > 0, got 'hot'"),
    ({"quantile": 0.0}, r"quantile must be in \(0, 1\), got 0.0"),
    ({"quantile": 1}, r"quantile must be in \(0, 1\), got 1"),
    ({"quantile": True}, r"quantile must be in \(0, 1\), got True"),
    ({"greedy": 1}, r"greedy must be true or false, got 1"),
    ({"greedy": True, "quantile": 0.5}, r"greedy takes the mode, quantile 0.5 another point; choose one"),
    ({"seed": 1.5}, r"seed must be an integer, got 1.5"),
])
def test_bad_settings_are_refused_where_they_are_made(kw, message):
    with pytest.raises(NsynthError, match=message):
        Sampling(**kw)


def test_numbers_are_held_as_floats():
    s = Sampling(temperature=2, quantile=0.5, seed=3)
    assert type(s.temperature) is float and type(s.quantile) is float
    assert s == Sampling(False, 2.0, 0.5, 3) and hash(s) == hash(Sampling(False, 2.0, 0.5, 3))
    with pytest.raises(AttributeError):
        s.seed = 4  # frozen: one value for a whole render


def test_request_keys_are_those_plans_were_made_with():
    """The request's sampling keys and values as they were before the value type existed: "quantile" only when
    set, temperature a float; so the keys of existing plans and job folders stay valid."""
    assert GREEDY.request() == {"greedy": True, "temperature": 1.0, "seed": 0}
    assert Sampling(temperature=0.8, seed=7).request() == {"greedy": False, "temperature": 0.8, "seed": 7}
    assert Sampling(quantile=0.5).request() == {"greedy": False, "temperature": 1.0, "seed": 0, "quantile": 0.5}
    # a request hashed from hand-written keys (as make_request wrote them) keeps its key
    old = {"grid": 3, "greedy": False, "temperature": 1.0, "seed": 0, "backend": "torch", "quantile": 0.5}
    assert request_key({"grid": 3, **Sampling(quantile=0.5).request(), "backend": "torch"}) == request_key(old)


def test_descriptions():
    assert GREEDY.describe() == "greedy"
    assert Sampling().describe() == "sampled"
    assert Sampling(temperature=0.8).describe() == "sampled at temperature 0.8"
    assert Sampling(quantile=0.5, seed=9).describe() == "quantile 0.5"
    assert Sampling(quantile=0.25, temperature=2).describe() == "quantile 0.25 at temperature 2"
    assert not GREEDY.draws and Sampling(quantile=0.5).draws and Sampling().draws
