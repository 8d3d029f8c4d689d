import numpy as np
import pytest

from device.bank import TIMBRE_MAP, open_bank
from nsynth.cli import main
from nsynth.errors import NsynthError
from precompute.render.job import Job
from precompute.render.post import PEAK_LIMIT, rms
from precompute.render.render import resolve_notes


def test_cli_render_writes_a_valid_bank(reference):
    bank = open_bank(reference, verify=True)
    assert bank.info.shape == (2, 1, 3, 3, 512)
    assert bank.info.corners == ("c0", "c1", "c2", "c3")
    assert (reference / TIMBRE_MAP).stat().st_size > 1000
    notes = np.asarray(bank.samples, dtype=np.float64)
    assert (np.abs(notes).max(-1) > 1000).all()  # every note holds sound
    assert len({notes[0, 0, y, x].tobytes() for y in range(3) for x in range(3)}) == 9  # distinct cells


def test_note_sets():
    assert resolve_notes(None, None) == (list(range(21, 109)), [25, 50, 75, 100, 127])
    assert resolve_notes(None, None, like_original=True) == (list(range(24, 85, 4)), [127])
    assert len(resolve_notes(None, None, like_original=True)[0]) == 16
    assert resolve_notes("24-84:12", "64,127") == ([24, 36, 48, 60, 72, 84], [64, 127])
    with pytest.raises(NsynthError, match="--like-original sets the pitches"):
        resolve_notes("60", None, like_original=True)


def test_cells_match_the_corners_level(setup, reference):
    """Every cell at a pitch and velocity is at the corners' level there (or peak-limited just below full scale)."""
    root, _, _ = setup
    plan = Job(root / "reference.job").load_plan()
    notes = np.asarray(open_bank(reference).samples, dtype=np.float64) / 32767
    level, peak = rms(notes), np.abs(notes).max(-1)
    target = plan.target_rms[:, :, None, None]
    limited = peak > PEAK_LIMIT - 1e-3
    assert (np.isclose(level, target, rtol=0.01) | (limited & (level < target))).all()
    assert not limited.all()


def test_timbre_map_command(reference, tmp_path, capsys):
    assert main(["timbre-map", str(reference), "-o", str(tmp_path / "map.png"), "--pitch", "64"]) == 0
    assert (tmp_path / "map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["timbre-map", str(reference), "-o", str(tmp_path / "bad.png"), "--pitch", "61"]) == 1
    assert "not pitch 61 velocity 127" in capsys.readouterr().err
    assert not (tmp_path / "bad.png").exists()
