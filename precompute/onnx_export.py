"""ONNX export: the encoder, the per-frame conditioning projection, and the one-step decoder with its rings as
explicit inputs and outputs (dynamic batch). Each file carries the format version in its metadata."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from nsynth.errors import NsynthError
from nsynth.fsutil import atomic_path, atomic_write_bytes
from precompute.model import WaveNetAutoencoder
from precompute.run import FORMAT_VERSION

FILES = {"encoder": "encoder.onnx", "project": "project.onnx", "step": "decoder_step.onnx"}


class _Project(nn.Module):
    def __init__(self, decoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, emb):
        if self.decoder.source is None:
            return self.decoder.project(emb)
        return self.decoder.project(emb), self.decoder.source(emb)


class _Step(nn.Module):
    def __init__(self, decoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, x, cond, *state):
        logits, new_state = self.decoder.step(x, cond, list(state))
        return (logits, *new_state)


class _ExcitedStep(_Step):
    def forward(self, x, cond, exc, *state):
        logits, new_state = self.decoder.step(x, cond, list(state), exc)
        return (logits, *new_state)


def state_names(model: WaveNetAutoencoder) -> tuple[list[str], list[str]]:
    n = len(model.decoder.periods)
    return [f"state_in_{i}" for i in range(n)], [f"state_out_{i}" for i in range(n)]


def _stamp(path: Path, model: WaveNetAutoencoder, role: str) -> None:
    import onnx

    proto = onnx.load(str(path))
    for k, v in {"nsynth_format_version": str(FORMAT_VERSION), "nsynth_role": role,
                 "nsynth_config": json.dumps(model.cfg.to_dict(), sort_keys=True)}.items():
        proto.metadata_props.add(key=k, value=v)
    onnx.save(proto, str(path))


def _export(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str], dynamic: dict,
            model: WaveNetAutoencoder, role: str) -> None:
    with atomic_path(path) as tmp:
        torch.onnx.export(module, args, str(tmp), input_names=inputs, output_names=outputs, dynamic_axes=dynamic,
                          opset_version=17, dynamo=False)
        _stamp(tmp, model, role)


@torch.no_grad()
def export_onnx(model: WaveNetAutoencoder, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write encoder.onnx, project.onnx, decoder_step.onnx and onnx.json into out_dir. project.onnx maps embeddings
    to cond (and, for a decoder with a harmonic source, to its parameters "source"). The step's inputs are x,
    cond, exc (the excitation at t [batch, exc_width], only for a decoder with one) and the rings."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.float().eval()
    cfg, dec = model.cfg, model.decoder
    paths = {k: out / v for k, v in FILES.items()}
    _export(model.encoder, (torch.zeros(1, cfg.hop * 2),), paths["encoder"], ["audio"], ["embeddings"],
            {"audio": {0: "batch", 1: "samples"}, "embeddings": {0: "batch", 1: "frames"}}, model, "encoder")
    project_out = ["cond"] + (["source"] if dec.source is not None else [])
    _export(_Project(dec), (torch.zeros(1, 2, cfg.bottleneck),), paths["project"], ["embeddings"], project_out,
            {"embeddings": {0: "batch", 1: "frames"}, **{k: {0: "batch", 1: "frames"} for k in project_out}},
            model, "project")
    s_in, s_out = state_names(model)
    state = dec.init_state(1)
    dyn = {"x": {0: "batch"}, "cond": {0: "batch"}, "logits": {0: "batch"}}
    dyn.update({n: {1: "batch"} for n in s_in + s_out})
    args, names, step = (torch.zeros(1, 1), torch.zeros(1, dec.cond.out_features)), ["x", "cond"], _Step(dec)
    if cfg.exc_width:
        args, names, step = (*args, torch.zeros(1, cfg.exc_width)), [*names, "exc"], _ExcitedStep(dec)
        dyn["exc"] = {0: "batch"}
    _export(step, (*args, *state), paths["step"], [*names, *s_in], ["logits", *s_out], dyn, model, "decoder_step")
    manifest = {"format_version": FORMAT_VERSION, "config": cfg.to_dict(), "config_hash": cfg.hash(),
                "files": FILES, "state_shapes": [[p, "batch", w] for p, w in zip(dec.periods, dec.widths)]}
    atomic_write_bytes(out / "onnx.json", (json.dumps(manifest, indent=2) + "\n").encode())
    return paths


def check_onnx_dir(out_dir: str | os.PathLike) -> dict:
    """Read DIR/onnx.json, refusing another format version."""
    path = Path(out_dir) / "onnx.json"
    if not path.is_file():
        raise NsynthError(f"{out_dir}: not an ONNX export folder (no onnx.json)")
    doc = json.loads(path.read_text())
    if doc.get("format_version") != FORMAT_VERSION:
        raise NsynthError(f"{path}: format version {doc.get('format_version')!r}, this software reads {FORMAT_VERSION}")
    return doc
