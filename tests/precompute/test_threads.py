"""Thread selection for the torch commands (precompute/threads.py): the idle physical cores, at least one."""
import pytest
import torch

from nsynth.cli import main
from nsynth.errors import NsynthError
from precompute import threads
from precompute.commands import decode_embeddings
from precompute.config import preset
from precompute.run import new_run


def _cpu_tree(root, cores):
    """A /sys/devices/system/cpu tree: cores[i] = (package, core) of logical CPU i."""
    for i, (pkg, core) in enumerate(cores):
        topo = root / f"cpu{i}" / "topology"
        topo.mkdir(parents=True)
        (topo / "physical_package_id").write_text(f"{pkg}\n")
        (topo / "core_id").write_text(f"{core}\n")
    return root


def test_hyperthreads_count_once_and_only_allowed_cpus_count(tmp_path):
    tree = _cpu_tree(tmp_path, [(0, 0), (0, 1), (0, 0), (0, 1), (1, 0), (1, 0)])  # 3 cores, 2 threads each
    assert threads.physical_cores(set(range(6)), tree) == 3
    assert threads.physical_cores({0, 2}, tree) == 1  # two hyperthreads of one core
    assert threads.physical_cores({0, 1, 4}, tree) == 3
    assert threads.physical_cores({7}, tree) == 1  # no topology: the CPU itself


def test_a_cgroup_quota_caps_the_cores(tmp_path):
    f = tmp_path / "cpu.max"
    f.write_text("max 100000\n")
    assert threads.quota_cores(f) is None
    f.write_text("150000 100000\n")
    assert threads.quota_cores(f) == 2
    f.write_text("50000 100000\n")
    assert threads.quota_cores(f) == 1
    assert threads.quota_cores(tmp_path / "none") is None


@pytest.mark.parametrize("cores,load,ranks,expect", [(8, 0.2, 1, 8), (8, 2.6, 1, 5), (2, 2.6, 1, 1), (2, 1.4, 1, 1),
                                                     (2, 0.4, 1, 2), (8, 0.0, 3, 2), (2, 9.0, 4, 1)])
def test_the_idle_cores_at_least_one(cores, load, ranks, expect):
    assert threads.idle_threads(cores, load, ranks) == expect


def test_a_request_then_omp_num_threads_then_the_idle_cores(monkeypatch):
    assert threads.choose_threads(3, env={"OMP_NUM_THREADS": "5"}) == 3
    with pytest.raises(NsynthError, match="--threads 0"):
        threads.choose_threads(0, env={})
    assert threads.choose_threads(None, env={"OMP_NUM_THREADS": "5"}) == 5
    monkeypatch.setattr(threads, "physical_cores", lambda: 4)
    monkeypatch.setattr(threads, "quota_cores", lambda: None)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (0.3, 0.0, 0.0))
    assert threads.choose_threads(None, env={}) == 4
    assert threads.choose_threads(None, env={"OMP_NUM_THREADS": ""}) == 4
    assert threads.choose_threads(None, env={"LOCAL_WORLD_SIZE": "2"}) == 2  # torchrun ranks share the cores
    monkeypatch.setattr(threads, "quota_cores", lambda: 3)
    assert threads.choose_threads(None, env={}) == 3
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (6.0, 0.0, 0.0))
    assert threads.choose_threads(None, env={}) == 1  # a busy machine: one thread


def test_decode_takes_its_threads(tmp_path):
    import numpy as np

    new_run(tmp_path / "run", preset("tiny"))
    np.save(tmp_path / "emb.npy", np.zeros((1, 16), np.float32))
    try:
        assert main(["decode", str(tmp_path / "emb.npy"), "--model", str(tmp_path / "run"), "-o",
                     str(tmp_path / "o.wav"), "--threads", "2"]) == 0
        assert torch.get_num_threads() == 2
        decode_embeddings(tmp_path / "emb.npy", tmp_path / "run", progress=False)  # OMP_NUM_THREADS=1 (conftest)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(1)
