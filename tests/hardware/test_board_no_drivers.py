import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

BLOCKED = ("smbus2", "RPi", "luma", "PIL", "gpiozero", "torch", "device", "tkinter")

SCRIPT = textwrap.dedent(f"""
    import importlib, pkgutil, sys

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {BLOCKED!r}:
                raise ImportError(f"blocked for this test: {{name}}")
    sys.meta_path.insert(0, Block())

    import hardware
    names = [m.name for m in pkgutil.iter_modules(hardware.__path__) if m.name not in ("simulator", "image")]
    for name in names:
        importlib.import_module("hardware." + name)

    from hardware.frame import Frame, decode, encode
    from hardware.mapping import BoardMapper
    m = BoardMapper()
    params = m.update(decode(encode(Frame((10, 0), (0, 0, 0, 0), (0, 51, 102, 153, 204, 255)))), 0.0)
    assert params["sustain"] == 0.6 and params["volume"] == 1.0, params

    from hardware.errors import HardwareError
    from hardware.switches import load_gpio
    try:
        load_gpio()
        raise SystemExit("load_gpio should have refused")
    except HardwareError as e:
        assert "--board sim" in str(e)
    from hardware.oled import open_oled
    assert open_oled() is None
    leaked = [n for n in sys.modules if n.split(".")[0] in {BLOCKED!r}]
    assert not leaked, leaked
    print("ok", len(names))
""")


def test_hardware_imports_and_maps_with_no_driver_library():
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok") and int(out.stdout.split()[1]) >= 14


def test_hardware_source_never_imports_device_or_torch():
    for path in (ROOT / "hardware").rglob("*.py"):
        text = path.read_text()
        for bad in ("import device", "from device", "import torch", "from torch"):
            assert bad not in text, f"{path}: {bad}"
