"""Proof of the mapping: a TensorFlow graph of Magenta's model (conftest.MagentaGraph, written from DESIGN.md)
and the imported torch model give the same embeddings and logits."""
import numpy as np
import pytest
import torch

from precompute.magenta.commands import import_magenta
from precompute.run import checkpoint_step, load_model

from magenta_tf import HOP, MagentaGraph

SIZES = dict(enc_layers=4, enc_ch=16, dec_layers=4, dec_ch=16, skip=8, stack=2)
BATCH, LENGTH = 2, 2 * HOP
TOL = 1e-4
STEPS = 48  # cached one-sample decoder steps compared (beyond the tiny model's receptive field)


def random_codes(seed):
    """Mu-law codes of a loud chirp with noise: spans most of [-128, 127]."""
    rng = np.random.default_rng(seed)
    t = np.arange(LENGTH) / 16000
    x = np.stack([0.8 * np.sin(2 * np.pi * (200 + 900 * b) * t * (1 + t)) + 0.05 * rng.standard_normal(LENGTH)
                  for b in range(BATCH)])
    x = np.clip(x, -1, 1)
    return np.clip(np.floor(128 * np.sign(x) * np.log1p(255 * np.abs(x)) / np.log(256)), -128, 127).astype(np.int64)


def stepped_logits(model, codes, steps):
    """The decoder's cached one-sample path, fed the true previous sample, for the first `steps` samples."""
    dec = model.decoder
    x = torch.from_numpy(codes).float() / 128.0
    cond = dec.project(model.encode(torch.from_numpy(codes)))
    state = dec.init_state(x.shape[0])
    out = []
    for t in range(steps):
        prev = x[:, t - 1: t] if t else torch.zeros(x.shape[0], 1)
        logits, state = dec.step(prev, cond[:, t // HOP], state)
        out.append(logits)
    return torch.stack(out, 1).numpy()


@pytest.fixture(scope="module")
def magenta(tf, tmp_path_factory):
    """A trained-one-step Magenta checkpoint and TensorFlow's outputs with its raw and its moving-average weights."""
    g = MagentaGraph(tf, **SIZES, batch=BATCH, length=LENGTH)
    codes = random_codes(1)
    g.train_step(codes)  # raw weights move away from the initial values, slots and moving averages get written
    prefix = g.save(tmp_path_factory.mktemp("ckpt") / "model.ckpt")
    raw = g.forward(codes)
    g.use_moving_averages()
    return prefix, codes, {False: raw, True: g.forward(codes)}


@pytest.mark.parametrize("ema", [False, True])
def test_imported_model_matches_tensorflow(magenta, tmp_path, ema):
    prefix, codes, outputs = magenta
    tf_emb, tf_logits = outputs[ema]
    result = import_magenta(prefix, tmp_path / "run", ema=ema, stack=SIZES["stack"])
    assert result.step == 1 == checkpoint_step(tmp_path / "run")
    assert (result.cfg.enc_layers, result.cfg.enc_channels, result.cfg.dec_layers, result.cfg.dec_channels,
            result.cfg.skip_channels, result.cfg.enc_stack, result.cfg.preset) == (4, 16, 4, 16, 8, 2, "magenta")
    model = load_model(tmp_path / "run")
    with torch.no_grad():
        emb = model.encode(torch.from_numpy(codes)).numpy()
        logits = model(torch.from_numpy(codes)).numpy()
        stepped = stepped_logits(model, codes, STEPS)

    assert emb.shape == tf_emb.shape == (BATCH, 2, 16)
    assert np.abs(tf_emb).max() > 0.05  # the comparison is not between near-zero values
    assert np.abs(emb - tf_emb).max() <= TOL
    assert logits.shape == tf_logits.shape == (BATCH, LENGTH, 256)  # two frames: the conditioning switch at 512
    assert tf_logits.std() > 0.1
    assert np.abs(logits - tf_logits).max() <= TOL
    assert np.abs(stepped - tf_logits[:, :STEPS]).max() <= TOL


def test_raw_and_moving_average_weights_differ(magenta):
    """--ema is a real choice: TensorFlow's two forwards disagree, so matching both proves the selection."""
    _, _, outputs = magenta
    assert np.abs(outputs[False][1] - outputs[True][1]).max() > 1e-2
