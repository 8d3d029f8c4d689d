import subprocess
import sys

MODULES = ["device.bank", "device.bank_commands", "device.engine", "device.midi_map", "device.midi_stream",
           "device.midi_io", "device.live", "device.offline", "device.cli"]


def test_device_never_imports_torch():
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'torch' or name.startswith('torch.'):\n"
            "            raise ImportError('torch is blocked')\n"
            "sys.meta_path.insert(0, Block())\n"
            f"import importlib\nfor m in {MODULES!r}: importlib.import_module(m)\n"
            "assert 'torch' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
