"""jackd with its dummy backend (a real-time clock, no sound card) for the tests and benchmarks that play through
PortAudio's JACK host API or need MIDI virtual ports where ALSA has none.

Each purpose has one server name (nsynth-bench, nsynth-soak, nsynth-test), not one per process: jackd keeps a
machine-wide registry of a few server slots in /dev/shm, and a server that did not end cleanly leaves its slot
taken until a server of the same name starts again; with a fresh name per run, a few such runs leave "Too many
servers already active" for every later one."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path


class JackDummy:
    """`with JackDummy("bench") as jack:` runs jackd -d dummy at `rate` / `period` frames until the block ends
    (--no-realtime, or -R -P 80 with realtime); `jack.env` reaches it. Its output goes to `log` (then `xruns()`
    counts them) or nowhere. With `required=False` and no jackd installed, nothing runs (`jack.env` then reaches
    no server)."""

    def __init__(self, purpose: str, *, rate: int = 48000, period: int = 128, realtime: bool = False,
                 log: Path | None = None, required: bool = True):
        self.env = {**os.environ, "JACK_NO_AUDIO_RESERVATION": "1", "JACK_DEFAULT_SERVER": f"nsynth-{purpose}"}
        self.args = ["jackd", *(["-R", "-P", "80"] if realtime else ["--no-realtime"]), "-d", "dummy",
                     "-r", str(rate), "-p", str(period)]
        self.log, self.required = log, required
        self.proc: subprocess.Popen | None = None
        self._out = None

    def __enter__(self) -> "JackDummy":
        if shutil.which("jackd") is None:
            if self.required:
                raise RuntimeError("jackd is not installed (Debian: jackd2)")
            return self
        self._out = open(self.log, "w") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen(self.args, env=self.env, stdout=self._out, stderr=subprocess.STDOUT)
        for _ in range(50):
            if subprocess.run(["jack_lsp"], env=self.env, capture_output=True).returncode == 0:
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.__exit__()
        raise RuntimeError(f"jackd did not start ({' '.join(self.args)}; exit {self.proc.returncode})"
                           + (f": {self.log.read_text()[-500:]}" if self.log else ""))

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        if self.log and self._out is not None:
            self._out.close()

    def xruns(self) -> int:
        """The xruns jackd reported so far (with a log)."""
        return len(re.findall(r"xrun", self.log.read_text(), re.I)) if self.log else 0
