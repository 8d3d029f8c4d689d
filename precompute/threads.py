"""How many CPU threads torch gets in `nsynth render`, `decode`, `train` and `demo`: the idle physical cores.

Decoding runs ~130 small operations per step; with more threads than idle cores, every parallel operation waits
for a worker the scheduler has put aside, and a step takes many times longer (bench/threads.py: torch's default of
2 threads on a busy 2-core machine decoded 5-20x slower than 1 thread). So a job takes the physical cores it may
run on (CPU affinity, a cgroup CPU quota) minus the machine's load (the 1-minute load average, rounded), shared
among the torchrun ranks on this machine, and at least one. An explicit --threads, else OMP_NUM_THREADS, wins.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

from nsynth.errors import NsynthError


def physical_cores(cpus: set[int] | None = None, sys_cpu: Path = Path("/sys/devices/system/cpu")) -> int:
    """Distinct physical cores among the CPUs this process may run on (hyperthreads counted once)."""
    cpus = cpus if cpus is not None else os.sched_getaffinity(0)
    cores = set()
    for c in cpus:
        topo = sys_cpu / f"cpu{c}" / "topology"
        try:
            cores.add((topo.joinpath("physical_package_id").read_text().strip(),
                       topo.joinpath("core_id").read_text().strip()))
        except OSError:
            cores.add(("cpu", str(c)))
    return max(1, len(cores))


def quota_cores(cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int | None:
    """The cgroup (v2) CPU quota in whole cores, rounded up; None without one."""
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else max(1, math.ceil(int(quota) / int(period)))


def idle_threads(cores: int, load: float, ranks: int = 1) -> int:
    """The rule: the cores not taken by the load, shared among `ranks` processes, at least 1."""
    return max(1, (cores - round(load)) // max(1, ranks))


def choose_threads(requested: int | None = None, env=os.environ) -> int:
    """requested (--threads) if given, else OMP_NUM_THREADS if set, else the idle physical cores (idle_threads)."""
    if requested is not None:
        if requested < 1:
            raise NsynthError(f"--threads {requested}: need at least 1")
        return requested
    if env.get("OMP_NUM_THREADS", "").strip().isdigit() and int(env["OMP_NUM_THREADS"]) > 0:
        return int(env["OMP_NUM_THREADS"])
    cores = physical_cores()
    quota = quota_cores()
    if quota is not None:
        cores = min(cores, quota)
    return idle_threads(cores, os.getloadavg()[0], int(env.get("LOCAL_WORLD_SIZE", 1) or 1))


def use_threads(requested: int | None = None) -> int:
    """Set torch's intra-op threads by choose_threads; -> the count."""
    import torch

    n = choose_threads(requested)
    torch.set_num_threads(n)
    return n
