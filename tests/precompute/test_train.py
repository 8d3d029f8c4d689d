import json
import math
import signal
import subprocess
import sys
import time

import pytest
import torch

from nsynth.errors import NsynthError
from precompute.datasets.fluid import DEFAULT_SOUNDFONT
from precompute.datasets.soundfont import render_soundfont_dataset
from precompute.config import PRESETS, preset
from precompute.model import WaveNetAutoencoder
from precompute.run import load_model, new_run, read_config, save_weights
from precompute.train import (STATE, Crops, Notes, TrainConfig, evaluate, learning_rate, load_notes, loss_fn,
                              random_crops, retarget, train, train_step, warm_start)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("gm")
    render_soundfont_dataset(DEFAULT_SOUNDFONT, out, programs=[(0, p) for p in (0, 24, 40, 56, 73)],
                             pitches=range(48, 73, 3), velocities=[100], valid_fraction=0.2, jobs=1, progress=False)
    return out


TC = dict(batch=2, crop=1024, lr=3e-3, checkpoint_every=5, valid_every=10, valid_crops=8)


def test_schedule_follows_the_paper_scaled():
    tc = TrainConfig(steps=200, lr=2e-4)
    assert learning_rate(tc, 0) == 2e-4 and learning_rate(tc, 89) == 2e-4
    assert learning_rate(tc, 90) == pytest.approx(1.33e-4)
    assert learning_rate(tc, 120) == pytest.approx(6e-5) and learning_rate(tc, 199) == pytest.approx(2e-5)


def test_loss_falls(data, tmp_path):
    tc = TrainConfig(steps=40, **{**TC, "batch": 4})
    hist = train(data, tmp_path / "run", preset_name="tiny", tc=tc, log=lambda *_: None)
    crops = random_crops(load_notes(data / "train"), 16, 1024, torch.Generator().manual_seed(5))
    torch.manual_seed(tc.seed)  # train() initialises the model from this seed
    before = evaluate(WaveNetAutoencoder(preset("tiny")), crops, 8, "cpu")
    after = evaluate(load_model(tmp_path / "run"), crops, 8, "cpu")
    assert after["ce"] < before["ce"] - 0.2
    assert len(hist["train"]) == 40 and hist["valid"][-1][0] == 40
    assert (tmp_path / "run" / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_killed_run_resumes_to_the_same_weights(data, tmp_path):
    steps = 24
    ref = tmp_path / "ref"  # with injected input noise: it is drawn from the saved generator too
    train(data, ref, preset_name="tiny", tc=TrainConfig(steps=steps, input_noise=0.05, **TC), log=lambda *_: None)

    run = tmp_path / "killed"
    cmd = [sys.executable, "-m", "nsynth.cli", "train", str(data), "--run", str(run), "--preset", "tiny",
           "--steps", str(steps), "--batch", "2", "--crop", "1024", "--lr", "3e-3", "--checkpoint-every", "5",
           "--threads", "1", "--input-noise", "0.05"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (run / STATE).exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = torch.load(run / STATE, weights_only=False)["step"]
    assert 0 < saved < steps  # killed mid-run
    # valid_every differs from the CLI's default: resume reads the run's own saved config
    train(data, run, log=lambda *_: None)
    a = torch.load(ref / STATE, weights_only=False)
    b = torch.load(run / STATE, weights_only=False)
    assert b["step"] == steps and "scaler" not in b  # bf16 autocast alone: no loss scaler to save
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    # a finished run trains on when given a new total
    hist = train(data, run, steps=steps + 3, log=lambda *_: None)
    assert hist["train"][-1][0] == steps + 3
    saved = json.loads((run / "config.json").read_text())["train"]
    assert saved["steps"] == steps + 3
    # ... going on from the learning rate it had reached (the last tenth of the paper's schedule)
    assert (saved["lr_from"], saved["lr_scale"]) == (steps, pytest.approx(0.1))


def test_new_run_needs_a_preset(data, tmp_path):
    with pytest.raises(NsynthError, match="give --preset"):
        train(data, tmp_path / "r", log=lambda *_: None)
    with pytest.raises(NsynthError, match="no train/ folder"):
        train(tmp_path, tmp_path / "r2", preset_name="tiny", log=lambda *_: None)


@pytest.mark.parametrize("harmonics", [0, 3], ids=["paper", "excited"])
def test_training_from_a_pack_matches_the_folders(data, tmp_path, monkeypatch, harmonics):
    """Same notes, same pitches (the excited decoder reads them), same crops: the same weights."""
    from precompute.datasets.pack import write_pack

    monkeypatch.setitem(PRESETS, "tiny", preset("tiny", harmonics=harmonics))

    packed = tmp_path / "gm.nspack"
    write_pack(data, packed, progress=False)
    tc = dict(steps=6, **TC)
    train(data, tmp_path / "a", preset_name="tiny", tc=TrainConfig(**tc), log=lambda *_: None)
    train(packed, tmp_path / "b", preset_name="tiny", tc=TrainConfig(**tc), log=lambda *_: None)
    a = torch.load(tmp_path / "a" / STATE, weights_only=False)
    b = torch.load(tmp_path / "b" / STATE, weights_only=False)
    assert a["history"] == b["history"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    short = tmp_path / "short.nspack"
    write_pack(data, short, samples=512, progress=False)
    with pytest.raises(NsynthError, match="short.nspack: notes of 512 samples are shorter than the 1024-sample"):
        train(short, tmp_path / "c", preset_name="tiny", tc=TrainConfig(**tc), log=lambda *_: None)


def test_warm_start_grows_a_model_that_computes_the_same(data, tmp_path):
    old = new_run(tmp_path / "old", preset("tiny"), seed=3).eval()
    grown = WaveNetAutoencoder(preset("tiny", harmonics=4)).eval()
    warm_start(grown, tmp_path / "old")
    codes = torch.randint(-128, 128, (2, 1024))
    with torch.no_grad():
        assert torch.equal(old(codes), grown(codes, torch.tensor([30, 90])))
    assert not grown.decoder.start.weight[:, 3:].any()
    with pytest.raises(NsynthError, match=r"old: its weights do not fit this model \(encoder.dilated.4.weight: None"):
        warm_start(WaveNetAutoencoder(preset("small")), tmp_path / "old")
    # a run started from it, with the excitation (learning rate 0: the weights stay put), records where it came from
    # and keeps its recommended decoding
    doc = json.loads((tmp_path / "old" / "config.json").read_text())
    (tmp_path / "old" / "config.json").write_text(json.dumps({**doc, "sampling": {"quantile": 0.5}}))
    train(data, tmp_path / "new", preset_name="tiny", tc=TrainConfig(steps=2, **{**TC, "lr": 0.0}),
          init=tmp_path / "old", overrides={"harmonics": 4}, log=lambda *_: None)
    cfg, doc = read_config(tmp_path / "new")
    assert doc["train"]["init"] == {"run": str(tmp_path / "old"), "step": 0} and cfg.harmonics == 4
    assert doc["sampling"] == {"quantile": 0.5}
    for k, v in grown.state_dict().items():
        assert torch.equal(load_model(tmp_path / "new").state_dict()[k], v), k


def test_time_budget_sets_the_total_and_ends_within_it(data, tmp_path):
    lines = []
    t0 = time.monotonic()
    hist = train(data, tmp_path / "run", preset_name="tiny", tc=TrainConfig(steps=10 ** 6, **TC), minutes=0.15,
                 log=lines.append)
    elapsed = time.monotonic() - t0
    total = json.loads((tmp_path / "run" / "config.json").read_text())["train"]["steps"]
    assert 25 < total < 10 ** 6 and any(f"{total} steps in all fit the 0.15-minute budget" in ln for ln in lines)
    done = torch.load(tmp_path / "run" / STATE, weights_only=False)["step"]
    assert done == hist["train"][-1][0] and done <= total
    assert elapsed < 0.15 * 60 + 30  # the budget plus loading and the last checkpoint, with room for a slow machine


def test_a_finished_run_given_a_time_budget_trains_on(data, tmp_path):
    """Resuming a run whose schedule is done with only --minutes measures the rate and sets a new total; without
    one it says how to go on."""
    train(data, tmp_path / "run", preset_name="tiny", tc=TrainConfig(steps=6, **TC), log=lambda *_: None)
    lines = []
    train(data, tmp_path / "run", log=lines.append)
    assert torch.load(tmp_path / "run" / STATE, weights_only=False)["step"] == 6
    assert any("has finished its 6 steps" in ln for ln in lines)
    train(data, tmp_path / "run", minutes=0.3, log=lines.append)
    done = torch.load(tmp_path / "run" / STATE, weights_only=False)["step"]
    total = json.loads((tmp_path / "run" / "config.json").read_text())["train"]["steps"]
    assert done > 6 + 25 and done <= total and any(f"{total} steps in all fit" in ln for ln in lines)


def test_injected_noise_reaches_only_the_decoders_input():
    model = WaveNetAutoencoder(preset("tiny", harmonics=2)).eval()
    notes = Notes(torch.randint(-128, 128, (3, 3000), dtype=torch.int8), torch.tensor([40, 60, 80]))
    crops = random_crops(notes, 4, 1024, torch.Generator().manual_seed(0), input_noise=0.1)
    assert crops.noise.shape == (4, 1024) and 0.09 < float(crops.noise.std()) < 0.11
    assert random_crops(notes, 4, 1024, torch.Generator().manual_seed(0)).noise is None
    with torch.no_grad():
        clean = model(crops.codes, crops.pitch)
        assert torch.equal(model(crops.codes, crops.pitch, torch.zeros(4, 1024)), clean)
        noisy = model(crops.codes, crops.pitch, crops.noise)
    assert (noisy - clean).abs().max() > 1e-3
    assert float(loss_fn(model, crops[:2])["total"].detach()) == pytest.approx(
        float(torch.nn.functional.cross_entropy(noisy[:2].reshape(-1, 256), (crops.codes[:2] + 128).reshape(-1))))


def _harmonic_notes(n=6, length=8192):
    """Notes of known harmonic amplitudes: [n, length] mu-law codes, their pitches, and amplitudes [n, 6]."""
    from precompute.mulaw import mulaw_encode

    gen = torch.Generator().manual_seed(0)
    pitch = torch.randint(40, 70, (n,), generator=gen)
    amps = torch.rand(n, 6, generator=gen) * 0.15 + 0.01
    t = torch.arange(length, dtype=torch.float64)
    f0 = 440.0 * 2 ** ((pitch.double() - 69) / 12)
    h = torch.arange(1, 7, dtype=torch.float64)
    audio = (amps.double()[:, None, :] * torch.sin(2 * math.pi * f0[:, None, None] * h * t[:, None] / 16000)).sum(-1)
    return Notes(mulaw_encode(audio.float()).to(torch.int8), pitch), amps


def test_the_harmonic_analysis_measures_each_harmonics_amplitude():
    """Oracle: sums of sines of known amplitudes; the analysis (a windowed DTFT at each harmonic) reads them back."""
    from precompute.model import excitation_rates, harmonic_analysis

    notes, amps = _harmonic_notes()
    from precompute.mulaw import mulaw_decode

    audio = mulaw_decode(notes.codes.long())
    measured, frames = harmonic_analysis(audio, excitation_rates(notes.pitch, 8, 16000), 512)
    assert frames == slice(2, 14)  # the frames whose 2048-sample window fits in 8192 samples
    assert (measured[..., :6] - amps[:, None, :]).abs().max() < 0.01  # mu-law's 8 bits add a little noise
    assert measured[..., 6:].max() < 0.01  # harmonics 7 and 8 are absent


def test_the_source_learns_the_notes_harmonic_amplitudes(tmp_path):
    """A model with a harmonic source, trained on notes of known harmonic amplitudes: its source's error falls and
    its harmonics come near the notes' own (the oracle is the amplitudes the notes were made with)."""
    from precompute.model import harmonic_log_amps, source_rates

    notes, amps = _harmonic_notes(n=8, length=4096)
    torch.manual_seed(0)
    model = WaveNetAutoencoder(preset("tiny", harmonics=2, source_bands=8))
    crops = random_crops(notes, 8, 4096, torch.Generator().manual_seed(1))
    crops.codes = notes.codes.long()  # whole notes, in order
    crops.pitch = notes.pitch
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def error():
        with torch.no_grad():
            emb = model.encode(crops.codes)
            rates = source_rates(crops.pitch, model.cfg)
            got = harmonic_log_amps(model.decoder.source(emb), rates, model.cfg).exp()[:, 2:6, :6].mean(1)
        return float((got.log() - amps.log()).abs().mean())

    before = error()
    first = float(loss_fn(model, crops)["source"])
    for _ in range(100):  # the source and the encoder it reads (the decoder's cross-entropy has its own tests)
        loss = model.source_losses(crops.codes, crops.pitch)["source"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss_fn(model, crops)["source"]) < 0.5 * first
    assert error() < 0.4 * before


def test_a_warm_start_adds_a_source_without_changing_what_the_model_computes(tmp_path):
    from precompute.run import new_run

    old = new_run(tmp_path / "old", preset("tiny", harmonics=2))
    with torch.no_grad():
        for p in old.parameters():
            p.normal_(0, 0.1)
    save_weights(tmp_path / "old", old)
    model = WaveNetAutoencoder(preset("tiny", harmonics=2, source_bands=8, enc_spectral=6))
    warm_start(model, tmp_path / "old")
    codes = torch.randint(-128, 128, (2, 2048))
    pitch = torch.tensor([45, 70])
    with torch.no_grad():
        assert torch.allclose(model(codes, pitch), old(codes, pitch), atol=1e-5)
    assert model.decoder.source.net[0].weight.abs().sum() > 0  # new modules keep their own initialisation
    assert model.encoder.spectral.net[0].weight.abs().sum() > 0


def test_a_longer_run_goes_on_from_its_learning_rate():
    """Extending a run that has decayed must not jump its learning rate back up (the bumps of a resumed run)."""
    tc = TrainConfig(steps=1000, lr=1e-3)
    end = learning_rate(tc, 999)
    assert end == pytest.approx(1e-4)
    retarget(tc, 1000, 3000)
    lrs = [learning_rate(tc, s) for s in range(1000, 3000)]
    assert lrs[0] == pytest.approx(end) and lrs[-1] == pytest.approx(1e-5)
    assert learning_rate(tc, 999) == pytest.approx(end)  # the step before (the progress line reports it)
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    fresh = TrainConfig(steps=1000, lr=1e-3)
    retarget(fresh, 0, 2000)  # a budget set at the start: the paper's schedule over the whole run
    assert [learning_rate(fresh, s) for s in (0, 899, 900, 1999)] == pytest.approx([1e-3, 1e-3, 6.65e-4, 1e-4])


def test_warmup_ramps_the_learning_rate():
    tc = TrainConfig(steps=1000, lr=1e-3, warmup=100)
    assert learning_rate(tc, 0) == pytest.approx(1e-5) and learning_rate(tc, 49) == pytest.approx(5e-4)
    assert learning_rate(tc, 99) == learning_rate(tc, 400) == 1e-3


def test_a_step_with_non_finite_gradients_is_skipped():
    """As a loss scaler skipped them on CUDA: one bad batch leaves the weights and the optimizer as they were."""
    torch.manual_seed(0)
    model = WaveNetAutoencoder(preset("tiny"))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    crops = Crops(torch.randint(-128, 128, (2, 1024)), torch.tensor([60, 64]))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.decoder.logits.bias[3] = float("nan")
    losses = train_step(model, opt, crops, lr=1e-3, clip=1.0, amp=False)
    assert math.isnan(losses["total"].item()) and not opt.state
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k != "decoder.logits.bias")
    with torch.no_grad():
        model.decoder.logits.bias[3] = 0.0
    train_step(model, opt, crops, lr=1e-3, clip=1.0, amp=False)
    assert opt.state and not torch.equal(before["decoder.start.weight"], model.state_dict()["decoder.start.weight"])


def test_the_source_learns_the_notes_noise_between_harmonics():
    """Notes of harmonics plus white noise of a known std per note: trained on the noise loss, the source's noise
    bands come near that std split by bandwidth (the oracle: white noise's power in a band is its share of the
    spectrum), starting from -60 dB."""
    from precompute.model import noise_edges, noise_log_amps
    from precompute.mulaw import mulaw_decode, mulaw_encode

    harmonic, _ = _harmonic_notes(n=8, length=4096)
    std = torch.linspace(0.005, 0.05, 8)
    audio = mulaw_decode(harmonic.codes.long()) + std[:, None] * torch.randn(8, 4096, generator=torch.Generator().manual_seed(2))
    codes = mulaw_encode(audio.clamp(-1, 1))
    torch.manual_seed(0)
    model = WaveNetAutoencoder(preset("tiny", source_bands=8, source_noise=8))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    share = torch.diff(noise_edges(8, 16000)).float() / 8000
    expect = 0.5 * torch.log(std[:, None] ** 2 * share)  # [notes, bands]

    def error():
        with torch.no_grad():
            got = noise_log_amps(model.decoder.source(model.encode(codes)), model.cfg)[:, 2:6].mean(1)
        return float((got - expect).abs().mean())

    before = error()
    first = float(model.source_losses(codes, harmonic.pitch)["noise"])
    for _ in range(110):
        loss = model.source_losses(codes, harmonic.pitch)["noise"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(model.source_losses(codes, harmonic.pitch)["noise"]) < 0.3 * first
    assert before > 1.5 and error() < 0.3 * before


def test_the_analysed_source_is_the_crops_own():
    """Teacher forcing with the analysed source (--source-teacher): on notes of known harmonics, what a residual
    decoder must predict in the analysed frames is near silence (the source is the note), while from the new
    model's predicted source (-40 dB) it is the note itself; the noise bands take the known noise's levels there
    and keep the prediction elsewhere (oracle: white noise's power in a band is its share of the spectrum)."""
    from precompute.model import noise_edges
    from precompute.mulaw import mulaw_decode, mulaw_encode

    notes, _ = _harmonic_notes(n=4, length=8192)
    codes = notes.codes.long()
    audio = mulaw_decode(codes)
    model = WaveNetAutoencoder(preset("tiny", harmonics=0, source_bands=8, source_residual=True))
    mid = slice(2 * 512 + 1024, 14 * 512 - 1024)  # samples only analysed frames (2..13, hop 512) reach
    residual = {}
    for analysed in (False, True):
        with torch.no_grad():
            _, _, exc = model._teacher_forced(codes, notes.pitch, None, analysed)
        residual[analysed] = mulaw_decode(model.targets(codes, exc) - 128)[:, mid]
    peak = audio[:, mid].abs().amax(1)
    assert (residual[False].abs().amax(1) > 0.9 * peak).all()
    assert (residual[True].abs().amax(1) < 0.05 * peak).all(), residual[True].abs().amax(1) / peak

    std = torch.tensor([0.01, 0.02, 0.03, 0.04])
    noisy = audio + std[:, None] * torch.randn(4, 8192, generator=torch.Generator().manual_seed(3))
    model = WaveNetAutoencoder(preset("tiny", harmonics=0, source_bands=8, source_noise=8))
    with torch.no_grad():
        note = model.decoder.note_excitation(notes.pitch, model.encode(mulaw_encode(noisy.clamp(-1, 1))))
        got = note.analysed(noisy)
    share = torch.diff(noise_edges(8, 16000)) / 8000
    expect = 0.5 * torch.log(std[:, None].double() ** 2 * share)  # [notes, bands]
    assert (got.noise_log_amps[:, 2:14] - expect[:, None].to(got.noise_log_amps)).abs().mean() < 0.25
    assert torch.equal(got.noise_log_amps[:, :2], note.noise_log_amps[:, :2])  # not analysed: the prediction
    assert torch.equal(got.log_amps[:, 14:], note.log_amps[:, 14:])


def test_source_teacher_trains_and_needs_a_source(data, tmp_path):
    tc = TrainConfig(**TC, source_teacher=True)
    with pytest.raises(NsynthError, match="needs a model with a harmonic source"):
        train(data, tmp_path / "plain", preset_name="tiny", tc=tc, stop_after=1, log=lambda *_: None)
    history = train(data, tmp_path / "r", preset_name="tiny", tc=TrainConfig(**{**TC, "crop": 4096}, source_teacher=True),
                    overrides={"harmonics": 0, "source_bands": 8, "source_residual": True}, stop_after=2,
                    log=lambda *_: None)
    assert len(history["train"]) == 2
    assert read_config(tmp_path / "r")[1]["train"]["source_teacher"] is True
