"""Magenta's h512_bo16 variable names and shapes <-> this project's WaveNetAutoencoder parameters.

Magenta stores each convolution as `<name>/W` [1, k, in, out] and `<name>/biases` [out]; kernel index j is tap
t-(k-1-j)·d for the causal decoder (t-2d, t-d, t) and t+(j-1)·d for the non-causal encoder (t-d, t, t+d). Our
model stores each convolution as one nn.Linear over its concatenated taps in that same order, so a kernel maps to
W[0].reshape(k·in, out).T. The decoder's residual and skip 1x1s are fused (res first), and all embedding
projections cond_map_1..L, cond_map_out1 form one Linear, in that order.
"""
from __future__ import annotations

import re
from dataclasses import replace

import numpy as np

from nsynth.errors import NsynthError
from precompute.config import PRESETS, ModelConfig

WEIGHT = re.compile(r"^[^/]+/(W|biases)$")
EMA_SUFFIX = "/ExponentialMovingAverage"
ENC_FAMILIES = ("ae_dilatedconv", "ae_res")
DEC_FAMILIES = ("dilatedconv", "cond_map", "res", "skip")


def conv_shapes(name: str, k: int, c_in: int, c_out: int) -> dict[str, tuple[int, ...]]:
    return {f"{name}/W": (1, k, c_in, c_out), f"{name}/biases": (c_out,)}


def magenta_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every variable a Magenta checkpoint of this config holds (without scope prefix) -> its shape."""
    c, e, k = cfg.enc_channels, cfg.bottleneck, cfg.kernel
    r, s = cfg.dec_channels, cfg.skip_channels
    shapes = conv_shapes("ae_startconv", k, 1, c)
    for i in range(1, cfg.enc_layers + 1):
        shapes |= conv_shapes(f"ae_dilatedconv_{i}", k, c, c) | conv_shapes(f"ae_res_{i}", 1, c, c)
    shapes |= conv_shapes("ae_bottleneck", 1, c, e)
    shapes |= conv_shapes("startconv", k, 1, r) | conv_shapes("skip_start", 1, r, s)
    for i in range(1, cfg.dec_layers + 1):
        shapes |= (conv_shapes(f"dilatedconv_{i}", k, r, 2 * r) | conv_shapes(f"cond_map_{i}", 1, e, 2 * r)
                   | conv_shapes(f"res_{i}", 1, r, r) | conv_shapes(f"skip_{i}", 1, r, s))
    shapes |= conv_shapes("out1", 1, s, s) | conv_shapes("cond_map_out1", 1, e, s)
    shapes |= conv_shapes("logits", 1, s, cfg.quant)
    return shapes


def find_prefix(names: list[str], where: str) -> str:
    """The scope prefix ("" or "scope/") in front of Magenta's names, found from the start convolutions."""
    for anchor in ("startconv/W", "ae_startconv/W"):
        found = sorted(n[: -len(anchor)] for n in names if n == anchor or n.endswith("/" + anchor))
        if len(found) > 1:
            raise NsynthError(f"{where}: several copies of the model under scopes {found}; expected one")
        if found:
            return found[0]
    return ""


def _layer_count(shapes: dict[str, tuple[int, ...]], families: tuple[str, ...]) -> int:
    pattern = re.compile(rf"^({'|'.join(families)})_(\d+)/")
    return max((int(m.group(2)) for n in shapes if (m := pattern.match(n))), default=0)


def infer_config(shapes: dict[str, tuple[int, ...]], stack: int = 10) -> ModelConfig:
    """Sizes read off the weight shapes (names without prefix); what is absent keeps the `nsynth` value, so the
    caller's name check reports it. The dilation cycle cannot be read from a checkpoint: `stack` gives it."""
    base = PRESETS["nsynth"]

    def out(name: str, default: int) -> int:
        shape = shapes.get(f"{name}/W", ())
        return shape[-1] if len(shape) == 4 else default

    cfg = replace(base, enc_channels=out("ae_startconv", base.enc_channels),
                  bottleneck=out("ae_bottleneck", base.bottleneck), dec_channels=out("startconv", base.dec_channels),
                  skip_channels=out("skip_start", base.skip_channels), quant=out("logits", base.quant),
                  enc_layers=_layer_count(shapes, ENC_FAMILIES), dec_layers=_layer_count(shapes, DEC_FAMILIES),
                  enc_stack=stack, dec_stack=stack)
    return cfg if replace(cfg, preset=base.preset) == base else replace(cfg, preset="magenta")


def check_names(shapes: dict[str, tuple[int, ...]], cfg: ModelConfig, where: str) -> None:
    """Raise one error listing every missing, extra and mis-shaped variable."""
    want = magenta_shapes(cfg)
    problems = []
    missing = sorted(set(want) - set(shapes))
    extra = sorted(set(shapes) - set(want))
    wrong = [f"{n} {list(shapes[n])} (expected {list(want[n])})" for n in sorted(set(want) & set(shapes))
             if tuple(shapes[n]) != want[n]]
    if missing:
        problems.append(f"missing {len(missing)}: {', '.join(missing)}")
    if extra:
        problems.append(f"extra {len(extra)}: {', '.join(extra)}")
    if wrong:
        problems.append(f"wrong shape {len(wrong)}: {', '.join(wrong)}")
    if not cfg.enc_layers or not cfg.dec_layers:
        problems.append("no encoder or decoder layers found")
    if problems:
        raise NsynthError(f"{where}: does not hold a Magenta NSynth WaveNet "
                          f"(enc {cfg.enc_layers}x{cfg.enc_channels}, dec {cfg.dec_layers}x{cfg.dec_channels}, "
                          f"skip {cfg.skip_channels}, bottleneck {cfg.bottleneck}): " + "; ".join(problems))


def _linear(w: np.ndarray) -> np.ndarray:
    """Magenta kernel [1, k, in, out] -> nn.Linear weight [out, k*in] over taps concatenated in kernel order."""
    return w[0].reshape(-1, w.shape[-1]).T


def to_state_dict(get, cfg: ModelConfig) -> dict[str, np.ndarray]:
    """get(magenta name) -> float32 array. Returns our WaveNetAutoencoder's state dict as numpy arrays."""
    sd: dict[str, np.ndarray] = {}

    def put(ours: str, *names: str) -> None:
        sd[f"{ours}.weight"] = np.concatenate([_linear(get(f"{n}/W")) for n in names], 0)
        sd[f"{ours}.bias"] = np.concatenate([get(f"{n}/biases") for n in names], 0)

    put("encoder.start", "ae_startconv")
    for i in range(cfg.enc_layers):
        put(f"encoder.dilated.{i}", f"ae_dilatedconv_{i + 1}")
        put(f"encoder.res.{i}", f"ae_res_{i + 1}")
    put("encoder.bottleneck", "ae_bottleneck")
    put("decoder.start", "startconv")
    put("decoder.skip_start", "skip_start")
    for i in range(cfg.dec_layers):
        put(f"decoder.dilated.{i}", f"dilatedconv_{i + 1}")
        put(f"decoder.res_skip.{i}", f"res_{i + 1}", f"skip_{i + 1}")
    put("decoder.cond", *[f"cond_map_{i + 1}" for i in range(cfg.dec_layers)], "cond_map_out1")
    put("decoder.out1", "out1")
    put("decoder.logits", "logits")
    return sd
