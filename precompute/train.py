"""Training: random 6144-sample crops, Adam with the paper's step schedule scaled to the run length, gradient
clipping, bf16 autocast on CUDA, atomic checkpoints that resume at the same step with the same optimizer and RNG state."""
from __future__ import annotations

import io
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from nsynth.errors import NsynthError
from nsynth.fsutil import atomic_path
from precompute.config import preset
from precompute.model import WaveNetAutoencoder
from precompute.run import read_config, save_weights, write_config
from precompute.threads import use_threads

STATE = "train_state.pt"
SOURCE_TERMS = ("source", "noise")  # the losses a source adds beside "ce" (WaveNetAutoencoder.source_losses)
PROBE = (5, 25)  # with a time budget: the steps of this call between which the step rate is measured
BUDGET_USE = 0.9  # fraction of the remaining budget planned for steps (validation and checkpoints take the rest)
CURVES = "loss.png"
CURVE_MEAN = 50  # steps in the running mean drawn over each training curve
INIT_WARMUP = 100  # --warmup default of a warm-started run
# The paper's schedule (200k steps): lr multipliers after these fractions of the run.
SCHEDULE = [(0.0, 1.0), (90 / 200, 1.33 / 2), (120 / 200, 0.6 / 2), (150 / 200, 0.4 / 2), (180 / 200, 0.2 / 2)]


@dataclass
class TrainConfig:
    steps: int = 1000
    batch: int = 8
    crop: int = 6144
    lr: float = 2e-4
    clip: float = 1.0
    checkpoint_every: int = 200
    valid_every: int = 200
    valid_crops: int = 32
    seed: int = 0
    warmup: int = 0  # steps of linear ramp-up (a warm start's fresh Adam moments would jolt its trained weights)
    input_noise: float = 0.0  # std of the Gaussian noise injected into the decoder's past samples ([-1, 1] scale)
    source_teacher: bool = False  # the decoder's source from the crops' own analysis (NoteExcitation.analysed)
    # The schedule's current segment: from step lr_from, at multiplier lr_scale, to `steps` (see retarget).
    lr_from: int = 0
    lr_scale: float = 1.0


def _multiplier(tc: TrainConfig, step: int) -> float:
    frac = max(0.0, (step - tc.lr_from) / max(tc.steps - tc.lr_from, 1))  # (the step before a retarget: its start)
    return tc.lr_scale * [m for f, m in SCHEDULE if frac >= f][-1]


def learning_rate(tc: TrainConfig, step: int) -> float:
    """The paper's step schedule over the current segment, after the warm-up ramp."""
    ramp = min(1.0, (step + 1) / tc.warmup) if tc.warmup else 1.0
    return tc.lr * ramp * _multiplier(tc, step)


def retarget(tc: TrainConfig, step: int, total: int) -> None:
    """A new total of steps, set at `step` (a resumed run told to go on longer, a time budget): the schedule
    continues from the multiplier it had reached there and decays over the new remainder in the paper's shape,
    instead of jumping back up to where the longer schedule would be."""
    tc.lr_scale, tc.lr_from, tc.steps = _multiplier(tc, step), step, total


@dataclass
class Notes:
    """Whole notes held in memory: mu-law codes int8 [N, T] (64 kB a note) and MIDI pitches int64 [N]."""
    codes: torch.Tensor
    pitch: torch.Tensor


@dataclass
class Crops:
    """A batch of crops: codes int64 [n, crop], their notes' pitches [n], and the noise [n, crop] injected into the
    decoder's input (None: none)."""
    codes: torch.Tensor
    pitch: torch.Tensor
    noise: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, i: slice) -> "Crops":
        return Crops(self.codes[i], self.pitch[i], None if self.noise is None else self.noise[i])

    def to(self, device) -> "Crops":
        return Crops(self.codes.to(device), self.pitch.to(device), None if self.noise is None else self.noise.to(device))


def load_notes(root: str | os.PathLike) -> Notes:
    """An NSynth-layout folder -> its notes' codes and pitches."""
    from precompute.datasets.nsynth import load_examples
    from precompute.datasets.pack import note_codes

    notes = load_examples(root)
    if not notes:
        raise NsynthError(f"{root}: no notes")
    first = note_codes(notes[0])
    codes = torch.empty(len(notes), len(first), dtype=torch.int8)
    for i, note in enumerate(notes):  # one note at a time: a float copy of a big dataset does not fit in memory
        codes[i] = first if i == 0 else note_codes(note)
    return Notes(codes, torch.tensor([n.pitch for n in notes], dtype=torch.int64))


def load_splits(data: Path, crop: int) -> tuple[Notes, Notes]:
    """DATA, a folder with train/ and valid/ or a pack (`nsynth dataset pack`) -> (train, valid) notes, each at
    least `crop` samples long."""
    if data.is_file():
        from precompute.datasets.pack import read_pack

        header, splits = read_pack(data)
        if header["samples"] < crop:
            raise NsynthError(f"{data}: notes of {header['samples']} samples are shorter than the {crop}-sample crop")
        empty = [s for s, c in splits.items() if not len(c)]
        if empty:
            raise NsynthError(f"{data}: no {' or '.join(empty)} notes in the pack")
        pitch = {s: torch.tensor([n["pitch"] for n in header["notes"] if n["split"] == s], dtype=torch.int64)
                 for s in splits}
        return Notes(splits["train"], pitch["train"]), Notes(splits["valid"], pitch["valid"])
    from precompute.datasets.split import split_dirs

    dirs = split_dirs(data)
    return load_notes(dirs["train"]), load_notes(dirs["valid"])


def random_crops(notes: Notes, n: int, crop: int, gen: torch.Generator, input_noise: float = 0.0) -> Crops:
    """n random crops of `crop` samples (with input noise of that std, when > 0), drawn from gen."""
    idx = torch.randint(notes.codes.shape[0], (n,), generator=gen)
    start = torch.randint(notes.codes.shape[1] - crop + 1, (n,), generator=gen)
    codes = torch.stack([notes.codes[i, s: s + crop] for i, s in zip(idx.tolist(), start.tolist())]).long()
    noise = torch.randn(n, crop, generator=gen) * input_noise if input_noise > 0 else None
    return Crops(codes, notes.pitch[idx], noise)


def loss_fn(model: WaveNetAutoencoder, crops: Crops, analysed: bool = False) -> dict[str, torch.Tensor]:
    """The model's losses of a batch (WaveNetAutoencoder.losses; analysed: the decoder's source from the crops'
    own analysis); "total" is what is minimised: the decoder's cross-entropy plus the harmonic source's
    log-amplitude error, when it has a source."""
    losses = model.losses(crops.codes, crops.pitch, crops.noise, analysed)
    losses["total"] = sum(losses.values())
    return losses


def plot_curves(history: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    curves = [("train", "train", "-"), ("valid", "valid", "o-")]
    for term in SOURCE_TERMS:
        curves += [(term, f"{term} (train)", "-"), (f"valid_{term}", f"{term} (valid)", "o-")]
    for key, label, style in curves:
        if history.get(key):
            s, l = (np.asarray(v, dtype=float) for v in zip(*history[key]))
            if style == "o-":
                ax.plot(s, l, style, label=label)
                continue
            line, = ax.plot(s, l, "-", alpha=0.2)  # every step, faint; its running mean over it
            k = min(CURVE_MEAN, len(l))
            ax.plot(s[k - 1:], np.convolve(l, np.ones(k) / k, "valid"), "-", color=line.get_color(),
                    label=f"{label}, mean of {k} steps")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats / sample);\nsource, noise: |log-amplitude error|")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", ncol=2)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def _save_state(run: Path, model, opt, gen: torch.Generator, step: int, history: dict) -> None:
    blob = {"step": step, "model": model.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(),
            "history": history}
    with atomic_path(run / STATE) as tmp:
        torch.save(blob, tmp)
    save_weights(run, model, step)


def _load_state(run: Path, model, opt, gen: torch.Generator, device: str) -> tuple[int, dict]:
    """Restore RUN's training state into model, opt and gen -> (step, history). (A "scaler" entry, which
    states written before bf16 autocast alone was used hold, is not read.)"""
    blob = torch.load(io.BytesIO((run / STATE).read_bytes()), map_location=device, weights_only=False)
    model.load_state_dict(blob["model"])
    opt.load_state_dict(blob["opt"])
    gen.set_state(blob["gen"])
    return blob["step"], blob["history"]


def _new_run_config(run: Path, data: Path, preset_name: str | None, tc: TrainConfig | None, steps: int | None,
                    init: str | os.PathLike | None, overrides: dict | None) -> tuple:
    """A new RUN's model and training settings, written into RUN/config.json -> (cfg, tc, saved)."""
    if preset_name is None:
        raise NsynthError(f"{run}: no training state to resume; give --preset to start a new run")
    cfg = preset(preset_name, **(overrides or {}))
    tc = tc or TrainConfig()
    if steps is not None:
        tc.steps = steps
    run.mkdir(parents=True, exist_ok=True)
    saved = {**asdict(tc), "data": str(data)}
    sampling = None
    if init is not None:
        from precompute.run import checkpoint_step

        saved["init"] = {"run": str(init), "step": checkpoint_step(init)}
        sampling = read_config(init)[1].get("sampling")  # decoded as its parent was, until measured otherwise
    write_config(run, cfg, saved, sampling)
    return cfg, tc, saved


def _saved_run_config(run: Path) -> tuple:
    """A resumed RUN's model and its saved training settings -> (cfg, tc, saved)."""
    cfg, doc = read_config(run)
    saved = doc["train"]
    return cfg, TrainConfig(**{k: v for k, v in saved.items() if k in TrainConfig.__dataclass_fields__}), saved


def _retarget_saved(run: Path, cfg, tc: TrainConfig, saved: dict, step: int, total: int) -> dict:
    """retarget to `total` steps at `step` and save the new schedule in RUN/config.json -> the saved settings."""
    retarget(tc, step, total)
    saved = {**saved, **asdict(tc)}
    write_config(run, cfg, saved)
    return saved


def train_step(model: WaveNetAutoencoder, opt: torch.optim.Optimizer, crops: Crops, *, lr: float, clip: float,
               amp: bool, analysed: bool = False) -> dict[str, torch.Tensor]:
    """One optimizer step on a batch of crops (bf16 autocast when amp; gradients clipped to norm `clip`; a step
    whose gradients are not finite is skipped) -> the losses."""
    model.train()
    for g in opt.param_groups:
        g["lr"] = lr
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
        losses = loss_fn(model, crops, analysed)
    opt.zero_grad(set_to_none=True)
    losses["total"].backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    if torch.isfinite(norm):
        opt.step()
    return losses


class _Budget:
    """A wall-clock budget (deadline None: none): between the PROBE steps of this call the step rate is measured,
    and `probe` returns the total of steps that ends within BUDGET_USE of what is left (else None)."""

    def __init__(self, deadline: float | None):
        self.deadline, self._t = deadline, None

    def left(self) -> bool:
        return self.deadline is None or time.monotonic() < self.deadline

    def probe(self, done_here: int, step: int) -> tuple[int, float] | None:
        """-> (new total, steps/s) once the rate is measured, else None."""
        if self.deadline is None or done_here not in PROBE:
            return None
        if done_here == PROBE[0]:
            self._t = time.monotonic()
            return None
        rate = (PROBE[1] - PROBE[0]) / (time.monotonic() - self._t)
        return step + max(1, int(BUDGET_USE * rate * (self.deadline - time.monotonic()))), rate


class _Progress:
    """The log line every 10 s (and at the end): recent loss, validation, learning rate, step rate, ETA."""

    def __init__(self, log):
        self.log, self.t0, self.last = log, time.monotonic(), 0.0

    def __call__(self, tc: TrainConfig, step: int, done_here: int, history: dict) -> None:
        now = time.monotonic()
        if not (now - self.last > 10 or step == tc.steps):
            return
        self.last = now
        rate = done_here / (now - self.t0)
        recent = np.mean([l for _, l in history["train"][-50:]])
        val = f", valid {history['valid'][-1][1]:.3f}" if history["valid"] else ""
        for key in SOURCE_TERMS:
            if history.get(key):
                val += f", {key} {np.mean([l for _, l in history[key][-50:]]):.3f}"
        self.log(f"step {step}/{tc.steps} loss {recent:.3f}{val} lr {learning_rate(tc, step - 1):.2e} "
                 f"({rate:.2f} steps/s, ETA {(tc.steps - step) / max(rate, 1e-9) / 60:.1f} min)")


def _record(history: dict, losses: dict, step: int) -> None:
    history["train"].append((step, losses["ce"].item()))
    for key in SOURCE_TERMS:
        if key in losses:
            history.setdefault(key, []).append((step, losses[key].item()))


def _validate(history: dict, model: WaveNetAutoencoder, valid_set: Crops, tc: TrainConfig, step: int,
              device: str) -> None:
    for key, value in evaluate(model, valid_set, tc.batch, device, tc.source_teacher).items():
        history.setdefault("valid" if key == "ce" else f"valid_{key}", []).append((step, value))


def _checkpoint(run: Path, model, opt, gen: torch.Generator, step: int, history: dict) -> None:
    _save_state(run, model, opt, gen, step, history)
    plot_curves(history, run / CURVES)


def train(data: str | os.PathLike, run: str | os.PathLike, *, preset_name: str | None = None,
          tc: TrainConfig | None = None, device: str | None = None, threads: int | None = None,
          stop_after: int | None = None, steps: int | None = None, minutes: float | None = None,
          init: str | os.PathLike | None = None, overrides: dict | None = None, log=print) -> dict:
    """Train (or resume) RUN on DATA (a folder with train/ and valid/ NSynth layouts, or a dataset pack).
    Returns the history.

    A new RUN needs preset_name; an existing RUN resumes from its train_state.pt at the saved step, with its saved
    settings; `steps` there sets a new total (the schedule goes on from the learning rate reached: retarget) and
    is saved in RUN/config.json.
    stop_after: return after this many steps of this call (tests).
    minutes: wall-clock budget of this call, loading included (a GPU lease, a night): once the step rate is
    measured (PROBE) the total is set, like `steps`, so that the schedule ends within it; the call returns at the
    budget's end in any case, with a checkpoint.
    init: a new RUN starts from this run's weights (warm_start) instead of a random initialisation.
    overrides: model config fields a new RUN sets instead of its preset's (e.g. {"harmonics": 0}: no sines).
    threads: torch's CPU threads (None: precompute.threads.choose_threads, the idle physical cores)."""
    started = time.monotonic()
    run, data = Path(run), Path(data)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    threads = use_threads(threads)
    resume = (run / STATE).is_file()
    cfg, tc, saved = (_saved_run_config(run) if resume
                      else _new_run_config(run, data, preset_name, tc, steps, init, overrides))
    if tc.source_teacher and not cfg.source_bands:
        raise NsynthError(f"{run}: --source-teacher needs a model with a harmonic source (preset {cfg.preset} has none)")
    train_notes, valid_notes = load_splits(data, tc.crop)
    torch.manual_seed(tc.seed)
    model = WaveNetAutoencoder(cfg)
    if init is not None and not resume:
        warm_start(model, init)
        log(f"initialised from {init} (step {saved['init']['step']})")
    model = model.to(device)
    log(f"train: {len(train_notes.codes)} notes, valid: {len(valid_notes.codes)} notes, preset {cfg.preset}, "
        f"{sum(p.numel() for p in model.parameters()):,} parameters, device {device}, {threads} CPU threads")
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr)
    gen = torch.Generator().manual_seed(tc.seed)
    step, history = 0, {"train": [], "valid": []}
    if resume:
        step, history = _load_state(run, model, opt, gen, device)
        log(f"resumed {run} at step {step}")
        if steps is not None and steps != tc.steps:
            saved = _retarget_saved(run, cfg, tc, saved, step, steps)
        elif minutes is not None and step >= tc.steps:  # a finished run goes on: its budget's probe sets the total
            saved = _retarget_saved(run, cfg, tc, saved, step, step + PROBE[1])
        elif step >= tc.steps:
            log(f"{run} has finished its {tc.steps} steps: give --steps (a new total) or --minutes to train on")
    valid_set = random_crops(valid_notes, tc.valid_crops, tc.crop, torch.Generator().manual_seed(1234))

    budget = _Budget(None if minutes is None else started + minutes * 60)
    progress, done_here = _Progress(log), 0
    while step < tc.steps and (stop_after is None or done_here < stop_after) and budget.left():
        crops = random_crops(train_notes, tc.batch, tc.crop, gen, tc.input_noise).to(device)
        losses = train_step(model, opt, crops, lr=learning_rate(tc, step), clip=tc.clip,
                            amp=device.startswith("cuda"), analysed=tc.source_teacher)
        step += 1
        done_here += 1
        measured = budget.probe(done_here, step)
        if measured is not None:
            saved = _retarget_saved(run, cfg, tc, saved, step, measured[0])
            log(f"{measured[1]:.2f} steps/s: {tc.steps} steps in all fit the {minutes:g}-minute budget")
        _record(history, losses, step)
        if step % tc.valid_every == 0 or step == tc.steps:
            _validate(history, model, valid_set, tc, step, device)
        if step % tc.checkpoint_every == 0 or step == tc.steps:
            _checkpoint(run, model, opt, gen, step, history)
        progress(tc, step, done_here, history)
    if done_here and step % tc.checkpoint_every:
        _checkpoint(run, model, opt, gen, step, history)
    return history


def warm_start(model: WaveNetAutoencoder, run: str | os.PathLike) -> None:
    """Copy RUN's weights into model: a tensor of the same shape whole; one that has grown (new inputs, e.g. the
    excitation's columns of decoder.start.weight) gets RUN's values in its leading block and zeros elsewhere; a
    module RUN does not have at all (e.g. decoder.source) keeps its fresh initialisation. So the model starts out
    computing what RUN's does."""
    from precompute.run import load_model

    old = load_model(run).state_dict()
    new = model.state_dict()
    old_modules = {".".join(k.split(".")[:2]) for k in old}
    for name, t in new.items():
        src = old.get(name)
        if src is None and ".".join(name.split(".")[:2]) not in old_modules:
            continue
        if src is None or src.dim() != t.dim() or any(a > b for a, b in zip(src.shape, t.shape)):
            raise NsynthError(f"{run}: its weights do not fit this model ({name}: "
                              f"{None if src is None else tuple(src.shape)} -> {tuple(t.shape)})")
        t.zero_()
        t[tuple(slice(0, n) for n in src.shape)] = src


@torch.no_grad()
def evaluate(model: WaveNetAutoencoder, crops: Crops, batch: int, device: str,
             analysed: bool = False) -> dict[str, float]:
    """Mean losses over the validation crops (as loss_fn): "ce" (and "source", "noise", for a model with a
    source)."""
    model.eval()
    sums: dict[str, float] = {}
    for i in range(0, len(crops), batch):
        part = crops[i: i + batch]
        for key, value in model.losses(part.codes.to(device), part.pitch.to(device), analysed=analysed).items():
            sums[key] = sums.get(key, 0.0) + float(value) * len(part)
    return {key: value / len(crops) for key, value in sums.items()}


def configure(parser) -> None:
    parser.add_argument("data", help="dataset folder with train/ and valid/ (NSynth json/wav layout), "
                                     "or a pack made by `nsynth dataset pack`")
    parser.add_argument("--run", required=True, help="run folder (created, or resumed if it holds a training state)")
    parser.add_argument("--preset", help="model preset for a new run (tiny, compact, small, nsynth)")
    parser.add_argument("--harmonics", type=int, default=None,
                        help="a new run's sine excitation harmonics instead of the preset's (0: the paper's decoder)")
    parser.add_argument("--source-residual", action="store_true",
                        help="a new run's decoder adds to its harmonic source (predicts the audio minus the source)")
    parser.add_argument("--source-noise", type=int, default=None, metavar="BANDS",
                        help="a new run's source also holds filtered noise in this many bands (DDSP's noise part)")
    parser.add_argument("--init", help="a new run starts from this run's weights (fine-tuning; grown tensors "
                                       "such as a new excitation input start at zero)")
    parser.add_argument("--input-noise", type=float, default=0.0,
                        help="std of Gaussian noise injected into the decoder's past samples (FFTNet; 0: none)")
    parser.add_argument("--source-teacher", action="store_true",
                        help="train the decoder on the crops' own source (their harmonics' amplitudes and noise "
                             "levels, analysed) instead of the source's prediction")
    parser.add_argument("--warmup", type=int, default=None,
                        help=f"steps of learning-rate ramp-up (default 0; {INIT_WARMUP} with --init)")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"total steps (new run: default {TrainConfig.steps}; resuming: a new total)")
    parser.add_argument("--minutes", type=float, default=None,
                        help="wall-clock budget: sets the total steps from the measured rate to end within it")
    parser.add_argument("--batch", type=int, default=TrainConfig.batch)
    parser.add_argument("--lr", type=float, default=TrainConfig.lr, help="peak learning rate (paper: 2e-4)")
    parser.add_argument("--crop", type=int, default=TrainConfig.crop)
    parser.add_argument("--checkpoint-every", type=int, default=TrainConfig.checkpoint_every)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (default: the idle physical cores, at least 1; see docs/performance.md)")
    parser.add_argument("--device", default=None)
    parser.set_defaults(func=_main)


def _main(args) -> int:
    warmup = args.warmup if args.warmup is not None else (INIT_WARMUP if args.init else 0)
    tc = TrainConfig(batch=args.batch, lr=args.lr, crop=args.crop, checkpoint_every=args.checkpoint_every,
                     valid_every=args.checkpoint_every, seed=args.seed, warmup=warmup,
                     input_noise=args.input_noise, source_teacher=args.source_teacher)
    overrides = {**({} if args.harmonics is None else {"harmonics": args.harmonics}),
                 **({"source_residual": True} if args.source_residual else {}),
                 **({} if args.source_noise is None else {"source_noise": args.source_noise})}
    train(args.data, args.run, preset_name=args.preset, tc=tc, device=args.device, threads=args.threads,
          steps=args.steps, minutes=args.minutes, init=args.init, overrides=overrides,
          log=lambda line: print(line, flush=True))  # logs are tailed
    return 0
