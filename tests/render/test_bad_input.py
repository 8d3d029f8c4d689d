"""Bad input: a clear error naming the file and the problem, nothing under the bank's final name, and the job
resumable."""
import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nsynth.cli import main
from nsynth.errors import NsynthError
from precompute.corners import Corner
from precompute.render.render import check_corner_set, render_bank

from render_setup import CLI_SMALL, SMALL, same_bank

ROOT = Path(__file__).resolve().parents[2]


def render_cli(corners, run, out, *extra):
    return main(["render", "--corners", *corners, "--model", str(run), "-o", str(out), *CLI_SMALL, *extra])


def test_missing_model_run(setup, tmp_path, capsys):
    root, corners, _ = setup
    assert render_cli(corners, tmp_path / "no-run", tmp_path / "bank") == 1
    assert "no-run: no such run folder" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_model_run_of_another_version(setup, tmp_path, capsys):
    root, corners, run = setup
    other = tmp_path / "old-run"
    shutil.copytree(run, other)
    doc = json.loads((other / "config.json").read_text())
    doc["format_version"] = 0
    (other / "config.json").write_text(json.dumps(doc))
    assert render_cli(corners, other, tmp_path / "bank") == 1
    assert "old-run/config.json: format version 0" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old-run"]


def test_bad_corner_folder(setup, tmp_path, capsys):
    root, corners, run = setup
    (tmp_path / "empty").mkdir()
    assert render_cli([*corners[:3], str(tmp_path / "empty")], run, tmp_path / "bank") == 1
    assert "empty: no WAVs named" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def corner(name, rate=16000, length=512):
    return Corner(name, np.full((1, 1, length), 0.1, np.float32), [60], [127], rate)


def test_corners_that_disagree_after_loading():
    with pytest.raises(NsynthError, match=r"corner 'c' \(22050 Hz.*does not match corner 'a' \(16000 Hz"):
        check_corner_set([corner("a"), corner("b"), corner("c", rate=22050), corner("d")], length=512,
                         sample_rate=16000)
    with pytest.raises(NsynthError, match="corner 'a' is 16000 Hz, 512 samples; the model needs 16000 Hz and "
                                          "this render 1024 samples"):
        check_corner_set([corner(n) for n in "abcd"], length=1024, sample_rate=16000)


def _limit_file_size(limit):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.parametrize("limit, where", [(1024, "job"), (12 * 1024, "bank")])
def test_write_failure_leaves_nothing_and_resumes(setup, reference, tmp_path, limit, where):
    """A real write failure: files may not grow beyond `limit` bytes (RLIMIT_FSIZE; Python ignores SIGXFSZ, so
    the write fails with EFBIG). 1 KB stops the job (a shard), 12 KB the bank (its 18 KB of samples)."""
    root, corners, run = setup
    out = tmp_path / "bank"
    cmd = [sys.executable, "-m", "nsynth.cli", "render", "--corners", *corners, "--model", str(run), "-o", str(out),
           *CLI_SMALL]
    proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, preexec_fn=_limit_file_size(limit))
    assert proc.returncode == 1, proc.stderr
    assert "cannot write" in proc.stderr and "File too large" in proc.stderr
    assert "run the same command again" in proc.stderr
    assert not out.exists()
    shards = list((tmp_path / "bank.job" / "shards").glob("*.json"))
    assert (len(shards) == 5) == (where == "bank")
    render_bank(corners, run, out, **SMALL)
    assert same_bank(out, reference)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".store", "bank"]
