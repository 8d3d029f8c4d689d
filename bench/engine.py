"""Engine benchmark: CPU time per 128-frame block at 1, 8 and 32 voices (each 4 cells x 2 velocity layers) as a
fraction of the block period (48 kHz), the cost per voice against FluidSynth's fast render of the same note
count on this machine, and RSS with a small bank vs a multi-GB sparse bank (memory-mapped: it must stay flat).

    python bench/engine.py [--blocks 3000] [--no-memory]

Targets: 32 voices in <= 10 % of the block period; per-voice cost <= 2x FluidSynth's. Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from device.bank import BankWriter, open_bank  # noqa: E402
from device.engine import Engine, EngineConfig  # noqa: E402

FS, BLOCK = 48000, 128
PERIOD = BLOCK / FS
SOUNDFONT = "/usr/share/sounds/sf2/TimGM6mb.sf2"


def synth_bank(path: Path, *, grid: int, pitches: list[int], velocities: list[int], note_length: int) -> None:
    """A bank of steady harmonic notes (timbre varies over the grid), loops at 20 %..41 % as the original's."""
    t = np.arange(note_length) / 16000
    fade = np.minimum(1.0, np.arange(note_length) / 160)
    with BankWriter(path, grid=grid, pitches=pitches, velocities=velocities, note_length=note_length,
                    corners=["a", "b", "c", "d"], model="bench") as w:
        for pi, p in enumerate(pitches):
            f0 = 440 * 2 ** ((p - 69) / 12)
            harm = [np.sin(2 * np.pi * f0 * k * t) for k in (1, 2, 3)]
            for vi, v in enumerate(velocities):
                block = np.empty((grid, grid, note_length), np.int16)
                for y in range(grid):
                    for x in range(grid):
                        sig = harm[0] + (x / grid) * harm[1] + (y / grid) * harm[2]
                        block[y, x] = np.round(sig * fade * (v / 127) * 8000).astype(np.int16)
                w.write_block(pi, vi, block)


def engine_block_seconds(bank, voices: int, blocks: int, moving: bool) -> float:
    """Mean CPU (thread) time per block with `voices` held notes, each between two velocity layers and four cells."""
    e = Engine(bank, EngineConfig(max_voices=max(32, voices)), params={"attack": 0.0, "decay": 0.2, "sustain": 0.8})
    e.post_params(x=0.37, y=0.61)
    keys = [34 + (i * 53) % 56 for i in range(voices)]  # distinct keys, most between rendered pitches
    for k in keys:
        e.note_on(k, 75)  # between the 50 and 100 layers
    e.render(FS)  # past the attack and decay
    buf = np.zeros((BLOCK, 2), np.float32)
    best = float("inf")
    for rep in range(3):
        t0 = time.thread_time()
        for i in range(blocks):
            if moving and i % 4 == 0:  # the player drags across the pad: weights change every block
                ph = (rep * blocks + i) / 400.0
                e.post_params(x=0.5 + 0.45 * np.sin(ph), y=0.5 + 0.45 * np.cos(0.7 * ph))
            e.process(buf)
        best = min(best, (time.thread_time() - t0) / blocks)
    assert e.active_voices() == voices, (e.active_voices(), voices)
    return best


def write_midi(path: Path, notes: int, seconds: float) -> None:
    import mido

    mid = mido.MidiFile(ticks_per_beat=480)  # 120 bpm: 960 ticks per second
    tr = mido.MidiTrack()
    mid.tracks.append(tr)
    tr.append(mido.Message("program_change", program=19, time=0))  # church organ: sustains while held
    for i in range(notes):
        tr.append(mido.Message("note_on", note=34 + (i * 53) % 56, velocity=75, time=0))
    tr.append(mido.Message("control_change", control=1, value=0, time=int(seconds * 960)))
    for i in range(notes):
        tr.append(mido.Message("note_off", note=34 + (i * 53) % 56, time=0))
    mid.save(path)


def fluidsynth_cpu(midi: Path, out: Path) -> float:
    """CPU seconds (user + system) of `fluidsynth -F` rendering `midi` at 48 kHz, reverb and chorus off."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(["fluidsynth", "-ni", "-q", "-r", str(FS), "-o", "synth.reverb.active=0",
                    "-o", "synth.chorus.active=0", "-o", "synth.cpu-cores=1", "-o", "synth.polyphony=256",
                    "-F", str(out), "-T", "raw", SOUNDFONT, str(midi)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def fluidsynth_per_voice_block(tmp: Path, notes: int = 32, seconds: float = 20.0) -> float:
    """FluidSynth's CPU seconds per note per 128-frame block (32 held notes minus an empty song of equal length)."""
    write_midi(tmp / "n.mid", notes, seconds)
    write_midi(tmp / "0.mid", 0, seconds)
    busy = min(fluidsynth_cpu(tmp / "n.mid", tmp / "n.raw") for _ in range(3))
    idle = min(fluidsynth_cpu(tmp / "0.mid", tmp / "0.raw") for _ in range(3))
    rendered_s = os.path.getsize(tmp / "n.raw") / (FS * 2 * 2)  # stereo s16, includes fluidsynth's tail
    return max(busy - idle, 1e-9) / notes / (rendered_s / PERIOD)


_RSS_PROBE = r"""
import sys, numpy as np
from device.bank import open_bank
from device.engine import Engine
def rss(field):
    for line in open('/proc/self/status'):
        if line.startswith(field):
            return int(line.split()[1]) / 1024
bank = open_bank(sys.argv[1])
e = Engine(bank)
rng = np.random.default_rng(0)
buf = np.zeros((128, 2), np.float32)
for i in range(4000):  # 400 notes: every written pitch, all over the pad
    if i % 10 == 0:
        e.post_params(x=float(rng.random()), y=float(rng.random()))
        e.note_on(int(rng.choice(PLAYED)), 75)
    e.process(buf)
print(rss('VmRSS'), rss('VmHWM'), rss('RssAnon'), bank.samples.nbytes / 2**20)
""".replace("PLAYED", "[21, 32, 43, 54, 65, 76, 87, 98]")


def rss_playing(bank_path: Path) -> tuple[float, float, float, float]:
    """(RSS, peak RSS, anonymous RSS, bank size) in MB of a fresh process playing 400 notes from the bank."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    r = subprocess.run([sys.executable, "-c", _RSS_PROBE, str(bank_path)], check=True, capture_output=True,
                       text=True, env=env)
    return tuple(float(v) for v in r.stdout.split())  # type: ignore[return-value]


def sparse_bank(path: Path, pitches: list[int], velocities: list[int]) -> None:
    """A 9x9 bank of 4-s notes, written sparse: only the notes the probe plays (pitches 21, 32, ... 98 at
    velocity 75, every cell) hold sound, the rest are holes in the file."""
    n, length = 9, 64000
    t = np.arange(length) / 16000
    with BankWriter(path, grid=n, pitches=pitches, velocities=velocities, note_length=length, corners="abcd",
                    model="bench-sparse") as w:
        vi = velocities.index(75)
        for pi, p in enumerate(pitches):
            if p in range(21, 99, 11):
                note = np.round(np.sin(2 * np.pi * 440 * 2 ** ((p - 69) / 12) * t) * 8000).astype(np.int16)
                w.write_block(pi, vi, np.broadcast_to(note, (n, n, length)))
        w.close(allow_missing=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--blocks", type=int, default=3000)
    ap.add_argument("--no-memory", action="store_true", help="skip the multi-GB sparse bank")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="nsynth-bench-"))
    res: dict[str, object] = {}
    try:
        path = tmp / "bank"
        synth_bank(path, grid=3, pitches=list(range(24, 88, 4)), velocities=[50, 100], note_length=64000)
        bank = open_bank(path)
        cost = {}
        for v in (1, 8, 32):
            cost[v] = engine_block_seconds(bank, v, args.blocks, moving=False)
            res[f"block_fraction_{v}"] = round(cost[v] / PERIOD, 4)
            print(f"engine, {v:2d} voices held:        {cost[v] * 1e6:7.1f} us per block = "
                  f"{cost[v] / PERIOD:6.1%} of the {PERIOD * 1e3:.2f} ms period")
        moving = engine_block_seconds(bank, 32, args.blocks, moving=True)
        res["block_fraction_32_moving"] = round(moving / PERIOD, 4)
        print(f"engine, 32 voices, XY moving:  {moving * 1e6:7.1f} us per block = {moving / PERIOD:6.1%}")
        ours = (cost[32] - cost[1]) / 31
        if shutil.which("fluidsynth") and os.path.exists(SOUNDFONT):
            fluid = fluidsynth_per_voice_block(tmp)
            res["per_voice_vs_fluidsynth"] = round(ours / fluid, 3)
            res["fluidsynth_us_per_voice_block"] = round(fluid * 1e6, 3)
            print(f"per voice: engine {ours * 1e6:.2f} us per block, FluidSynth {fluid * 1e6:.2f} us "
                  f"(fast render, {os.path.basename(SOUNDFONT)}): ratio {ours / fluid:.2f}")
        else:
            res["per_voice_vs_fluidsynth"] = None
            print("FluidSynth or its SoundFont is missing: no per-voice comparison")
        res["engine_us_per_voice_block"] = round(ours * 1e6, 3)
        if not args.no_memory:
            rss = {}
            for name, pitches, vels in (("small", list(range(21, 99, 11)), [75]),
                                        ("large", list(range(21, 109)), [25, 50, 75, 100, 127])):
                sparse_bank(tmp / name, pitches, vels)
                rss[name] = rss_playing(tmp / name)
                shutil.rmtree(tmp / name)
                print(f"RSS playing 400 notes from a {rss[name][3] / 1024:5.2f} GB bank: {rss[name][0]:6.1f} MB "
                      f"(peak {rss[name][1]:.1f}, anonymous {rss[name][2]:.1f})")
            res.update(rss_mb_small_bank=round(rss["small"][1], 1), rss_mb_large_bank=round(rss["large"][1], 1),
                       large_bank_gb=round(rss["large"][3] / 1024, 2))
        res["targets_met"] = bool(res["block_fraction_32"] <= 0.10 and
                                  (res["per_voice_vs_fluidsynth"] or 99) <= 2.0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
