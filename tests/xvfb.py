"""A headless X display (Xvfb) for the tests that open the simulator window."""
import os
import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def xvfb_display():
    """Start Xvfb on a free display number, point DISPLAY at it while inside, stop it after."""
    xvfb = shutil.which("Xvfb")
    assert xvfb, "Xvfb is needed for the simulator tests: bash scripts/install.sh dev (apt package xvfb)"
    for n in range(90, 120):
        if not Path(f"/tmp/.X11-unix/X{n}").exists() and not Path(f"/tmp/.X{n}-lock").exists():
            break
    proc = subprocess.Popen([xvfb, f":{n}", "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    old = os.environ.get("DISPLAY")
    try:
        deadline = time.monotonic() + 10
        while not Path(f"/tmp/.X11-unix/X{n}").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "Xvfb did not start"
            time.sleep(0.05)
        os.environ["DISPLAY"] = f":{n}"
        yield f":{n}"
    finally:
        if old is None:
            os.environ.pop("DISPLAY", None)
        else:
            os.environ["DISPLAY"] = old
        proc.terminate()
        proc.wait(10)
