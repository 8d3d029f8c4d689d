"""`nsynth play`: the live instrument. This process (control) checks the bank, reads MIDI and the control sources,
drives the OLED and talks to systemd; the audio host process (device/audio_host.py) plays: bank -> engine ->
sounddevice, fed through shared memory (device/host_link.py)."""
from __future__ import annotations

import argparse
import os
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterable

import mido

from device.bank_state import BankSlot, HashNotice, warn, load_bank, state_dir
from device.clock import FrameClock
from device.engine import EngineConfig
from device.failures import FailureReporter
from device.host_link import AudioHost, HostEngine
from device.midi_io import PortInput, UartMidiInput, UsbMidiInput, input_names
from device.midi_map import MidiRouter, add_midi_arguments, router_from_args
from device.sdnotify import Watchdog
from nsynth.errors import NsynthError


class MidiFeed:
    """What `play` does with each MIDI message, on the input's own thread: route it (device/midi_map.py), stamp its
    events with the frame clock and post them to the engine. An exception here would end that input's thread (DIN
    MIDI would go deaf): it is counted in `errors`, the first reported on stderr, and the input reads on."""

    def __init__(self, router: MidiRouter, engine: Any, clock: FrameClock):
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
                warn(f"MIDI message {msg!r} failed ({e!r}); ignored, the input reads on (later failures counted)")


def play(bank_path: str | os.PathLike, *, midi: str | mido.ports.BaseInput | None = None, uart: str | None = None,
         device: str | int | None = None, block: int = 128, control_sources: Iterable[Any] = (),
         router: MidiRouter | None = None, config: EngineConfig | None = None, params: dict | None = None,
         duration: float | None = None, stop: threading.Event | None = None, reload: threading.Event | None = None,
         state: str | Path | None = None, preload_bytes: int | None = None, audio: str = "sounddevice") -> int:
    """Play live until interrupted (or `duration` seconds, or `stop` set). `midi` is a port name (None: the first
    USB MIDI input, now or when one is plugged in) or an open mido input; `uart` a serial device for DIN MIDI;
    each control source has `start(post)` / `stop()` and calls `post(**params)` (0..1 values) from its own
    thread. A source may also have `attach(engine, clock, slot)`, called first (to post notes stamped by the
    FrameClock, or switch banks through the BankSlot), and one source may have `foreground(poll)`, which then
    runs on this thread (a window's event loop) until it returns, calling `poll()` often and returning once
    `poll()` is False. SIGHUP (or setting `reload`) re-reads the bank playing now (at first `bank_path`),
    keeping the current one if refused. `preload_bytes`: the memory budget for holding a bank whole (default
    `$NSYNTH_PRELOAD_MB`, else a quarter of the RAM); a larger bank is streamed (device/residency.py). `audio`:
    the audio host's output module (sounddevice, or one that speaks its API). The engine plays in the audio host
    process; if that process dies, `play` raises HostDied (the command exits non-zero)."""
    if block < 16 or block > 8192:
        raise NsynthError(f"--block must be 16..8192 frames, got {block}")
    stop = stop or threading.Event()
    reload = reload or threading.Event()
    previous_hup = _install_sighup(reload.set)  # from the start: a reload asked for while starting waits
    try:
        return _play(bank_path, midi=midi, uart=uart, device=device, block=block, control_sources=control_sources,
                     router=router, config=config, params=params, duration=duration, stop=stop, reload=reload,
                     state=state, preload_bytes=preload_bytes, audio=audio)
    finally:
        if previous_hup is not None:
            signal.signal(signal.SIGHUP, previous_hup)


def _play(bank_path, *, midi, uart, device, block, control_sources, router, config, params, duration, stop, reload,
          state, preload_bytes, audio) -> int:
    t_start = time.monotonic()
    state = state_dir() if state is None else Path(state)
    watchdog = Watchdog.from_env()
    host = AudioHost(audio)  # it imports the engine while this process checks the bank
    try:
        notice = HashNotice(watchdog)
        try:
            bank = load_bank(bank_path, state=state, on_hash=notice)
        finally:
            notice.stop()
        config = replace(config or EngineConfig(), block=block)
        info = host.open(bank.path, config, params, device, preload_bytes)
        engine = HostEngine(host, bank, config)
        clock = FrameClock(config.sample_rate, block, host.shared.clock_cells)
        on_message = MidiFeed(router or MidiRouter(), engine, clock)
        inputs = midi_inputs(midi, uart, on_message)
    except BaseException:
        host.stop()
        raise
    slot = BankSlot(engine, bank_path, state)
    t_end = None

    def keep_playing() -> bool:
        failures.poll()
        host.check()
        if reload.is_set():  # SIGHUP: re-read the bank (a refused one leaves the current one playing)
            reload.clear()
            if slot.reload() is not None:
                warn(f"reloaded {slot.path}")
                watchdog.status(f"playing {slot.path} (reloaded)")
        return not stop.is_set() and (t_end is None or time.monotonic() < t_end)

    control_sources = list(control_sources)
    failures = FailureReporter(host.reports, watchdog.status, [s.alert for s in control_sources if hasattr(s, "alert")])
    foreground = [s.foreground for s in control_sources if hasattr(s, "foreground")]
    started: list[Any] = []
    try:
        if len(foreground) > 1:
            raise NsynthError("only one control source can run in the foreground (one simulator window)")
        started.append(watchdog)
        for src in inputs:
            started.append(src.start())
        for src in control_sources:
            if hasattr(src, "attach"):
                src.attach(engine, clock, slot)
            src.start(engine.post_params)
            started.append(src)
        host.start()
        t_end = None if duration is None else time.monotonic() + duration
        summary = _playing(bank, info, block, inputs, time.monotonic() - t_start)
        warn(summary)
        watchdog.ready(summary)
        watchdog.follow(lambda: host.stats.callbacks).start()  # pings while the host's callback count moves
        if foreground:
            _run_foreground(foreground[0], keep_playing)
        else:
            while keep_playing():
                stop.wait(0.05 if t_end is None else max(0.0, min(0.05, t_end - time.monotonic())))
    finally:
        for src in reversed(started):
            src.stop()
        host.stop()
        warn(_stopped(engine, on_message, block / config.sample_rate))
    return 0


def _stopped(engine: HostEngine, on_message: MidiFeed, period: float) -> str:
    """The line `play` says when it stops: the host's final counts (left in shared memory) and the MIDI feed's."""
    stats = engine.host.stats
    return (f"stopped: {stats.callbacks} audio callbacks ({stats.underflows} with underflow), {on_message.received} "
            f"MIDI messages ({on_message.errors} failed, {engine.dropped} events dropped on a full ring); "
            f"{engine.starved} voice segments muted waiting for the bank, {engine.faults} voices freed for a bad "
            f"state, {engine.failures} audio errors contained; {stats.timing(period)}")


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
            warn("no MIDI input yet (MIDI inputs that exist: none); the first one plugged in will be used")
        inputs.append(usb)
    return inputs


def _playing(bank: Any, info: dict, block: int, inputs: list[Any], started_s: float) -> str:
    """The line `play` says (and tells systemd) once the first audio callback has run."""
    midi_names = ", ".join(repr(getattr(i, "port_name", None) or getattr(i, "device", "?")) for i in inputs)
    held = "held whole in RAM" if info["whole"] else f"streamed (over the {info['budget'] >> 20} MB preload budget)"
    out = info["out"] if info["out"] is not None else "default"
    return (f"playing {bank.path} ({len(bank.info.pitches)} pitches, {bank.info.grid}x{bank.info.grid} grid, "
            f"{bank.samples.nbytes / 2**20:.0f} MB, {held}) on audio output {out!r}, {block}-frame blocks, "
            f"{'compiled' if info['compiled'] else 'numpy'} engine; MIDI: {midi_names or 'none'}; "
            f"first audio callback {started_s:.2f} s after start")


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
