"""The fast generation path (precompute/stepper.py, generate.py) gives the model's results: the teacher-forced
full pass, the textbook generator of testkit/, per-note seeding; and its CUDA batch planning is sound."""
import numpy as np
import pytest
import torch

from nsynth.errors import NsynthError
from precompute.config import preset
from precompute.generate import NOISE_CHUNK, _NoteNoise, generate, render_parts
from precompute.model import WaveNetAutoencoder, shift
from precompute.mulaw import codes_to_input
from precompute.sampling import GREEDY, Sampling
from precompute.stepper import CPU_BATCH, MAX_BATCH, MEMORY_FRACTION, Stepper, auto_batch, split_batch
from testkit.textbook import naive_step, textbook_generate

MEDIAN = Sampling(quantile=0.5)


def _model(name, seed=0, harmonics=0, source_bands=0, residual=False, noise=0):
    torch.manual_seed(seed)
    model = WaveNetAutoencoder(preset(name, harmonics=harmonics, source_bands=source_bands,
                                      source_residual=residual, source_noise=noise)).eval()
    with torch.no_grad():  # non-zero biases everywhere, so every folded bias is exercised
        for p in model.decoder.parameters():
            if p.ndim == 1:
                p.normal_(0, 0.1)
    return model


def _full_pass(model, codes, emb, pitch=None):
    x = codes_to_input(codes)
    exc = model.decoder.excitation(pitch, torch.arange(codes.shape[1]), emb=emb)
    with torch.no_grad():
        return model.decoder(shift(x.unsqueeze(-1), 1).squeeze(-1), emb, exc)


def inverse_cdf(logits, u):
    """Oracle: the class whose interval [C(k-1), C(k)) of the float64 cumulative distribution holds u, for
    0 < u < 1 (u falls inside one class's interval of width p: that class is drawn with probability p).
    logits [..., Q], u [...] -> codes [...]."""
    c = torch.softmax(logits.double(), -1).cumsum(-1)
    return torch.count_nonzero(c <= u.double().unsqueeze(-1), -1).clamp(max=logits.shape[-1] - 1) - 128


def _run(stepper, emb, steps, noise=None, note_exc=None):
    """Drive a stepper by hand: -> (class indices [B, steps], logits [B, steps, Q])."""
    hop, codes, logits = 512, [], []
    frames = emb.transpose(0, 1).contiguous()
    for t in range(0, steps, stepper.chunk):
        if t % hop == 0:
            stepper.set_frame(frames[t // hop])
        if noise is not None:
            stepper.noise.copy_(noise.steps(t, stepper.chunk))
        if note_exc is not None:
            stepper.exc.copy_(note_exc.at(torch.arange(t, t + stepper.chunk)).transpose(0, 1))
        for k in range(stepper.chunk):
            stepper.step(k)
            logits.append(stepper.logits.clone())
        codes.append(stepper.codes[:, :, 0].T.clone())
    return torch.cat(codes, 1), torch.stack(logits, 1)


@pytest.mark.parametrize("name,steps,harmonics,source,tanh_by_sigmoid,residual,noise", [
    ("tiny", 3 * 512 + 128, 0, 0, False, False, 0), ("small", 640, 0, 0, True, False, 0),
    ("tiny", 3 * 512 + 128, 6, 0, True, False, 0), ("tiny", 3 * 512 + 128, 2, 8, False, False, 0),
    ("tiny", 3 * 512 + 128, 0, 8, True, True, 0), ("tiny", 3 * 512 + 128, 0, 8, False, False, 6),
    ("tiny", 3 * 512 + 128, 0, 8, True, True, 6)])
@pytest.mark.parametrize("temperature", [1.0, 0.5])
@torch.no_grad()
def test_greedy_steps_reproduce_the_full_pass(name, steps, temperature, harmonics, source, tanh_by_sigmoid,
                                              residual, noise):
    """Every step's logits (scaled by 1/temperature) equal the teacher-forced pass over the generated codes
    (with a sine excitation too: at pitch 100 the upper harmonics are above Nyquist; a harmonic source, with and
    without noise bands), with
    either gate (tanh, as CUDA and AVX-512 CPUs run it, or through sigmoid). A residual decoder's codes are its
    source plus the drawn residual (the oracle: mu-law written out in numpy)."""
    model = _model(name, harmonics=harmonics, source_bands=source, residual=residual, noise=noise)
    excited = harmonics or source
    if excited:
        with torch.no_grad():  # a strong excitation input, so the test fails if its phase or weights are off
            model.decoder.start.weight[:, 3:].normal_(0, 2.0)
            if source:  # loud harmonics that change from frame to frame
                model.decoder.source.net[-1].bias.fill_(-1.0)
                model.decoder.source.net[-1].weight.normal_(0, 0.5)
    emb = torch.randn(3, 2 + steps // 512, 16)
    pitch = torch.tensor([30, 64, 100]) if excited else None
    stepper = Stepper(model.decoder, 3, chunk=64, sampling=Sampling(True, temperature),
                      tanh_by_sigmoid=tanh_by_sigmoid)
    idx, logits = _run(stepper, emb, steps, note_exc=model.decoder.note_excitation(pitch, emb))
    codes = idx - 128
    full = _full_pass(model, codes, emb[:, : -(-steps // 512)], pitch)
    assert (logits * temperature - full).abs().max() <= 1e-4
    if residual:
        y = model.decoder.excitation(pitch, torch.arange(steps), emb=emb)[..., -1].numpy()
        r = (full.argmax(-1).numpy() - 127.5) / 128
        x = np.clip(np.sign(y) * np.expm1(np.abs(y) * np.log(256)) / 255
                    + np.sign(r) * np.expm1(np.abs(r) * np.log(256)) / 255, -1, 1)
        expect = np.clip(np.floor(128 * np.sign(x) * np.log1p(255 * np.abs(x)) / np.log(256)), -128, 127)
        assert np.abs(expect - codes.numpy()).max() <= 1 and (expect == codes.numpy()).mean() > 0.99
    else:
        assert torch.equal(full.argmax(-1), idx)
    assert len(set(codes.flatten().tolist())) > 3  # not a constant output
    # the counter and the rings carry over chunks; reset() restarts from silence
    assert int(stepper.t) == steps
    stepper.reset()
    again, _ = _run(stepper, emb, 128, note_exc=model.decoder.note_excitation(pitch, emb))
    assert torch.equal(again, idx[:, :128])
    if excited:  # the excitation matters: another pitch gives other logits
        assert (_full_pass(model, codes, emb, pitch + 1) - full).abs().max() > 0.1
    if source:  # and so do the embeddings through the source alone (the conditioning held as it was)
        other = model.decoder.excitation(pitch, torch.arange(steps), emb=emb.flip(0))
        x = shift(codes_to_input(codes).unsqueeze(-1), 1).squeeze(-1)
        assert (model.decoder(x, emb, other) - full).abs().max() > 0.1


@torch.no_grad()
def test_sampling_is_the_inverse_cdf_of_each_notes_uniforms():
    model = _model("tiny")
    emb = torch.randn(4, 2, 16)
    seeds = [5, 6, 7, 8]
    codes = generate(model.decoder, emb, seeds=seeds, sampling=Sampling(temperature=0.8), length=700)
    logits = _full_pass(model, codes, emb) / 0.8
    noise = _NoteNoise(seeds, torch.device("cpu"))
    u = torch.cat([noise.steps(t, NOISE_CHUNK)[:, :, 0].T for t in range(0, 1024, NOISE_CHUNK)], 1)[:, :700]
    expect = inverse_cdf(logits, u)
    assert (expect != codes).float().mean() < 0.002  # only rounding at a bin edge may differ
    assert len(set(codes.flatten().tolist())) > 20


@torch.no_grad()
def test_quantile_decoding_takes_that_quantile_of_every_prediction():
    """quantile 0.5: every sample is the median of its predicted distribution (the inverse CDF at 0.5)."""
    model = _model("tiny")
    emb = torch.randn(3, 2, 16)
    codes = generate(model.decoder, emb, seeds=[1, 2, 3], sampling=MEDIAN, length=700)
    expect = inverse_cdf(_full_pass(model, codes, emb), torch.full(codes.shape, 0.5))
    assert (expect != codes).float().mean() < 0.002  # only rounding at a bin edge may differ
    assert torch.equal(codes, generate(model.decoder, emb, seeds=[7, 8, 9], sampling=MEDIAN, length=700))
    assert not torch.equal(codes, generate(model.decoder, emb, sampling=GREEDY, length=700))
    assert len(set(codes.flatten().tolist())) > 2
    with pytest.raises(NsynthError, match=r"quantile must be in \(0, 1\), got 1.0"):
        Sampling(quantile=1.0)


@torch.no_grad()
def test_fast_path_and_the_textbook_generator_agree_greedily():
    model = _model("tiny", seed=1)
    emb = torch.randn(2, 3, 16)
    ours = generate(model.decoder, emb, sampling=GREEDY, length=1300)
    for queue in ("fifo", "shift"):
        assert torch.equal(textbook_generate(model.decoder, emb, 1300, queue=queue), ours)


@torch.no_grad()
def test_naive_step_predicts_the_same_sample():
    model = _model("tiny", seed=2)
    emb = torch.randn(2, 3, 16)
    codes = generate(model.decoder, emb, sampling=GREEDY, length=1200)
    x = shift(codes_to_input(codes).unsqueeze(-1), 1).squeeze(-1)
    for t in (5, 700, 1200):
        assert torch.equal(naive_step(model.decoder, x[:, :t], emb).argmax(-1) - 128, codes[:, t - 1])


@torch.no_grad()
def test_notes_do_not_depend_on_how_the_batch_is_split():
    model = _model("tiny")
    emb = torch.randn(7, 2, 16)
    seeds = list(range(100, 107))
    kw = dict(sampling=Sampling(), dtype=torch.float32, graph=False, progress=None)
    whole = render_parts(model.decoder, emb, seeds, 600, 7, **kw)
    seen = []
    parts = render_parts(model.decoder, emb, seeds, 600, 3, **{**kw, "progress": lambda d, n: seen.append((d, n))})
    assert torch.equal(whole, parts)
    assert seen[-1] == (3 * 600, 3 * 600) and all(n == 1800 for _, n in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


@torch.no_grad()
def test_excited_decoders_take_the_notes_pitches():
    model = _model("tiny", harmonics=3)
    emb = torch.randn(3, 2, 16)
    with pytest.raises(ValueError, match="give their pitches"):
        generate(model.decoder, emb, sampling=GREEDY, length=100)
    with pytest.raises(ValueError, match="2 pitches for 3 notes"):
        generate(model.decoder, emb, sampling=GREEDY, length=100, pitch=[60, 61])
    whole = generate(model.decoder, emb, seeds=[1, 2, 3], length=700, pitch=[40, 60, 80])
    alone = generate(model.decoder, emb[1:2], seeds=[2], length=700, pitch=[60])
    assert torch.equal(whole[1], alone[0])
    kw = dict(sampling=Sampling(), dtype=torch.float32, graph=False, progress=None)
    parts = render_parts(model.decoder, emb, [1, 2, 3], 700, 2, pitch=torch.tensor([40, 60, 80]), **kw)
    assert torch.equal(whole, parts)


@torch.no_grad()
def test_bf16_steps_follow_the_fp32_model():
    """The CUDA default dtype, run on the CPU: greedy bf16 codes are mostly the fp32 model's argmax."""
    model = _model("tiny")
    emb = torch.randn(2, 1, 16)
    codes = generate(model.decoder, emb, sampling=GREEDY, length=400, dtype=torch.bfloat16)
    assert next(model.decoder.parameters()).dtype == torch.float32  # the caller's model is untouched
    agree = (_full_pass(model, codes, emb).argmax(-1) - 128 == codes).float().mean()
    assert agree > 0.9


def test_batch_planning():
    cfg = preset("nsynth")
    cuda = torch.device("cuda")
    per_note = Stepper.bytes_per_note(cfg, torch.bfloat16) + 8 * 64000 + 125 * 16 * (4 + 2)  # + codes, embeddings
    fits = lambda n: auto_batch(cfg, cuda, length=64000, dtype=torch.bfloat16, free_bytes=n)  # noqa: E731
    assert fits(int(1000.5 * per_note / MEMORY_FRACTION)) == 1000  # a multiple of 8 from 8 up
    assert fits(int(1007.5 * per_note / MEMORY_FRACTION)) == 1000
    assert fits(int(1008.5 * per_note / MEMORY_FRACTION)) == 1008
    assert fits(int(7.5 * per_note / MEMORY_FRACTION)) == 7
    assert fits(10 ** 15) == MAX_BATCH
    assert fits(10 ** 6) == 1
    assert auto_batch(cfg, torch.device("cpu"), length=64000, dtype=torch.float32) == CPU_BATCH
    assert split_batch(10, 4) == [slice(0, 3), slice(3, 6), slice(6, 10)]
    assert split_batch(8, 8) == [slice(0, 8)]
    assert split_batch(1, 4096) == [slice(0, 1)]
    assert split_batch(0, 4) == []
    rings = 3 * sum(2 * 2 ** k + 1 for k in range(10)) * 512 * 2
    assert rings < Stepper.bytes_per_note(cfg, torch.bfloat16) < rings + 200_000  # rings (6.3 MB) dominate
    tiny = WaveNetAutoencoder(preset("tiny")).decoder
    stepper = Stepper(tiny, 5, chunk=8, sampling=GREEDY, dtype=torch.bfloat16)
    allocated = sum(t.numel() * t.element_size() for t in stepper.rings) + stepper.x_ring.numel() * 2
    assert allocated <= 5 * Stepper.bytes_per_note(tiny.cfg, torch.bfloat16)


def test_bad_arguments_are_refused():
    model = WaveNetAutoencoder(preset("tiny"))
    emb = torch.zeros(2, 1, 16)
    with pytest.raises(ValueError, match="seeds"):
        generate(model.decoder, emb, seeds=[1], length=10)
    with pytest.raises(ValueError, match="frames"):
        generate(model.decoder, emb, length=513)
    assert generate(model.decoder, torch.zeros(0, 1, 16), length=100).shape == (0, 100)


@torch.no_grad()
def test_sample_codes_follows_the_stepper():
    """The one-step sampling rule used outside the stepper (onnxruntime) picks what generate() picks."""
    from precompute.generate import sample_codes

    model = WaveNetAutoencoder(preset("tiny")).eval()
    emb = torch.randn(3, 2, 16)
    seeds = [4, 5, 6]
    codes = generate(model.decoder, emb, seeds=seeds, sampling=Sampling(temperature=0.8))
    x = codes_to_input(codes)
    logits = model.decoder(shift(x.unsqueeze(-1), 1).squeeze(-1), emb)
    noise = _NoteNoise(seeds, torch.device("cpu"))
    picked = torch.stack([sample_codes(logits[:, t], noise.steps(t, 1)[0, :, 0], 0.8) for t in range(codes.shape[1])], 1)
    assert (picked == codes).float().mean() > 0.99  # equal up to float rounding at a bin edge
    assert torch.equal(sample_codes(logits[:, 7], None), logits[:, 7].argmax(-1) - 128)


def test_the_gate_takes_tanh_through_sigmoid_only_where_tanh_is_slow(monkeypatch):
    from precompute.stepper import tanh_is_slow

    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert tanh_is_slow(cpu, torch.float32)
    assert not tanh_is_slow(cpu, torch.bfloat16)  # bf16 keeps tanh: 2·sigmoid(2b) - 1 loses small values there
    assert not tanh_is_slow(torch.device("cuda"), torch.float32)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert not tanh_is_slow(cpu, torch.float32)


@torch.no_grad()
def test_bf16_is_the_default_where_the_hardware_has_it(monkeypatch):
    from precompute.generate import decode_dtype

    monkeypatch.delenv("NSYNTH_DTYPE")  # tests/conftest.py pins fp32
    cpu = torch.device("cpu")
    assert decode_dtype(torch.device("cuda")) == torch.bfloat16
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert decode_dtype(cpu) == torch.float32
    model = _model("tiny")
    emb = torch.randn(4, 1, 16)
    fp32 = generate(model.decoder, emb, sampling=GREEDY, length=512, dtype=torch.float32)
    assert torch.equal(generate(model.decoder, emb, sampling=GREEDY, length=512), fp32)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)  # an AMX CPU
    assert decode_dtype(cpu) == torch.bfloat16
    bf16 = generate(model.decoder, emb, sampling=GREEDY, length=512, dtype=torch.bfloat16)
    assert not torch.equal(bf16, fp32)
    assert torch.equal(generate(model.decoder, emb, sampling=GREEDY, length=512), bf16)


def test_nsynth_dtype_chooses_the_decoding_dtype_everywhere(monkeypatch):
    from precompute.generate import decode_dtype

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)  # bf16 hardware: bf16 unless told
    monkeypatch.setenv("NSYNTH_DTYPE", "float32")
    assert decode_dtype(torch.device("cpu")) == decode_dtype(torch.device("cuda")) == torch.float32
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setenv("NSYNTH_DTYPE", "bfloat16")
    assert decode_dtype(torch.device("cpu")) == torch.bfloat16
    monkeypatch.setenv("NSYNTH_DTYPE", "fp16")
    with pytest.raises(NsynthError, match=r"NSYNTH_DTYPE='fp16'.*float32, bfloat16"):
        decode_dtype(torch.device("cpu"))
