"""Engine benchmark: can the instrument hold 32 voices with the finger moving, from a warm and a cold page cache,
with its other threads busy, and what does it cost against FluidSynth?

    python bench/engine.py [--seconds 20] [--large] [--keep DIR]

One run reports, on a 9x9 bank of 16 pitches x 3 velocities (4-s notes, 498 MB; --large: 30 x 5, 1.55 GB) written
directly in the bank format:
- block times of 32 held voices with X/Y moving, as fractions of the 128-frame period (2.67 ms at 48 kHz): mean,
  p99 and max, from a warm page cache and from a cold one (the bank's pages dropped with posix_fadvise DONTNEED
  first: the bank is then brought in by the prefetch thread while it plays), the cold run once more with a memory
  budget of 0 (streamed: heads of notes + what each voice reads next). As in `nsynth play`, the engine plays in
  the audio host process, behind an output that calls it every period in real time (bench/paced_audio.py; the
  callback on SCHED_FIFO where allowed, as the instrument's), and the time counted is from the period's start (so
  waking late and waiting for the GIL count) to the block's end. Meanwhile the instrument's other threads run, in
  the control process, and feed the engine through the shared event ring: a MIDI
  flood of 1,000 pitch-bend messages a second through the real USB input path (python-rtmidi's callback on a
  virtual port: ALSA, else a JACK dummy server), the simulated control board polled at 200 Hz (the finger moving
  on its pad: that is the X/Y motion), its controls at 100 Hz and the OLED redrawn, and the prefetch thread.
  Voice segments muted because a page was not in memory yet are counted. The baseline: the same paced output
  calling a callback that only writes silence, in a process of its own at the same priority (the machine's own
  late blocks: on a virtual machine whose CPUs are taken away now and then, no callback can do better).
- CPU per block at 1, 8 and 32 voices, compiled and numpy reference (no other threads; thread CPU time; the bank
  held whole first, every page touched, as the audio host holds a bank within its budget).
- FluidSynth total to total: CPU of `fluidsynth -F` rendering 32 held notes vs the engine's CPU rendering the same
  notes (events, engine, the same length of audio); also our whole `nsynth render-midi` process.
- RSS (peak) of the audio host (the playing process) and of the control process.

Targets: 32 voices with X/Y moving <= 3 % of the period (mean, warm); warm max <= 30 %; cold p99 <= 50 %, cold
max <= 100 %; render CPU <= 1.0x FluidSynth's; RSS <= 100 MB + the preload budget (`machine_allows`: false when
the empty callback itself misses the warm max target). Last line: one JSON object (block_fraction_32, p99_cold,
max_cold, p99_empty, max_empty, vs_fluidsynth_total, ...).
"""
from __future__ import annotations

import argparse
import ctypes
import json
import math
import mmap
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from device.bank import SAMPLES, BankWriter, open_bank  # noqa: E402
from device.engine import Engine, EngineConfig  # noqa: E402
from testkit.jack import JackDummy  # noqa: E402

FS, BLOCK = 48000, 128
PERIOD = BLOCK / FS
EMPTY = "empty"  # --phase EMPTY: the machine's own block times (run_empty)
SOUNDFONT = "/usr/share/sounds/sf2/TimGM6mb.sf2"
KEYS = [34 + (i * 53) % 56 for i in range(32)]  # 32 distinct keys, most between rendered pitches
VELOCITY = 75  # between two velocity layers: every voice reads 8 streams


# ---- the bank -------------------------------------------------------------------------------------------------
def write_bank(path: Path, *, grid: int = 9, pitches=tuple(range(24, 88, 4)), velocities=(40, 80, 120),
               note_length: int = 64000) -> None:
    """A bank of steady harmonic notes whose timbre varies over the grid, written block by block (one
    [grid, grid, L] block per pitch and velocity) from one period-exact cycle per pitch, tiled."""
    t = np.arange(note_length) / 16000
    fade = np.minimum(1.0, np.arange(note_length) / 160) * np.minimum(1.0, (note_length - np.arange(note_length)) / 800)
    with BankWriter(path, grid=grid, pitches=list(pitches), velocities=list(velocities), note_length=note_length,
                    corners=["a", "b", "c", "d"], model="bench") as w:
        for pi, p in enumerate(pitches):
            f0 = 440 * 2 ** ((p - 69) / 12)
            harm = np.stack([np.sin(2 * np.pi * f0 * k * t) * fade for k in (1, 2, 3)]).astype(np.float32)
            xs = np.linspace(0, 1, grid, dtype=np.float32)
            for vi, v in enumerate(velocities):
                block = np.empty((grid, grid, note_length), np.int16)
                for y in range(grid):
                    mix = harm[0][None] + xs[:, None] * harm[1][None] + (y / (grid - 1)) * harm[2][None]
                    np.round(mix * (v / 127 * 6000), out=mix)
                    block[y] = mix
                w.write_block(pi, vi, block)


def drop_page_cache(path: Path) -> float:
    """Drop a file's pages from the page cache (posix_fadvise DONTNEED); returns the fraction still resident."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return resident_fraction(path)


def resident_fraction(path: Path) -> float:
    """The fraction of a file's pages in the page cache (mincore on a fresh mapping)."""
    import mmap
    m = np.memmap(path, dtype=np.uint8, mode="r")
    pages = -(-m.size // mmap.PAGESIZE)
    vec = np.zeros(pages, np.uint8)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
    rc = libc.mincore(m.ctypes.data, m.size, vec.ctypes.data)
    del m
    return float((vec & 1).mean()) if rc == 0 else float("nan")


# ---- the other threads ----------------------------------------------------------------------------------------
class MidiFlood:
    """`rate` pitch-bend messages a second into a virtual MIDI port, read back through the instrument's USB input
    (device.midi_io.UsbMidiInput: python-rtmidi's callback), routed and posted to the engine stamped by the clock."""

    def __init__(self, engine, clock, rate: float = 1000.0):
        import mido
        from device.midi_io import UsbMidiInput
        from device.midi_map import MidiRouter

        self.rate, self.sent, self.received = rate, 0, 0
        self.backend = None
        for api in (None, "UNIX_JACK"):  # ALSA (the Pi's), else JACK (this machine has no ALSA sequencer)
            try:
                be = mido.Backend("mido.backends.rtmidi" + (f"/{api}" if api else ""), load=True)
                self.out = be.open_output("nsynth-bench-flood", virtual=True)
                self.backend = be
                break
            except Exception:  # noqa: BLE001 - try the next MIDI system
                continue
        if self.backend is None:
            raise RuntimeError("no MIDI system for virtual ports (no ALSA sequencer, no JACK)")
        router = MidiRouter()

        def on_message(msg):
            self.received += 1
            frame = clock.frame_for()
            for ev in router.route(msg):
                engine.post(ev, frame)

        names = lambda: self.backend.get_input_names()
        opener = lambda name, cb: self.backend.open_input(name, callback=cb)
        time.sleep(0.3)
        # (no re-listing during the run: under JACK, listing ports opens a JACK client, which blocks the process
        # for about a second; on the Pi, ALSA's client list is watched instead, and listing is quick)
        self.input = UsbMidiInput("nsynth-bench-flood", on_message, lister=names, opener=opener, relist_s=3600)
        self._stop = threading.Event()

    def start(self):
        self.input.start()
        deadline = time.monotonic() + 10  # its port open before the clock starts (as the instrument's MIDI is
        while self.input.opens < 1 and time.monotonic() < deadline:  # before it plays): under JACK, the input
            time.sleep(0.01)  # thread's first listing opens a JACK client that blocks the process for a while
        self._thread = threading.Thread(target=self._run, name="midi-flood", daemon=True)
        self._thread.start()
        return self

    def _run(self):
        import mido
        t_next = time.perf_counter()
        i = 0
        while not self._stop.is_set():
            i += 1
            self.out.send(mido.Message("pitchwheel", channel=0, pitch=int(2000 * math.sin(i / 50.0))))
            self.sent += 1
            t_next = max(t_next + 1.0 / self.rate, time.perf_counter() - 0.05)  # never a burst to catch up
            time.sleep(max(0.0002, t_next - time.perf_counter()))

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=2)
        self.input.stop()


class Board:
    """The simulated control board (the real driver code on the fake I2C bus): polled at 200 Hz, its controls at
    100 Hz, the OLED redrawn; a finger circles on the pad (the X/Y motion of the benchmark)."""

    def __init__(self, engine, tmp: Path):
        from device.board_glue import engine_params
        from hardware.controls import open_board_controls
        from hardware.corners import CornerChoices, Instrument

        corners = CornerChoices([[Instrument(n, n.upper(), n.upper())] for n in "abcd"])
        self.controls = open_board_controls("sim", corners=corners, patches_path=tmp / "patches.json")
        self.post = lambda **p: engine.post_params(**engine_params(p))
        self._stop = threading.Event()

    def start(self):
        self.controls.start(self.post)
        self._thread = threading.Thread(target=self._run, name="finger", daemon=True)
        self._thread.start()
        return self

    def _run(self):
        twin, t0 = self.controls.sim.board, time.monotonic()
        while not self._stop.wait(0.02):
            a = 2 * math.pi * (time.monotonic() - t0) / 2.0  # one circle every 2 s
            twin.set_touch((round(5 + 4.5 * math.cos(a)), round(5 + 4.5 * math.sin(a))))

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=2)
        self.controls.stop()


# ---- one measured run (in its own process) --------------------------------------------------------------------
def run_phase(bank_path: Path, seconds: float, budget: int, cold: bool, threads: list[str]) -> dict:
    """One run as `nsynth play` runs: the engine in the audio host process (device/audio_host.py) behind an output
    that calls it every period in real time (bench/paced_audio.py: each block's time is counted from the period's
    start, waking late and waiting for the GIL included, to its end), fed through the shared event ring by the
    board and the MIDI flood, which run here, in the control process."""
    from device.clock import FrameClock
    from device.host_link import AudioHost, HostEngine

    samples = bank_path / SAMPLES
    if not cold:  # warm: the whole file in the page cache, as after playing it a while
        with open(samples, "rb") as f:
            while f.read(1 << 24):
                pass
    before = drop_page_cache(samples) if cold else resident_fraction(samples)
    tmp = Path(tempfile.mkdtemp(prefix="nsynth-bench-phase-"))
    os.environ["PACED_AUDIO_TIMES"] = str(tmp / "times.npz")
    config = EngineConfig()
    others = []
    host = AudioHost("paced_audio")  # bench/ is on this process's path, which the host gets
    try:
        t_start = time.perf_counter()
        info = host.open(bank_path, config, {"attack": 0.0, "decay": 0.2, "sustain": 0.8}, None, budget)
        open_s = time.perf_counter() - t_start
        engine = HostEngine(host, open_bank(bank_path), config)
        clock = FrameClock(FS, BLOCK, host.shared.clock_cells)
        if "board" in threads:
            others.append(Board(engine, tmp).start())
        if "midi" in threads:
            others.append(MidiFlood(engine, clock).start())
        for k in KEYS:
            engine.note_on(k, VELOCITY)
        host.start()
        time.sleep(seconds)
        counts = {"starved": engine.starved, "faults": engine.faults, "voices": engine.active_voices(),
                  "dropped": engine.dropped}
        memory = {"host": status_mb(host.process.pid, "VmHWM", "RssAnon", "RssFile"),
                  "control": status_mb("self", "VmHWM", "RssAnon", "RssFile")}
        flood = next((o for o in others if isinstance(o, MidiFlood)), None)
    finally:
        for o in reversed(others):  # (the MIDI input is left open: closing python-rtmidi's JACK port while its
            if not isinstance(o, MidiFlood):  # callback may run can deadlock; the process ends right after)
                o.stop()
        host.stop()
    recorded = np.load(tmp / "times.npz")
    shutil.rmtree(tmp, ignore_errors=True)
    return {**block_times(recorded), **counts, "resident_before": before, "open_s": open_s, "whole": info["whole"],
            "midi_sent": flood.sent if flood else 0, "midi_received": flood.received if flood else 0,
            "rss_peak_mb": memory["host"]["VmHWM"], "host_anon_mb": memory["host"]["RssAnon"],
            "host_file_mb": memory["host"]["RssFile"], "control_rss_peak_mb": memory["control"]["VmHWM"],
            "control_anon_mb": memory["control"]["RssAnon"]}


def run_empty(seconds: float) -> dict:
    """The machine's own timing, the baseline of the block-time runs: the same paced output, in a process of its
    own, calling a callback that only writes silence (on SCHED_FIFO at the instrument's priority, as the host's),
    nothing else of ours running. Its late blocks are the machine's (scheduling, a virtual CPU not running)."""
    import paced_audio

    from device.realtime import configured_priority, promote_current_thread

    tmp = Path(tempfile.mkdtemp(prefix="nsynth-bench-empty-"))
    os.environ["PACED_AUDIO_TIMES"] = str(tmp / "times.npz")
    promoted: list[bool] = []

    def callback(outdata, frames, time_info, status):
        if not promoted:
            promoted.append(promote_current_thread(configured_priority()))
        outdata.fill(0)

    with paced_audio.OutputStream(FS, BLOCK, 2, "float32", None, callback, "low"):
        time.sleep(seconds)
    recorded = np.load(tmp / "times.npz")
    shutil.rmtree(tmp, ignore_errors=True)
    return block_times(recorded)


def block_times(recorded) -> dict:
    """paced_audio's record -> the block-time figures, as fractions of the period: from the period's start (mean
    of the callback's own time; p99, max), the callback's own (p99, max), blocks over the period, the worst five."""
    late, own = recorded["times"][:, 0] / PERIOD, recorded["times"][:, 1] / PERIOD
    return {"mean": float(own.mean()), "p99": float(np.percentile(late, 99)), "max": float(late.max()),
            "callback_mean": float(late.mean()), "own_p99": float(np.percentile(own, 99)),
            "own_max": float(own.max()), "blocks": len(own), "over_period": int((late > 1.0).sum()),
            "realtime": bool(recorded["fifo"]),
            "worst_blocks": [[int(i), round(float(late[i]), 2)] for i in np.argsort(late)[::-1][:5]]}


def status_mb(pid: int | str, *fields: str) -> dict[str, float]:
    """Fields of /proc/PID/status in MB (VmHWM: peak RSS; RssAnon: heap and stacks; RssFile: mapped files:
    libraries, the bank)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in fields:
                out[key] = int(value.split()[0]) / 1024
    return out


def phase_subprocess(bank: Path, seconds: float, budget: int, cold: bool, threads: str = "board,midi") -> dict:
    """Run one phase in a fresh process (its own page locks, mappings and RSS), under a JACK server if needed."""
    with JackDummy("bench", rate=FS, period=BLOCK, required=False) as jack:
        r = subprocess.run([sys.executable, "-X", "faulthandler", __file__, "--phase", str(bank), "--seconds", str(seconds),
                            "--budget", str(budget), *(["--cold"] if cold else []), "--threads", threads],
                           env={**jack.env, "PYTHONPATH": str(ROOT), "NSYNTH_RT_PRIORITY": "70"},
                           capture_output=True, text=True)
    if r.returncode != 0:
        (Path(tempfile.gettempdir()) / "nsynth-bench-phase.err").write_text(r.stderr)
        raise RuntimeError(f"phase failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# ---- CPU per block, and FluidSynth ----------------------------------------------------------------------------
def hold_whole(bank) -> float:
    """Touch every page of the bank's mapping (as the audio host holds a bank within its memory budget), so that
    the CPU figures count the engine's work, not page faults (the cold runs' subject); seconds taken."""
    t0 = time.monotonic()
    int(np.asarray(bank.samples).reshape(-1)[:: mmap.PAGESIZE // 2].sum())
    return time.monotonic() - t0


def cpu_per_block(bank, voices: int, blocks: int, compiled: bool = True, moving: bool = True) -> float:
    """Best of 3: thread CPU seconds per block with `voices` held notes, X/Y moving every block (no other thread),
    the bank held whole (hold_whole)."""
    e = Engine(bank, EngineConfig(compiled=compiled), params={"attack": 0.0, "decay": 0.2, "sustain": 0.8})
    for k in KEYS[:voices]:
        e.note_on(k, VELOCITY)
    e.render(FS // 2)
    buf = np.zeros((BLOCK, 2), np.float32)
    best = float("inf")
    for rep in range(3):
        t0 = time.thread_time()
        for i in range(blocks):
            if moving:
                ph = (rep * blocks + i) / 400.0
                e.post_params(x=0.5 + 0.45 * math.sin(ph), y=0.5 + 0.45 * math.cos(0.7 * ph))
            e.process(buf)
        best = min(best, (time.thread_time() - t0) / blocks)
    return best


def write_song(path: Path, seconds: float) -> None:
    import mido
    mid = mido.MidiFile(ticks_per_beat=480)  # 120 bpm: 960 ticks per second
    tr = mido.MidiTrack()
    mid.tracks.append(tr)
    tr.append(mido.Message("program_change", program=19, time=0))  # church organ: sustains while held
    for k in KEYS:
        tr.append(mido.Message("note_on", note=k, velocity=VELOCITY, time=0))
    tr.append(mido.Message("control_change", control=1, value=0, time=int(seconds * 960)))
    for k in KEYS:
        tr.append(mido.Message("note_off", note=k, time=0))
    mid.save(path)


def child_cpu(cmd: list[str], env=None) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def render_cpu(bank_path: Path, song: Path) -> tuple[float, int]:
    """Thread CPU seconds of the engine rendering the song (events routed and posted, then rendered block by
    block, as `nsynth render-midi` does, less writing the file), and the frames rendered."""
    from device.midi_file import midi_file_messages
    from device.midi_map import MidiRouter
    from device.envelopes import release_seconds
    e = Engine(open_bank(bank_path), EngineConfig(), params={"x": 0.37, "y": 0.61})
    e.render(BLOCK)  # the kernel loaded
    t0 = time.thread_time()
    e = Engine(open_bank(bank_path), EngineConfig(), params={"x": 0.37, "y": 0.61})
    router = MidiRouter()
    msgs = midi_file_messages(song, FS)
    frames = msgs[-1][0] + int((release_seconds(e.params["release"]) + 0.1) * FS) + 1
    for f, m in msgs:
        for ev in router.route(m):
            e.post(ev, f)
    e.render(frames)
    return time.thread_time() - t0, frames


def fluidsynth_total(tmp: Path, bank_path: Path, seconds: float) -> dict:
    song = tmp / "song.mid"
    write_song(song, seconds)
    fluid = min(child_cpu(["fluidsynth", "-ni", "-q", "-r", str(FS), "-o", "synth.reverb.active=0",
                           "-o", "synth.chorus.active=0", "-o", "synth.cpu-cores=1", "-o", "synth.polyphony=256",
                           "-F", str(tmp / "f.raw"), "-T", "raw", SOUNDFONT, str(song)]) for _ in range(3))
    fluid_frames = os.path.getsize(tmp / "f.raw") // 4  # stereo s16, with FluidSynth's ~2 s tail
    ours, frames = min(render_cpu(bank_path, song) for _ in range(3))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = min(child_cpu([sys.executable, "-m", "nsynth.cli", "render-midi", "--bank", str(bank_path), str(song),
                             "-o", str(tmp / "o.wav"), "--xy", "0.37,0.61"], env=env) for _ in range(2))
    return {"fluidsynth_cpu_s": fluid, "fluidsynth_s_rendered": fluid_frames / FS, "ours_cpu_s": ours,
            "ours_s_rendered": frames / FS, "ours_process_cpu_s": process,
            "vs_fluidsynth_total": ours / fluid, "vs_fluidsynth_process": process / fluid}


# ---- main -----------------------------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each measured run")
    ap.add_argument("--blocks", type=int, default=2000, help="blocks per CPU measurement")
    ap.add_argument("--large", action="store_true", help="a 30-pitch x 5-velocity bank (1.55 GB)")
    ap.add_argument("--keep", metavar="DIR", help="write (or reuse) the bank in DIR and keep it")
    ap.add_argument("--phase", metavar="BANK", help=argparse.SUPPRESS)
    ap.add_argument("--budget", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--cold", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", default="board,midi",
                    help="the other threads running during the block-time runs: board, midi (comma-separated; "
                         "'none' for neither)")
    args = ap.parse_args()
    if args.phase:
        r = run_empty(args.seconds) if args.phase == EMPTY else \
            run_phase(Path(args.phase), args.seconds, args.budget, args.cold, args.threads.split(","))
        print(json.dumps(r), flush=True)
        os._exit(0)  # no teardown of the JACK MIDI clients: this process is done

    from device.residency import memory_budget
    res: dict[str, object] = {}
    tmp = Path(tempfile.mkdtemp(prefix="nsynth-bench-"))
    try:
        bank_path = Path(args.keep) / "bank" if args.keep else tmp / "bank"
        shape = dict(pitches=tuple(range(21, 111, 3)), velocities=(25, 50, 75, 100, 127)) if args.large else {}
        if not (bank_path / SAMPLES).exists():
            t0 = time.monotonic()
            write_bank(bank_path, **shape)
            print(f"wrote the bank in {time.monotonic() - t0:.0f} s", flush=True)
        bank = open_bank(bank_path)
        info = bank.info
        mb = bank.samples.nbytes / 2**20
        res.update(bank_mb=round(mb), bank_shape=list(info.shape[:4]))
        print(f"bank: {info.grid}x{info.grid} grid, {len(info.pitches)} pitches x {len(info.velocities)} velocities, "
              f"4-s notes: {mb:.0f} MB; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)

        print(f"bank held whole (every page touched) in {hold_whole(bank):.1f} s", flush=True)
        for v in (1, 8, 32):
            c = cpu_per_block(bank, v, args.blocks)
            res[f"cpu_fraction_{v}"] = round(c / PERIOD, 4)
            print(f"CPU per block, {v:2d} voices, X/Y moving: {c * 1e6:6.1f} us = {c / PERIOD:6.2%} of the period")
        ref = cpu_per_block(bank, 32, max(200, args.blocks // 10), compiled=False)
        res["cpu_fraction_32_numpy"] = round(ref / PERIOD, 4)
        print(f"  (the numpy reference, 32 voices: {ref * 1e6:.0f} us = {ref / PERIOD:.1%}; compiled is "
              f"{ref / (res['cpu_fraction_32'] * PERIOD):.1f}x faster)")

        del bank  # unmapped: dropping the page cache before the cold runs must not find our mapping
        budget = memory_budget()
        r = phase_subprocess(EMPTY, args.seconds, 0, False)
        res["empty"] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}
        print(f"{'empty':14s} a callback writing silence, nothing else of ours: p99 {r['p99']:.1%}, max {r['max']:.1%} "
              f"of the period; {r['over_period']} of {r['blocks']} over; RT {r['realtime']} (the machine's own "
              f"late blocks)", flush=True)
        phases = {"warm": (budget, False), "cold": (budget, True), "cold_streamed": (0, True)}
        for name, (b, cold) in phases.items():
            r = phase_subprocess(bank_path, args.seconds, b, cold, args.threads)
            res[name] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}
            print(f"{name:14s} 32 voices, X/Y moving, MIDI flood, board + OLED: block mean {r['mean']:.1%}, "
                  f"p99 {r['p99']:.1%}, max {r['max']:.1%} of the period (from the period's start; own p99 "
                  f"{r['own_p99']:.1%}, max {r['own_max']:.1%}); {r['over_period']} of {r['blocks']} over; "
                  f"{r['starved']} voice segments muted; page cache before {r['resident_before']:.0%}; "
                  f"{'held whole' if r['whole'] else 'streamed'}; RT {r['realtime']}; MIDI {r['midi_received']} "
                  f"of {r['midi_sent']}; RSS: audio host {r['rss_peak_mb']:.0f} MB ({r['host_anon_mb']:.0f} MB "
                  f"anonymous), control {r['control_rss_peak_mb']:.0f} MB", flush=True)
        res["block_fraction_32"] = res["warm"]["mean"]
        res["max_warm"] = res["warm"]["max"]
        res["p99_cold"] = res["cold"]["p99"]
        res["max_cold"] = res["cold"]["max"]
        res["p99_empty"] = res["empty"]["p99"]
        res["max_empty"] = res["empty"]["max"]
        res["p99_cold_streamed"] = res["cold_streamed"]["p99"]
        res["max_cold_streamed"] = res["cold_streamed"]["max"]
        res["rss_mb"] = round(max(res[p]["rss_peak_mb"] for p in phases), 1)  # the audio host's
        res["control_rss_mb"] = round(max(res[p]["control_rss_peak_mb"] for p in phases), 1)
        res["preload_budget_mb"] = budget >> 20

        if shutil.which("fluidsynth") and os.path.exists(SOUNDFONT):
            f = fluidsynth_total(tmp, bank_path, 20.0)
            res.update({k: round(v, 3) for k, v in f.items()})
            print(f"32 held notes, 20 s: FluidSynth {f['fluidsynth_cpu_s']:.2f} s CPU ({f['fluidsynth_s_rendered']:.1f} "
                  f"s rendered, TimGM6mb organ: 2 voices a note), ours {f['ours_cpu_s']:.2f} s "
                  f"({f['ours_s_rendered']:.1f} s): {f['vs_fluidsynth_total']:.2f}x; our whole render-midi process "
                  f"{f['ours_process_cpu_s']:.2f} s: {f['vs_fluidsynth_process']:.2f}x")
        else:
            res["vs_fluidsynth_total"] = None
            print("FluidSynth or its SoundFont is missing: no comparison")
        res["load_average"] = round(os.getloadavg()[0], 2)
        res["machine_allows"] = bool(res["max_empty"] <= 0.30)
        res["targets_met"] = bool(res["block_fraction_32"] <= 0.03 and res["max_warm"] <= 0.30
                                  and res["p99_cold"] <= 0.50 and res["max_cold"] <= 1.0
                                  and (res["vs_fluidsynth_total"] or 99) <= 1.0
                                  and res["rss_mb"] <= 100 + min(budget >> 20, res["bank_mb"]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
