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


def write_config(run: Path, cfg: ModelConfig, train: dict | None = None, sampling: dict | None = None) -> None:
    """Write RUN/config.json: its "sampling" section (how the model is best decoded) is `sampling`, else the one
    already there is kept."""
    doc = {"format_version": FORMAT_VERSION, "model": cfg.to_dict(), "config_hash": cfg.hash(), "train": train or {}}
    old = run / CONFIG
    if sampling is not None:
        doc["sampling"] = sampling
    elif old.is_file():
        try:
            sampling = json.loads(old.read_text()).get("sampling")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            sampling = None
        if sampling is not None:
            doc["sampling"] = sampling
    atomic_write_bytes(run / CONFIG, (json.dumps(doc, indent=2) + "\n").encode())


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
