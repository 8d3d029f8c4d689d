"""A model with a harmonic source renders each cell's source at levels analysed from the corners' audio and
crossfaded between them (the default), or predicted from the cell's embeddings (--source predicted)."""
import numpy as np
import soundfile as sf
import torch

from device.bank import open_bank
from precompute.config import preset
from precompute.render.job import Job
from precompute.render.render import render_bank
from precompute.run import load_model, new_run, save_weights
from precompute.sampling import GREEDY

from render_setup import SR, write_corner

PITCH = 60
F0 = 440 * 2 ** ((PITCH - 69) / 12)
WINDOW = slice(2048, 4096)  # a sustain window of the 0.5-s notes


def harmonic_amps(x: np.ndarray) -> np.ndarray:
    """Amplitudes of harmonics 1..5 of F0 in WINDOW (a Hann-windowed DFT at each)."""
    seg = x[WINDOW] * np.hanning(WINDOW.stop - WINDOW.start)
    t = np.arange(len(seg)) / SR
    return np.array([abs(np.sum(seg * np.exp(-2j * np.pi * F0 * h * t))) for h in range(1, 6)])


def source_playing_run(path):
    """A residual decoder that always draws class 128 (a residual of nearly zero): its bank is its source."""
    new_run(path, preset("tiny", source_bands=6, source_residual=True))
    model = load_model(path)
    with torch.no_grad():
        model.decoder.logits.weight.zero_()
        model.decoder.logits.bias.zero_()
        model.decoder.logits.bias[128] = 50.0
    save_weights(path, model)
    return path


def test_cells_play_their_corners_spectra_crossfaded(tmp_path):
    """Oracle: each corner WAV's harmonics measured by a DFT of the file itself. The corner cells keep their
    corner's harmonic profile; the centre cell's is the corners' amplitudes summed with its weights (a quarter
    each), not their geometric mean; predicted from the untrained MLP's embeddings, the corners lose it."""
    corners = [write_corner(tmp_path / f"c{i}", i, pitches=[PITCH]) for i in range(4)]
    originals = [harmonic_amps(sf.read(f"{c}/c{i}_{PITCH}_127.wav")[0]) for i, c in enumerate(corners)]
    run = source_playing_run(tmp_path / "run")
    profiles = {}
    for source in ("analysed", "predicted"):
        out = tmp_path / source
        render_bank(corners, run, out, grid=3, pitches=[PITCH], velocities=[127], length=0.5, batch=9, threads=1,
                    quiet=True, sampling=GREEDY, source=source, keep_job=True)
        bank = open_bank(out, verify=True)
        assert bank.info.extra["source"] == source
        cells = np.asarray(bank.samples)[0, 0].astype(np.float64) / 32768
        profiles[source] = {(y, x): harmonic_amps(cells[y, x]) for y in range(3) for x in range(3)}
    got = profiles["analysed"]
    for k, (y, x) in enumerate([(0, 0), (0, 2), (2, 0), (2, 2)]):
        want = originals[k] / originals[k][0]
        assert np.allclose(got[y, x] / got[y, x][0], want, rtol=0.05, atol=2e-3), (k, got[y, x] / got[y, x][0], want)
        assert not np.allclose(profiles["predicted"][y, x] / profiles["predicted"][y, x][0], want, rtol=0.3)
    mix = sum(originals) / 4
    assert np.allclose(got[1, 1] / got[1, 1][0], mix / mix[0], rtol=0.05, atol=2e-3), (got[1, 1] / got[1, 1][0], mix / mix[0])
    geometric = np.exp(np.mean(np.log(originals), 0))
    assert abs(got[1, 1][4] / got[1, 1][0] - geometric[4] / geometric[0]) > 0.2 * mix[4] / mix[0]
    plan = Job(tmp_path / "analysed.job").load_plan()
    assert plan.request["source"] == "analysed" and plan.corner_harmonics.shape[:4] == (4, 1, 1, 16)
    assert Job(tmp_path / "predicted.job").load_plan().corner_harmonics is None


def test_a_model_without_a_source_renders_as_before(setup, reference):
    """Nothing to analyse: the request and the plan are those of a plain model (no source, no levels)."""
    root, _, _ = setup
    plan = Job(root / "reference.job").load_plan()
    assert "source" not in plan.request and plan.corner_harmonics is None and plan.corner_noise is None
    assert "source" not in open_bank(reference).info.extra
