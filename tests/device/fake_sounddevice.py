"""A fake audio device speaking sounddevice's interface (the hardware edge), for the audio host: one output whose
stream calls the callback from its own thread at the block rate; what it was given is saved (numpy .npy) to
$FAKE_AUDIO_CAPTURE, if set, when the stream closes."""
import os
import threading
import time

import numpy as np


class PortAudioError(Exception):
    pass


DEVICES = [{"name": "fake out", "max_output_channels": 2}]


def query_devices(device=None, kind=None):
    if device is None:
        return DEVICES[0] if kind else DEVICES
    if device not in (0, "fake out"):
        raise ValueError(f"no device {device!r}")
    return DEVICES[0]


class OutputStream:
    def __init__(self, samplerate, blocksize, channels, dtype, device, callback, latency):
        self.fs, self.block, self.channels, self.callback = samplerate, blocksize, channels, callback
        self.captured = []
        self._stop = threading.Event()

    def _run(self):
        t_next = time.monotonic()
        while not self._stop.is_set():
            buf = np.zeros((self.block, self.channels), np.float32)
            self.callback(buf, self.block, None, 0)
            self.captured.append(buf)
            t_next += self.block / self.fs
            time.sleep(max(0.0, t_next - time.monotonic()))

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        if os.environ.get("FAKE_AUDIO_CAPTURE"):
            np.save(os.environ["FAKE_AUDIO_CAPTURE"], np.concatenate(self.captured))
