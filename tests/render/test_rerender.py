"""A finished render run again says it is complete and stops (the bank is not touched), unless told to
re-render; other settings, or a leftover job folder, are handled as before."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

from device.bank import SAMPLES, open_bank
from nsynth.cli import main
from precompute.render.render import render_bank
from precompute.sampling import Sampling

from render_setup import CLI_SMALL, SMALL, same_bank

ROOT = Path(__file__).resolve().parents[2]


def identity(bank):
    st = (bank / SAMPLES).stat()
    return st.st_ino, st.st_mtime_ns


def finished_copy(reference, tmp_path, job=False):
    """The reference bank (rendered by the CLI with CLI_SMALL = SMALL) as a finished render at tmp_path/bank."""
    shutil.copytree(reference, tmp_path / "bank")
    if job:
        shutil.copytree(reference.with_name("reference.job"), tmp_path / "bank.job")
    return tmp_path / "bank"


def test_a_finished_render_is_not_rendered_again(setup, reference, tmp_path, capsys):
    root, corners, run = setup
    out = finished_copy(reference, tmp_path)
    before = identity(out)
    info = render_bank(corners, run, out, **SMALL)
    assert info == open_bank(out).info and identity(out) == before  # the same bank, not written again
    err = capsys.readouterr().err
    assert f"{out}: already rendered with these settings (plan {info.extra['plan']}), complete" in err
    assert "--rerender" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bank"]  # no job folder made for nothing

    render_bank(corners, run, out, rerender=True, **SMALL)
    assert identity(out) != before and same_bank(out, reference)

    render_bank(corners, run, out, **{**SMALL, "sampling": Sampling.resolve(run, seed=1)})  # other settings: rendered
    assert not same_bank(out, reference)


def test_a_bank_decoded_in_another_dtype_is_not_taken_for_finished(setup, reference, tmp_path, monkeypatch, capsys):
    """A bank rendered in fp32 is not the render a bf16 machine (a GPU, a CPU with AMX) would make: its plan
    key differs, so it is rendered again there instead of being reported complete."""
    import torch
    from precompute.render import render as render_mod
    root, corners, run = setup
    out = finished_copy(reference, tmp_path)
    fp32_plan = open_bank(out).info.extra["plan"]
    from precompute.render import backends
    used = []
    real = backends.generate
    monkeypatch.setattr(backends, "generate", lambda *a, **kw: used.append(kw["dtype"]) or real(*a, **kw))
    monkeypatch.setattr(render_mod, "decode_dtype", lambda dev: torch.bfloat16)
    info = render_bank(corners, run, out, **SMALL)
    assert "already rendered" not in capsys.readouterr().err
    assert info.extra["plan"] != fp32_plan
    assert used and set(used) == {torch.bfloat16}  # and its notes are decoded in the dtype its plan names


def test_the_cli_says_complete_and_rerenders_when_told(setup, reference, tmp_path, capsys):
    root, corners, run = setup
    out = finished_copy(reference, tmp_path)
    before = identity(out)
    cmd = ["render", "--corners", *corners, "--model", str(run), "-o", str(out), *CLI_SMALL]
    assert main(cmd) == 0
    assert "already rendered with these settings" in capsys.readouterr().err and identity(out) == before
    assert main([*cmd, "--rerender"]) == 0
    assert "already rendered" not in capsys.readouterr().err
    assert identity(out) != before and same_bank(out, reference)


def test_a_complete_bank_with_its_job_folder_left_drops_the_folder(setup, reference, tmp_path, capsys):
    """Killed between writing the bank and removing the job folder: the next run finds the bank complete."""
    root, corners, run = setup
    out = finished_copy(reference, tmp_path, job=True)
    before = identity(out)
    render_bank(corners, run, out, keep_job=True, **SMALL)  # kept when asked
    assert (tmp_path / "bank.job" / "plan.json").is_file()
    render_bank(corners, run, out, **SMALL)
    assert capsys.readouterr().err.count("already rendered") == 2
    assert identity(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["bank"]


def test_every_torchrun_rank_stops_on_a_finished_bank(setup, reference, tmp_path):
    root, corners, run = setup
    out = finished_copy(reference, tmp_path)
    before = identity(out)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "nsynth.cli", "render", "--corners", *corners, "--model", str(run), "-o", str(out), *CLI_SMALL]
    proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("already rendered with these settings") == 1 and "to render here" not in proc.stderr
    assert identity(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["bank"]
