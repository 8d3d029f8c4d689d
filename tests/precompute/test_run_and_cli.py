import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from nsynth.cli import main
from nsynth.errors import NsynthError
from precompute.commands import decode_embeddings, encode_file
from tests.tones import synth_note
from precompute.config import preset
from precompute.run import load_model, new_run, save_weights


@pytest.fixture
def run(tmp_path):
    new_run(tmp_path / "run", preset("tiny"))
    return tmp_path / "run"


def test_checkpoint_round_trip(run):
    m = load_model(run)
    ref = {k: v.clone() for k, v in m.state_dict().items()}
    with torch.no_grad():
        for p in m.parameters():
            p.add_(1.0)
    save_weights(run, m, step=7)
    again = load_model(run)
    assert all(torch.equal(again.state_dict()[k], ref[k] + 1.0) for k in ref)


def test_mismatched_config_is_refused(run, tmp_path):
    doc = json.loads((run / "config.json").read_text())
    doc["model"]["dec_channels"] = 32
    (run / "config.json").write_text(json.dumps(doc))
    with pytest.raises(NsynthError, match="another config"):
        load_model(run)


def test_other_format_version_is_refused(run):
    blob = torch.load(run / "model.pt", weights_only=True)
    blob["format_version"] = 0
    torch.save(blob, run / "model.pt")
    with pytest.raises(NsynthError, match="model.pt: checkpoint format version 0"):
        load_model(run)


def test_run_folder_without_config(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(NsynthError, match="no config.json"):
        load_model(tmp_path / "empty")
    assert main(["encode", "x.wav", "--model", str(tmp_path / "empty"), "-o", str(tmp_path / "e.npy")]) == 1
    assert not (tmp_path / "e.npy").exists()


def test_encode_decode_cli(run, tmp_path, capsys):
    wav = tmp_path / "in.wav"
    sf.write(wav, synth_note(seconds=0.2), 16000)
    assert main(["encode", str(wav), "--model", str(run), "-o", str(tmp_path / "emb.npy")]) == 0
    emb = np.load(tmp_path / "emb.npy")
    assert emb.shape == (3200 // 512, 16) and emb.dtype == np.float32
    assert main(["decode", str(tmp_path / "emb.npy"), "--model", str(run), "-o", str(tmp_path / "out.wav")]) == 0
    audio, sr = sf.read(tmp_path / "out.wav")
    assert sr == 16000 and len(audio) == emb.shape[0] * 512
    assert not list(tmp_path.glob(".*tmp*"))


def test_stereo_44k_is_resampled_with_a_notice(run, tmp_path, caplog):
    wav = tmp_path / "st.wav"
    t = np.arange(44100) / 44100
    sf.write(wav, np.stack([np.sin(2 * np.pi * 220 * t)] * 2, 1) * 0.5, 44100)
    emb = encode_file(wav, run)
    assert emb.shape == (16000 // 512, 16)
    assert "mixed down" in caplog.text and "resampled from 44100" in caplog.text


@pytest.mark.parametrize("kind", ["empty", "nan", "garbage"])
def test_bad_wavs_are_refused_with_the_file_named(run, tmp_path, kind):
    wav = tmp_path / f"{kind}.wav"
    if kind == "empty":
        sf.write(wav, np.zeros(0), 16000)
    elif kind == "nan":
        sf.write(wav, np.full(2048, np.nan, dtype=np.float32), 16000, subtype="FLOAT")
    else:
        wav.write_bytes(b"RIFF\x00\x00garbage")
    with pytest.raises(NsynthError, match=str(wav)):
        encode_file(wav, run, tmp_path / "out.npy")
    assert not (tmp_path / "out.npy").exists()


def test_bad_embeddings_are_refused(run, tmp_path):
    np.save(tmp_path / "bad.npy", np.zeros((4, 3), np.float32))
    with pytest.raises(NsynthError, match=r"bad.npy: expected embeddings \[frames, 16\]"):
        decode_embeddings(tmp_path / "bad.npy", run, tmp_path / "o.wav")
    assert not (tmp_path / "o.wav").exists()


def test_model_new_and_export_cli(tmp_path):
    assert main(["model", "new", "--preset", "tiny", "-o", str(tmp_path / "r")]) == 0
    assert main(["model", "new", "--preset", "tiny", "-o", str(tmp_path / "r")]) == 1  # refuses to overwrite
    assert main(["export-onnx", str(tmp_path / "r"), "-o", str(tmp_path / "onnx")]) == 0
    assert {p.name for p in (tmp_path / "onnx").iterdir()} >= {"encoder.onnx", "decoder_step.onnx", "onnx.json"}


def test_nsynth_console_script_runs(tmp_path):
    out = subprocess.run([sys.executable, "-m", "nsynth.cli", "model", "info", str(tmp_path / "none")],
                         capture_output=True, text=True)
    assert out.returncode == 1 and "no such run folder" in out.stderr


def test_an_excited_model_decodes_at_the_pitch_given(tmp_path):
    run = tmp_path / "excited"
    new_run(run, preset("tiny", harmonics=3))
    np.save(tmp_path / "emb.npy", np.zeros((2, 16), np.float32))
    with pytest.raises(NsynthError, match="give the note's MIDI pitch"):
        decode_embeddings(tmp_path / "emb.npy", run, tmp_path / "o.wav")
    assert not (tmp_path / "o.wav").exists()
    args = ["decode", str(tmp_path / "emb.npy"), "--model", str(run), "-o", str(tmp_path / "o.wav"), "--seed", "1"]
    assert main([*args, "--pitch", "60"]) == 0
    a60 = sf.read(tmp_path / "o.wav")[0]
    assert main([*args, "--pitch", "72"]) == 0
    assert len(a60) == 1024 and not np.array_equal(a60, sf.read(tmp_path / "o.wav")[0])


def test_a_run_recommends_how_it_is_decoded(tmp_path):
    from precompute.run import write_config
    from precompute.sampling import Sampling

    run = tmp_path / "r"
    new_run(run, preset("tiny", harmonics=2))
    assert Sampling.resolve(run) == Sampling(False, 1.0, None, 0)  # no recommendation: sampling at 1
    doc = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**doc, "sampling": {"greedy": True}}))
    assert Sampling.resolve(run, seed=4) == Sampling(True, 1.0, None, 4)
    assert Sampling.resolve(run, None, 0.7) == Sampling(False, 0.7, None, 0)  # an explicit choice wins
    assert Sampling.resolve(run, False) == Sampling(False, 1.0, None, 0)
    assert Sampling.resolve(run, None, None, 0.5) == Sampling(False, 1.0, 0.5, 0)
    assert Sampling.resolve(run, True, 0.7, 0.5) == Sampling(True, 1.0, None, 0)  # --greedy wins over the rest
    write_config(run, preset("tiny", harmonics=2), {"steps": 5})  # training rewrites the config: the advice stays
    assert json.loads((run / "config.json").read_text())["sampling"] == {"greedy": True}
    # `nsynth decode` follows it: greedy, so the seed changes nothing
    np.save(tmp_path / "emb.npy", np.random.default_rng(0).normal(size=(2, 16)).astype(np.float32))
    a = decode_embeddings(tmp_path / "emb.npy", run, sampling=Sampling.resolve(run, seed=1), pitch=60, progress=False)
    b = decode_embeddings(tmp_path / "emb.npy", run, sampling=Sampling.resolve(run, seed=2), pitch=60, progress=False)
    c = decode_embeddings(tmp_path / "emb.npy", run, sampling=Sampling.resolve(run, temperature=1.0, seed=2), pitch=60,
                          progress=False)
    assert np.array_equal(a, b) and not np.array_equal(b, c)
    assert np.array_equal(a, decode_embeddings(tmp_path / "emb.npy", run, pitch=60, progress=False))  # None: resolved
    # the median (quantile 0.5) is deterministic too, and differs from the mode
    (run / "config.json").write_text(json.dumps({**doc, "sampling": {"quantile": 0.5}}))
    assert Sampling.resolve(run) == Sampling(False, 1.0, 0.5, 0)
    m1 = decode_embeddings(tmp_path / "emb.npy", run, sampling=Sampling.resolve(run, seed=1), pitch=60, progress=False)
    m2 = decode_embeddings(tmp_path / "emb.npy", run, sampling=Sampling.resolve(run, seed=2), pitch=60, progress=False)
    assert np.array_equal(m1, m2) and not np.array_equal(m1, a)
    for bad in ({"temperature": "hot"}, {"quantile": 1.5}, {"greedy": 1}, {"top_k": 5}, [0.5],
                {"greedy": True, "quantile": 0.5}):
        (run / "config.json").write_text(json.dumps({**doc, "sampling": bad}))
        with pytest.raises(NsynthError, match=r"r/config.json: bad \"sampling\" section"):
            Sampling.resolve(run)
