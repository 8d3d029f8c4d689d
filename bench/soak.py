"""Soak: `nsynth play`'s real path for 10 minutes at 48 kHz / 128 frames on a JACK dummy server (audio callbacks
paced by a real-time clock, no sound card), 32 held voices, X/Y moving, every thread of the instrument running:

    python bench/soak.py [--minutes 10] [--baseline-minutes 10] [--midi-rate 1000] [--keep DIR]

- play() with the 9x9 bank of bench/engine.py (16 pitches x 3 velocities, 498 MB), NSYNTH_RT_PRIORITY=70 as the
  service sets it, the memory budget of a Pi 4 with 2 GB (512 MB: the bank is held whole);
- DIN MIDI through the real UART input (pyserial on a pseudo-terminal): the 32 notes, then `--midi-rate` pitch-bend
  messages a second (1,000: a DIN cable's whole bandwidth);
- the simulated control board (`--board`'s driver code on the fake I2C bus: polled at 200 Hz, controls at 100 Hz,
  the OLED redrawn) with a finger circling on its pad: the X/Y motion;
- the prefetch thread, the systemd watchdog thread;
- as in `nsynth play`, the engine plays in the audio host process, the rest in the control process.
Then, on the same server, an empty callback (zeros) for `--baseline-minutes`: what this machine does without us.

Reports underflows (callbacks whose status flagged one) against the callbacks made, for both, the callback time
distribution (mean, p99, p99.9, max), voice segments muted waiting for the bank, MIDI messages received, events
dropped on a full ring, the time from `play`'s start to its first audio callback, and jackd's xrun count. Target: underflows <= 0.01 % of callbacks and within a few of the empty callback's count. Last line:
one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from engine import BLOCK, FS, KEYS, VELOCITY, write_bank  # noqa: E402  (bench/engine.py)
from testkit.jack import JackDummy  # noqa: E402

PLAY = textwrap.dedent('''
    import math, os, sys, threading, time
    from device.board_glue import BoardSource
    from device.play import play

    bank, minutes, rate, state = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    keys, velocity = [int(k) for k in sys.argv[5].split(",")], int(sys.argv[6])
    master, slave = os.openpty()  # the DIN MIDI cable: a pseudo-terminal read by the UART input
    board = BoardSource("sim", patches=os.path.join(state, "patches.json"))

    class Finger:
        """Circles on the simulated board's pad, and plays DIN MIDI into the pseudo-terminal."""
        def start(self, post):
            self.stop_ = threading.Event()
            threading.Thread(target=self.touch, daemon=True).start()
            threading.Thread(target=self.midi, daemon=True).start()
        def stop(self):
            self.stop_.set()
        def touch(self):
            if board.controls is None:
                return
            twin, t0 = board.controls.sim.board, time.monotonic()
            while not self.stop_.wait(0.02):
                a = 2 * math.pi * (time.monotonic() - t0) / 2.0
                twin.set_touch((round(5 + 4.5 * math.cos(a)), round(5 + 4.5 * math.sin(a))))
        def midi(self):
            time.sleep(1.0)
            os.write(master, bytes(b for k in keys for b in (0x90, k, velocity)))
            t_next, i = time.perf_counter(), 0
            while rate > 0 and not self.stop_.is_set():
                i += 1
                v = 8192 + int(2000 * math.sin(i / 50.0))
                os.write(master, bytes((0xE0, v & 0x7F, v >> 7)))
                t_next = max(t_next + 1.0 / rate, time.perf_counter() - 0.05)  # never a burst to catch up
                time.sleep(max(0.0002, t_next - time.perf_counter()))

    sources = [Finger()] if os.environ.get("SOAK_NO_BOARD") else [board, Finger()]
    play(bank, uart=os.ttyname(slave), control_sources=sources, duration=minutes * 60, state=state,
         preload_bytes=512 << 20)
''')

EMPTY = textwrap.dedent('''
    import sys, time
    import sounddevice as sd
    from device.realtime import configured_priority, promote_current_thread
    n = [0, 0, None]
    def callback(outdata, frames, time_info, status):
        if n[2] is None:
            n[2] = promote_current_thread(configured_priority())
        n[0] += 1
        if status:
            n[1] += 1
        outdata.fill(0)
    with sd.OutputStream(samplerate=48000, blocksize=128, channels=2, dtype="float32", callback=callback,
                         latency="low"):
        time.sleep(float(sys.argv[1]) * 60)
    print(f"stopped: {n[0]} audio callbacks ({n[1]} with underflow)", file=sys.stderr)
''')


def run(script: str, args: list[str], env: dict) -> str:
    r = subprocess.run([sys.executable, "-c", script, *args], env={**env, "PYTHONPATH": str(ROOT)},
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return r.stderr


def stopped(stderr: str) -> tuple[int, int]:
    m = re.search(r"stopped: (\d+) audio callbacks \((\d+) with underflow\)", stderr)
    if not m:
        raise RuntimeError(f"no summary line in:\n{stderr[-3000:]}")
    return int(m[1]), int(m[2])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--baseline-minutes", type=float, default=None, help="the empty callback's run (default: same)")
    ap.add_argument("--midi-rate", type=float, default=1000.0, help="pitch-bend messages a second on the DIN input")
    ap.add_argument("--keep", metavar="DIR", help="write (or reuse) the bank in DIR and keep it")
    ap.add_argument("--realtime", action="store_true",
                    help="run jackd with real-time scheduling (-R -P 80; needs the right to), as on a Pi")
    args = ap.parse_args()
    res_rt = args.realtime
    tmp = Path(tempfile.mkdtemp(prefix="nsynth-soak-"))
    bank = Path(args.keep) / "bank" if args.keep else tmp / "bank"
    if not (bank / "samples.i16").exists():
        write_bank(bank)
    load0 = os.getloadavg()
    res: dict[str, object] = {"minutes": args.minutes, "midi_rate": args.midi_rate, "jackd_realtime": res_rt}
    with JackDummy("soak", rate=FS, period=BLOCK, realtime=args.realtime, log=tmp / "jackd.log") as jack:
        env = {**jack.env, "NSYNTH_RT_PRIORITY": "70"}
        err = run(PLAY, [str(bank), str(args.minutes), str(args.midi_rate), str(tmp),
                         ",".join(map(str, KEYS)), str(VELOCITY)], env)
        ours_xruns = jack.xruns()
        callbacks, underflows = stopped(err)
        timing = re.search(r"callback mean ([\d.]+) ms, p99 ([\d.]+), p99.9 ([\d.]+), max ([\d.]+) ms", err)
        muted = re.search(r"(\d+) voice segments muted", err)
        midi = re.search(r"(\d+) MIDI messages", err)
        dropped = re.search(r"(\d+) events dropped", err)
        start = re.search(r"first audio callback ([\d.]+) s after start", err)
        playing = next((line for line in err.splitlines() if "playing " in line), "")
        res.update(callbacks=callbacks, underflows=underflows, underflow_fraction=underflows / max(callbacks, 1),
                   callback_mean_ms=float(timing[1]), callback_p99_ms=float(timing[2]),
                   callback_p999_ms=float(timing[3]), callback_max_ms=float(timing[4]),
                   muted_voice_segments=int(muted[1]), midi_received=int(midi[1]), events_dropped=int(dropped[1]),
                   start_s=float(start[1]), jack_xruns=ours_xruns)
        print(playing.strip())
        print(f"ours:  {callbacks} callbacks, {underflows} with underflow ({underflows / max(callbacks, 1):.4%}); "
              f"{timing[0]}; {muted[1]} voice segments muted; {midi[1]} MIDI messages; jackd xruns {ours_xruns}",
              flush=True)
        err = run(EMPTY, [str(args.baseline_minutes or args.minutes)], env)
        b_calls, b_under = stopped(err)
        res.update(empty_callbacks=b_calls, empty_underflows=b_under, empty_jack_xruns=jack.xruns() - ours_xruns)
        print(f"empty: {b_calls} callbacks, {b_under} with underflow ({b_under / max(b_calls, 1):.4%}); jackd xruns "
              f"{jack.xruns() - ours_xruns}")
    res["load_average_before"] = round(load0[0], 2)
    res["load_average_after"] = round(os.getloadavg()[0], 2)
    res["targets_met"] = bool(res["underflow_fraction"] <= 1e-4 and underflows <= b_under + 5)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
