"""The compiled kernel (device/kernels.py) against the engine's numpy reference."""
from dataclasses import replace

import numpy as np
import pytest

from device import kernels
from device.bank import open_bank
from device.engine import Engine, EngineConfig

from synth_banks import write_bank

FS = 48000


def _scenario(seed, frames):
    """Random events of every kind, frame-stamped: notes on several channels (stealing too), X/Y jumps, bends,
    MPE X/Y, pedal, every parameter."""
    rng = np.random.default_rng(seed)
    ev = []
    for _ in range(300):
        f, r = int(rng.integers(0, frames)), rng.random()
        ch = int(rng.integers(0, 4))
        if r < 0.3:
            ev.append((f, ("on", ch, int(rng.integers(20, 110)), int(rng.integers(1, 128)))))
        elif r < 0.45:
            ev.append((f, ("off", ch, int(rng.integers(20, 110)))))
        elif r < 0.7:
            ev.append((f, ("params", {"x": float(rng.random()), "y": float(rng.random())})))
        elif r < 0.8:
            ev.append((f, ("bend", ch, float(rng.normal() * 12))))
        elif r < 0.85:
            ev.append((f, ("note_xy", ch, float(rng.random()), None)))
        elif r < 0.9:
            ev.append((f, ("pedal", bool(rng.random() < 0.5))))
        else:
            ev.append((f, ("params", {k: float(rng.random()) for k in
                                      ("attack", "decay", "sustain", "release", "volume", "position")})))
    return sorted(ev, key=lambda e: e[0])


@pytest.mark.parametrize("cfg", [EngineConfig(), EngineConfig(max_voices=6, loop_crossfade=700, block=64),
                                 EngineConfig(max_rate=2.0, limiter=False, velocity_curve=2.0)])
def test_compiled_kernel_matches_the_numpy_reference(tmp_path, cfg):
    """The compiled kernel against the numpy reference, on random events of every kind through loops (short ones
    too: many wraps per block), stealing, bank swaps: the same output to float32 rounding."""
    assert kernels.COMPILED, "numba is part of the device extra"
    path = tmp_path / "b"
    write_bank(path, grid=3, pitches=(36, 60, 84), velocities=(40, 100), note_length=6000, loop=(1200, 1900))
    other = tmp_path / "o"
    write_bank(other, grid=2, pitches=(60,), velocities=(100,), note_length=3000, loop=(2000, 2900))
    frames = 3 * FS
    events = _scenario(7, frames) + [(FS, ("bank", open_bank(other))), (2 * FS, ("bank", open_bank(path)))]
    events.sort(key=lambda e: e[0])
    outs, voices = [], []
    for compiled in (True, False):
        e = Engine(open_bank(path), replace(cfg, compiled=compiled))
        assert e.compiled == compiled
        for f, ev in events:
            e.post(ev, f)
        outs.append(e.render(frames))
        voices.append((e.stage.copy(), e.level.copy(), e.pos.copy(), e.sxy.copy()))
    assert np.abs(outs[0]).max() > 0.1 and np.count_nonzero(outs[0][:, 0]) > 0.9 * frames
    np.testing.assert_allclose(outs[0], outs[1], rtol=0, atol=1e-6)
    for a, b in zip(*voices):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


def test_engine_warm_command(capsys):
    """`nsynth engine warm` (run at install time) loads or compiles the kernels and says which engine runs."""
    from nsynth.cli import main
    assert main(["engine", "warm"]) == 0
    assert "compiled (numba" in capsys.readouterr().out


def test_the_audio_host_loads_numba_without_scipy():
    """The audio host skips numba's BLAS check (an import of scipy.linalg, a quarter of its start): its kernels
    still load and run, scipy.linalg stays out of the process, and is importable again afterwards."""
    import subprocess
    import sys
    pytest.importorskip("numba")
    script = (
        "import sys\n"
        "from device import kernels\n"
        "kernels.without_blas_check()\n"
        "kernels.warm(verbose=False)\n"
        "print('scipy.linalg' in sys.modules)\n"
        "import scipy.linalg.cython_blas\n"
        "print('scipy.linalg' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "True"]
