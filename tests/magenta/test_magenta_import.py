"""`nsynth import-magenta`: name and shape checks, prefixes, slots, moving averages, the run folder."""
import numpy as np
import pytest
import soundfile as sf
import torch

from nsynth.cli import main
from nsynth.errors import NsynthError
from tests.tones import synth_note
from precompute.config import PRESETS
from precompute.magenta.commands import import_magenta
from precompute.magenta.mapping import check_names, infer_config
from precompute.model import WaveNetAutoencoder
from precompute.run import load_model

from magenta_tf import magenta_names, random_weights, save_v2

SMALL = dict(enc_layers=3, enc_ch=8, dec_layers=5, dec_ch=8, skip=4)


def small_checkpoint(tf, path, *, scope="", slots=True, ema=True, drop=(), ema_drop=(), add=None, **sizes):
    """A checkpoint laid out like Magenta's: weights, Adam slots, moving averages, bookkeeping scalars."""
    weights = random_weights(magenta_names(**(sizes or SMALL)))
    tensors = {}
    for name, value in weights.items():
        if name.split("/")[0] in drop:
            continue
        tensors[scope + name] = value
        if slots:
            tensors[f"{scope}{name}/Adam"] = np.zeros_like(value)
            tensors[f"{scope}{name}/Adam_1"] = np.ones_like(value)
        if ema and name.split("/")[0] not in ema_drop:
            tensors[f"{scope}{name}/ExponentialMovingAverage"] = value + 1
    tensors.update({"global_step": np.int64(1234), "beta1_power": np.float32(0.9), "beta2_power": np.float32(0.99)})
    tensors.update(add or {})
    return save_v2(tf, path, tensors), weights


def test_slots_ignored_raw_weights_taken(tf, tmp_path, capsys):
    prefix, weights = small_checkpoint(tf, tmp_path / "model.ckpt-1234")
    assert main(["import-magenta", prefix, "-o", str(tmp_path / "run"), "--stack", "3"]) == 0
    out = capsys.readouterr().out
    assert "at step 1234" in out and "encoder 3x8, decoder 5x8 (skip 4)" in out and "stack 3" in out
    model = load_model(tmp_path / "run")
    assert model.cfg.dilations("dec") == [1, 2, 4, 1, 2]
    sd = model.state_dict()
    assert torch.equal(sd["encoder.bottleneck.bias"], torch.from_numpy(weights["ae_bottleneck/biases"]))
    # res_3 / skip_3 fused, res first; cond_map_1..5 then cond_map_out1
    assert torch.equal(sd["decoder.res_skip.2.bias"],
                       torch.from_numpy(np.concatenate([weights["res_3/biases"], weights["skip_3/biases"]])))
    assert torch.equal(sd["decoder.cond.weight"][-4:], torch.from_numpy(weights["cond_map_out1/W"][0, 0].T))
    # The run folder works wherever a model is taken.
    assert main(["model", "info", str(tmp_path / "run")]) == 0
    sf.write(tmp_path / "note.wav", synth_note(seconds=0.1), 16000)
    assert main(["encode", str(tmp_path / "note.wav"), "--model", str(tmp_path / "run"), "-o",
                 str(tmp_path / "e.npy")]) == 0
    assert np.load(tmp_path / "e.npy").shape == (3, 16)
    # A second import into the same folder is refused and keeps the first.
    assert main(["import-magenta", prefix, "-o", str(tmp_path / "run")]) == 1
    assert "already holds a model" in capsys.readouterr().err


def test_moving_averages_and_scope_prefix(tf, tmp_path):
    prefix, weights = small_checkpoint(tf, tmp_path / "ck", scope="wavenet/")
    result = import_magenta(prefix, tmp_path / "run", ema=True, stack=3)
    assert result.step == 1234  # the unscoped global_step
    model = load_model(result.run)
    assert torch.equal(model.state_dict()["decoder.logits.bias"], torch.from_numpy(weights["logits/biases"] + 1))


def test_missing_and_extra_variables_are_listed(tf, tmp_path):
    prefix, _ = small_checkpoint(tf, tmp_path / "ck", drop=("skip_3", "ae_res_2"),
                                 add={"bogus_conv/W": np.zeros((1, 1, 8, 8), np.float32)})
    with pytest.raises(NsynthError) as e:
        import_magenta(prefix, tmp_path / "run", stack=3)
    msg = str(e.value)
    assert "ck.index" in msg
    assert "missing 4: ae_res_2/W, ae_res_2/biases, skip_3/W, skip_3/biases" in msg
    assert "extra 1: bogus_conv/W" in msg
    assert not (tmp_path / "run").exists()


def test_wrong_shapes_are_listed(tf, tmp_path):
    prefix, _ = small_checkpoint(tf, tmp_path / "ck", add={"res_2/W": np.zeros((1, 1, 8, 9), np.float32),
                                                           "dilatedconv_1/W": np.zeros((1, 2, 8, 16), np.float32)})
    with pytest.raises(NsynthError, match=r"wrong shape 2: dilatedconv_1/W \[1, 2, 8, 16\] \(expected \[1, 3, 8, 16\]\)"
                                          r", res_2/W \[1, 1, 8, 9\]"):
        import_magenta(prefix, tmp_path / "run")


def test_missing_moving_averages_are_listed(tf, tmp_path):
    prefix, _ = small_checkpoint(tf, tmp_path / "ck", ema_drop=("out1",))
    with pytest.raises(NsynthError, match="--ema but 2 moving averages are missing: out1/W, out1/biases$"):
        import_magenta(prefix, tmp_path / "run", ema=True)
    prefix, _ = small_checkpoint(tf, tmp_path / "none", ema=False)
    with pytest.raises(NsynthError, match="holds no moving averages"):
        import_magenta(prefix, tmp_path / "run", ema=True)
    import_magenta(prefix, tmp_path / "run")  # the raw weights are all there


def test_not_a_magenta_checkpoint(tf, tmp_path):
    prefix = save_v2(tf, tmp_path / "other", {"dense/kernel": np.zeros((3, 3), np.float32)})
    with pytest.raises(NsynthError, match="does not hold a Magenta NSynth WaveNet.*missing .*startconv/W"):
        import_magenta(prefix, tmp_path / "run")


def test_released_checkpoint_layout_is_the_nsynth_preset():
    """DESIGN.md's names and shapes for h512_bo16 give exactly the `nsynth` preset, parameter for parameter."""
    kernels = magenta_names(30, 128, 30, 512, 256)
    shapes = {f"{n}/W": s for n, s in kernels.items()} | {f"{n}/biases": (s[-1],) for n, s in kernels.items()}
    cfg = infer_config(shapes, stack=10)
    assert cfg == PRESETS["nsynth"]
    check_names(shapes, cfg, "released")
    ours = sum(p.numel() for p in WaveNetAutoencoder(cfg).parameters())
    assert ours == sum(int(np.prod(s)) for s in shapes.values())
    assert 61.5e6 < ours < 62.0e6  # ~59.8 M decoder + ~2.0 M encoder
