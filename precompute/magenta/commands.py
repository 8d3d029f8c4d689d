"""`nsynth import-magenta`: turn Magenta's released NSynth checkpoint into a run folder."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nsynth.errors import NsynthError
from precompute.config import ModelConfig
from precompute.magenta.mapping import EMA_SUFFIX, WEIGHT, check_names, find_prefix, infer_config, to_state_dict
from precompute.magenta.tfckpt import Checkpoint


@dataclass(frozen=True)
class Imported:
    run: Path
    cfg: ModelConfig
    step: int
    parameters: int
    ignored: int  # tensors left unused: optimizer slots, the weight set not chosen, counters


def _step(ckpt: Checkpoint, prefix: str) -> int:
    """The training step: the checkpoint's global_step (scoped or not), else the -N suffix of its name, else 0."""
    for name in (prefix + "global_step", "global_step"):
        e = ckpt.entries.get(name)
        if e is not None and e.shape == () and e.numpy_dtype is not None and e.numpy_dtype.kind in "iu":
            return int(ckpt.read(name))
    m = re.search(r"-(\d+)$", ckpt.prefix.name)
    return int(m.group(1)) if m else 0


def import_magenta(checkpoint: str | os.PathLike, run: str | os.PathLike, *, ema: bool = False, stack: int = 10,
                   verify: bool = True) -> Imported:
    """Read a Magenta NSynth checkpoint (TF V2 bundle, no TensorFlow needed), map it onto our model, check every
    name and shape, and write RUN (config.json + model.pt). ema: take the moving-average weights instead of the raw
    ones. stack: dilation cycle length (2**(i % stack)), which a checkpoint does not record."""
    import torch

    from precompute.model import WaveNetAutoencoder
    from precompute.run import WEIGHTS, save_weights, write_config

    run = Path(run)
    if (run / WEIGHTS).exists():
        raise NsynthError(f"{run}: already holds a model; choose another folder")
    if stack < 1:
        raise NsynthError(f"--stack must be at least 1, got {stack}")
    ckpt = Checkpoint(checkpoint, verify=verify)
    where = str(ckpt.index)
    prefix = find_prefix(list(ckpt.entries), where)
    weights = {n[len(prefix):]: e.shape for n, e in ckpt.entries.items()
               if n.startswith(prefix) and WEIGHT.match(n[len(prefix):])}
    cfg = infer_config(weights, stack)
    check_names(weights, cfg, where)
    source = {n: f"{prefix}{n}{EMA_SUFFIX if ema else ''}" for n in weights}
    if ema:
        absent = sorted(n for n, full in source.items() if full not in ckpt.entries)
        if len(absent) == len(source):
            raise NsynthError(f"{where}: --ema but the checkpoint holds no moving averages "
                              f"(<variable>{EMA_SUFFIX}); import without --ema")
        if absent:
            raise NsynthError(f"{where}: --ema but {len(absent)} moving averages are missing: {', '.join(absent)}")
        wrong = sorted(n for n, full in source.items() if ckpt.entries[full].shape != weights[n])
        if wrong:
            raise NsynthError(f"{where}: moving averages of another shape than their variables: {', '.join(wrong)}")

    def get(name: str) -> np.ndarray:
        a = ckpt.read(source[name])
        if a.dtype.kind != "f":
            raise NsynthError(f"{where}: {source[name]} holds {a.dtype}, expected floating-point weights")
        return a.astype(np.float32)

    model = WaveNetAutoencoder(cfg)
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in to_state_dict(get, cfg).items()}
    model.load_state_dict(state)  # strict: every parameter of ours is filled, nothing else
    step = _step(ckpt, prefix)
    run.mkdir(parents=True, exist_ok=True)
    write_config(run, cfg, {"imported_from": str(ckpt.prefix), "weights": "ema" if ema else "raw"})
    save_weights(run, model, step)
    return Imported(run, cfg, step, sum(int(np.prod(s)) for s in weights.values()),
                    len(ckpt.entries) - len(weights))


def configure(p) -> None:
    p.add_argument("checkpoint", help="checkpoint prefix, e.g. wavenet-ckpt/model.ckpt-200000 "
                                      "(the .index and .data-00000-of-00001 files beside it)")
    p.add_argument("-o", "--out", required=True, help="run folder to write (must not hold a model yet)")
    p.add_argument("--ema", action="store_true", help="take the exponential-moving-average weights")
    p.add_argument("--stack", type=int, default=10, help="dilation cycle: layer i has dilation 2**(i %% stack)")
    p.add_argument("--no-verify", action="store_true", help="skip crc32c checks of the index and tensors")

    def run(a) -> int:
        r = import_magenta(a.checkpoint, a.out, ema=a.ema, stack=a.stack, verify=not a.no_verify)
        c = r.cfg
        print(f"{r.run}: imported {r.parameters:,} parameters ({'moving averages' if a.ema else 'raw weights'}) "
              f"at step {r.step}; preset {c.preset}: encoder {c.enc_layers}x{c.enc_channels}, decoder "
              f"{c.dec_layers}x{c.dec_channels} (skip {c.skip_channels}), bottleneck {c.bottleneck}, "
              f"stack {c.enc_stack}; {r.ignored} other tensors left unused (optimizer slots, the weight set not "
              "chosen, counters)")
        return 0

    p.set_defaults(func=run)
