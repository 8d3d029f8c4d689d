"""An audio output for the benchmarks, speaking sounddevice's interface (the audio host takes it as its backend):
its stream calls the callback once every block period in real time, from its own thread, and records each call's
time from the period's start (waking late and waiting for the GIL included) to the callback's end, and the
callback's own duration. On close it saves them (seconds, float64 [calls, 2]: from the period's start, own) and
whether the callback's thread ran on SCHED_FIFO, to $PACED_AUDIO_TIMES (.npz)."""
import os
import threading
import time

import numpy as np


class PortAudioError(Exception):
    pass


def query_devices(device=None, kind=None):
    out = {"name": "paced", "max_output_channels": 2}
    if device not in (None, 0, "paced"):
        raise ValueError(f"no device {device!r}")
    return out if device is not None or kind else [out]


class OutputStream:
    def __init__(self, samplerate, blocksize, channels, dtype, device, callback, latency):
        self.period, self.block, self.channels, self.callback = blocksize / samplerate, blocksize, channels, callback
        self._stop = threading.Event()
        self.times: list[tuple[float, float]] = []
        self.fifo = False

    def _run(self):
        buf = np.zeros((self.block, self.channels), np.float32)
        t_next = time.perf_counter() + self.period
        while not self._stop.is_set():
            now = time.perf_counter()
            if t_next > now:
                time.sleep(t_next - now)
            t0 = time.perf_counter()
            self.callback(buf, self.block, None, 0)
            t1 = time.perf_counter()
            self.times.append((t1 - t_next, t1 - t0))
            t_next = max(t_next + self.period, t1)
        self.fifo = os.sched_getscheduler(0) == os.SCHED_FIFO  # set by the callback on its first call, if allowed

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, name="paced-audio", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        if os.environ.get("PACED_AUDIO_TIMES"):
            np.savez(os.environ["PACED_AUDIO_TIMES"], times=np.array(self.times).reshape(-1, 2), fifo=self.fifo)
