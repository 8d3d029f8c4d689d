"""How notes are decoded: one value type for the sampling settings that travel together (render, backends,
scale-out, generate, `nsynth decode`, the benches), validated in one place."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from nsynth.errors import NsynthError
from precompute.run import CONFIG, read_config

KEYS = ("greedy", "temperature", "quantile")  # what a run's config.json "sampling" section may hold


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(frozen=True)
class Sampling:
    """greedy: each sample the mode of its predicted distribution; else a draw from it at `temperature`, or with
    `quantile` each sample that quantile of its (tempered) distribution (0.5: the median; deterministic).
    seed: the base seed; a render derives every note's seed from it, `nsynth decode` seeds its note with it."""

    greedy: bool = False
    temperature: float = 1.0
    quantile: float | None = None
    seed: int = 0

    def __post_init__(self):
        if not isinstance(self.greedy, bool):
            raise NsynthError(f"sampling: greedy must be true or false, got {self.greedy!r}")
        if not (_number(self.temperature) and self.temperature > 0):
            raise NsynthError(f"sampling: temperature must be > 0, got {self.temperature!r}")
        if self.quantile is not None and not (_number(self.quantile) and 0 < self.quantile < 1):
            raise NsynthError(f"sampling: quantile must be in (0, 1), got {self.quantile!r}")
        if self.greedy and self.quantile is not None:
            raise NsynthError(f"sampling: greedy takes the mode, quantile {self.quantile} another point; choose one")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise NsynthError(f"sampling: seed must be an integer, got {self.seed!r}")
        object.__setattr__(self, "temperature", float(self.temperature))
        if self.quantile is not None:
            object.__setattr__(self, "quantile", float(self.quantile))

    @property
    def draws(self) -> bool:
        """Whether decoding reads per-note uniforms (sampled or quantile; not greedy)."""
        return not self.greedy

    @classmethod
    def resolve(cls, run: str | os.PathLike, greedy: bool | None = None, temperature: float | None = None,
                quantile: float | None = None, seed: int = 0) -> "Sampling":
        """How to decode with RUN. An explicit choice wins (greedy; else a temperature and/or a quantile; greedy
        False: sampling at 1); with none, RUN/config.json's "sampling" section ({"greedy": true},
        {"quantile": 0.5} and/or {"temperature": T}: how the model is best decoded), else sampling at 1."""
        if greedy:
            return cls(True, 1.0, None, seed)
        if temperature is not None or quantile is not None or greedy is False:
            return cls(False, 1.0 if temperature is None else temperature, quantile, seed)
        _, doc = read_config(run)
        section = doc.get("sampling") or {}
        try:
            if not isinstance(section, dict) or set(section) - set(KEYS):
                raise NsynthError("unknown keys")
            return cls(section.get("greedy", False), section.get("temperature", 1.0), section.get("quantile"), seed)
        except NsynthError:
            raise NsynthError(f"{Path(run) / CONFIG}: bad \"sampling\" section {section!r} (expected {{\"greedy\": "
                              "true}, {\"quantile\": Q in (0, 1)} and/or {\"temperature\": T > 0})") from None

    def request(self) -> dict:
        """The settings as a render request's keys (precompute.render.render.make_request): "quantile" only when
        set, so the keys of plans made before quantiles existed stay the same."""
        doc = {"greedy": self.greedy, "temperature": self.temperature, "seed": self.seed}
        if self.quantile is not None:
            doc["quantile"] = self.quantile
        return doc

    def describe(self) -> str:
        """For messages and bench output: "greedy", "sampled", "quantile 0.5", "sampled at temperature 0.8"
        (the seed left out)."""
        if self.greedy:
            return "greedy"
        at = "" if self.temperature == 1.0 else f" at temperature {self.temperature:g}"
        return (f"quantile {self.quantile:g}" if self.quantile is not None else "sampled") + at


GREEDY = Sampling(greedy=True)
