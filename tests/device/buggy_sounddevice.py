"""The fake audio device (fake_sounddevice.py) in an audio host whose engine has a bug: it raises whenever a voice
of key 72 sounds (the containment test in test_live.py names this module as play's audio backend)."""
from device.engine import Engine
from fake_sounddevice import DEVICES, OutputStream, PortAudioError, query_devices  # noqa: F401 (the backend API)

_real = Engine._segment


def _buggy(self, out, at, n):
    if ((self.key == 72) & (self.stage != 0)).any():
        raise ZeroDivisionError("a bug in voice rendering")
    _real(self, out, at, n)


Engine._segment = _buggy
