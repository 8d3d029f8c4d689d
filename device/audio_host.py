"""The audio host: the process that plays. It owns the bank's mapping, the Engine, its Residency and Prefetcher and
the audio output stream with the callback (device/callback.py); the control process (device/play.py) keeps MIDI,
the board, the OLED, systemd and the bank checks, and reaches the host through shared memory (device/
shared_state.py: events in, counts and the clock mark out) and two pipes (device/host_link.py).

No other thread of the instrument shares this interpreter, so the callback never waits for the GIL behind the
MIDI, board or OLED threads: only the host's own command thread (asleep on its pipe almost always) and the
prefetch thread run beside it.

It runs as `python -m device.audio_host` (a fresh interpreter: it imports the engine while the control process
checks the bank, and no script's main module is run again in it). Commands (each answered on the command pipe):
  ("open", path, config, params, device, preload_bytes) -> ("ready", info) | ("error", message)
      opens the already-checked bank, prepares its pages, checks that the output exists;
  ("start", whole_s) -> ("started",) | ("error", message)   starts the prefetch thread, waits up to whole_s for
      a bank held whole to be all in (0: not at all), then opens and starts the stream;
  ("bank", path) -> ("bank", None) | ("bank", message)   opens a checked bank, brings its heads in, hands it over;
  ("stop",) -> ("stopped",)               stops the stream and the prefetch thread; the host then exits.
Contained failures go to the report pipe as (what, "Type: message") (device/failures.py).
"""
from __future__ import annotations

import gc
import importlib
import mmap
import signal
import sys
from multiprocessing.connection import Connection
from typing import Any

from device import kernels, shared_state
from device.bank import Bank, BankError, open_bank
from device.callback import LiveAudio
from device.clock import FrameClock
from device.engine import Engine, EngineConfig
from device.failures import forward_failures
from device.realtime import GIL_SWITCH_S, configured_priority, promote_threads
from device.residency import Prefetcher, Residency, memory_budget
from device.shared_state import SharedState
from nsynth.errors import NsynthError


def output_device(device: str | int | None, sd: Any) -> str | int | None:
    """Check that an audio output exists; a clear error listing the outputs if not."""
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


def warm_up(bank: Bank, config: EngineConfig) -> None:
    """Run a throwaway engine for a few blocks, so the first real callback does not pay for loading the compiled
    kernel (or numpy's first calls)."""
    scratch = Engine(bank, config)
    scratch.note_on(60, 100)
    scratch.post_params(x=0.3, y=0.6)
    scratch.render(8 * config.block)


def hand_over(engine: Engine, bank: Bank, prefetcher: Prefetcher | None = None) -> None:
    """Give an opened bank to a running engine: the heads of its notes are brought into memory first (with a
    prefetcher), then its sounding voices fade out (5 ms) and the new bank plays."""
    if prefetcher is not None:
        prefetcher.prepare(bank)
    engine.set_bank(bank)


class Host:
    """One audio host's state, between the commands."""

    def __init__(self, shared: SharedState, backend: str):
        self.shared = shared
        self.sd = importlib.import_module(backend)
        self.engine: Engine | None = None
        self.prefetcher: Prefetcher | None = None
        self.audio: LiveAudio | None = None
        self.out: str | int | None = None

    def open(self, path: str, config: EngineConfig, params: dict | None, device: str | int | None,
             preload_bytes: int | None) -> dict:
        bank = open_bank(path)  # checked by the control process (open_verified) just before
        bank.residency = Residency(bank)  # the audio thread reads only pages the prefetch thread brought in
        self.engine = engine = Engine(bank, config, params)
        self.prefetcher = Prefetcher(engine, memory_budget() if preload_bytes is None else preload_bytes)
        self.prefetcher.prepare(bank)  # the heads of every note, before the first one can start
        out = output_device(device, self.sd)
        warm_up(bank, engine.config)
        clock = FrameClock(engine.fs, engine.block, self.shared.clock_cells)
        clock.mark(0)  # the first mark: it and the (empty) drain load the clock's and the ring's compiled code now
        self.shared.ring.drain(engine.post)
        self.audio = LiveAudio(engine, clock, events=self.shared.ring, stats=self.shared.stats,
                               rt_priority=configured_priority())
        self.out = out
        return {"out": out, "compiled": engine.compiled, "whole": self.prefetcher.whole(bank),
                "budget": self.prefetcher.budget}

    def play(self, commands: Connection, reports: Connection, whole_s: float = 0.0) -> bool:
        """Start the prefetch thread (waiting up to whole_s for a bank held whole to be all in), then open and run
        the stream until told to stop (or the control process is gone), serving bank switches and forwarding
        contained failures meanwhile; False if the stream did not open."""
        engine, audio = self.engine, self.audio
        self.prefetcher.start()  # ahead of the stream: what voices read next is coming in before they start
        if whole_s > 0 and self.prefetcher.whole(engine.bank):
            self.prefetcher.wait_whole(engine.bank, whole_s)
        try:
            stream = self.sd.OutputStream(samplerate=engine.fs, blocksize=engine.block, channels=2, dtype="float32",
                                          device=self.out, callback=audio.callback, latency="low")
        except self.sd.PortAudioError as e:
            self.prefetcher.stop()
            commands.send(("error", f"cannot open audio output {self.out!r}: {e}"))
            return False
        gc.freeze()  # what exists now is never scanned again: shorter collector pauses in the audio thread
        # the prefetch thread gets the GIL within this long of asking (Python's default, 5 ms, is longer than a block)
        sys.setswitchinterval(GIL_SWITCH_S)
        with stream:
            # this process's other threads just below the audio thread: while one holds the GIL, nothing else on
            # the machine preempts it
            promote_threads(max(1, audio.rt_priority - 10) if audio.rt_priority else 0)
            commands.send(("started",))
            try:
                while True:
                    if not commands.poll(0.05):
                        forward_failures(self.engine, reports)
                        continue
                    cmd = commands.recv()
                    if cmd[0] == "stop":
                        break
                    commands.send(("bank", self.switch(cmd[1])))
            except (EOFError, OSError):  # the control process is gone: stop
                pass
        self.prefetcher.stop()
        forward_failures(self.engine, reports)
        return True

    def switch(self, path: str) -> str | None:
        """Hand a checked bank to the engine; None, or why it was refused."""
        try:
            hand_over(self.engine, open_bank(path), self.prefetcher)
        except (BankError, OSError) as e:
            return str(e)
        return None


def configure_warm(parser) -> None:
    """`nsynth engine warm` (at install time): the engine's kernels and the shared-memory code into numba's cache,
    so that the instrument loads them instead of compiling."""
    parser.set_defaults(func=_warm)


def _warm(args) -> int:
    kernels.warm()
    shared_state.warm()
    return 0


def serve(commands: Connection, reports: Connection, shm_name: str, capacity: int, backend: str) -> None:
    """Run the host: `shm_name` is the shared memory the control process made (multiprocessing.shared_memory:
    POSIX shared memory, /dev/shm on Linux, mapped here directly so that this process's resource tracker does not
    claim it), `backend` the audio module (sounddevice, or a module speaking its OutputStream API)."""
    for sig in (signal.SIGINT, signal.SIGHUP):  # a terminal's Ctrl-C or hang-up: the control process stops us
        signal.signal(sig, signal.SIG_IGN)
    kernels.without_blas_check()  # the host starts 0.25 s sooner
    with open(f"/dev/shm/{shm_name}", "r+b") as f:
        buf = mmap.mmap(f.fileno(), SharedState.nbytes(capacity))
    host = Host(SharedState(memoryview(buf), capacity), backend)
    try:
        cmd = commands.recv()
        if cmd[0] != "open":
            return
        try:
            info = host.open(*cmd[1:])
        except (NsynthError, BankError) as e:
            commands.send(("error", str(e)))
            return
        commands.send(("ready", info))
        cmd = commands.recv()
        if cmd[0] == "start" and not host.play(commands, reports, *cmd[1:]):
            commands.recv()  # the control process answers a failed start with "stop"
        commands.send(("stopped",))
    except (EOFError, OSError):  # the control process is gone
        pass


if __name__ == "__main__":  # python -m device.audio_host COMMANDS_FD REPORTS_FD SHM_NAME CAPACITY BACKEND
    serve(Connection(int(sys.argv[1])), Connection(int(sys.argv[2])), sys.argv[3], int(sys.argv[4]), sys.argv[5])
