"""Resumability: lost or damaged shards are rendered again, a SIGKILL at random moments loses nothing, and the
finished bank is byte-identical to an uninterrupted render."""
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nsynth.errors import NsynthError
from precompute.render.job import Job
from precompute.render.render import render_bank
from precompute.sampling import Sampling

from render_setup import CLI_SMALL, SMALL, same_bank

ROOT = Path(__file__).resolve().parents[2]


def test_lost_and_damaged_shards_are_rendered_again(setup, reference, tmp_path):
    root, corners, run = setup
    out, job = tmp_path / "bank", Job(tmp_path / "bank.job")
    shutil.copytree(root / "reference.job", job.path)
    plan = job.load_plan()
    assert plan.n_shards == 5 and not job.pending(plan)
    (job.shards / "00001.npy").unlink()                       # data lost
    (job.shards / "00002.json").unlink()                      # index entry lost
    data = bytearray((job.shards / "00003.npy").read_bytes())  # a flipped byte
    data[-5] ^= 0xFF
    (job.shards / "00003.npy").write_bytes(bytes(data))
    assert job.pending(plan) == [1, 2, 3]
    kept = {i: (job.shards / f"{i:05d}.npy").stat().st_mtime_ns for i in (0, 4)}
    render_bank(corners, run, out, keep_job=True, **SMALL)
    assert same_bank(out, reference)
    assert kept == {i: (job.shards / f"{i:05d}.npy").stat().st_mtime_ns for i in (0, 4)}  # not redone


def test_job_folder_of_other_settings_is_refused(setup, tmp_path):
    root, corners, run = setup
    out = tmp_path / "bank"
    fast = {**SMALL, "pitches": [60], "batch": 9}
    render_bank(corners, run, out, keep_job=True, **fast)
    before = (out / "samples.i16").read_bytes()
    with pytest.raises(NsynthError, match="bank.job: holds an unfinished render of other settings"):
        render_bank(corners, run, out, **{**fast, "sampling": Sampling.resolve(run, seed=1)})
    with pytest.raises(NsynthError, match="planned with --batch 9"):
        render_bank(corners, run, out, **{**fast, "batch": 4})
    assert (out / "samples.i16").read_bytes() == before


def test_sigkill_at_random_moments_then_the_same_command_finishes(setup, reference, tmp_path):
    root, corners, run = setup
    out = tmp_path / "bank"
    cmd = [sys.executable, "-m", "nsynth.cli", "render", "--corners", *corners, "--model", str(run), "-o", str(out),
           *CLI_SMALL]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    rng = random.Random(6)
    plan_json, entries = tmp_path / "bank.job" / "plan.json", tmp_path / "bank.job" / "shards"
    killed_mid_render = 0
    # first as soon as a shard is finished, then at random moments once the plan is written
    for ready, delay in [(lambda: any(entries.glob("*.json")), rng.uniform(0, 0.05)),
                         *[(plan_json.exists, rng.uniform(0.0, 2.5)) for _ in range(3)]]:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
        while proc.poll() is None and not ready():
            time.sleep(0.005)
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            killed_mid_render += not out.exists()
        if out.exists():
            break
    assert killed_mid_render >= 1
    assert subprocess.run(cmd, cwd=ROOT, env=env).returncode == 0
    assert same_bank(out, reference)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".store", "bank"]  # no job folder or partial bank left


def test_shards_of_another_plan_are_not_used(setup, reference, tmp_path):
    root, _, _ = setup
    job = Job(tmp_path / "bank.job")
    shutil.copytree(root / "reference.job", job.path)
    plan = job.load_plan()
    assert job.read_shard(plan, 0) is not None
    plan.key = "0" * 64  # a job folder whose plan.json was replaced by another render's
    assert job.pending(plan) == [0, 1, 2, 3, 4]
    assert not list(job.shards.iterdir())
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / f".bank.job.removing-{int(gone.stdout)}").mkdir()  # a killed render's half-done removal
    job.remove()
    assert list(tmp_path.iterdir()) == []


def test_one_render_per_job_folder(setup, tmp_path):
    root, corners, run = setup
    job = Job(tmp_path / "bank.job")
    with job.lock():
        with pytest.raises(NsynthError, match="bank.job: another render is working in this job folder"):
            render_bank(corners, run, tmp_path / "bank", **SMALL)
    assert not (tmp_path / "bank").exists()
