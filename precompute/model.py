"""The WaveNet autoencoder of Engel et al. 2017 (DESIGN.md), channels-last: audio [B, T], features [B, T, C].

Every dilated convolution is written as one matmul over its concatenated taps, so the decoder's full
(teacher-forced) pass and its cached one-step pass run the same `Decoder._stack` code and differ only in where
the past taps come from: shifted copies of the whole sequence, or per-layer rings of past inputs.

Two optional excitation inputs of the decoder (not in the paper) give it the note's pitch and timbre as signals:
sines at the note's harmonics (cfg.harmonics), and a harmonic source whose amplitudes come from the embeddings
(cfg.source_bands; `Source`), trained to the notes' measured harmonic amplitudes (`WaveNetAutoencoder.losses`).
With cfg.source_noise the source also holds filtered noise (`noise_signal`), its band levels from the same MLP,
trained to the notes' power between harmonics (`noise_analysis`).
With cfg.source_residual the decoder's output adds to that source: its classes code the audio minus the source
(`residual_target`), and a generated sample is the source plus the drawn residual (`add_to_source`).
"""
from __future__ import annotations

import copy
import functools
import math
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from precompute.config import ModelConfig
from precompute.mulaw import (MU, codes_to_input, codes_to_target, mulaw_compress, mulaw_decode, mulaw_encode,
                              mulaw_expand)

Taps = Callable[[int, torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]


def shift(x: torch.Tensor, k: int) -> torch.Tensor:
    """x [B, T, C] -> x delayed by k samples (k > 0: x[t-k]; k < 0: x[t+|k|]), zero-filled."""
    if k > 0:
        return F.pad(x, (0, 0, k, 0))[:, : x.shape[1]]
    return F.pad(x, (0, 0, 0, -k))[:, -k:]


SPECTRAL_FMIN = 40.0     # Hz: the spectral branch's lowest mel band edge
SPECTRAL_HIDDEN = 128
SPECTRAL_SCALE = 0.1     # log-power is scaled by this on the way in


def mel_filterbank(n_fft: int, bands: int, sample_rate: int, fmin: float) -> torch.Tensor:
    """Triangular filters on the mel scale (HTK's formula) from fmin to Nyquist: [n_fft // 2 + 1, bands]."""
    mel = lambda f: 2595.0 * math.log10(1.0 + f / 700.0)  # noqa: E731
    edges = torch.linspace(mel(fmin), mel(sample_rate / 2), bands + 2, dtype=torch.float64)
    edges = 700.0 * (10 ** (edges / 2595.0) - 1.0)
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)[:, None]
    lo, mid, hi = edges[:-2], edges[1:-1], edges[2:]
    up, down = (freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)
    return torch.clamp(torch.minimum(up, down), min=0).float()


class SpectralBranch(nn.Module):
    """Audio input [B, T] (mu-law q/128) -> [B, T // hop, bottleneck]: each frame's log-mel spectrum (a 2·hop
    Hann window centred on the frame) through a small MLP. A direct view of the spectral envelope, which a small
    waveform stack learns slowly; its output layer starts at zero (a warm start computes what it did)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        n = 2 * cfg.hop
        self.hop = cfg.hop
        t = torch.arange(n, dtype=torch.float64)
        k = torch.arange(n // 2 + 1, dtype=torch.float64)
        window = torch.hann_window(n, periodic=True, dtype=torch.float64)[:, None]
        arg = 2 * math.pi * t[:, None] * k[None] / n
        self.register_buffer("basis", torch.cat([torch.cos(arg), torch.sin(arg)], 1).mul(window).float(),
                             persistent=False)  # [n, 2 (n/2 + 1)]: the windowed DFT
        self.register_buffer("mel", mel_filterbank(n, cfg.enc_spectral, cfg.sample_rate, SPECTRAL_FMIN),
                             persistent=False)
        self.net = nn.Sequential(nn.Linear(cfg.enc_spectral, SPECTRAL_HIDDEN), nn.ReLU(),
                                 nn.Linear(SPECTRAL_HIDDEN, cfg.bottleneck))
        with torch.no_grad():
            self.net[-1].weight.zero_()
            self.net[-1].bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hop, frames = self.hop, x.shape[1] // self.hop
        audio = torch.sign(x) * (torch.exp(x.abs() * math.log1p(MU)) - 1) / MU  # (expm1 does not export to ONNX)
        blocks = F.pad(audio, (hop // 2, hop // 2))[:, : (frames + 1) * hop].reshape(x.shape[0], frames + 1, hop)
        spec = torch.cat([blocks[:, :-1], blocks[:, 1:]], -1) @ self.basis  # [B, F, 2 (n/2 + 1)]
        half = spec.shape[-1] // 2
        power = spec[..., :half] ** 2 + spec[..., half:] ** 2
        return self.net(SPECTRAL_SCALE * torch.log(power @ self.mel + 1e-6))


class Encoder(nn.Module):
    """Non-causal dilated stack: audio input [B, T] (mu-law q/128) -> embeddings [B, T // hop, bottleneck];
    with cfg.enc_spectral, plus the SpectralBranch."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        c = cfg.enc_channels
        self.hop = cfg.hop
        self.dilations = cfg.dilations("enc")
        self.start = nn.Linear(3, c)  # taps t-1, t, t+1
        self.dilated = nn.ModuleList(nn.Linear(3 * c, c) for _ in self.dilations)  # taps t-d, t, t+d
        self.res = nn.ModuleList(nn.Linear(c, c) for _ in self.dilations)
        self.bottleneck = nn.Linear(c, cfg.bottleneck)
        self.spectral = SpectralBranch(cfg) if cfg.enc_spectral else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.unsqueeze(-1)
        en = self.start(torch.cat([shift(h, 1), h, shift(h, -1)], -1))
        for d, dil, res in zip(self.dilations, self.dilated, self.res):
            r = torch.relu(en)
            en = en + res(torch.relu(dil(torch.cat([shift(r, d), r, shift(r, -d)], -1))))
        en = self.bottleneck(en)
        frames = en.shape[1] // self.hop
        emb = en[:, : frames * self.hop].reshape(en.shape[0], frames, self.hop, -1).mean(2)
        return emb if self.spectral is None else emb + self.spectral(x)


def excitation_rates(pitch: torch.Tensor, harmonics: int, sample_rate: int) -> torch.Tensor:
    """MIDI pitches [B] -> angular rates [B, harmonics] float64, radians per sample of h * f0 for h = 1..harmonics;
    0 for a harmonic at or above Nyquist (its excitation is silent)."""
    f0 = 440.0 * 2 ** ((pitch.to(torch.float64) - 69) / 12)
    w = 2 * math.pi * f0[:, None] * torch.arange(1, harmonics + 1, dtype=torch.float64, device=pitch.device)
    w = w / sample_rate
    return torch.where(w < math.pi, w, torch.zeros_like(w))


def excitation(rates: torch.Tensor, t: torch.Tensor, phase: torch.Tensor | None = None) -> torch.Tensor:
    """rates [B, H] (excitation_rates), t [T] or [B, T] sample indices, phase [B, H] (default 0)
    -> sin(rates * t + phase) [B, T, H] float64."""
    t = t.to(torch.float64)
    arg = rates[:, None, :] * (t if t.dim() == 2 else t[None])[..., None]
    return torch.sin(arg if phase is None else arg + phase[:, None, :])


def aligned_phase(audio: torch.Tensor, rates: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """audio [B, T] at sample indices t [B, T] -> phases [B, H] that put each excitation harmonic in phase with
    that harmonic of the audio (its DFT phase there, plus pi/2 since the excitation is a sine); 0 where silent."""
    arg = rates[:, None, :] * t.to(torch.float64)[..., None]
    x = audio.to(torch.float64)[..., None]
    phase = torch.atan2(-(x * torch.sin(arg)).sum(1), (x * torch.cos(arg)).sum(1)) + math.pi / 2
    return torch.where(rates > 0, phase, torch.zeros_like(phase))


SOURCE_FMIN = 25.0      # Hz: the lowest envelope band's centre (the highest is at Nyquist)
SOURCE_FFT = 2048       # Hann window of the harmonic analysis that the source is trained to
SOURCE_FLOOR = 1e-3     # amplitudes more than 60 dB below a crop's strongest harmonic count as that level
SOURCE_INIT = math.log(1e-2)  # a new source starts at -40 dB on every harmonic


def source_rates(pitch: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """MIDI pitches [B] -> angular rates [B, H] of the source's harmonics, H = min(source_max, the most harmonics
    below Nyquist of any of these notes); 0 for a note's harmonics at or above Nyquist."""
    lowest = 440.0 * 2 ** ((float(pitch.min()) - 69) / 12)
    return excitation_rates(pitch, min(cfg.source_max, max(1, math.ceil(cfg.sample_rate / 2 / lowest))),
                            cfg.sample_rate)


class Source(nn.Module):
    """Harmonic source amplitudes from the embeddings: emb [B, F, E] -> parameters [B, F, bands + partials + noise]
    (`harmonic_log_amps` turns them into each harmonic's log-amplitude, `noise_log_amps` into each noise band's)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(cfg.bottleneck, cfg.source_hidden), nn.ReLU(),
                                 nn.Linear(cfg.source_hidden, cfg.source_bands + cfg.source_partials + cfg.source_noise))
        with torch.no_grad():
            self.net[-1].weight.mul_(0.1)
            self.net[-1].bias.fill_(0.0)
            self.net[-1].bias[: cfg.source_bands] = SOURCE_INIT

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.net(emb)


def harmonic_log_amps(params: torch.Tensor, rates: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """params [B, F, bands + partials] (Source), rates [B, H] -> natural-log amplitudes [B, F, H]: the envelope,
    linear in log-frequency between band centres log-spaced from SOURCE_FMIN to Nyquist, at each harmonic's
    frequency, plus the offsets of the first `partials` harmonics."""
    k, fmax = cfg.source_bands, cfg.sample_rate / 2
    hz = (rates * cfg.sample_rate / (2 * math.pi)).clamp(SOURCE_FMIN, fmax)
    pos = (torch.log(hz / SOURCE_FMIN) / math.log(fmax / SOURCE_FMIN) * (k - 1)).to(params.dtype)  # [B, H]
    lo = pos.floor().long().clamp(max=k - 2)
    frac = (pos - lo)[:, None, :]
    env = params[..., :k]
    idx = lo[:, None, :].expand(-1, params.shape[1], -1)
    out = env.gather(2, idx) * (1 - frac) + env.gather(2, idx + 1) * frac
    p = min(cfg.source_partials, rates.shape[1])
    return torch.cat([out[..., :p] + params[..., k: k + p], out[..., p:]], -1)


def _harmonics(theta: torch.Tensor, n: int):
    """theta [...] float64 -> (sin h theta, cos h theta) for h = 1..n, by angle addition (two transcendentals in
    all, not 2n: a note's hundreds of harmonics cost little)."""
    s1, c1 = torch.sin(theta), torch.cos(theta)
    s, c = s1, c1
    for _ in range(n):
        yield s, c
        s, c = s * c1 + c * s1, c * c1 - s * s1


def harmonic_phases(audio: torch.Tensor, rates: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """aligned_phase for harmonics h = 1..H of rates[:, 0] (rates [B, H] as source_rates gives them), computed
    by angle addition: audio [B, T] at sample indices t [B, T] -> phases [B, H]."""
    x = audio.to(torch.float64)
    theta = rates[:, :1] * t.to(torch.float64)
    parts = [torch.stack([(x * s).sum(1), (x * c).sum(1)], -1) for s, c in _harmonics(theta, rates.shape[1])]
    dots = torch.stack(parts, 1)  # [B, H, 2]
    phase = torch.atan2(-dots[..., 0], dots[..., 1]) + math.pi / 2
    return torch.where(rates > 0, phase, torch.zeros_like(phase))


def _frame_lerp(t: torch.Tensor, frames: int, hop: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample indices t [B, T] float64 -> (the frame before [B, T], the frame after, the fraction of the way):
    frame f's centre is at f * hop + hop / 2; held beyond the first and last of `frames`."""
    pos = ((t - hop / 2) / hop).clamp(0, frames - 1)
    lo = pos.floor().clamp(max=max(frames - 2, 0))
    frac = pos - lo
    lo = lo.long()
    return lo, (lo + 1).clamp(max=frames - 1), frac


def source_signal(log_amps: torch.Tensor, rates: torch.Tensor, t: torch.Tensor, hop: int,
                  phase: torch.Tensor | None = None) -> torch.Tensor:
    """log_amps [B, F, H] per frame, rates [B, H] (harmonics h = 1..H of rates[:, 0], as source_rates gives them),
    sample indices t [T] or [B, T], phase [B, H] (default 0) -> the source [B, T] float64: the sum over h of
    A_h(t) sin(h rates[:, 0] t + phase_h), each amplitude linear between frame centres (held beyond the first and
    last); harmonics with rate 0 are silent.

    Written as (1 - frac) S_lo + frac S_hi, where S_lo and S_hi are the harmonic sums with the amplitudes of the
    frames before and after t, each summed by Clenshaw's recurrence (b_h = a_h + 2 cos(theta) b_h+1 - b_h+2;
    sum of a_h sin(h theta) = b_1 sin(theta), of a_h cos(h theta) = b_1 cos(theta) - b_2): two transcendentals per
    note and sample, then three operations on [B, 2T] per harmonic (a gather of its amplitudes, two updates)."""
    t = t.to(torch.float64)
    t = t if t.dim() == 2 else t[None].expand(len(rates), -1)
    lo, hi, frac = _frame_lerp(t, log_amps.shape[1], hop)
    first, last = int(lo.min()), int(hi.max())  # only the frames this span of t reads
    amps = log_amps[:, first:last + 1].to(torch.float64).exp() * (rates > 0)[:, None, :]  # [B, F', H]
    if phase is not None:  # sin(h theta + p) = cos(p) sin(h theta) + sin(p) cos(h theta)
        amps = torch.stack([amps * torch.cos(phase)[:, None, :], amps * torch.sin(phase)[:, None, :]])
    coef = (amps if phase is not None else amps[None]).permute(3, 0, 1, 2).contiguous()  # [H, C, B, F']
    idx = torch.cat([lo - first, hi - first], 1)[None].expand(coef.shape[1], -1, -1)  # [C, B, 2T]: frames before, after
    theta = rates[:, :1] * t
    alpha = (2 * torch.cos(theta)).repeat(1, 2)  # [B, 2T]
    b0, b1, b2 = (torch.zeros(idx.shape, dtype=torch.float64, device=t.device) for _ in range(3))
    for h in range(coef.shape[0] - 1, -1, -1):
        torch.gather(coef[h], 2, idx, out=b0)
        b0.addcmul_(alpha, b1).sub_(b2)
        b0, b1, b2 = b2, b0, b1
    sums = b1[0] * torch.sin(theta).repeat(1, 2)  # [B, 2T]
    if phase is not None:
        sums += b1[1] * (alpha / 2) - b2[1]
    n = t.shape[1]
    return torch.lerp(sums[:, :n], sums[:, n:], frac)


def _analysis_frames(audio: torch.Tensor, hop: int) -> tuple[torch.Tensor, torch.Tensor, slice]:
    """audio [B, T] -> (SOURCE_FFT-sample segments [B, F', N] centred on each frame whose window fits inside the
    audio, the Hann window [N], those frames as a slice)."""
    half = SOURCE_FFT // 2
    first = -(-(half - hop // 2) // hop)
    last = (audio.shape[1] - half - hop // 2) // hop
    if last < first:
        raise ValueError(f"crops of {audio.shape[1]} samples are too short for the source's "
                         f"{SOURCE_FFT}-sample analysis")
    starts = torch.arange(first, last + 1) * hop + hop // 2 - half
    w = torch.hann_window(SOURCE_FFT, periodic=False, dtype=audio.dtype, device=audio.device)
    return audio[:, starts[:, None] + torch.arange(SOURCE_FFT)], w, slice(first, last + 1)


def harmonic_analysis(audio: torch.Tensor, rates: torch.Tensor, hop: int) -> tuple[torch.Tensor, slice]:
    """audio [B, T], rates [B, H] -> (amplitudes [B, F', H] of each harmonic in a SOURCE_FFT Hann window centred
    on each frame whose window fits inside the audio, those frames as a slice): 2 |DTFT at the harmonic| / sum(w),
    the amplitude A of a steady A sin at that frequency."""
    segs, w, frames = _analysis_frames(audio, hop)
    arg = rates.to(audio.dtype)[:, None, :] * torch.arange(SOURCE_FFT, dtype=audio.dtype, device=audio.device)[:, None]
    re = torch.bmm(segs * w, torch.cos(arg))
    im = torch.bmm(segs * w, torch.sin(arg))
    return 2 * torch.sqrt(re ** 2 + im ** 2) / w.sum(), frames


NOISE_LOW = 150.0       # Hz: the lowest noise band is 0 - NOISE_LOW; the others are log-spaced up to Nyquist
NOISE_TABLE = 1 << 16   # samples of each band's fixed noise, repeated (4.1 s at 16 kHz)
NOISE_GUARD = 0.25      # bins within this fraction of f0 of a harmonic are not counted as noise
NOISE_INIT = math.log(1e-3)  # a noise band's log-amplitude when its parameter is 0 (a new one: -60 dB)
EULER_GAMMA = 0.5772156649015329


def noise_edges(bands: int, sample_rate: int) -> torch.Tensor:
    """-> the noise bands' edges in Hz [bands + 1]: 0, NOISE_LOW, log-spaced to Nyquist."""
    edges = NOISE_LOW * (sample_rate / 2 / NOISE_LOW) ** (torch.arange(bands, dtype=torch.float64) / (bands - 1))
    edges[-1] = sample_rate / 2
    return torch.cat([torch.zeros(1, dtype=torch.float64), edges])


def _band_log_power(power: torch.Tensor, noise_bins: torch.Tensor, bands: int, sample_rate: int):
    """power [..., N/2+1] of SOURCE_FFT frames, noise_bins [..., N/2+1] (bool, the bins that count) -> (mean log
    power over each band's counted bins [..., bands], bins counted [..., bands])."""
    freqs = torch.fft.rfftfreq(SOURCE_FFT, 1 / sample_rate, dtype=torch.float64)
    member = F.one_hot(torch.bucketize(freqs, noise_edges(bands, sample_rate)[1:-1], right=True), bands)
    member = member.to(power.dtype).to(power.device)  # [N/2+1, bands]
    mask = noise_bins.to(power.dtype)
    count = mask @ member
    return (power.clamp_min(1e-20).log() * mask) @ member / count.clamp_min(1), count


@functools.lru_cache(maxsize=4)
def noise_bank(bands: int, sample_rate: int) -> torch.Tensor:
    """-> tables [bands, NOISE_TABLE] float64: white noise from a fixed seed, each limited to its band (noise_edges)
    and scaled to unit RMS."""
    gen = torch.Generator().manual_seed(0)
    spec = torch.fft.rfft(torch.randn(NOISE_TABLE, generator=gen, dtype=torch.float64))
    freqs = torch.fft.rfftfreq(NOISE_TABLE, 1 / sample_rate, dtype=torch.float64)
    edges = noise_edges(bands, sample_rate)
    tables = torch.stack([torch.fft.irfft(spec * ((freqs >= lo) & (freqs < hi)), NOISE_TABLE)
                          for lo, hi in zip(edges[:-1], edges[1:] + (edges[1:] == sample_rate / 2))])
    return tables / tables.square().mean(1, keepdim=True).sqrt()


def noise_log_amps(params: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """params [B, F, bands + partials + noise] (Source) -> natural-log amplitudes [B, F, noise] of the noise bands."""
    return params[..., cfg.source_bands + cfg.source_partials:] + NOISE_INIT


def noise_analysis(audio: torch.Tensor, rates: torch.Tensor, cfg: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """audio [B, T], rates [B, H] (source_rates) -> (log-amplitudes [B, F', noise] of each noise band that, given to
    noise_signal, match the audio's mean log power between the harmonics in that band, in the frames
    harmonic_analysis reads; which bands had such bins [B, noise] (bool))."""
    segs, w, _ = _analysis_frames(audio, cfg.hop)
    power = torch.fft.rfft(segs * w).abs().square()  # [B, F', N/2+1]
    f0 = (rates[:, :1] * cfg.sample_rate / (2 * math.pi)).to(audio.dtype)  # [B, 1]
    freqs = torch.fft.rfftfreq(SOURCE_FFT, 1 / cfg.sample_rate, dtype=audio.dtype).to(audio.device)
    h = torch.round(freqs / f0)
    noise_bins = ~((h >= 1) & ((freqs - h * f0).abs() <= NOISE_GUARD * f0))  # [B, N/2+1]
    level, count = _band_log_power(power, noise_bins[:, None, :], cfg.source_noise, cfg.sample_rate)
    # Noise of power a^2 spread over a band's share of the spectrum has power a^2 sum(w^2) / share in each bin,
    # whose log (the bin's power is exponentially distributed) has mean log of that minus Euler's gamma.
    share = torch.diff(noise_edges(cfg.source_noise, cfg.sample_rate)) / (cfg.sample_rate / 2)
    per_bin = torch.log(w.square().sum().double() / share) - EULER_GAMMA
    return 0.5 * (level - per_bin.to(level)), count[:, 0] > 0


def noise_signal(log_amps: torch.Tensor, t: torch.Tensor, hop: int, sample_rate: int) -> torch.Tensor:
    """log_amps [B, F, K] per frame, sample indices t [B, T] -> the noise [B, T] float64: the sum over bands k of
    A_k(t) table_k[t mod NOISE_TABLE] (noise_bank), each amplitude linear between frame centres as in
    source_signal."""
    tables = noise_bank(log_amps.shape[-1], sample_rate).to(t.device)
    lo, hi, frac = _frame_lerp(t.to(torch.float64), log_amps.shape[1], hop)
    amps = log_amps.to(torch.float64).exp()
    b = torch.arange(len(t), device=t.device)[:, None]
    a = torch.lerp(amps[b, lo], amps[b, hi], frac[..., None])  # [B, T, K]
    return (a * tables[:, t.long() % NOISE_TABLE].permute(1, 2, 0)).sum(-1)


class SourceLevels(NamedTuple):
    """A source's levels per frame, linear: harmonic amplitudes [B, F, H] (harmonics 1..H of each note) and noise
    band amplitudes [B, F, noise] (None without noise bands)."""

    harmonics: torch.Tensor
    noise: torch.Tensor | None

    def part(self, index) -> "SourceLevels":
        """The levels of the notes at `index` (a slice or index tensor of B)."""
        return SourceLevels(self.harmonics[index], None if self.noise is None else self.noise[index])


class NoteExcitation:
    """What the decoder's excitation needs of a batch of notes, computed once per batch: the sines' rates
    [B, harmonics] and the source's rates [B, H] and log-amplitudes [B, F, H] (None without a source), and its
    noise bands' log-amplitudes [B, F, source_noise] (None without noise). `levels`, for a source: its levels
    given instead of predicted (`given`)."""

    def __init__(self, cfg: ModelConfig, pitch: torch.Tensor, source_params: torch.Tensor | None = None,
                 levels: SourceLevels | None = None):
        self.cfg = cfg
        self.rates = excitation_rates(pitch, cfg.harmonics, cfg.sample_rate)
        self.src_rates = self.log_amps = self.noise_log_amps = None
        if cfg.source_bands:
            if source_params is None:
                raise ValueError("a decoder with a harmonic source needs the notes' embeddings")
            self.src_rates = source_rates(pitch, cfg).to(source_params.device)
            self.log_amps = harmonic_log_amps(source_params.detach(), self.src_rates, cfg)
            if cfg.source_noise:
                self.noise_log_amps = noise_log_amps(source_params.detach(), cfg)
            if levels is not None:
                self._take(levels)

    def at(self, t: torch.Tensor, align: torch.Tensor | None = None) -> torch.Tensor:
        """Sample indices t [T] or [B, T] -> the excitation [B, T, exc_width] float64: from phase 0 (generation),
        or each harmonic in phase with the audio `align` [B, T] (teacher forcing). The source is mu-law companded,
        as the decoder's own input is, so that following it is the identity to the decoder."""
        if t.dim() == 2 or align is not None:
            t = t if t.dim() == 2 else t[None].expand(len(self.rates), -1)
        phase = None if align is None else aligned_phase(align, self.rates, t)
        parts = [excitation(self.rates, t, phase)]
        if self.log_amps is not None:
            parts.append(mulaw_compress(self.source(t, align))[..., None])
        return torch.cat(parts, -1)

    def analysed(self, audio: torch.Tensor, whole: bool = False) -> "NoteExcitation":
        """The audio [B, T] of these notes -> the same notes with the source's amplitudes taken, in the frames
        harmonic_analysis reads, from the audio itself: its harmonics' amplitudes, and its noise bands' levels where
        a band has bins between harmonics (noise_analysis); the prediction elsewhere. Teacher forcing with the true
        source, as neural source-filter vocoders train on the true f0. whole: the audio [B, F * hop] is the whole
        of each note, silence before and after it, so every frame is read (the audio zero-padded): a render's
        corners."""
        note = copy.copy(self)
        pad = 0
        if whole:
            hop = self.cfg.hop
            if audio.shape[1] != self.log_amps.shape[1] * hop:
                raise ValueError(f"whole notes of {self.log_amps.shape[1]} frames are "
                                 f"{self.log_amps.shape[1] * hop} samples, got {audio.shape[1]}")
            pad = -(-(SOURCE_FFT // 2 - hop // 2) // hop) * hop  # the frames before the first that fits
            audio = F.pad(audio, (pad, pad))
        with torch.no_grad():
            amps, frames = harmonic_analysis(audio.float(), self.src_rates.float(), self.cfg.hop)
            frames = slice(frames.start - pad // self.cfg.hop, frames.stop - pad // self.cfg.hop)
            note.log_amps = self.log_amps.clone()
            note.log_amps[:, frames] = amps.clamp_min(1e-12).log().to(self.log_amps)
            if self.noise_log_amps is not None:
                level, seen = noise_analysis(audio.float(), self.src_rates, self.cfg)
                note.noise_log_amps = self.noise_log_amps.clone()
                note.noise_log_amps[:, frames] = torch.where(seen[:, None, :], level.to(self.noise_log_amps),
                                                             self.noise_log_amps[:, frames])
        return note

    def levels(self) -> SourceLevels:
        """-> the source's levels, as `given` takes them."""
        return SourceLevels(self.log_amps.exp(), None if self.noise_log_amps is None else self.noise_log_amps.exp())

    def given(self, levels: SourceLevels) -> "NoteExcitation":
        """The same notes with the source's levels given instead of predicted (a render's, interpolated between
        its corners' analysed ones): harmonic amplitudes [B, F, >= H] (the first H are read) and noise band
        amplitudes [B, F, noise] (None: as predicted)."""
        note = copy.copy(self)
        note._take(levels)
        return note

    def _take(self, levels: SourceLevels) -> None:
        self.log_amps = levels.harmonics[..., :self.src_rates.shape[1]].clamp_min(1e-12).log().to(self.log_amps)
        if levels.noise is not None and self.noise_log_amps is not None:
            self.noise_log_amps = levels.noise.clamp_min(1e-12).log().to(self.noise_log_amps)

    def source(self, t: torch.Tensor, align: torch.Tensor | None = None) -> torch.Tensor:
        """Sample indices t [T] or [B, T] -> the source [B, T] float64 (harmonics from phase 0, or in phase with
        `align` [B, T]; plus the noise bands)."""
        t = t if t.dim() == 2 else t[None].expand(len(self.src_rates), -1)
        phase = None if align is None else harmonic_phases(align, self.src_rates, t)
        source = source_signal(self.log_amps, self.src_rates, t, self.cfg.hop, phase)
        if self.noise_log_amps is not None:
            source += noise_signal(self.noise_log_amps, t, self.cfg.hop, self.cfg.sample_rate)
        return source


def source_of(exc: torch.Tensor) -> torch.Tensor:
    """The excitation [..., exc_width] -> the harmonic source it carries [...] (its last channel, expanded from
    mu-law): what a residual decoder's output adds to."""
    return mulaw_expand(exc[..., -1])


def residual_target(codes: torch.Tensor, exc: torch.Tensor) -> torch.Tensor:
    """A residual decoder's training targets: the audio's codes [B, T] and the excitation [B, T, exc_width] in
    phase with it -> class indices [B, T] of the audio minus the source, mu-law coded."""
    return codes_to_target(mulaw_encode(mulaw_decode(codes) - source_of(exc)))


def add_to_source(residual: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """A residual decoder's drawn codes [...] in [-128, 127] and the source at those samples [...] -> the codes of
    the generated audio (source + residual, clipped to [-1, 1])."""
    return mulaw_encode(source.to(torch.float32) + mulaw_decode(residual))


class Decoder(nn.Module):
    """Causal WaveNet conditioned on embeddings held constant over each hop of samples; with cfg.exc_width, its
    input at sample t also holds the excitation at t (NoteExcitation: sines at the note's harmonics, the
    harmonic source)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        r, s = cfg.dec_channels, cfg.skip_channels
        self.cfg = cfg
        self.dilations = cfg.dilations("dec")
        self.start = nn.Linear(3 + cfg.exc_width, r)  # causal taps t-2, t-1, t [+ the excitation at t]
        self.skip_start = nn.Linear(r, s)
        self.dilated = nn.ModuleList(nn.Linear(3 * r, 2 * r) for _ in self.dilations)  # taps t-2d, t-d, t
        self.res_skip = nn.ModuleList(nn.Linear(r, r + s) for _ in self.dilations)  # residual and skip 1x1, fused
        # All embedding projections (cond_map_1..L and cond_map_out1) in one matmul, done once per frame.
        self.cond = nn.Linear(cfg.bottleneck, len(self.dilations) * 2 * r + s)
        self.out1 = nn.Linear(s, s)
        self.logits = nn.Linear(s, cfg.quant)
        self.source = Source(cfg) if cfg.source_bands else None

    @property
    def periods(self) -> list[int]:
        """Ring length per stage: stage 0 is the start conv (dilation 1), stage i+1 is dilated layer i."""
        return [2] + [2 * d for d in self.dilations]

    @property
    def widths(self) -> list[int]:
        return [1] + [self.cfg.dec_channels] * len(self.dilations)

    def project(self, emb: torch.Tensor) -> torch.Tensor:
        """emb [B, F, bottleneck] -> per-frame conditioning [B, F, cond_width]."""
        return self.cond(emb)

    def _check_exc(self, exc: torch.Tensor | None) -> None:
        if (exc is None) != (self.cfg.exc_width == 0):
            raise ValueError(f"a decoder with {self.cfg.exc_width} excitation channels takes "
                             f"{'an excitation' if self.cfg.exc_width else 'no excitation'}")

    def _stack(self, x: torch.Tensor, cond: Callable[[slice], torch.Tensor], taps: Taps,
               exc: torch.Tensor | None) -> torch.Tensor:
        """x [B, T] decoder input; cond(channel slice) -> that slice of the conditioning, [B, T, n] (or [B, 1, n]);
        taps(stage, h) -> (h[t-2d], h[t-d]); exc [B, T, exc_width] or None. -> logits [B, T, Q]."""
        self._check_exc(exc)
        r = self.cfg.dec_channels
        h = x.unsqueeze(-1)
        p2, p1 = taps(0, h)
        h = self.start(torch.cat([p2, p1, h] if exc is None else [p2, p1, h, exc.to(h.dtype)], -1))
        skip = self.skip_start(h)
        for i, (dil, res_skip) in enumerate(zip(self.dilated, self.res_skip)):
            p2, p1 = taps(i + 1, h)
            z = dil(torch.cat([p2, p1, h], -1)) + cond(slice(2 * r * i, 2 * r * (i + 1)))
            rs = res_skip(torch.sigmoid(z[..., :r]) * torch.tanh(z[..., r:]))
            h = h + rs[..., :r]
            skip = skip + rs[..., r:]
        out = torch.relu(self.out1(torch.relu(skip)) + cond(slice(2 * r * len(self.dilated), None)))
        return self.logits(out)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, exc: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced pass. x [B, T] (input already shifted right by one); emb [B, F, E], F*hop >= T;
        exc [B, T, exc_width] (see excitation) when cfg.exc_width."""
        frames, hop, t = self.project(emb), self.cfg.hop, x.shape[1]
        periods = self.periods
        return self._stack(x, lambda c: frames[..., c].repeat_interleave(hop, dim=1)[:, :t],
                           lambda k, h: (shift(h, periods[k]), shift(h, periods[k] // 2)), exc)

    def note_excitation(self, pitch: torch.Tensor | None, emb: torch.Tensor | None = None,
                        levels: SourceLevels | None = None) -> NoteExcitation | None:
        """MIDI pitches [B] (and embeddings [B, F, E], for a source; its levels, when given rather than predicted)
        -> their NoteExcitation; None without one."""
        if not self.cfg.exc_width:
            return None
        if pitch is None:
            raise ValueError(f"a decoder with {self.cfg.exc_width} excitation channels needs the notes' pitches")
        pitch = torch.as_tensor(pitch).to(self.start.weight.device)
        return NoteExcitation(self.cfg, pitch, None if self.source is None or emb is None else self.source(emb),
                              levels)

    def excitation(self, pitch: torch.Tensor | None, t: torch.Tensor, align: torch.Tensor | None = None,
                   emb: torch.Tensor | None = None) -> torch.Tensor | None:
        """MIDI pitches [B] and sample indices [T] or [B, T] (and the embeddings [B, F, E] for a source) -> the
        excitation [B, T, exc_width] (None without one): from phase 0 (generation), or in phase with the audio
        `align` [B, T] (teacher forcing)."""
        note = self.note_excitation(pitch, emb)
        return None if note is None else note.at(t, align)

    # --- cached one-step pass -------------------------------------------------------------------------------
    def init_state(self, batch: int, device=None, dtype=torch.float32) -> list[torch.Tensor]:
        """Zeroed rings of past inputs, one per stage: [period, B, width] (time-major, so a read is contiguous)."""
        return [torch.zeros(p, batch, w, device=device, dtype=dtype) for p, w in zip(self.periods, self.widths)]

    def step(self, x: torch.Tensor, cond: torch.Tensor, state: list[torch.Tensor], exc: torch.Tensor | None = None):
        """Functional step (ONNX-exportable). x [B, 1]; cond [B, cond_width] for the current frame;
        state: rings [period, B, width] holding inputs t-period..t-1 oldest first; exc [B, exc_width] at t
        when cfg.exc_width. -> (logits [B, Q], new state)."""
        new_state: list[torch.Tensor] = []

        def taps(k: int, h: torch.Tensor):
            ring = state[k]
            d = ring.shape[0] // 2
            new_state.append(torch.cat([ring[1:], h.transpose(0, 1)], 0))
            return ring[0:1].transpose(0, 1), ring[d: d + 1].transpose(0, 1)

        cond = cond.unsqueeze(1)
        logits = self._stack(x, lambda c: cond[..., c], taps, None if exc is None else exc.unsqueeze(1))
        return logits[:, 0], new_state


class WaveNetAutoencoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    def forward(self, codes: torch.Tensor, pitch: torch.Tensor | None = None,
                noise: torch.Tensor | None = None, analysed: bool = False) -> torch.Tensor:
        """codes [B, T] mu-law in [-128, 127], T a multiple of hop -> logits [B, T, Q] predicting `targets`.
        With an excitation: pitch [B] (MIDI); it is put in phase with each harmonic of the codes (a generated note
        instead starts its excitation at phase 0 and follows it). noise [B, T]: added to the decoder's past-sample
        input only (training with injected noise, as FFTNet: the decoder learns not to trust its own past samples
        blindly, since in generation they are its own noisy draws). analysed: the source's amplitudes are the
        codes' own where analysed (NoteExcitation.analysed), not the source's prediction."""
        return self._teacher_forced(codes, pitch, noise, analysed)[0]

    def _teacher_forced(self, codes, pitch, noise, analysed=False):
        """forward's pass -> (logits [B, T, Q], embeddings [B, T // hop, E], excitation [B, T, exc_width] or None)."""
        x = codes_to_input(codes)
        emb = self.encoder(x)
        audio = mulaw_decode(codes)
        note = self.decoder.note_excitation(pitch, emb)
        if analysed and note is not None and note.log_amps is not None:
            note = note.analysed(audio)
        exc = None if note is None else note.at(torch.arange(codes.shape[1], device=codes.device), align=audio)
        past = shift(x.unsqueeze(-1), 1).squeeze(-1)
        return self.decoder(past if noise is None else past + noise, emb, exc), emb, exc

    def targets(self, codes: torch.Tensor, exc: torch.Tensor | None) -> torch.Tensor:
        """The decoder's class targets [B, T] for crops codes [B, T] (exc: their excitation in phase with them):
        the codes, or for a residual decoder the audio minus the source (residual_target)."""
        return residual_target(codes, exc) if self.cfg.source_residual else codes_to_target(codes)

    def losses(self, codes: torch.Tensor, pitch: torch.Tensor | None = None,
               noise: torch.Tensor | None = None, analysed: bool = False) -> dict[str, torch.Tensor]:
        """Training losses of a batch of crops (forward's arguments): "ce", the decoder's cross-entropy (nats per
        sample), and with a source "source" (and "noise"; source_losses)."""
        logits, emb, exc = self._teacher_forced(codes, pitch, noise, analysed)
        out = {"ce": F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                     self.targets(codes, exc).reshape(-1))}
        if self.decoder.source is not None:
            out.update(self.source_losses(codes, pitch, emb))
        return out

    def source_losses(self, codes: torch.Tensor, pitch: torch.Tensor,
                      emb: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """losses()'s source terms alone: crops codes [B, T], pitch [B] (emb [B, T // hop, E]: their embeddings,
        when already computed) -> "source", the mean |log-amplitude error| of the source's harmonics against the
        crops' own (harmonic_analysis), and with cfg.source_noise "noise", that of its noise bands against the
        crops' power between harmonics (noise_analysis); both floored SOURCE_FLOOR below the crop's strongest
        harmonic."""
        emb = self.encode(codes) if emb is None else emb
        audio = mulaw_decode(codes).float()
        rates = source_rates(pitch, self.cfg).to(audio.device)
        measured, frames = harmonic_analysis(audio, rates, self.cfg.hop)
        params = self.decoder.source(emb[:, frames])
        predicted = harmonic_log_amps(params, rates, self.cfg)
        floor = torch.log(measured.amax((1, 2), keepdim=True).clamp_min(1e-4) * SOURCE_FLOOR)

        def error(pred, target):
            return (torch.logaddexp(pred, floor) - torch.logaddexp(target, floor)).abs()

        live = (rates > 0)[:, None, :].expand_as(predicted)
        out = {"source": error(predicted, measured.clamp_min(1e-12).log())[live].mean()}
        if self.cfg.source_noise:
            target, seen = noise_analysis(audio, rates, self.cfg)
            out["noise"] = error(noise_log_amps(params, self.cfg), target)[seen[:, None, :].expand_as(target)].mean()
        return out

    def encode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, T] -> embeddings [B, T // hop, E]."""
        return self.encoder(codes_to_input(codes))
