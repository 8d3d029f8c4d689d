"""Benchmark: batched cached generation (ours) vs textbook incremental generators vs naive re-running, one run.

    python bench/generate.py [--threads N] [--steps 128] [--rounds 5] [--batches 1,16,64] [--compact-batch 128]
                             [--naive-max-batch 16] [--no-breakdown]

Rows, on the CPU:
- `small` at each batch size: samples/s of (a) ours (precompute/generate.py's BatchDecoding, greedy), (b) the
  textbook generator of testkit/textbook.py with fastgen's FIFO queues and (b') with r9y9's shifted input buffers,
  (c) naive generation re-running the full pass over the receptive field for every sample, at the same batch size
  (batches up to --naive-max-batch: one step there takes ~0.8 s per note on a 2-core machine);
- `compact` (the bundled preset, with its excitation) at --compact-batch: ours as `nsynth render` decodes it
  (median decoding, the notes' excitation computed per chunk, pitches 24..84);
- on a CPU with bf16 in hardware (AMX, AVX512-BF16), the largest `small` batch and `compact` again in bf16.
Every row also times torch.mm over the matmul shapes ours runs per step, in the same dtype: `matmul_fraction` is
ours' FLOP/s over mm's (FLOPs: every matmul of a step, start to logits; the per-frame conditioning, under 0.02%
of the work, is left out of both). All methods of a row run in interleaved rounds (one naive step per round,
r9y9's buffers a quarter of the steps); the best round of each counts (other jobs share the CPU). A per-operation
breakdown of ours (torch.profiler) follows for the largest `small` batch and the `compact` row.
With a GPU, the `nsynth` preset in bf16 with CUDA graphs at batch 64 and larger batches up to the free memory,
with ms per 4-s note. Ends with one JSON line of the headline figures (`matmul_fraction`: small at batch 64;
`compact_matmul_fraction`).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from precompute.config import ModelConfig, preset  # noqa: E402
from precompute.generate import BatchDecoding, cpu_has_bf16  # noqa: E402
from precompute.model import Decoder, WaveNetAutoencoder  # noqa: E402
from precompute.sampling import GREEDY, Sampling  # noqa: E402
from precompute.stepper import auto_batch  # noqa: E402
from precompute.threads import choose_threads  # noqa: E402
from testkit.textbook import naive_step, textbook_generate  # noqa: E402

NOTE = 64000  # samples in a 4-s note
COMPACT_PITCHES = list(range(24, 85, 4))  # the original's pitch set
MEDIAN = Sampling(quantile=0.5)  # the compact model's recommended decoding (models/compact/config.json)


def matmul_shapes(cfg: ModelConfig) -> list[tuple[int, int]]:
    """(K, N) of every matmul of one step of the packed stepper, in order; M is the batch: start (and the
    excitation's input), per layer the three-tap conv and the residual 1x1 (none after the last layer), all skip
    1x1s as one, out1, logits."""
    r, s, q, n = cfg.dec_channels, cfg.skip_channels, cfg.quant, cfg.dec_layers
    exc = [(cfg.exc_width, r)] if cfg.exc_width else []
    return [(3, r)] + exc + [(3 * r, 2 * r)] * n + [(r, r)] * (n - 1) + [((n + 1) * r, s), (s, s), (s, q)]


def flops_per_sample(cfg: ModelConfig) -> int:
    """Multiply-adds x 2 of one generated sample: every matmul of matmul_shapes."""
    return sum(2 * k * n for k, n in matmul_shapes(cfg))


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(fn, dev: torch.device) -> float:
    sync(dev)
    t = time.perf_counter()
    fn()
    sync(dev)
    return time.perf_counter() - t


def cpu_name() -> str:
    try:
        return next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


class Ours:
    """`steps` steps of generate()'s batch decoding (BatchDecoding: stepper chunks, noise, excitation)."""

    def __init__(self, dec: Decoder, emb: torch.Tensor, dtype: torch.dtype, steps: int, graph: bool,
                 pitch: torch.Tensor | None = None, sampling: Sampling = GREEDY):
        self.dec = BatchDecoding(dec, emb, [0] * len(emb), pitch=pitch, sampling=sampling, dtype=dtype, graph=graph)
        self.chunks = -(-steps // self.dec.steps)
        self.steps = self.chunks * self.dec.steps
        self.t = 0

    def __call__(self) -> None:
        for _ in range(self.chunks):  # on through the note, as a render goes (the excitation's frames move on)
            self.dec.chunk(self.t)
            self.t = (self.t + self.dec.steps) % (self.dec.frames.shape[0] * self.dec.hop)


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


class Naive:
    """One sample per note by re-running the full pass over a receptive field of history (testkit/textbook.py)."""

    def __init__(self, dec: Decoder, batch: int, dtype: torch.dtype, dev: torch.device):
        self.dec, cfg = dec, dec.cfg
        start = cfg.receptive_field + cfg.hop
        self.x = torch.rand(batch, start, device=dev, dtype=dtype) * 2 - 1
        self.emb = torch.randn(batch, 1, cfg.bottleneck, device=dev, dtype=dtype).expand(-1, -(-start // cfg.hop), -1)

    def __call__(self) -> None:
        naive_step(self.dec, self.x, self.emb)


def decoders(name: str, dev: torch.device, dtype: torch.dtype) -> tuple[Decoder, Decoder]:
    """The preset's decoder (seeded init) in fp32, and a copy in `dtype` for the baselines."""
    torch.manual_seed(0)
    dec = WaveNetAutoencoder(preset(name)).decoder.eval().to(dev)
    low = Decoder(dec.cfg).eval().to(dev)
    low.load_state_dict(dec.state_dict())
    return dec, low.to(dtype)


def inputs(dec: Decoder, batch: int, steps: int, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Embeddings [B, F, E] for `steps` steps (at least 2 frames, varying) and, for an excited decoder, pitches."""
    torch.manual_seed(1)
    emb = torch.randn(batch, max(2, -(-steps // dec.cfg.hop)), dec.cfg.bottleneck, device=dev)
    pitch = None
    if dec.cfg.exc_width:
        pitch = torch.tensor([COMPACT_PITCHES[i % len(COMPACT_PITCHES)] for i in range(batch)], device=dev)
    return emb, pitch


@torch.inference_mode()  # as generate() decodes; every method alike
def bench_row(name: str, batch: int, dev: torch.device, dtype: torch.dtype, steps: int, rounds: int, *,
              naive: bool, textbooks=("fifo", "shift"), sampling: Sampling = GREEDY) -> tuple[dict, Ours]:
    """Best-of-rounds samples/s of ours, the baselines and the matmul reference at one batch size."""
    dec, low = decoders(name, dev, dtype)
    emb, pitch = inputs(dec, batch, steps, dev)
    ours = Ours(dec, emb, dtype, steps, graph=dev.type == "cuda", pitch=pitch, sampling=sampling)
    runs = {"ours": ours, "mm": MatmulReference(dec.cfg, batch, dtype, dev, ours.steps)}
    n = {"ours": ours.steps, "mm": ours.steps, "fifo": ours.steps, "shift": max(16, ours.steps // 4), "naive": 1}
    for q in textbooks:  # r9y9's shifted buffers are slow and steady: fewer steps
        runs[q] = lambda q=q: textbook_generate(low, emb.to(dtype), n[q], queue=q)
    if naive:
        runs["naive"] = Naive(low, batch, dtype, dev)
    best = {k: float("inf") for k in runs}
    timed(ours, dev)  # warm-up
    timed(runs["mm"], dev)
    for _ in range(rounds):
        for k, fn in runs.items():
            best[k] = min(best[k], timed(fn, dev))
    rate = {k: batch * n[k] / best[k] for k in runs if k != "mm"}
    flops = flops_per_sample(dec.cfg)
    mm_flops = batch * ours.steps * flops / best["mm"]
    ratio = lambda k: round(rate["ours"] / rate[k], 2) if k in rate else None  # noqa: E731
    res = {"preset": name, "batch": batch, "dtype": str(dtype).replace("torch.", ""), "steps": ours.steps,
           "decoding": sampling.describe(),
           "samples_per_s": {k: round(v, 2 if k == "naive" else 1) for k, v in rate.items()},
           "ratio_vs_textbook": ratio("fifo"), "ratio_vs_shift_textbook": ratio("shift"),
           "ratio_vs_naive": round(rate["ours"] / rate["naive"]) if "naive" in rate else None,
           "mflop_per_sample": round(flops / 1e6, 3),
           "gflops": round(rate["ours"] * flops / 1e9, 2), "mm_gflops": round(mm_flops / 1e9, 2),
           "matmul_fraction": round(rate["ours"] * flops / mm_flops, 3),
           "ms_per_note": round(NOTE / rate["ours"] * 1e3, 1)}
    return res, ours


CATEGORIES = {  # top-level operations of a decoding chunk -> what they do
    "aten::addmm": "matmul", "aten::addmm_": "matmul", "aten::mm": "matmul",
    "aten::index_select": "tap gather", "aten::index_copy_": "ring write",
    "aten::glu": "gate", "aten::sigmoid_": "gate", "aten::tanh_": "gate", "aten::add": "gate",
    "aten::relu_": "head relu",
    "aten::softmax": "sampling", "aten::cumsum": "sampling", "aten::clamp": "sampling", "aten::mul_": "sampling",
    "aten::searchsorted": "sampling", "aten::clamp_": "sampling", "aten::argmax": "sampling",
    "aten::copy_": "sampling", "aten::mul": "sampling", "aten::sub_": "sampling",
    "aten::remainder": "ring slots", "aten::add_": "ring slots",
    "excitation": "excitation (per chunk)", "noise": "noise (per chunk)",
}


@torch.inference_mode()
def breakdown(ours: Ours, dev: torch.device, rounds: int = 3) -> dict:
    """Microseconds per step by kind of operation: each kind's share of a profiled run (torch.profiler: the
    top-level operations and the per-chunk inputs; "python + dispatch" is the profiled wall time outside them)
    times the best unprofiled wall time per step ("wall")."""
    wall = min(timed(ours, dev) for _ in range(rounds)) / ours.steps * 1e6
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        profiled = timed(ours, dev)
    per = defaultdict(float)
    for e in prof.events():
        if e.cpu_parent is None:
            per[CATEGORIES.get(e.name, "other")] += e.cpu_time_total * 1e-6
    per["python + dispatch"] = max(0.0, profiled - sum(per.values()))
    total = sum(per.values())
    out = {k: round(v / total * wall, 1) for k, v in sorted(per.items(), key=lambda kv: -kv[1])}
    out["wall"] = round(wall, 1)
    return out


def row(r: dict) -> str:
    sps = r["samples_per_s"]
    cells = [f"{r['preset']:>7} B={r['batch']:<5}", f"ours {sps['ours']:>9,.0f}/s"]
    cells += [f"{k} {sps[k]:>8,.0f}/s" for k in ("fifo", "shift") if k in sps]
    cells += [f"naive {sps['naive']:,.2f}/s" if "naive" in sps else None]
    cells += [f"ours/fifo {r['ratio_vs_textbook']}" if r["ratio_vs_textbook"] else None,
              f"ours/shift {r['ratio_vs_shift_textbook']}" if r["ratio_vs_shift_textbook"] else None,
              f"ours/naive {r['ratio_vs_naive']:,}" if r["ratio_vs_naive"] else None,
              f"{r['gflops']} GFLOP/s = {r['matmul_fraction']:.0%} of mm ({r['mm_gflops']})",
              f"{r['ms_per_note']:,.0f} ms/note"]
    return "  ".join(c for c in cells if c)


def show_breakdown(r: dict, parts: dict) -> str:
    wall = parts["wall"]
    cells = [f"{k} {v:,.0f} ({v / wall:.0%})" for k, v in parts.items() if k != "wall"]
    return f"  {r['preset']} B={r['batch']}, us per step of {wall:,.0f}: " + ", ".join(cells)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads for every method (default: the idle cores, precompute/threads.py)")
    ap.add_argument("--steps", type=int, default=128, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batches", default="1,16,64", help="batch sizes of the `small` rows")
    ap.add_argument("--compact-batch", type=int, default=128, help="batch of the `compact` row (0: none)")
    ap.add_argument("--naive-max-batch", type=int, default=16,
                    help="naive re-running at the rows' batch sizes up to this (one step per round)")
    ap.add_argument("--no-breakdown", action="store_true", help="skip the per-operation breakdown")
    args = ap.parse_args()
    threads = choose_threads(args.threads)
    torch.set_num_threads(threads)
    load0 = os.getloadavg()[0]
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores ({torch.backends.cpu.get_cpu_capability()}), {threads} torch "
          f"threads, load average {load0:.1f}, torch {torch.__version__}", flush=True)
    cpu = torch.device("cpu")
    cpu_rows, parts = [], {}
    batches = [int(v) for v in args.batches.split(",")]
    for b in batches:
        r, ours = bench_row("small", b, cpu, torch.float32, args.steps, args.rounds, naive=b <= args.naive_max_batch)
        cpu_rows.append(r)
        print(row(r), flush=True)
        if b == max(batches) and not args.no_breakdown:
            parts["small"] = breakdown(ours, cpu)
            print(show_breakdown(r, parts["small"]), flush=True)
    compact = None
    if args.compact_batch:
        compact, ours = bench_row("compact", args.compact_batch, cpu, torch.float32, args.steps, args.rounds,
                                  naive=False, textbooks=(), sampling=MEDIAN)
        print(row(compact), flush=True)
        if not args.no_breakdown:
            parts["compact"] = breakdown(ours, cpu)
            print(show_breakdown(compact, parts["compact"]), flush=True)
    bf16_rows = []
    if cpu_has_bf16():  # bf16 in hardware (AMX, AVX512-BF16): the rows generate() then decodes in by default
        for name, b, how in (("small", max(batches), GREEDY), ("compact", args.compact_batch, MEDIAN)):
            if b:
                bf16_rows.append(bench_row(name, b, cpu, torch.bfloat16, args.steps, args.rounds, naive=False,
                                           textbooks=(), sampling=how)[0])
                print(row(bf16_rows[-1]) + " (bf16)", flush=True)
    gpu_rows = []
    if torch.cuda.is_available():
        dev = torch.device("cuda")
        print(f"GPU: {torch.cuda.get_device_name(dev)}", flush=True)
        cfg = preset("nsynth")
        top = auto_batch(cfg, dev, length=NOTE, dtype=torch.bfloat16)
        for b in sorted({64, 256, 1024, top} & set(range(1, top + 1))):
            gpu_rows.append(bench_row("nsynth", b, dev, torch.bfloat16, 256, args.rounds, naive=b <= 64,
                                      textbooks=("fifo",) if b == 64 else ())[0])
            print(row(gpu_rows[-1]), flush=True)
    load1 = os.getloadavg()[0]
    head = next((r for r in cpu_rows if r["batch"] == 64), cpu_rows[-1])
    with_naive = [r for r in cpu_rows if r["ratio_vs_naive"]]
    summary = {"bench": "generate", "cpu": cpu_name(), "threads": threads,
               "load_avg": [round(load0, 1), round(load1, 1)],
               "preset": "small", "batch": head["batch"], "ratio_vs_textbook": head["ratio_vs_textbook"],
               "ratio_vs_shift_textbook": head["ratio_vs_shift_textbook"],
               "ratio_vs_naive": with_naive[-1]["ratio_vs_naive"] if with_naive else None,
               "naive_batch": with_naive[-1]["batch"] if with_naive else None,
               "matmul_fraction": head["matmul_fraction"], "samples_per_s": head["samples_per_s"]["ours"],
               "compact_matmul_fraction": compact["matmul_fraction"] if compact else None,
               "compact_samples_per_s": compact["samples_per_s"]["ours"] if compact else None,
               "cpu_rows": cpu_rows + ([compact] if compact else []) + bf16_rows, "breakdown_us_per_step": parts}
    if gpu_rows:
        best = min(gpu_rows, key=lambda r: r["ms_per_note"])
        summary.update(gpu=torch.cuda.get_device_name(dev), gpu_best_batch=best["batch"],
                       gpu_ms_per_note=best["ms_per_note"], gpu_matmul_fraction=best["matmul_fraction"],
                       gpu_rows=gpu_rows)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
