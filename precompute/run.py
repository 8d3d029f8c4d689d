"""Run folders: the unit of reproducibility. RUN/config.json holds the resolved config beside RUN/model.pt."""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import torch

from nsynth.errors import NsynthError
from nsynth.fsutil import atomic_path, atomic_write_bytes
from precompute.config import ModelConfig
from precompute.model import WaveNetAutoencoder

FORMAT_VERSION = 1
CONFIG = "config.json"
WEIGHTS = "model.pt"


def write_config(run: Path, cfg: ModelConfig, train: dict | None = None) -> None:
    """Write RUN/config.json (a "sampling" section already there is kept)."""
    doc = {"format_version": FORMAT_VERSION, "model": cfg.to_dict(), "config_hash": cfg.hash(), "train": train or {}}
    old = run / CONFIG
    if old.is_file():
        try:
            sampling = json.loads(old.read_text()).get("sampling")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            sampling = None
        if sampling is not None:
            doc["sampling"] = sampling
    atomic_write_bytes(run / CONFIG, (json.dumps(doc, indent=2) + "\n").encode())


def resolve_sampling(run: str | os.PathLike, greedy: bool | None, temperature: float | None,
                     quantile: float | None = None) -> tuple[bool, float, float | None]:
    """How to decode with RUN -> (greedy, temperature, quantile). An explicit choice wins (greedy; else a
    temperature and/or a quantile); with none, RUN/config.json's "sampling" section ({"greedy": true},
    {"quantile": 0.5} or {"temperature": T}: how the model is best decoded), else sampling at temperature 1."""
    if greedy:
        return True, 1.0, None
    if temperature is not None or quantile is not None or greedy is False:
        return False, 1.0 if temperature is None else float(temperature), quantile
    _, doc = read_config(run)
    sampling = doc.get("sampling") or {}
    ok = isinstance(sampling, dict) and not set(sampling) - {"greedy", "temperature", "quantile"}
    greedy, temperature, quantile = (sampling.get("greedy", False), sampling.get("temperature", 1.0),
                                     sampling.get("quantile")) if ok else (None, None, None)
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    if not (ok and isinstance(greedy, bool) and number(temperature) and temperature > 0
            and (quantile is None or (number(quantile) and 0 < quantile < 1))):
        raise NsynthError(f"{Path(run) / CONFIG}: bad \"sampling\" section {sampling!r} (expected "
                          "{\"greedy\": true}, {\"quantile\": Q in (0, 1)} and/or {\"temperature\": T > 0})")
    return greedy, float(temperature), None if quantile is None else float(quantile)


def read_config(run: str | os.PathLike) -> tuple[ModelConfig, dict]:
    """-> (model config, the whole config document); clear errors for a missing or foreign run folder."""
    run = Path(run)
    path = run / CONFIG
    if not run.is_dir():
        raise NsynthError(f"{run}: no such run folder")
    if not path.is_file():
        raise NsynthError(f"{run}: not a run folder (no {CONFIG})")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise NsynthError(f"{path}: not valid JSON: {e}") from None
    if doc.get("format_version") != FORMAT_VERSION:
        raise NsynthError(f"{path}: format version {doc.get('format_version')!r}, this software reads {FORMAT_VERSION}")
    return ModelConfig.from_dict(doc.get("model", {}), source=str(path)), doc


def save_weights(run: str | os.PathLike, model: WaveNetAutoencoder, step: int = 0) -> None:
    run = Path(run)
    blob = {"format_version": FORMAT_VERSION, "config_hash": model.cfg.hash(), "step": step,
            "state_dict": {k: v.detach().float().cpu() for k, v in model.state_dict().items()}}
    with atomic_path(run / WEIGHTS) as tmp:
        torch.save(blob, tmp)


def new_run(run: str | os.PathLike, cfg: ModelConfig, seed: int = 0, train: dict | None = None) -> WaveNetAutoencoder:
    """Write an initialised run folder (config + weights at step 0)."""
    run = Path(run)
    if (run / WEIGHTS).exists():
        raise NsynthError(f"{run}: already holds a model; choose another folder")
    run.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = WaveNetAutoencoder(cfg)
    write_config(run, cfg, train)
    save_weights(run, model, 0)
    return model


def load_model(run: str | os.PathLike, device: str | torch.device = "cpu") -> WaveNetAutoencoder:
    """Load RUN's model in eval mode; refuses weights whose format or config do not match RUN/config.json."""
    run = Path(run)
    cfg, _ = read_config(run)
    path = run / WEIGHTS
    if not path.is_file():
        raise NsynthError(f"{run}: no {WEIGHTS} in the run folder")
    try:
        blob = torch.load(io.BytesIO(path.read_bytes()), map_location="cpu", weights_only=True)
    except Exception as e:
        raise NsynthError(f"{path}: unreadable checkpoint: {e}") from None
    if not isinstance(blob, dict) or blob.get("format_version") != FORMAT_VERSION:
        got = blob.get("format_version") if isinstance(blob, dict) else None
        raise NsynthError(f"{path}: checkpoint format version {got!r}, this software reads {FORMAT_VERSION}")
    if blob.get("config_hash") != cfg.hash():
        raise NsynthError(f"{path}: weights were made for another config than {run / CONFIG} "
                          f"(hash {blob.get('config_hash')} != {cfg.hash()})")
    model = WaveNetAutoencoder(cfg)
    try:
        model.load_state_dict(blob["state_dict"])
    except RuntimeError as e:
        raise NsynthError(f"{path}: weights do not fit the config: {e}") from None
    return model.to(device).eval()


def checkpoint_step(run: str | os.PathLike) -> int:
    blob = torch.load(Path(run) / WEIGHTS, map_location="cpu", weights_only=True)
    return int(blob.get("step", 0))
