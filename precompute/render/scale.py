"""Scale-out: torchrun ranks on one machine, or Ray tasks on a cluster. Both decode whole shards of the same
plan, so the bank is the same as a single process's.

torchrun: every rank renders shards i with i % world == rank into the shared job folder; rank 0 makes the plan
before, and assembles the bank after, a barrier. The process group is only used for barriers, so it is gloo
(it works between CPU and CUDA processes alike; no tensors are exchanged).

Ray: the driver ships the plan and the model (state dict, or the ONNX files' bytes) through the object store,
runs each pending shard as a task (one GPU each when the cluster has GPUs, else one CPU) and writes each
result into the job folder as it arrives. Workers need this package installed (or the same working directory
on a single machine).
"""
from __future__ import annotations

import datetime
import os
from typing import Callable

import numpy as np

from precompute.render.job import Job
from precompute.render.plan import Plan
from precompute.sampling import Sampling

BARRIER_TIMEOUT = datetime.timedelta(days=7)  # a barrier waits for the slowest rank's whole share


class Dist:
    """The torchrun context from the environment (RANK, WORLD_SIZE, LOCAL_RANK); a no-op in a single process."""

    def __init__(self, env=os.environ):
        self.rank = int(env.get("RANK", 0))
        self.world = int(env.get("WORLD_SIZE", 1))
        self.local_rank = int(env.get("LOCAL_RANK", 0))
        self._group = False
        if self.world > 1:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("gloo", rank=self.rank, world_size=self.world, timeout=BARRIER_TIMEOUT)
                self._group = True

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def share(self, value):
        """Rank 0's `value`, on every rank (every rank calls this at the same point)."""
        if self.world == 1:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def mine(self, n_shards: int) -> range:
        return range(self.rank, n_shards, self.world)

    def close(self) -> None:
        if self._group:
            import torch.distributed as dist

            dist.destroy_process_group()
            self._group = False


# -- Ray -------------------------------------------------------------------------------------------------------
_BACKENDS: dict = {}  # per Ray worker process: payload key -> backend


def _worker_backend(payload: tuple):
    key, kind, data = payload
    if key not in _BACKENDS:
        if kind == "torch":
            import torch

            from precompute.config import ModelConfig
            from precompute.model import WaveNetAutoencoder
            from precompute.render.backends import TorchBackend

            model = WaveNetAutoencoder(ModelConfig.from_dict(data["config"]))
            model.load_state_dict(data["state_dict"])
            _BACKENDS[key] = TorchBackend(model, "cuda" if torch.cuda.is_available() else "cpu",
                                          getattr(torch, data["dtype"]))  # the plan's, whatever this worker is
        else:
            from precompute.render.backends import OnnxBackend

            _BACKENDS[key] = OnnxBackend(*data)
    return _BACKENDS[key]


def render_shard(backend, plan: Plan, i: int, sampling: Sampling, progress=None) -> np.ndarray:
    """Decode shard i of the plan (its notes at once, with their seeds) -> codes int8 [notes, length]."""
    emb, seeds, pitch, levels = plan.shard_inputs(i)
    return backend.decode(emb, seeds, length=plan.length, sampling=sampling, pitch=pitch, progress=progress,
                          levels=levels)


def _ray_task(payload: tuple, plan: Plan, i: int, sampling: Sampling) -> np.ndarray:
    return render_shard(_worker_backend(payload), plan, i, sampling)


def connect_ray(address: str) -> int:
    """Join the Ray cluster at `address` ("local" starts a local instance) unless Ray is already initialised.
    -> the cluster's GPU count."""
    import ray

    if not ray.is_initialized():
        ray.init(address=None if address == "local" else address)
    return int(ray.cluster_resources().get("GPU", 0))


def render_ray(job: Job, plan: Plan, payload: tuple, sampling: Sampling, *, gpus: bool,
               progress: Callable[[int, int], None] | None = None) -> int:
    """Render the plan's pending shards as Ray tasks (one GPU each if `gpus`, else one CPU); the driver writes
    each result into the job folder as it arrives. payload: (key, "torch", {"config", "state_dict"}) or
    (key, "onnxruntime", (files, config)). -> shards rendered."""
    import ray

    task = ray.remote(num_gpus=1 if gpus else 0, num_cpus=0 if gpus else 1, max_retries=2)(_ray_task)
    todo = job.pending(plan)
    payload_ref, plan_ref = ray.put(payload), ray.put(plan)
    running = {task.remote(payload_ref, plan_ref, i, sampling): i for i in todo}
    total, done = sum(len(plan.shard_notes(i)) for i in todo), 0
    while running:
        ready, _ = ray.wait(list(running), num_returns=1)
        i = running.pop(ready[0])
        job.write_shard(plan, i, ray.get(ready[0]))
        done += len(plan.shard_notes(i))
        if progress is not None:
            progress(done, total)
    return len(todo)
