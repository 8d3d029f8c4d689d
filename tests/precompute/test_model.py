import numpy as np
import pytest
import torch

from precompute.config import PRESETS, ModelConfig, preset
from precompute.generate import generate
from precompute.model import SourceLevels, WaveNetAutoencoder, shift, source_signal
from precompute.mulaw import codes_to_input, mulaw_decode, mulaw_encode
from precompute.sampling import GREEDY


def test_mulaw_matches_the_formula_and_round_trips():
    x = torch.linspace(-1, 1, 10001)
    q = mulaw_encode(x)
    assert q.min() == -128 and q.max() == 127
    assert mulaw_encode(torch.tensor([0.0, 1.0, -1.0, 0.5])).tolist() == [0, 127, -128, 112]
    assert torch.all(q[1:] >= q[:-1])  # monotonic
    # the bin centre lies within the bin: re-encoding the decoded value gives the same code
    assert torch.equal(mulaw_encode(mulaw_decode(torch.arange(-128, 128))), torch.arange(-128, 128))
    err = (mulaw_decode(q) - x).abs()
    assert err.max() < 0.035 and err[4990:5011].max() < 1.5e-4  # fine near zero, coarse near full scale


def test_paper_preset_sizes():
    cfg = PRESETS["nsynth"]
    m = WaveNetAutoencoder(cfg)
    n_dec = sum(p.numel() for p in m.decoder.parameters())
    n_enc = sum(p.numel() for p in m.encoder.parameters())
    assert 59.5e6 < n_dec < 60.1e6 and 1.9e6 < n_enc < 2.1e6
    assert cfg.receptive_field == 6141
    emb = m.encoder(torch.zeros(1, 64000))
    assert emb.shape == (1, 125, 16)


def _teacher_forced(model, batch, length):
    torch.manual_seed(1)
    codes = torch.randint(-128, 128, (batch, 4 * 512))
    x = codes_to_input(codes)
    emb = model.encoder(x)
    xin = shift(x.unsqueeze(-1), 1).squeeze(-1)[:, :length]
    return xin, emb


@pytest.mark.parametrize("name,harmonics", [("tiny", 0), ("small", 0), ("tiny", 5)])
@pytest.mark.parametrize("batch", [1, 5])
@torch.no_grad()
def test_cached_step_reproduces_the_full_pass(name, harmonics, batch):
    model = WaveNetAutoencoder(preset(name, harmonics=harmonics)).eval()
    length = 3 * 512 + 77  # crosses three frame boundaries
    xin, emb = _teacher_forced(model, batch, length)
    dec = model.decoder
    exc = dec.excitation(torch.arange(batch) * 9 + 50, torch.arange(length))
    full = dec(xin, emb, exc)
    cond = dec.project(emb)
    state = dec.init_state(batch)
    steps = []
    for i in range(length):
        logits, state = dec.step(xin[:, i:i + 1], cond[:, i // 512], state, None if exc is None else exc[:, i])
        steps.append(logits)
    # (the packed fast stepper of generate() is held to the same full pass in test_generate_speed.py)
    assert (torch.stack(steps, 1) - full).abs().max() <= 1e-4


def test_the_excitation_is_the_notes_harmonics_below_nyquist():
    dec = WaveNetAutoencoder(preset("tiny", harmonics=4)).decoder
    exc = dec.excitation(torch.tensor([69, 105]), torch.arange(16000)).numpy()  # A4 = 440 Hz; 105 = 3520 Hz
    spectrum = np.abs(np.fft.rfft(exc, axis=1))  # 1 Hz bins
    assert [int(np.argmax(spectrum[0, :, h])) for h in range(4)] == [440, 880, 1320, 1760]
    assert int(np.argmax(spectrum[1, :, 1])) == 7040 and not np.abs(exc[1, :, 2:]).any()  # 3rd, 4th >= Nyquist
    # the full model takes each crop's pitch
    codes = torch.randint(-128, 128, (2, 1024))
    model = WaveNetAutoencoder(preset("tiny", harmonics=4)).eval()
    with torch.no_grad():
        model.decoder.start.weight.normal_()
        a = model(codes, torch.tensor([60, 60]))
        b = model(codes, torch.tensor([60, 61]))
    assert torch.equal(a[0], b[0]) and not torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match="needs the notes' pitches"):
        model(codes)
    with pytest.raises(ValueError, match="takes an excitation"):
        model.decoder(torch.zeros(1, 512), torch.zeros(1, 1, 16))


def test_a_paper_decoder_config_is_unchanged_by_the_excitation_field():
    cfg = preset("nsynth")
    assert "harmonics" not in cfg.to_dict() and preset("compact").to_dict()["harmonics"] == 8
    assert ModelConfig.from_dict(cfg.to_dict()).hash() == cfg.hash()


@torch.no_grad()
def test_the_full_pass_is_causal():
    model = WaveNetAutoencoder(preset("tiny")).eval()
    xin, emb = _teacher_forced(model, 1, 1024)
    a = model.decoder(xin, emb)
    xin2 = xin.clone()
    xin2[:, 600:] = 0.3
    b = model.decoder(xin2, emb)
    assert torch.equal(a[:, :600], b[:, :600]) and not torch.equal(a[:, 600:], b[:, 600:])


@torch.no_grad()
def test_a_note_alone_equals_the_same_note_in_a_batch():
    model = WaveNetAutoencoder(preset("tiny")).eval()
    torch.manual_seed(3)
    emb = torch.randn(8, 3, 16)
    seeds = [11, 22, 33, 44, 55, 66, 77, 88]
    batch = generate(model.decoder, emb, seeds=seeds, length=1200)
    alone = generate(model.decoder, emb[5:6], seeds=[66], length=1200)
    assert torch.equal(batch[5], alone[0])
    assert not torch.equal(batch[4], batch[5])
    assert batch.min() >= -128 and batch.max() <= 127


@torch.no_grad()
def test_greedy_generation_follows_the_argmax_of_the_full_pass():
    """Generated codes, fed back teacher-forced, must be the argmax of the full pass at every step."""
    model = WaveNetAutoencoder(preset("tiny")).eval()
    emb = torch.randn(2, 2, 16)
    codes = generate(model.decoder, emb, sampling=GREEDY)
    x = codes_to_input(codes)
    logits = model.decoder(shift(x.unsqueeze(-1), 1).squeeze(-1), emb)
    assert torch.equal(logits.argmax(-1) - 128, codes)


def test_the_teacher_forced_excitation_is_in_phase_with_the_note():
    dec = WaveNetAutoencoder(preset("tiny", harmonics=3)).decoder
    t = torch.arange(4096) + 1000
    w = 2 * np.pi * 220 / 16000
    audio = (0.5 * torch.cos(w * t + 1.0) + 0.2 * torch.cos(2 * w * t - 2.0))[None].float()
    exc = dec.excitation(torch.tensor([57]), t, align=audio)[0]  # 57 = 220 Hz
    assert torch.allclose(exc[:, 0], torch.cos(w * t + 1.0).double(), atol=0.02)
    assert torch.allclose(exc[:, 1], torch.cos(2 * w * t - 2.0).double(), atol=0.02)  # DFT leakage
    free = dec.excitation(torch.tensor([57]), t)[0]  # generation: from phase 0
    assert torch.allclose(free[:, 0], torch.sin(w * t.double()), atol=1e-9)


def test_the_harmonic_source_is_its_harmonics_summed():
    """Oracle: the source written out directly, every harmonic's sin(h w t + phase) (excitation(), not the
    angle-addition recurrence) times its amplitude, linear between frame centres."""
    from precompute.model import aligned_phase, excitation, harmonic_phases, source_rates, source_signal

    cfg = preset("tiny", source_bands=6)
    pitch = torch.tensor([30, 64, 100])
    rates = source_rates(pitch, cfg)
    below = [sum(h * 440 * 2 ** ((p - 69) / 12) < 8000 for h in range(1, 400)) for p in (30, 64, 100)]
    assert below == [172, 24, 3] and rates.shape[1] >= 172 and (rates > 0).sum(1).tolist() == below
    torch.manual_seed(0)
    log_amps = torch.randn(3, 4, rates.shape[1]) - 3
    t = torch.arange(2048)[None].expand(3, -1) + 100
    audio = torch.randn(3, 2048)
    phase = harmonic_phases(audio, rates, t)
    assert torch.allclose(phase, aligned_phase(audio, rates, t), atol=1e-9)
    amps = log_amps.double().exp() * (rates > 0)[:, None, :]
    pos = ((t.double() - 256) / 512).clamp(0, 3)
    lo = pos.floor().long().clamp(max=2)
    frac = (pos - lo)[..., None]
    amp = torch.stack([amps[b, lo[b]] * (1 - frac[b]) + amps[b, lo[b] + 1] * frac[b] for b in range(3)])
    expect = (amp * excitation(rates, t, phase)).sum(-1)
    assert torch.allclose(source_signal(log_amps, rates, t, 512, phase), expect, atol=1e-9)
    assert torch.allclose(source_signal(log_amps, rates, t[0], 512), (amp * excitation(rates, t)).sum(-1), atol=1e-9)


def test_the_decoder_sees_the_source_mu_law_companded_as_its_own_input():
    from precompute.model import NoteExcitation

    cfg = preset("tiny", harmonics=2, source_bands=4)
    params = torch.zeros(2, 3, 4 + cfg.source_partials)
    params[..., :4] = -1.0  # loud: every harmonic at e^-1
    note = NoteExcitation(cfg, torch.tensor([45, 57]), params)
    exc = note.at(torch.arange(1024))
    linear = source_signal(note.log_amps, note.src_rates, torch.arange(1024), cfg.hop)
    assert linear.abs().max() > 1.0  # clipped at full scale, then companded
    y = linear.clamp(-1, 1)
    assert torch.allclose(exc[..., 2], torch.sign(y) * torch.log1p(255 * y.abs()) / np.log(256), atol=1e-6)


def test_the_spectral_branch_sees_each_frames_spectrum():
    """Oracle: numpy's rfft of the Hann-windowed 1024 samples centred on a frame; the branch's log-mel input is
    that power spectrum through the mel filters."""
    from precompute.model import mel_filterbank

    cfg = preset("tiny", enc_spectral=12)
    model = WaveNetAutoencoder(cfg)
    branch = model.encoder.spectral
    torch.manual_seed(0)
    audio = torch.randn(2, 4096) * 0.1
    codes = mulaw_encode(audio)
    x = codes_to_input(codes)
    with torch.no_grad():
        branch.net[-1].weight.normal_()  # (zero at first, so that a warm start computes what it did)
        seen = []
        branch.net.register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
        emb = model.encoder(x)
    assert emb.shape == (2, 8, 16)
    lin = (torch.sign(x) * torch.expm1(x.abs() * np.log(256)) / 255).numpy()
    padded = np.pad(lin, ((0, 0), (256, 256)))
    fb = mel_filterbank(1024, 12, 16000, 40.0).numpy()
    for f in (0, 3, 7):
        power = np.abs(np.fft.rfft(np.hanning(1025)[:-1] * padded[1, f * 512: f * 512 + 1024])) ** 2
        assert np.allclose(seen[0][1, f].numpy(), 0.1 * np.log(power @ fb + 1e-6), atol=1e-3)
    assert (fb.sum(0) > 0).all()  # no empty band


def _mulaw_code(x):
    """Oracle: 8-bit mu-law (mu = 255) of float audio, written out in numpy."""
    x = np.clip(np.asarray(x, np.float64), -1, 1)
    return np.clip(np.floor(128 * np.sign(x) * np.log1p(255 * np.abs(x)) / np.log(256)), -128, 127).astype(int)


def test_a_residual_decoder_is_trained_on_the_audio_minus_the_source():
    """Its targets code audio - source (the source as its input carries it, in phase with the crop): zero where
    the audio is the source, the audio itself where the source is silent; a plain decoder's are the codes."""
    cfg = preset("tiny", source_bands=4, source_residual=True)
    model = WaveNetAutoencoder(cfg)
    torch.manual_seed(0)
    audio = torch.randn(2, 4096).double() * 0.2
    codes = mulaw_encode(audio)
    exc = torch.zeros(2, 4096, 1, dtype=torch.float64)
    exc[0, :, 0] = torch.sign(mulaw_decode(codes[0]).double()) * torch.log1p(
        255 * mulaw_decode(codes[0]).double().abs()) / np.log(256)  # note 0: the source is its audio exactly
    target = model.targets(codes, exc)
    assert set(target[0].tolist()) <= {127, 128}  # the two codes around zero
    assert torch.equal(target[1], codes[1] + 128)  # note 1: a silent source
    half = exc.clone()
    half[1, :, 0] = 0.5  # a constant source: the residual is the audio minus its linear value
    level = np.expm1(0.5 * np.log(256)) / 255
    assert np.array_equal(model.targets(codes, half)[1].numpy() - 128,
                          _mulaw_code(mulaw_decode(codes[1]).double().numpy() - level))
    plain = WaveNetAutoencoder(preset("tiny", source_bands=4))
    assert torch.equal(plain.targets(codes, half), codes + 128)


@torch.no_grad()
def test_a_residual_decoder_that_draws_zero_plays_its_source():
    """With every residual drawn as (nearly) zero the generated audio is the harmonic source itself, written out
    from its rates and amplitudes (from phase 0); the same weights in a plain decoder play silence."""
    from precompute.model import source_rates

    outs = {}
    for residual in (True, False):
        cfg = preset("tiny", source_bands=6, source_residual=residual)
        torch.manual_seed(0)
        dec = WaveNetAutoencoder(cfg).decoder.eval()
        dec.logits.weight.zero_()
        dec.logits.bias.zero_()
        dec.logits.bias[128] = 50.0  # class 128: code 0, the residual +0.5/128 companded (8.6e-5)
        dec.source.net[-1].bias[:6] = -2.0  # audible harmonics
        emb = torch.randn(2, 3, 16)
        outs[residual] = generate(dec, emb, pitch=[45, 62], sampling=GREEDY, length=1536, dtype=torch.float32)
    note_params = dec.source(emb)
    from precompute.model import harmonic_log_amps, source_signal as signal

    rates = source_rates(torch.tensor([45, 62]), cfg)
    source = signal(harmonic_log_amps(note_params, rates, cfg), rates, torch.arange(1536), cfg.hop)
    expect = _mulaw_code(source.numpy() + np.expm1(0.5 / 128 * np.log(256)) / 255)
    got = outs[True].numpy()
    assert np.abs(source.numpy()).max() > 0.1 and len(np.unique(expect)) > 50
    assert np.abs(got - expect).max() <= 1 and (got == expect).mean() > 0.99  # float32 vs float64 at bin edges
    assert set(outs[False].flatten().tolist()) == {0}


def test_source_residual_needs_a_source_and_leaves_other_configs_as_they_were():
    from nsynth.errors import NsynthError

    with pytest.raises(NsynthError, match="source_residual needs a harmonic source"):
        ModelConfig.from_dict({**preset("tiny").to_dict(), "source_residual": True})
    plain = preset("compact")
    assert "source_residual" not in plain.to_dict()
    residual = preset("compact", source_residual=True)
    assert residual.to_dict()["source_residual"] is True and residual.hash() != plain.hash()
    assert ModelConfig.from_dict(residual.to_dict()) == residual


def test_noise_bands_have_their_amplitudes_and_stay_in_their_bands():
    """noise_signal at constant band amplitudes a_k: its RMS is sqrt(sum a_k^2) (each band's noise has unit RMS),
    and one band alone puts (nearly) all its power between that band's edges (numpy's FFT as the oracle)."""
    from precompute.model import noise_edges, noise_signal

    k, sr = 12, 16000
    t = torch.arange(3 * 16000)[None]
    amps = torch.linspace(0.01, 0.2, k, dtype=torch.float64)
    x = noise_signal(amps.log().expand(1, 4, k), t, 512, sr)[0].numpy()
    assert abs(np.sqrt(np.mean(x ** 2)) / float(amps.square().sum().sqrt()) - 1) < 0.02
    edges = noise_edges(k, sr).numpy()
    assert edges[0] == 0 and edges[1] == pytest.approx(150) and edges[-1] == 8000 and np.all(np.diff(edges) > 0)
    for band in (0, 5, k - 1):
        one = torch.full((1, 4, k), -50.0, dtype=torch.float64)
        one[..., band] = 0.0
        power = np.abs(np.fft.rfft(noise_signal(one, t, 512, sr)[0].numpy())) ** 2
        freqs = np.fft.rfftfreq(t.shape[1], 1 / sr)
        inside = (freqs >= edges[band]) & (freqs <= edges[band + 1])
        assert power[inside].sum() > 0.99 * power.sum()


def test_the_noise_analysis_splits_white_noise_by_bandwidth():
    """White noise of std s between the harmonics of a note: each band's measured amplitude squared is s^2 times
    the band's share of the spectrum (independent of how noise_signal builds its bands), over several pitches."""
    from precompute.model import noise_analysis, noise_edges, source_rates

    cfg = preset("tiny", source_bands=4, source_noise=16)
    s = 0.05
    pitch = torch.tensor([36, 50, 64, 72])
    audio = s * torch.randn(4, 16384, generator=torch.Generator().manual_seed(0))
    levels, seen = noise_analysis(audio, source_rates(pitch, cfg), cfg)
    seen = seen.numpy()  # a band that a harmonic's guard covers whole has no bins to measure
    assert seen[0].all() and not seen[1, 3] and seen.sum() >= 60
    share = np.diff(noise_edges(16, 16000).numpy()) / 8000
    got = (2 * levels.mean(1)).exp().numpy()  # [notes, bands]: the levels are unbiased in log (Euler's gamma)
    assert np.abs(got / (s ** 2 * share) - 1)[seen].max() < 0.5  # the narrowest bands have few bins
    assert abs((got * seen).sum() / (s ** 2 * share * seen).sum() - 1) < 0.05


def test_source_noise_needs_a_source_and_leaves_other_configs_as_they_were():
    from nsynth.errors import NsynthError

    with pytest.raises(NsynthError, match="source_noise needs a harmonic source"):
        ModelConfig.from_dict({**preset("tiny").to_dict(), "source_noise": 8})
    with pytest.raises(NsynthError, match="source_noise 1"):
        ModelConfig.from_dict({**preset("tiny", source_bands=4).to_dict(), "source_noise": 1})
    plain = preset("compact")
    assert "source_noise" not in plain.to_dict()
    noisy = preset("compact", source_noise=32)
    assert noisy.to_dict()["source_noise"] == 32 and noisy.hash() != plain.hash()
    assert ModelConfig.from_dict(noisy.to_dict()) == noisy
    assert WaveNetAutoencoder(noisy).decoder.source.net[-1].out_features == 48 + 16 + 32


def _steady_notes(amps, pitch, length):
    """Notes of steady harmonics of known amplitudes amps [B, H'] at MIDI pitches [B] -> float64 audio [B, length]."""
    t = torch.arange(length, dtype=torch.float64)
    f0 = 440.0 * 2 ** ((torch.as_tensor(pitch).double() - 69) / 12)
    h = torch.arange(1, amps.shape[1] + 1, dtype=torch.float64)
    return (amps.double()[:, None, :] * torch.sin(2 * np.pi * f0[:, None, None] * h * t[:, None] / 16000)).sum(-1)


@torch.no_grad()
def test_a_whole_note_is_analysed_in_every_frame():
    """A render's corners are whole notes, silent before and after: every frame's levels are read from the audio,
    the first and last too (windows half over the silence: lower than the steady middle), and none is left to
    the prediction. Oracle: steady sines of known amplitudes."""
    model = WaveNetAutoencoder(preset("tiny", source_bands=6, source_noise=4))
    amps = torch.tensor([[0.3, 0.1, 0.05, 0.0], [0.2, 0.0, 0.02, 0.01]])
    pitch = torch.tensor([57, 64])
    frames = 10
    audio = _steady_notes(amps, pitch, frames * 512).float()
    note = model.decoder.note_excitation(pitch, torch.zeros(2, frames, 16))
    got = note.analysed(audio, whole=True).levels()
    assert got.harmonics.shape[:2] == (2, frames) and got.noise.shape == (2, frames, 4)
    assert (got.harmonics[:, 2:-2, :4] - amps[:, None]).abs().max() < 2e-3
    assert (got.harmonics[:, [0, -1], 0] < 0.8 * amps[:, None, 0]).all()
    assert (got.harmonics[:, [0, -1], 0] > 0.2 * amps[:, None, 0]).all()
    predicted = note.levels().harmonics[..., 0]  # the new MLP's 0.01: no frame is left as predicted
    assert ((got.harmonics[..., 0] - predicted).abs() > 0.03).all()
    with pytest.raises(ValueError, match="5120 samples, got 5000"):
        note.analysed(audio[:, :5000], whole=True)


@torch.no_grad()
def test_given_levels_make_the_source():
    """NoteExcitation.given: the source becomes the harmonics at the levels given (oracle: the sines summed
    directly, from phase 0), whatever the MLP predicted; the note's own levels given back change nothing."""
    model = WaveNetAutoencoder(preset("tiny", source_bands=6))
    pitch = torch.tensor([57, 64])
    note = model.decoder.note_excitation(pitch, torch.randn(2, 4, 16))
    t = torch.arange(2048)
    assert torch.allclose(note.given(note.levels()).source(t), note.source(t), atol=1e-9)
    amps = torch.tensor([[0.3, 0.1, 0.05], [0.2, 0.0, 0.02]])
    wide = torch.zeros(2, 4, 40)  # more harmonics than either note has: the first H are read
    wide[..., :3] = amps[:, None]
    got = note.given(SourceLevels(wide, None)).source(t)
    assert torch.allclose(got, _steady_notes(amps, pitch, 2048), atol=1e-6)
