"""Scale-out on CPU: torchrun with 2 gloo processes, and a local Ray instance, each write the single-process
bank byte for byte."""
import os
import subprocess
import sys
from pathlib import Path

from precompute.render.render import render_bank
from precompute.sampling import GREEDY

from render_setup import CLI_SMALL, SMALL, same_bank

ROOT = Path(__file__).resolve().parents[2]


def test_torchrun_two_processes(setup, reference, tmp_path):
    root, corners, run = setup
    out = tmp_path / "bank"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "nsynth.cli", "render", "--corners", *corners, "--model", str(run), "-o", str(out),
           *[a for a in CLI_SMALL if a != "-q"]]
    proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # 5 shards: rank 0 takes 0, 2, 4 and rank 1 takes 1, 3
    assert "3 to render here (torch (cpu, 1 CPU thread), rank 0/2)" in proc.stderr
    assert "2 to render here (torch (cpu, 1 CPU thread), rank 1/2)" in proc.stderr
    assert same_bank(out, reference)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".store", "bank"]


def test_ray_local_instance(setup, reference, tmp_path):
    import ray  # the `cluster` extra

    root, corners, run = setup
    out = tmp_path / "bank"
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 2 ** 20, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}})
    onnx = {**SMALL, "grid": 2, "pitches": [60], "batch": 2, "sampling": GREEDY, "backend": "onnxruntime"}
    try:
        render_bank(corners, run, out, ray="local", **SMALL)
        render_bank(corners, run, tmp_path / "onnx-ray", ray="local", **onnx)  # ONNX files travel as bytes
    finally:
        ray.shutdown()
    assert same_bank(out, reference)
    render_bank(corners, run, tmp_path / "onnx-single", **onnx)
    assert same_bank(tmp_path / "onnx-ray", tmp_path / "onnx-single")
