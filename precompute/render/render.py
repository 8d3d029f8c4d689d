"""`nsynth render`: corners + model -> a bank, resumable, on one process, torchrun ranks or Ray tasks.

load corners -> encode them (mu-law -> encoder) -> grid weights -> plan (unique notes, seeds, shards) in the job
folder -> decode pending shards -> assemble the bank (post-processing, BankWriter, timbre map) -> drop the job
folder (unless kept). A bank already at the output that was rendered from the same request (its manifest's
extra.plan) is complete: the run says so and stops, unless told to re-render.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from device.bank import BankError, BankInfo, open_bank
from nsynth.errors import NsynthError
from nsynth.progress import ETA
from precompute.config import ModelConfig
from precompute.corners import Corner, check_compatible, load_corners
from precompute.generate import decode_dtype
from precompute.model import WaveNetAutoencoder
from precompute.onnx_export import export_onnx
from precompute.render.assemble import assemble
from precompute.render.backends import OnnxBackend, TorchBackend, describe
from precompute.render.grid import MODES, grid_weights, unique_cells
from precompute.render.job import Job
from precompute.render.plan import Plan, note_seed, request_key
from precompute.render.post import rms
from precompute.render.scale import Dist, connect_ray, render_ray, render_shard
from precompute.run import WEIGHTS, load_model
from precompute.sampling import Sampling
from precompute.stepper import CPU_BATCH, auto_batch
from precompute.threads import use_threads

DEFAULT_PITCHES = list(range(21, 109))
DEFAULT_VELOCITIES = [25, 50, 75, 100, 127]
ORIGINAL_PITCHES = list(range(24, 85, 4))
ORIGINAL_VELOCITIES = [127]
BACKENDS = ("torch", "onnxruntime")
SOURCES = ("analysed", "predicted")  # a harmonic source's levels: read from the corners' audio, or from the embeddings
RAY_GPU_BATCH = 256  # --batch auto with --ray on GPUs: the driver cannot see the workers' free memory


def _say(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def check_corner_set(corners: Sequence[Corner], *, length: int, sample_rate: int) -> None:
    """Refuse corners that disagree with each other or with the render (sample rate, note length)."""
    if len(corners) != 4:
        raise NsynthError(f"a bank needs 4 corners (bottom-left, bottom-right, top-left, top-right), got {len(corners)}")
    check_compatible(corners)
    c = corners[0]
    if c.sample_rate != sample_rate or c.audio.shape[-1] != length:
        raise NsynthError(f"corner {c.name!r} is {c.sample_rate} Hz, {c.audio.shape[-1]} samples; the model needs "
                          f"{sample_rate} Hz and this render {length} samples")


def corner_id(corner: Corner) -> str:
    return hashlib.sha256(np.ascontiguousarray(corner.audio, dtype=np.float32).tobytes()).hexdigest()


def make_request(corners: Sequence[Corner], run: Path, model: WaveNetAutoencoder, *, grid: int, length: int,
                 interpolation: str, sampling: Sampling, backend: str, dtype: torch.dtype = torch.float32,
                 source: str = "analysed") -> dict:
    """What decides every sample of the bank (its hash names the plan; a job folder holds one), the decoding
    dtype included: a job begun in bf16 (a GPU) is not finished in fp32 (a CPU without bf16), nor the reverse.
    source: how a model with a harmonic source gets its levels (SOURCES; not recorded for a model without)."""
    request = {"corners": [{"name": c.name, "audio_sha256": corner_id(c), "filled": len(c.fill_report)}
                           for c in corners],
               "model": {"name": run.resolve().name, "config_hash": model.cfg.hash(),
                         "weights_sha256": hashlib.sha256((run / WEIGHTS).read_bytes()).hexdigest()},
               "grid": grid, "pitches": corners[0].pitches, "velocities": corners[0].velocities, "length": length,
               "sample_rate": model.cfg.sample_rate, "interpolation": interpolation,
               **sampling.request(), "backend": backend}
    if dtype != torch.float32:  # likewise for plans decoded in fp32
        request["dtype"] = str(dtype).removeprefix("torch.")
    if model.cfg.source_bands:
        request["source"] = source
    return request


def make_plan(request: dict, corners: Sequence[Corner], encoder, *, hop: int, shard_size: int) -> Plan:
    """Encode the corners (and analyse their source's levels, when the request asks), and lay out every unique
    note."""
    pitches, velocities, n = request["pitches"], request["velocities"], request["grid"]
    audio = np.stack([c.audio for c in corners])  # [4, P, V, L]
    length = audio.shape[-1]
    padded = np.zeros(audio.shape[:-1] + (-(-length // hop) * hop,), np.float32)
    padded[..., :length] = audio
    notes = padded.reshape(-1, padded.shape[-1])  # [4 * P * V, L']
    emb = encoder.encode(notes)
    corner_emb = emb.reshape(audio.shape[:3] + emb.shape[1:]).astype(np.float32)
    harmonics = noise = None
    if request.get("source") == "analysed":
        pitch = np.broadcast_to(np.asarray(pitches)[None, :, None], audio.shape[:3]).reshape(-1).copy()
        harmonics, noise = encoder.analyse(notes, emb, pitch)
        harmonics = harmonics.reshape(audio.shape[:3] + harmonics.shape[1:])
        noise = None if noise is None else noise.reshape(audio.shape[:3] + noise.shape[1:])
    weights = grid_weights(n, request["interpolation"])
    keys, index = unique_cells(weights, [c["audio_sha256"] for c in request["corners"]])
    first = [np.argwhere(index == u)[0] for u in range(len(keys))]
    weights_u = np.stack([weights[y, x] for y, x in first])
    seeds = np.array([[[note_seed(k, p, v, request["seed"]) for k in keys] for v in velocities] for p in pitches],
                     dtype=np.int64)
    target = np.exp(np.log(np.maximum(rms(audio), 1e-9)).mean(0))  # geometric mean of the corners' levels
    return Plan(key=request_key(request), request=request, shard_size=shard_size, pitches=list(pitches),
                velocities=list(velocities), grid=n, length=length, sample_rate=request["sample_rate"],
                corner_names=[c["name"] for c in request["corners"]], cell_index=index, weights=weights_u,
                seeds=seeds, corner_emb=corner_emb, target_rms=target, corner_harmonics=harmonics, corner_noise=noise)


def _onnx_dir(job: Job, model: WaveNetAutoencoder) -> Path:
    if not (job.onnx / "onnx.json").is_file():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export_onnx(model, job.onnx)
    return job.onnx


def plan_dtype(plan: Plan) -> torch.dtype:
    """The dtype a plan's notes are decoded in (its request names it when not fp32): every rank, worker and
    resumed run decodes in it."""
    return getattr(torch, plan.request.get("dtype", "float32"))


def _backend(kind: str, model: WaveNetAutoencoder, job: Job, device: torch.device, dtype: torch.dtype):
    if kind == "torch":
        return TorchBackend(model, device, dtype)
    return OnnxBackend(*OnnxBackend.read_files(_onnx_dir(job, model)), device_id=device.index or 0)


def _device(device: str | None, dist: Dist) -> torch.device:
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda":
        if dev.index is None:
            dev = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(dev)  # CUDA graphs are captured on the current device
    return dev


def _decode_dtype(backend: str, dev: torch.device, ray_gpus) -> torch.dtype:
    """The dtype a new plan records for its notes (plan_dtype): generate's default on the device that decodes
    them (Ray with GPUs: a GPU's); the ONNX backend decodes in fp32."""
    if backend != "torch":
        return torch.float32
    return decode_dtype(torch.device("cuda") if ray_gpus else dev)


def render_bank(corners: Sequence[str], model: str | os.PathLike, out: str | os.PathLike, *, grid: int = 9,
                pitches: Sequence[int] = DEFAULT_PITCHES, velocities: Sequence[int] = DEFAULT_VELOCITIES,
                length: float = 4.0, interpolation: str = "bilinear", batch: int | None = None,
                device: str | None = None, sampling: Sampling | None = None,
                backend: str = "torch", job: str | os.PathLike | None = None, keep_job: bool = False,
                ray: str | None = None, threads: int | None = None, quiet: bool = False,
                rerender: bool = False, source: str = "analysed") -> BankInfo | None:
    """Render (or finish rendering) a bank at `out`. Corners in the order bottom-left, bottom-right, top-left,
    top-right. Under torchrun every rank calls this; rank 0 returns the BankInfo, the others None.
    sampling: how notes are decoded, its seed mixed into every note's (None: as the model's config recommends,
    seed 0: Sampling.resolve). threads: torch's CPU threads (None: precompute.threads.choose_threads, the idle
    physical cores). A bank at `out` already rendered from these settings is returned as it is (`finished_bank`)
    unless `rerender`. source: for a model with a harmonic source, its levels analysed from the corners' audio
    and crossfaded between them ("analysed"), or predicted from each cell's embeddings ("predicted")."""
    _check_settings(corners, interpolation=interpolation, backend=backend, length=length, batch=batch, grid=grid,
                    source=source)
    sampling = Sampling.resolve(model) if sampling is None else sampling
    use_threads(threads)
    out, run = Path(out), Path(model)
    job = Job(job if job is not None else out.with_name(out.name + ".job"))
    net = load_model(run)
    dist = Dist()
    if ray and dist.world > 1:
        raise NsynthError("--ray and torchrun are two ways to scale out; use one")
    with contextlib.ExitStack() as stack:
        stack.callback(dist.close)
        dev = _device(device, dist)
        ray_gpus = connect_ray(ray) if ray else None
        dtype = _decode_dtype(backend, dev, ray_gpus)
        samples = int(round(length * net.cfg.sample_rate))
        plan, coder, finished = None, None, None
        if dist.rank == 0:
            loaded = load_corners(list(corners), pitches=list(pitches), velocities=list(velocities), length=samples,
                                  sample_rate=net.cfg.sample_rate)
            check_corner_set(loaded, length=samples, sample_rate=net.cfg.sample_rate)
            request = make_request(loaded, run, net, grid=grid, length=samples, interpolation=interpolation,
                                   sampling=sampling, backend=backend, dtype=dtype, source=source)
            finished = None if rerender else finished_bank(out, request)
            if finished is None or job.path.exists():
                stack.enter_context(job.lock())
                plan = _resumable_plan(job, request, batch)
            if finished is not None:
                _leave_finished(out, finished, job, keep_job)
            elif plan is None:
                coder = _backend(backend, net, job, dev, dtype)
                if batch is None and ray_gpus is not None:
                    batch = RAY_GPU_BATCH if ray_gpus else CPU_BATCH
                plan = _new_plan(job, request, loaded, coder, net.cfg, batch=batch, device=dev, dtype=dtype,
                                 ranks=dist.world)
        dist.barrier()
        if dist.share(finished is not None):
            return finished
        if plan is None:
            plan = job.load_plan()
        if ray:
            _render_ray(job, plan, _ray_payload(backend, net, job, plan), sampling, address=ray, gpus=bool(ray_gpus),
                        quiet=quiet)
        else:
            _render_local(job, plan, coder or _backend(backend, net, job, dev, plan_dtype(plan)), sampling, dist=dist,
                          quiet=quiet)
        dist.barrier()
        if dist.rank != 0:
            return None
        return _assemble_bank(job, plan, out, net, sampling, interpolation=interpolation, backend=backend,
                              keep_job=keep_job, quiet=quiet)


def _check_settings(corners: Sequence[str], *, interpolation: str, backend: str, length: float,
                    batch: int | None, grid: int, source: str) -> None:
    """Refuse settings no render can use, before anything is loaded."""
    if len(corners) != 4:
        raise NsynthError(f"a bank needs 4 corners (bottom-left, bottom-right, top-left, top-right), got {len(corners)}")
    if interpolation not in MODES:
        raise NsynthError(f"unknown interpolation {interpolation!r}; choose one of {', '.join(MODES)}")
    if backend not in BACKENDS:
        raise NsynthError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if source not in SOURCES:
        raise NsynthError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    if not length > 0 or (batch is not None and batch < 1) or grid < 2:
        raise NsynthError(f"bad settings: length {length} s, batch {batch}, grid {grid}")


def _resumable_plan(job: Job, request: dict, batch: int | None) -> Plan | None:
    """The job folder's plan if it renders `request` (None when there is none); an error for another one."""
    plan = job.load_plan()
    if plan is not None:
        _check_resumable(job, plan, request, batch)
    return plan


def _leave_finished(out: Path, finished: BankInfo, job: Job, keep_job: bool) -> None:
    """A bank already rendered from the request: drop a job folder left beside it (unless kept) and say so."""
    if job.path.exists() and not keep_job:
        job.remove()
    print(f"{out}: already rendered with these settings (plan {finished.extra['plan']}), complete; "
          "nothing to do (--rerender renders it again)", file=sys.stderr, flush=True)


def _new_plan(job: Job, request: dict, corners: Sequence[Corner], coder, cfg: ModelConfig, *, batch: int | None,
              device: torch.device, dtype: torch.dtype, ranks: int) -> Plan:
    """Encode the corners, lay out the notes in shards of `batch` notes (None: stepper.auto_batch's count for
    the decoding device, no more than a torchrun rank's share) and save the plan in the job folder. A shard is
    decoded as one batch (its size is the batch every backend uses)."""
    size = batch or auto_batch(cfg, device, length=request["length"], dtype=dtype)
    plan = make_plan(request, corners, coder, hop=cfg.hop, shard_size=size)
    if batch is None:  # auto: every rank gets a share
        plan.shard_size = min(plan.shard_size, -(-plan.n_notes // ranks))
    job.save_plan(plan)
    return plan


def finished_bank(out: Path, request: dict) -> BankInfo | None:
    """The bank at `out` if it is a complete render of `request` (its manifest records the request's plan key),
    else None."""
    if not (out / "manifest.json").is_file():
        return None
    try:
        info = open_bank(out).info
    except BankError:
        return None
    return info if info.extra.get("plan") == request_key(request)[:16] else None


def _check_resumable(job: Job, plan: Plan, request: dict, batch: int | None) -> None:
    if plan.key != request_key(request):
        raise NsynthError(f"{job.path}: holds an unfinished render of other settings (corners, model, grid, notes, "
                          "length, sampling or backend); delete it, or use --job for another folder")
    if batch is not None and batch != plan.shard_size:
        raise NsynthError(f"{job.path}: was planned with --batch {plan.shard_size}; resume with that (or delete "
                          "the folder to start over)")


def _summary(plan: Plan, todo: list[int] | None, where: str) -> str:
    n = plan.grid
    left = "" if todo is None else f"; {len(todo)} to render here"
    return (f"render: {plan.n_cells} distinct cells of {n}x{n} x {len(plan.pitches)} pitches x "
            f"{len(plan.velocities)} velocities = {plan.n_notes} notes in {plan.n_shards} shards of "
            f"{plan.shard_size}{left} ({where})")


def _render_local(job: Job, plan: Plan, backend, sampling: Sampling, *, dist: Dist, quiet: bool) -> None:
    """Decode this process's pending shards (a torchrun rank's share) into the job folder, with an ETA."""
    todo = job.pending(plan, dist.mine(plan.n_shards))
    where = describe(backend) + (f", rank {dist.rank}/{dist.world}" if dist.world > 1 else "")
    _say(_summary(plan, todo, where), quiet)
    total = sum(len(plan.shard_notes(i)) for i in todo)
    eta = None if quiet else ETA("render", unit="notes")
    done = 0
    for i in todo:
        n = len(plan.shard_notes(i))
        progress = None if eta is None else (lambda s, t, d=done, n=n: eta(d + n * s // t, total))
        job.write_shard(plan, i, render_shard(backend, plan, i, sampling, progress=progress))
        done += n


def _render_ray(job: Job, plan: Plan, payload: tuple, sampling: Sampling, *, address: str, gpus: bool,
                quiet: bool) -> None:
    """Decode the pending shards as Ray tasks on the cluster at `address`."""
    _say(_summary(plan, None, f"Ray tasks at {address}"), quiet)
    render_ray(job, plan, payload, sampling, gpus=gpus, progress=None if quiet else ETA("render", unit="notes"))


def _assemble_bank(job: Job, plan: Plan, out: Path, net: WaveNetAutoencoder, sampling: Sampling, *,
                   interpolation: str, backend: str, keep_job: bool, quiet: bool) -> BankInfo:
    """The decoded shards -> the bank at `out` (its manifest names the model and the settings); drops the job
    folder unless kept."""
    extra = {"interpolation": interpolation, "greedy": sampling.greedy, "temperature": sampling.temperature,
             "quantile": sampling.quantile, "seed": sampling.seed, "backend": backend, "unique_cells": plan.n_cells,
             "plan": plan.key[:16], "corners_filled": {c["name"]: c["filled"] for c in plan.request["corners"]}}
    if "source" in plan.request:
        extra["source"] = plan.request["source"]
    model_name = f"{plan.request['model']['name']}@{plan.request['model']['weights_sha256'][:12]}"
    info = assemble(job, plan, out, model=model_name, config_hash=net.cfg.hash(), extra=extra)
    if not keep_job:
        job.remove()
    _say(f"{out}: {plan.n_notes} notes decoded for {plan.grid ** 2 * len(plan.pitches) * len(plan.velocities)} "
         "bank notes", quiet)
    return info


def _ray_payload(kind: str, net: WaveNetAutoencoder, job: Job, plan: Plan) -> tuple:
    key = f"{plan.key}:{kind}"
    if kind == "torch":
        return key, kind, {"config": net.cfg.to_dict(), "dtype": plan.request.get("dtype", "float32"),
                           "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()}}
    return key, kind, OnnxBackend.read_files(_onnx_dir(job, net))


# -- argparse wrapper ------------------------------------------------------------------------------------------
def resolve_notes(pitches: str | None, velocities: str | None, *, like_original: bool = False
                  ) -> tuple[list[int], list[int]]:
    """--pitches / --velocities text (None: the defaults, every pitch 21-108 and five velocities), or the
    original instrument's 16 pitches 24-84 step 4 at velocity 127 with --like-original."""
    from precompute.datasets.soundfont import parse_ints

    if like_original:
        if pitches or velocities:
            raise NsynthError("--like-original sets the pitches and velocities; leave out --pitches/--velocities")
        return list(ORIGINAL_PITCHES), list(ORIGINAL_VELOCITIES)
    return (parse_ints(pitches, "pitches") if pitches else list(DEFAULT_PITCHES),
            parse_ints(velocities, "velocities") if velocities else list(DEFAULT_VELOCITIES))


def configure(parser) -> None:
    parser.add_argument("--corners", nargs=4, required=True, metavar="SPEC",
                        help="bottom-left, bottom-right, top-left, top-right: WAV folder, sf2:[PATH.sf2:][BANK:]PROGRAM "
                             "or nsynth:ROOT:INSTRUMENT_STR")
    parser.add_argument("--model", required=True, help="run folder")
    parser.add_argument("-o", "--out", required=True, help="bank directory to write")
    parser.add_argument("--grid", type=int, default=9, help="cells per side (default 9)")
    parser.add_argument("--pitches", default=None, help="MIDI pitches, e.g. 21-108 (default) or 24-84:4")
    parser.add_argument("--velocities", default=None, help="velocities (default 25,50,75,100,127)")
    parser.add_argument("--like-original", action="store_true",
                        help="the original instrument's notes: pitches 24-84 step 4, velocity 127")
    parser.add_argument("--length", type=float, default=4.0, help="note length in seconds (default 4.0)")
    parser.add_argument("--interpolation", choices=MODES, default="bilinear",
                        help="bilinear weights (default) or the original's 1 - distance")
    parser.add_argument("--batch", default="auto", help="notes decoded at once (= shard size): a number, or auto "
                                                        f"(from free GPU memory; {CPU_BATCH} on CPU)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--greedy", action="store_true", default=None, help="argmax instead of sampling")
    parser.add_argument("--temperature", type=float, default=None,
                        help="sample at this temperature (no sampling flag: as the model's config.json recommends, "
                             "else sampling at 1)")
    parser.add_argument("--quantile", type=float, default=None,
                        help="decode deterministically: each sample the Q-quantile of its predicted distribution "
                             "(0.5: the median)")
    parser.add_argument("--seed", type=int, default=0, help="mixed into every note's seed")
    parser.add_argument("--backend", choices=BACKENDS, default="torch")
    parser.add_argument("--source", choices=SOURCES, default="analysed",
                        help="a model with a harmonic source: its levels analysed from the corners' audio and "
                             "crossfaded over the grid (default), or predicted from each cell's embeddings")
    parser.add_argument("--job", default=None, help="job folder (default: BANK.job beside the bank)")
    parser.add_argument("--keep-job", action="store_true", help="keep the job folder after the bank is written")
    parser.add_argument("--rerender", action="store_true",
                        help="render again even if the bank at --out was already rendered with these settings "
                             "(without it such a run says it is complete and stops)")
    parser.add_argument("--ray", default=None, metavar="ADDRESS",
                        help="run shards as Ray tasks on this cluster (auto, ray://HOST:PORT, or local)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (default: the idle physical cores, at least 1; see docs/performance.md)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")

    def run(a) -> int:
        pitches, velocities = resolve_notes(a.pitches, a.velocities, like_original=a.like_original)
        try:
            batch = None if a.batch == "auto" else int(a.batch)
        except ValueError:
            raise NsynthError(f"--batch {a.batch!r}: expected a number or auto") from None
        sampling = Sampling.resolve(a.model, a.greedy, a.temperature, a.quantile, a.seed)
        info = render_bank(a.corners, a.model, a.out, grid=a.grid, pitches=pitches, velocities=velocities,
                           length=a.length, interpolation=a.interpolation, batch=batch, device=a.device,
                           sampling=sampling, backend=a.backend, job=a.job,
                           keep_job=a.keep_job, ray=a.ray, threads=a.threads, quiet=a.quiet, rerender=a.rerender,
                           source=a.source)
        if info is not None:
            print(a.out)
        return 0

    parser.set_defaults(func=run)
