"""Sampled decoding at the ends of the uniform's range: torch.rand returns exactly 0 once in 2^24 draws, and a
uniform of 0 (or 1) must pick what its neighbours on torch.rand's grid pick, never a class of (near-)zero
probability, on every path: the packed stepper, `sample_codes`, and the onnxruntime backend."""
import warnings

import numpy as np
import pytest
import torch

from precompute.config import preset
from precompute.generate import NOISE_CHUNK, _NoteNoise, generate, sample_codes
from precompute.model import WaveNetAutoencoder, shift
from precompute.mulaw import codes_to_input
from precompute.onnx_export import export_onnx
from precompute.render.backends import OnnxBackend
from precompute.sampling import Sampling
from precompute.stepper import Stepper

from test_generate_speed import inverse_cdf

STEP = 2.0 ** -24           # torch.rand's float32 grid: it returns k * 2^-24, k = 0 .. 2^24 - 1
ZERO_SEED, ZERO_AT = 194552, 25  # torch.Generator().manual_seed(194552): the 26th uniform drawn is exactly 0.0
EDGES = [(0.0, STEP), (1.0 - STEP, 1.0 - STEP), (1.0, 1.0 - STEP)]  # u -> the grid value it must act like


def _edgy_model(harmonics=0):
    """A tiny model whose first and last classes have probability ~1e-27 at every step."""
    torch.manual_seed(0)
    model = WaveNetAutoencoder(preset("tiny", harmonics=harmonics)).eval()
    with torch.no_grad():
        model.decoder.logits.weight[[0, -1]] = 0.0
        model.decoder.logits.bias[[0, -1]] = -60.0
    return model


def _logits(model, codes, emb):
    with torch.no_grad():
        return model.decoder(shift(codes_to_input(codes).unsqueeze(-1), 1).squeeze(-1), emb)


def test_the_seed_draws_an_exact_zero():
    u = _NoteNoise([ZERO_SEED], torch.device("cpu")).steps(0, NOISE_CHUNK)[:, 0, 0]
    assert u[ZERO_AT] == 0.0 and int((u == 0).sum()) == 1


@pytest.mark.parametrize("u,like", EDGES)
def test_sample_codes_at_the_ends(u, like):
    torch.manual_seed(1)
    logits = torch.randn(4, 256)
    logits[:, [0, -1]] = -60.0                        # ~1e-27: never to be picked at an end
    logits[1, :20] = -1e4                             # exactly 0 in float32
    logits[2, 0], logits[2, -1] = 8.0, 8.0            # likely classes at both ends: picked at the ends
    logits[3, 0], logits[3, -1] = -14.0, -14.0        # ~1e-8, below half a grid step of u: not picked
    codes = sample_codes(logits, torch.full((4,), u), 0.7)
    assert torch.equal(codes, inverse_cdf(logits / 0.7, torch.full((4,), like)))
    p = torch.softmax(logits.double() / 0.7, -1).gather(1, (codes + 128)[:, None])
    assert p.min() > 1e-4


@pytest.mark.parametrize("u,like", EDGES)
@torch.no_grad()
def test_stepper_at_the_ends(u, like):
    model = _edgy_model()
    emb = torch.randn(2, 1, 16)
    stepper = Stepper(model.decoder, 2, chunk=64, sampling=Sampling())
    stepper.set_frame(emb[:, 0])
    stepper.noise.fill_(u)
    stepper.run_chunk()
    codes = stepper.codes[:, :, 0].T - 128
    expect = inverse_cdf(_logits(model, codes, emb)[:, :64], torch.full(codes.shape, like))
    assert (codes != expect).float().mean() < 0.02  # only float rounding at a class edge may differ
    assert codes.min() > -128 and codes.max() < 127


@torch.no_grad()
def test_generate_with_a_drawn_zero():
    model = _edgy_model()
    emb = torch.randn(1, 1, 16)
    codes = generate(model.decoder, emb, seeds=[ZERO_SEED], length=64)
    logits = _logits(model, codes, emb)
    u = _NoteNoise([ZERO_SEED], torch.device("cpu")).steps(0, 64)[:, 0, 0]
    expect = inverse_cdf(logits[0], u.clamp(min=STEP))
    assert codes[0, ZERO_AT] == expect[ZERO_AT] != -128
    assert (codes[0] != expect).float().mean() < 0.05


@torch.no_grad()
def test_onnxruntime_with_a_drawn_zero(tmp_path):
    model = _edgy_model(harmonics=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_onnx(model, tmp_path)
    backend = OnnxBackend(*OnnxBackend.read_files(tmp_path))
    emb = np.random.default_rng(0).standard_normal((1, 1, 16)).astype(np.float32)
    codes = torch.from_numpy(backend.decode(emb, [ZERO_SEED], length=64, sampling=Sampling(),
                                            pitch=np.array([60])).astype(np.int64))
    exc = model.decoder.excitation(torch.tensor([60]), torch.arange(64))
    logits = model.decoder(shift(codes_to_input(codes).unsqueeze(-1), 1).squeeze(-1), torch.from_numpy(emb), exc)
    u = _NoteNoise([ZERO_SEED], torch.device("cpu")).steps(0, 64)[:, 0, 0]
    expect = inverse_cdf(logits[0], u.clamp(min=STEP))
    assert codes[0, ZERO_AT] == expect[ZERO_AT] != -128
    assert (codes[0] != expect).float().mean() < 0.05
