"""Model configuration presets; the resolved config is saved next to every checkpoint."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields, replace

from nsynth.errors import NsynthError


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of the WaveNet autoencoder (Engel et al. 2017). Dilation of layer i is 2**(i % stack)."""

    preset: str = "nsynth"
    sample_rate: int = 16000
    hop: int = 512  # samples per embedding frame
    bottleneck: int = 16  # embedding channels
    quant: int = 256  # mu-law classes
    kernel: int = 3
    enc_layers: int = 30
    enc_channels: int = 128
    enc_stack: int = 10
    # Spectral branch of the encoder (not in the paper): each frame's log-mel spectrum in enc_spectral bands,
    # through a small MLP, added to its embedding (0: the paper's waveform encoder alone).
    enc_spectral: int = 0
    dec_layers: int = 30
    dec_channels: int = 512  # residual width R; the dilated conv makes 2R (gate halves)
    dec_stack: int = 10
    skip_channels: int = 256
    # Sine excitation (a neural source-filter input, not in the paper): the decoder also sees sin(h * 2pi f0 t)
    # for h = 1..harmonics at the note's pitch f0 (harmonics above Nyquist are 0). 0: the paper's decoder.
    harmonics: int = 0
    # Harmonic source (DDSP-like, not in the paper): with source_bands > 0 the decoder's input also holds one more
    # channel, a sum of every harmonic of f0 below Nyquist (at most source_max) whose amplitudes come from the
    # embeddings through a small MLP (source_hidden wide): a log-amplitude envelope over source_bands log-spaced
    # bands plus an offset for each of the first source_partials harmonics. It is trained to the notes' own
    # harmonic amplitudes, so the embedding must carry the timbre and the decoder is given it as a signal.
    source_bands: int = 0
    source_partials: int = 16
    source_hidden: int = 128
    source_max: int = 256
    # With a source, source_residual makes the decoder add to it (as a neural source-filter's residual filter):
    # it predicts the audio minus the source (mu-law coded), and each generated sample is the source plus the
    # predicted residual. Without it the decoder re-synthesises the whole signal, the source as one input.
    source_residual: bool = False
    # With a source, source_noise > 0 adds filtered noise to it (DDSP's noise synthesiser; what bows, breath and
    # hammers leave between the harmonics): that many bands (0 - 150 Hz, then log-spaced to Nyquist), each a fixed
    # band-limited noise whose per-frame level the same MLP predicts, trained to the notes' power between harmonics.
    source_noise: int = 0

    def dilations(self, which: str = "dec") -> list[int]:
        layers, stack = (self.dec_layers, self.dec_stack) if which == "dec" else (self.enc_layers, self.enc_stack)
        return [2 ** (i % stack) for i in range(layers)]

    @property
    def receptive_field(self) -> int:
        """Decoder receptive field in samples (start conv + dilated stack)."""
        return 1 + (self.kernel - 1) * (1 + sum(self.dilations("dec")))

    @property
    def exc_width(self) -> int:
        """Channels of the decoder's excitation input (the sines, then the harmonic source); 0: none."""
        return self.harmonics + (1 if self.source_bands else 0)

    def to_dict(self) -> dict:
        """The fields; `harmonics`, `enc_spectral` and the source's only when set, so an older config (and hash) is as it was."""
        d = asdict(self)
        if not d["harmonics"]:
            del d["harmonics"]
        if not d["enc_spectral"]:
            del d["enc_spectral"]
        if not d["source_bands"]:
            for k in ("source_bands", "source_partials", "source_hidden", "source_max"):
                del d[k]
        for k in ("source_residual", "source_noise"):
            if not d[k]:
                del d[k]
        return d

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise NsynthError(f"{source}: unknown model config keys {sorted(unknown)}")
        try:
            cfg = cls(**d)
        except TypeError as e:
            raise NsynthError(f"{source}: bad model config: {e}") from None
        if min(cfg.harmonics, cfg.source_bands, cfg.source_partials, cfg.source_max, cfg.enc_spectral,
               cfg.source_noise) < 0 or cfg.source_bands == 1 or cfg.source_noise == 1:
            raise NsynthError(f"{source}: harmonics {cfg.harmonics}, source_bands {cfg.source_bands} (0 or >= 2), "
                              f"source_partials {cfg.source_partials}, source_max {cfg.source_max}, "
                              f"enc_spectral {cfg.enc_spectral}, source_noise {cfg.source_noise} (0 or >= 2): "
                              "bad values")
        for k in ("source_residual", "source_noise"):
            if getattr(cfg, k) and not cfg.source_bands:
                raise NsynthError(f"{source}: {k} needs a harmonic source (source_bands >= 2)")
        if cfg.kernel != 3:
            raise NsynthError(f"{source}: only kernel 3 is supported, got {cfg.kernel}")
        return cfg

    def hash(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


PRESETS: dict[str, ModelConfig] = {
    # The paper's h512_bo16: ~59.8 M decoder + ~2.0 M encoder parameters.
    "nsynth": ModelConfig(preset="nsynth"),
    # Benchmarks and the CPU-trainable middle ground.
    "small": ModelConfig(preset="small", enc_layers=20, enc_channels=64, dec_layers=20, dec_channels=128,
                         skip_channels=128),
    # The bundled model: learns on 2 CPU cores in hours; the sine excitation gives it the note's pitch, the
    # harmonic source its timbre, the encoder's spectral branch a direct view of that timbre.
    "compact": ModelConfig(preset="compact", enc_layers=10, enc_channels=32, enc_stack=10, enc_spectral=48,
                           dec_layers=20, dec_channels=48, dec_stack=10, skip_channels=64, harmonics=8,
                           source_bands=48),
    # Tests.
    "tiny": ModelConfig(preset="tiny", enc_layers=4, enc_channels=16, enc_stack=4, dec_layers=6, dec_channels=16,
                        dec_stack=3, skip_channels=16),
}


def preset(name: str, **overrides) -> ModelConfig:
    if name not in PRESETS:
        raise NsynthError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return replace(PRESETS[name], **overrides)
