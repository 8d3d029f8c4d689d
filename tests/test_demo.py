"""`nsynth demo` end to end with a tiny model: the bank, the phrase and the WAV, wherever -o points."""
import soundfile as sf
import torch

from nsynth.cli import main
from precompute.config import preset
from precompute.run import new_run


def test_demo_writes_its_wav_into_a_folder_named_without_a_suffix(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    run = tmp_path / "run"
    new_run(run, preset("tiny", source_bands=6, source_residual=True))
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "-o", "out", "--model", str(run), "--threads", "1"]) == 0
    audio, rate = sf.read(tmp_path / "out" / "demo.wav")
    assert rate == 48000 and audio.ndim == 2 and len(audio) > rate
    assert (tmp_path / "out" / "demo" / "bank" / "manifest.json").is_file()
    assert (tmp_path / "out" / "demo" / "phrase.mid").is_file()
