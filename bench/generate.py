"""Benchmark: batched cached generation (ours) vs textbook incremental generators vs naive re-running, one run.

    python bench/generate.py [--threads N] [--steps 128] [--rounds 5] [--batches 1,16,64] [--naive-seconds 3]

For the `small` preset at each batch size, on the CPU: samples/s of (a) ours (precompute/stepper.py), (b) the
textbook generator of bench/textbook.py with fastgen's FIFO queues and (b') with r9y9's shifted input buffers,
(c) naive generation re-running the full pass over the receptive field per sample (measured once, at batch 1:
it is compute-bound there already); the ratios (a)/(b), (a)/(b'), (a)/(c);
and (a)'s FLOP/s as a fraction of torch.mm's FLOP/s at the model's matmul shapes and dtype, measured in the same
run. (a), (b), (b') and the matmul reference are timed in interleaved rounds and the best round of each counts
(other jobs share the CPU); (b') runs a quarter of the steps. With a GPU, the `nsynth` preset in bf16 with CUDA
graphs at batch 64 and larger batches up to the free memory, with ms per 4-s note. Ends with one JSON line of the
headline figures.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.textbook import naive_step, textbook_generate  # noqa: E402
from precompute.config import ModelConfig, preset  # noqa: E402
from precompute.generate import capture_chunk  # noqa: E402
from precompute.model import Decoder, WaveNetAutoencoder  # noqa: E402
from precompute.stepper import Stepper, auto_batch  # noqa: E402

NOTE = 64000  # samples in a 4-s note


def flops_per_sample(cfg: ModelConfig) -> int:
    """Multiply-adds x 2 of one generated sample: start, skip_start, per layer the three-tap conv (3R x 2R) and
    the residual + skip 1x1 (R x (R+S)), then out1 and logits (per-frame conditioning excluded)."""
    r, s, q = cfg.dec_channels, cfg.skip_channels, cfg.quant
    return 2 * (3 * r + r * s + cfg.dec_layers * (3 * r * 2 * r + r * (r + s)) + s * s + s * q)


def matmul_shapes(cfg: ModelConfig) -> list[tuple[int, int]]:
    """(K, N) of every matmul of one step, in order; M is the batch."""
    r, s, q = cfg.dec_channels, cfg.skip_channels, cfg.quant
    return [(3, r), (r, s)] + [(3 * r, 2 * r), (r, r + s)] * cfg.dec_layers + [(s, s), (s, q)]


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(fn, dev: torch.device) -> float:
    sync(dev)
    t = time.perf_counter()
    fn()
    sync(dev)
    return time.perf_counter() - t


class Ours:
    def __init__(self, dec: Decoder, emb: torch.Tensor, dtype: torch.dtype, steps: int, graph: bool):
        self.st = Stepper(dec, emb.shape[0], chunk=min(128, steps), greedy=True, dtype=dtype, device=emb.device)
        self.st.set_frame(emb[:, 0])
        self.run = capture_chunk(self.st) if graph else self.st.run_chunk
        self.chunks = -(-steps // self.st.chunk)
        self.steps = self.chunks * self.st.chunk

    def __call__(self) -> None:
        for _ in range(self.chunks):
            self.run()


class MatmulReference:
    """torch.mm (out=) over one step's matmul shapes, distinct weights per layer as in the model."""

    def __init__(self, cfg: ModelConfig, batch: int, dtype: torch.dtype, dev: torch.device, steps: int):
        kw = dict(dtype=dtype, device=dev)
        self.ops = [(torch.randn(batch, k, **kw), torch.randn(k, n, **kw), torch.empty(batch, n, **kw))
                    for k, n in matmul_shapes(cfg)]
        self.steps = steps

    def __call__(self) -> None:
        for _ in range(self.steps):
            for a, w, o in self.ops:
                torch.mm(a, w, out=o)


def decoders(name: str, dev: torch.device, dtype: torch.dtype) -> tuple[Decoder, Decoder]:
    """The preset's decoder (seeded init) in fp32, and a copy in `dtype` for the baselines."""
    torch.manual_seed(0)
    dec = WaveNetAutoencoder(preset(name)).decoder.eval().to(dev)
    low = Decoder(dec.cfg).eval().to(dev)
    low.load_state_dict(dec.state_dict())
    return dec, low.to(dtype)


@torch.no_grad()
def naive_rate(name: str, dev: torch.device, dtype: torch.dtype, seconds: float) -> tuple[float, int]:
    """Samples/s at batch 1 re-running the full pass per sample, each with a full receptive field of history
    (at least one step, then as many as fit in `seconds`); -> (rate, steps)."""
    _, dec = decoders(name, dev, dtype)
    start = dec.cfg.receptive_field + dec.cfg.hop
    x = torch.rand(1, start + 64, device=dev, dtype=dtype) * 2 - 1
    emb = torch.randn(1, 1, dec.cfg.bottleneck, device=dev, dtype=dtype).expand(1, -(-x.shape[1] // dec.cfg.hop), -1)
    naive_step(dec, x[:, :start], emb)  # warm-up
    sync(dev)
    steps, t0 = 0, time.perf_counter()
    while steps == 0 or time.perf_counter() - t0 < seconds:
        naive_step(dec, x[:, : start + steps], emb)
        steps += 1
    sync(dev)
    return steps / (time.perf_counter() - t0), steps


@torch.no_grad()
def bench_batch(name: str, batch: int, dev: torch.device, dtype: torch.dtype, steps: int, rounds: int,
                naive: float | None, textbooks=("fifo", "shift")) -> dict:
    """Best-of-rounds samples/s of ours, the textbooks and the matmul reference at one batch size."""
    dec, low = decoders(name, dev, dtype)
    torch.manual_seed(1)
    emb = torch.randn(batch, 1, dec.cfg.bottleneck, device=dev).expand(-1, -(-steps // dec.cfg.hop), -1)
    ours = Ours(dec, emb, dtype, steps, graph=dev.type == "cuda")
    runs = {"ours": ours, "mm": MatmulReference(dec.cfg, batch, dtype, dev, ours.steps)}
    n = {"ours": ours.steps, "mm": ours.steps, "fifo": ours.steps, "shift": max(16, ours.steps // 4)}
    for q in textbooks:  # r9y9's shifted buffers are slow and steady: fewer steps
        runs[q] = lambda q=q: textbook_generate(low, emb.to(dtype), n[q], queue=q)
    best = {k: float("inf") for k in runs}
    timed(ours, dev)  # warm-up
    timed(runs["mm"], dev)
    for _ in range(rounds):
        for k, fn in runs.items():
            best[k] = min(best[k], timed(fn, dev))
    rate = {k: batch * n[k] / best[k] for k in runs if k != "mm"}
    if naive:
        rate["naive"] = naive
    flops = flops_per_sample(dec.cfg)
    mm_flops = batch * ours.steps * sum(2 * k * n for k, n in matmul_shapes(dec.cfg)) / best["mm"]
    res = {"preset": name, "batch": batch, "dtype": str(dtype).replace("torch.", ""), "steps": ours.steps,
           "samples_per_s": {k: round(v, 1) for k, v in rate.items()},
           "ratio_vs_textbook": round(rate["ours"] / rate["fifo"], 2) if "fifo" in rate else None,
           "ratio_vs_shift_textbook": round(rate["ours"] / rate["shift"], 2) if "shift" in rate else None,
           "ratio_vs_naive": round(rate["ours"] / rate["naive"]) if "naive" in rate else None,
           "gflops": round(rate["ours"] * flops / 1e9, 2), "mm_gflops": round(mm_flops / 1e9, 2),
           "matmul_fraction": round(rate["ours"] * flops / mm_flops, 3),
           "ms_per_note": round(NOTE / rate["ours"] * 1e3, 1)}
    return res


def row(r: dict) -> str:
    sps = r["samples_per_s"]
    cells = [f"{r['preset']:>6} B={r['batch']:<5}", f"ours {sps['ours']:>10,.0f}/s"]
    cells += [f"{k} {sps[k]:>9,.0f}/s" for k in ("fifo", "shift") if k in sps]
    cells += [f"naive(B=1) {sps['naive']:,.1f}/s" if "naive" in sps else "None"]
    cells += [f"ours/fifo {r['ratio_vs_textbook']}", f"ours/shift {r['ratio_vs_shift_textbook']}",
              f"{r['gflops']} GFLOP/s = {r['matmul_fraction']:.0%} of mm ({r['mm_gflops']})",
              f"{r['ms_per_note']:,.0f} ms/note"]
    return "  ".join(c for c in cells if "None" not in c)


def default_threads() -> int:
    """The cores not already busy (1-minute load average), at most torch's default."""
    busy = round(os.getloadavg()[0])
    return max(1, min(torch.get_num_threads(), (os.cpu_count() or 1) - busy))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for every method (default: idle cores)")
    ap.add_argument("--steps", type=int, default=128, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batches", default="1,16,64")
    ap.add_argument("--naive-seconds", type=float, default=3.0, help="time for naive re-running (at least 1 step)")
    args = ap.parse_args()
    threads = args.threads or default_threads()
    torch.set_num_threads(threads)
    load0 = os.getloadavg()[0]
    cpu_name = platform.processor() or platform.machine()
    try:
        cpu_name = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"CPU: {cpu_name}, {os.cpu_count()} cores, {threads} torch threads, load average {load0:.1f}, "
          f"torch {torch.__version__}", flush=True)
    cpu = torch.device("cpu")
    naive, naive_steps = naive_rate("small", cpu, torch.float32, args.naive_seconds)
    print(f"naive re-running at batch 1: {naive:.2f} samples/s ({naive_steps} steps)", flush=True)
    cpu_rows = []
    for b in [int(v) for v in args.batches.split(",")]:
        cpu_rows.append(bench_batch("small", b, cpu, torch.float32, args.steps, args.rounds, naive))
        print(row(cpu_rows[-1]), flush=True)
    gpu_rows = []
    if torch.cuda.is_available():
        dev = torch.device("cuda")
        print(f"GPU: {torch.cuda.get_device_name(dev)}", flush=True)
        cfg = preset("nsynth")
        per_note = Stepper.bytes_per_note(Decoder(cfg), torch.bfloat16) + 8 * NOTE  # + output codes
        top = auto_batch(per_note, torch.cuda.mem_get_info(dev)[0])
        naive_gpu, _ = naive_rate("nsynth", dev, torch.bfloat16, args.naive_seconds)
        for b in sorted({64, 256, 1024, top} & set(range(1, top + 1))):
            gpu_rows.append(bench_batch("nsynth", b, dev, torch.bfloat16, 256, args.rounds, naive_gpu,
                                        textbooks=("fifo",) if b == 64 else ()))
            print(row(gpu_rows[-1]), flush=True)
    load1 = os.getloadavg()[0]
    head = next(r for r in cpu_rows if r["batch"] == 64) if any(r["batch"] == 64 for r in cpu_rows) else cpu_rows[-1]
    summary = {"bench": "generate", "cpu": cpu_name, "threads": threads, "load_avg": [round(load0, 1), round(load1, 1)],
               "preset": "small", "batch": head["batch"], "ratio_vs_textbook": head["ratio_vs_textbook"],
               "ratio_vs_shift_textbook": head["ratio_vs_shift_textbook"],
               "ratio_vs_naive": head["ratio_vs_naive"], "matmul_fraction": head["matmul_fraction"],
               "samples_per_s": head["samples_per_s"]["ours"], "cpu_rows": cpu_rows}
    if gpu_rows:
        best = min(gpu_rows, key=lambda r: r["ms_per_note"])
        summary.update(gpu=torch.cuda.get_device_name(dev), gpu_best_batch=best["batch"],
                       gpu_ms_per_note=best["ms_per_note"], gpu_matmul_fraction=best["matmul_fraction"],
                       gpu_rows=gpu_rows)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
