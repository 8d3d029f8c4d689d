"""The voices' envelopes: the parameters' times (`attack_seconds`, ...; the SFZ export writes the same), their
rates per frame (`Rates`) and the numpy reference of the envelope step (`envelope`, what kernels.render_segment
computes per voice).

  attack   max(1 ms, a^2 x 4 s), linear rise
  decay    max(1 ms, d x 1 s) to reach the sustain level (exponential, -60 dB of the way)
  release  1 ms + r^3 x 10 s to -60 dB (exponential, ends at exactly zero)
A stolen, retriggered or switched-away voice fades out linearly over the steal fade."""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from device.kernels import ATTACK, DECAY, EPS, KILL, RELEASE
from device.voices import Voices


def attack_seconds(a: float) -> float:
    return max(0.001, a * a * 4.0)


def decay_seconds(d: float) -> float:
    return max(0.001, d * 1.0)


def release_seconds(r: float) -> float:
    return 0.001 + r ** 3 * 10.0


class Rates(NamedTuple):
    """The envelope's rates per frame: attack slope, log of the decay's and the release's factor, steal fade slope."""
    att_slope: float
    log_d: float
    log_r: float
    kill_slope: float


def rates(attack: float, decay: float, release: float, steal_fade_s: float, fs: int) -> Rates:
    """The rates of the parameters attack, decay, release (0..1) at sample rate fs."""
    return Rates(1.0 / (attack_seconds(attack) * fs), math.log(EPS) / (decay_seconds(decay) * fs),
                 math.log(EPS) / (release_seconds(release) * fs), 1.0 / (steal_fade_s * fs))


def envelope(vo: Voices, act: np.ndarray, n: int, sus: float, r: Rates, t: np.ndarray) -> np.ndarray:
    """Envelope x gain / 32768 per frame, float64 [a, n], for voices `act` over n frames (t = 1 .. n) towards the
    sustain level `sus`; advances their stages. Linear stages (attack, steal fade): l0 + slope * t; exponential
    ones (decay, release): base + amp * c ** t."""
    stage = vo.stage[act]
    l0 = vo.level[act]
    t = t[:n]
    scale = vo.gain[act] * (1.0 / 32768.0)
    steady = (stage == DECAY) & (l0 == sus)
    is_rel = stage == RELEASE
    logc = np.where(is_rel, r.log_r, np.where(stage == DECAY, r.log_d, 0.0))
    base = np.where(is_rel, -EPS, np.where(stage == DECAY, sus, l0))
    amp = np.where(is_rel, l0 + EPS, np.where(stage == DECAY, l0 - sus, 0.0))
    slope = np.where(stage == ATTACK, r.att_slope, np.where(stage == KILL, -r.kill_slope, 0.0))
    env = (base[:, None] + amp[:, None] * np.exp(logc[:, None] * t) + slope[:, None] * t) * scale[:, None]
    end = base + amp * np.exp(logc * n) + slope * n
    for i in np.flatnonzero((stage == ATTACK) & (end >= 1.0)):  # the attack peaks in this segment
        tc = (1.0 - l0[i]) / slope[i]
        after = t >= tc
        env[i, after] = scale[i] * (sus + (1.0 - sus) * np.exp(r.log_d * (t[after] - tc)))
        end[i] = sus + (1.0 - sus) * math.exp(r.log_d * (n - tc))
        vo.stage[act[i]] = DECAY
    np.maximum(env, 0.0, out=env)
    env[steady] = (scale * sus)[steady, None]
    np.maximum(end, 0.0, out=end)
    end[(stage == DECAY) & (np.abs(end - sus) < 1e-9)] = sus  # settle exactly on the sustain level
    vo.level[act] = np.where(steady, l0, end)
    ended = ((stage == RELEASE) | (stage == KILL)) & (end <= 0.0)
    if ended.any():
        vo.free(act[ended])
    return env
