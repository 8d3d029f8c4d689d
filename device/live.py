"""`nsynth play`: the live instrument (bank -> engine -> sounddevice, fed by MIDI and control sources)."""
from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterable

import mido
import numpy as np

from device.bank import Bank, BankError, open_verified
from device.engine import Engine, EngineConfig
from device.midi_io import PortInput, UartMidiInput, UsbMidiInput, input_names
from device.midi_map import MidiRouter, add_midi_arguments, router_from_args
from device.realtime import GIL_SWITCH_S, configured_priority, promote_current_thread, promote_threads
from device.residency import Prefetcher, Residency, memory_budget
from device.sdnotify import Watchdog
from nsynth.errors import NsynthError
from nsynth.fsutil import atomic_write_bytes

STATE_FILE = "last_good_bank"


def _warn(msg: str) -> None:
    print(f"nsynth play: {msg}", file=sys.stderr, flush=True)


def state_dir() -> Path:
    """Where the instrument remembers its last good bank ($NSYNTH_STATE_DIR, else ~/.local/state/nsynth)."""
    return Path(os.environ.get("NSYNTH_STATE_DIR") or Path.home() / ".local" / "state" / "nsynth")


def load_bank(path: str | os.PathLike, *, state: str | Path | None = None,
              on_hash: Callable[[Path], None] | None = None) -> Bank:
    """Open a bank to play it (`open_verified`: validated, and its samples checked against the manifest's sha256
    on first use, then stamped); if it is refused, fall back to the last bank that opened (with a warning), checked
    the same way. A bank that opens is remembered (atomically) as the new last good bank. `on_hash(path)` is told
    before a bank is hashed (it takes a while)."""
    state = state_dir() if state is None else Path(state)
    record = state / STATE_FILE
    try:
        bank = open_verified(path, on_hash)
    except BankError as e:
        try:
            last = record.read_text().strip()
        except OSError:
            raise e from None
        if not last or Path(last).resolve() == Path(path).resolve():
            raise
        try:
            bank = open_verified(last, on_hash)
        except BankError:
            raise e from None
        _warn(f"{e}; falling back to the last good bank {last}")
        return bank
    remember_bank(path, state)
    return bank


def remember_bank(path: str | os.PathLike, state: Path) -> None:
    """Record `path` (atomically) as the last good bank in the state directory."""
    record = state / STATE_FILE
    try:  # the path as given (made absolute), not where its symlink points: a rewrite replaces that version
        atomic_write_bytes(record, f"{os.path.abspath(path)}\n".encode())
    except OSError as e:
        _warn(f"cannot remember the last good bank in {record}: {e}")


def switch_bank(engine: Engine, path: str | os.PathLike, prefetcher: Prefetcher | None = None) -> Bank | None:
    """Switch a running engine to another bank (returned), checked first (`open_verified`); a refused bank leaves
    the current one playing (None)."""
    try:
        bank = open_verified(path, lambda p: _warn(f"checking {p} (first use); still playing {engine.bank.path}"))
    except BankError as e:
        _warn(f"{e}; keeping {engine.bank.path}")
        return None
    hand_over(engine, bank, prefetcher)
    return bank


def hand_over(engine: Engine, bank: Bank, prefetcher: Prefetcher | None = None) -> None:
    """Give an opened bank to a running engine: the heads of its notes are brought into memory first (with a
    prefetcher), then its sounding voices fade out (5 ms) and the new bank plays."""
    if prefetcher is not None:
        prefetcher.prepare(bank)
    engine.set_bank(bank)


class BankSlot:
    """Which bank a running engine plays, by path, for the threads that switch it (the board's bank switcher,
    SIGHUP). `install(bank)` hands an opened bank over and remembers it as the last good bank; `reload()`
    re-opens the path (a refused bank keeps the current one). A lock keeps the switches in order."""

    def __init__(self, engine: Engine, path: str | os.PathLike, state: Path, prefetcher: Prefetcher | None = None):
        self.engine, self.path, self.state, self.prefetcher = engine, Path(path), state, prefetcher
        self._lock = threading.Lock()

    def install(self, bank: Bank) -> None:
        with self._lock:
            self.path = bank.path
            remember_bank(bank.path, self.state)
            hand_over(self.engine, bank, self.prefetcher)

    def reload(self) -> Bank | None:
        with self._lock:
            bank = switch_bank(self.engine, self.path, self.prefetcher)
            if bank is not None:
                remember_bank(self.path, self.state)
            return bank


class HashNotice:
    """`on_hash` for opening banks before the instrument is ready: a bank's first sha256 check reads all of it
    (minutes for a multi-GB bank on an SD card), so it is said on stderr and the systemd status line, and until
    `stop()` systemd is asked every `every_s` for `extend_s` more to start (EXTEND_TIMEOUT_USEC), so the unit's
    TimeoutStartSec (meant for a start with nothing to hash) does not kill the check."""

    def __init__(self, watchdog: Watchdog, every_s: float = 10.0, extend_s: float = 30.0):
        self.watchdog, self.every_s, self.extend_s = watchdog, every_s, extend_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __call__(self, path: Path) -> None:
        _warn(f"checking {path} (first use: hashing its samples; later starts trust the stamp)")
        self.watchdog.status(f"checking {path} (first use)")
        if self._thread is None and self.watchdog.enabled:
            self._thread = threading.Thread(target=self._run, name="hash-notice", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            self.watchdog.notifier.send(f"EXTEND_TIMEOUT_USEC={int(self.extend_s * 1e6)}")
            if self._stop.wait(self.every_s):
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def warm_up(bank: Bank, config: EngineConfig) -> None:
    """Run a throwaway engine for a few blocks, so the first real callback does not pay for loading the compiled
    kernel (or numpy's first calls)."""
    scratch = Engine(bank, config)
    scratch.note_on(60, 100)
    scratch.post_params(x=0.3, y=0.6)
    scratch.render(8 * config.block)


class FrameClock:
    """Stamps events from other threads with engine frames: an event arriving t seconds after the callback that
    rendered frame F is played at F + block + t * rate, one block later at its true offset (sample-accurate,
    constant latency) rather than at the next block start."""

    def __init__(self, sample_rate: int, block: int):
        self.fs, self.block = sample_rate, block
        self._mark = (0, time.monotonic())

    def mark(self, frame: int) -> None:
        self._mark = (frame, time.monotonic())  # one tuple: readers see both values or neither

    def frame_for(self, now: float | None = None) -> int:
        frame, t0 = self._mark
        dt = (time.monotonic() if now is None else now) - t0
        return frame + self.block + min(max(int(dt * self.fs), 0), self.block - 1)


class MidiFeed:
    """What `play` does with each MIDI message, on the input's own thread: route it (device/midi_map.py), stamp its
    events with the frame clock and post them to the engine. An exception here would end that input's thread (DIN
    MIDI would go deaf): it is counted in `errors`, the first reported on stderr, and the input reads on."""

    def __init__(self, router: MidiRouter, engine: Engine, clock: FrameClock):
        self.router, self.engine, self.clock = router, engine, clock
        self.received = 0
        self.errors = 0

    def __call__(self, msg: mido.Message) -> None:
        self.received += 1
        try:
            frame = self.clock.frame_for()
            for ev in self.router.route(msg):
                self.engine.post(ev, frame)
        except Exception as e:
            self.errors += 1
            if self.errors == 1:
                _warn(f"MIDI message {msg!r} failed ({e!r}); ignored, the input reads on (later failures counted)")


class LiveAudio:
    """The sounddevice callback: marks the clock, renders block by block into the output buffer, heartbeats the
    systemd watchdog; on its first call it puts its own thread on real-time scheduling when configured. It never
    lets an exception out (PortAudio would stop the stream): the engine contains its own failures (device/engine.py)
    and what it cannot contain silences the rest of the buffer and resets the engine (`Engine.recover`); either is
    logged in `engine.failure_log` for `FailureReporter`. Only a callback that stalls is left to the watchdog."""

    def __init__(self, engine: Engine, clock: FrameClock, *, heartbeat: Callable[[], None] | None = None,
                 rt_priority: int = 0):
        self.engine, self.clock = engine, clock
        self.heartbeat = heartbeat
        self.rt_priority = rt_priority
        self.realtime: bool | None = None  # set on the first callback
        self.underflows = 0
        self.callbacks = 0
        # callback durations: a histogram in hundredths of the block period (the last bin: 10 periods or more)
        self.period = engine.block / engine.fs
        self.histogram = np.zeros(1001, np.int64)
        self.longest = 0.0

    def callback(self, outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        t0 = time.perf_counter()
        if self.realtime is None:
            self.realtime = promote_current_thread(self.rt_priority)
        self.callbacks += 1
        if status:
            self.underflows += 1
        if self.heartbeat is not None:
            self.heartbeat()
        first = self.engine.frame
        try:
            self.clock.mark(first)
            block = self.engine.block
            for start in range(0, frames, block):
                self.engine.process(outdata[start:start + block])
        except Exception as e:  # not contained by the engine: silence, reset it, play on
            done = self.engine.frame - first
            outdata[done:].fill(0)
            self.engine.recover(frames - done, e)
        dt = time.perf_counter() - t0
        self.histogram[min(int(dt * 100 / self.period), 1000)] += 1
        if dt > self.longest:
            self.longest = dt

    def timing(self) -> str:
        """The callback time distribution so far: mean, p99, p99.9 and max, in ms."""
        n = int(self.histogram.sum())
        if not n:
            return "no callbacks"
        bins = (np.arange(self.histogram.size) + 0.5) * self.period / 100 * 1e3
        cum = np.cumsum(self.histogram)
        pct = lambda q: float(bins[min(int(np.searchsorted(cum, q * n)), bins.size - 1)])
        return (f"callback mean {float((self.histogram * bins).sum()) / n:.3f} ms, p99 {pct(0.99):.3f}, "
                f"p99.9 {pct(0.999):.3f}, max {self.longest * 1e3:.3f} ms (period {self.period * 1e3:.3f} ms)")


class FailureReporter:
    """Reports the failures the audio thread contained (`engine.failure_log`), from another thread: the first of
    each kind (exception type and message) once, on stderr, the systemd status line (`status`) and each `alerts`
    callable (title, lines) (the board's OLED); later ones of a kind are only counted (`engine.failures`)."""

    def __init__(self, engine: Engine, status: Callable[[str], Any] | None = None,
                 alerts: Iterable[Callable[[str, list[str]], Any]] = ()):
        self.engine, self.status, self.alerts = engine, status, list(alerts)
        self.seen: set[str] = set()

    def poll(self) -> None:
        log = self.engine.failure_log
        while log:
            what, error = log.popleft()
            kind = f"{type(error).__name__}: {error}"
            if kind in self.seen:
                continue
            self.seen.add(kind)
            _warn(f"audio error contained ({kind}): {what}; playing on (only the first of its kind is reported)")
            if self.status is not None:
                self.status(f"audio error contained: {what}; playing on")
            for alert in self.alerts:
                alert("AUDIO ERROR", [what[:21], "PLAYING ON"])


def output_device(device: str | int | None, sd: Any = None) -> str | int | None:
    """Check that an audio output exists; a clear error listing the outputs if not."""
    if sd is None:
        import sounddevice as sd
    if isinstance(device, str) and device.isdigit():
        device = int(device)
    try:
        sd.query_devices(device, kind="output")
    except (ValueError, sd.PortAudioError) as e:
        try:
            outs = [d["name"] for d in sd.query_devices() if d["max_output_channels"] > 0]
        except sd.PortAudioError:
            outs = []
        what = f"audio output {device!r}" if device is not None else "default audio output"
        raise NsynthError(f"no {what} ({e}); outputs that exist: "
                          f"{', '.join(repr(o) for o in outs) if outs else 'none'}") from None
    return device


def play(bank_path: str | os.PathLike, *, midi: str | mido.ports.BaseInput | None = None, uart: str | None = None,
         device: str | int | None = None, block: int = 128, control_sources: Iterable[Any] = (),
         router: MidiRouter | None = None, config: EngineConfig | None = None, params: dict | None = None,
         duration: float | None = None, stop: threading.Event | None = None, reload: threading.Event | None = None,
         state: str | Path | None = None, preload_bytes: int | None = None) -> int:
    """Play live until interrupted (or `duration` seconds, or `stop` set). `midi` is a port name (None: the first
    USB MIDI input, now or when one is plugged in) or an open mido input; `uart` a serial device for DIN MIDI;
    each control source has `start(post)` / `stop()` and calls `post(**params)` (0..1 values) from its own
    thread. A source may also have `attach(engine, clock, slot)`, called first (to post notes stamped by the
    FrameClock, or switch banks through the BankSlot), and one source may have `foreground(poll)`, which then
    runs on this thread (a window's event loop) until it returns, calling `poll()` often and returning once
    `poll()` is False. SIGHUP (or setting `reload`) re-reads the bank playing now (at first `bank_path`),
    keeping the current one if refused. `preload_bytes`: the memory budget for holding a bank whole (default
    `$NSYNTH_PRELOAD_MB`, else a quarter of the RAM); a larger bank is streamed (device/residency.py)."""
    if block < 16 or block > 8192:
        raise NsynthError(f"--block must be 16..8192 frames, got {block}")
    stop = stop or threading.Event()
    reload = reload or threading.Event()
    previous_hup = _install_sighup(reload.set)  # from the start: a reload asked for while starting waits
    previous_switch = sys.getswitchinterval()
    try:
        return _play(bank_path, midi=midi, uart=uart, device=device, block=block, control_sources=control_sources,
                     router=router, config=config, params=params, duration=duration, stop=stop, reload=reload,
                     state=state, preload_bytes=preload_bytes)
    finally:
        if previous_hup is not None:
            signal.signal(signal.SIGHUP, previous_hup)
        sys.setswitchinterval(previous_switch)


def _play(bank_path, *, midi, uart, device, block, control_sources, router, config, params, duration, stop, reload,
          state, preload_bytes) -> int:
    import sounddevice as sd

    state = state_dir() if state is None else Path(state)
    watchdog = Watchdog.from_env()
    notice = HashNotice(watchdog)
    try:
        bank = load_bank(bank_path, state=state, on_hash=notice)
    finally:
        notice.stop()
    bank.residency = Residency(bank)  # the audio thread reads only pages the prefetch thread brought in
    engine = Engine(bank, replace(config or EngineConfig(), block=block), params)
    prefetcher = Prefetcher(engine, memory_budget() if preload_bytes is None else preload_bytes)
    prefetcher.prepare(bank)  # the heads of every note, before the first one can start
    clock = FrameClock(engine.fs, block)
    slot = BankSlot(engine, bank_path, state, prefetcher)
    on_message = MidiFeed(router or MidiRouter(), engine, clock)
    out = output_device(device, sd)
    inputs = midi_inputs(midi, uart, on_message)
    warm_up(bank, engine.config)
    gc.freeze()  # what exists now is never scanned again: shorter collector pauses in the audio thread
    # a thread that wants the GIL gets it within this long (Python's default, 5 ms, is longer than a block)
    sys.setswitchinterval(GIL_SWITCH_S)
    audio = LiveAudio(engine, clock, heartbeat=watchdog.heartbeat, rt_priority=configured_priority())
    try:
        stream = sd.OutputStream(samplerate=engine.fs, blocksize=block, channels=2, dtype="float32", device=out,
                                 callback=audio.callback, latency="low")
    except sd.PortAudioError as e:
        raise NsynthError(f"cannot open audio output {out!r}: {e}") from None
    t_end = None if duration is None else time.monotonic() + duration

    def keep_playing() -> bool:
        failures.poll()
        if reload.is_set():  # SIGHUP: re-read the bank (a refused one leaves the current one playing)
            reload.clear()
            if slot.reload() is not None:
                _warn(f"reloaded {slot.path}")
                watchdog.status(f"playing {slot.path} (reloaded)")
        return not stop.is_set() and (t_end is None or time.monotonic() < t_end)

    control_sources = list(control_sources)
    failures = FailureReporter(engine, watchdog.status, [s.alert for s in control_sources if hasattr(s, "alert")])
    foreground = [s.foreground for s in control_sources if hasattr(s, "foreground")]
    if len(foreground) > 1:
        raise NsynthError("only one control source can run in the foreground (one simulator window)")
    started: list[Any] = [watchdog.start(), prefetcher.start()]
    try:
        for src in inputs:
            started.append(src.start())
        for src in control_sources:
            if hasattr(src, "attach"):
                src.attach(engine, clock, slot)
            src.start(engine.post_params)
            started.append(src)
        # the instrument's other threads (and this one) just below the audio thread: while one of them holds the
        # GIL, nothing else on the machine preempts it, so the audio callback never waits long for it
        promote_threads(max(1, audio.rt_priority - 10) if audio.rt_priority else 0)
        with stream:
            summary = _playing(engine, prefetcher, out, inputs)
            _warn(summary)
            watchdog.ready(summary)
            if foreground:
                _run_foreground(foreground[0], keep_playing)
            else:
                while keep_playing():
                    stop.wait(0.05 if t_end is None else max(0.0, min(0.05, t_end - time.monotonic())))
    finally:
        for src in reversed(started):
            src.stop()
        _warn(f"stopped: {audio.callbacks} audio callbacks ({audio.underflows} with underflow), "
              f"{on_message.received} MIDI messages ({on_message.errors} failed); {engine.starved} voice segments "
              f"muted waiting for the bank, {engine.faults} voices freed for a bad state, {engine.failures} audio "
              f"errors contained; {audio.timing()}")
    return 0


def midi_inputs(midi: str | mido.ports.BaseInput | None, uart: str | None, on_message: MidiFeed) -> list[Any]:
    """The MIDI inputs `play` reads (not started): DIN on `uart`; an open mido port, or a USB port by name; with
    neither a port nor a UART, the first USB MIDI input, now or whenever one is plugged in."""
    inputs: list[Any] = []
    if uart is not None:
        inputs.append(UartMidiInput(uart, on_message))
    if isinstance(midi, mido.ports.BaseInput):
        inputs.append(PortInput(midi, on_message))
    elif midi is not None:
        inputs.append(UsbMidiInput(midi, on_message))
    elif uart is None:
        usb = UsbMidiInput(None, on_message, wait=True)
        if usb.port_name is None:
            _warn("no MIDI input yet (MIDI inputs that exist: none); the first one plugged in will be used")
        inputs.append(usb)
    return inputs


def _playing(engine: Engine, prefetcher: Prefetcher, out: str | int | None, inputs: list[Any]) -> str:
    """The line `play` says (and tells systemd) once the stream runs."""
    bank, block = engine.bank, engine.block
    midi_names = ", ".join(repr(getattr(i, "port_name", None) or getattr(i, "device", "?")) for i in inputs)
    held = ("held whole in RAM" if prefetcher.whole(bank) else
            f"streamed (over the {prefetcher.budget >> 20} MB preload budget)")
    return (f"playing {bank.path} ({len(bank.info.pitches)} pitches, {bank.info.grid}x{bank.info.grid} grid, "
            f"{bank.samples.nbytes / 2**20:.0f} MB, {held}) on audio output {out if out is not None else 'default'!r}, "
            f"{block}-frame blocks, {'compiled' if engine.compiled else 'numpy'} engine; MIDI: {midi_names or 'none'}")


def _run_foreground(run: Callable[[Callable[[], bool]], None], keep_playing: Callable[[], bool]) -> None:
    """Run a foreground loop (a window) with `keep_playing` as its poll; an error raised in the poll (inside the
    window's event loop, which would only print it) stops the loop and is raised here."""
    failure: list[BaseException] = []

    def poll() -> bool:
        try:
            return keep_playing()
        except Exception as e:
            failure.append(e)
            return False

    run(poll)
    if failure:
        raise failure[0]


def _install_sighup(callback: Any) -> Any:
    """Call `callback()` on SIGHUP (main thread only); returns the handler to restore, or None."""
    if not hasattr(signal, "SIGHUP") or threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGHUP, lambda signum, frame: callback())


def list_devices() -> str:
    import sounddevice as sd

    try:
        outs = [f"  {i}: {d['name']}" for i, d in enumerate(sd.query_devices()) if d["max_output_channels"] > 0]
    except sd.PortAudioError as e:
        outs = [f"  (none: {e})"]
    outs = outs or ["  (none)"]
    midis = [f"  {n}" for n in input_names()] or ["  (none)"]
    return "\n".join(["audio outputs:", *outs, "MIDI inputs:", *midis])


def configure_play(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bank", help="bank directory")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--midi", metavar="PORT", help="USB MIDI input name (or part of it); default: the first one")
    src.add_argument("--uart", metavar="DEV", help="DIN MIDI serial device, e.g. /dev/ttyAMA0 (31,250 baud)")
    parser.add_argument("--board", choices=("sim", "ons"),
                        help="control board: the one on the Pi (ons), or the simulator window (sim)")
    parser.add_argument("--banks", metavar="DIR", help="with --board: the folder of banks named "
                        "<top-left>_<top-right>_<bottom-left>_<bottom-right> the encoders switch between "
                        "(default: the folder holding BANK)")
    parser.add_argument("--device", help="audio output name or index (default: the system default)")
    parser.add_argument("--block", type=int, default=128, help="frames per audio block (default 128)")
    add_midi_arguments(parser)
    parser.add_argument("--list", action="store_true", help="list audio outputs and MIDI inputs, then exit")
    parser.set_defaults(func=_run_play)


def _run_play(args: argparse.Namespace) -> int:
    if args.list:
        print(list_devices())
        return 0
    if not args.bank:
        raise NsynthError("--bank BANK is required")
    if args.banks and not args.board:
        raise NsynthError("--banks needs --board (the encoders switch between the banks)")
    sources = []
    if args.board:
        from device.board_glue import board_source
        sources.append(board_source(args.board, banks=args.banks))
    return play(args.bank, midi=args.midi, uart=args.uart, device=args.device, block=args.block,
                control_sources=sources, router=router_from_args(args))
