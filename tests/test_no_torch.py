import subprocess
import sys

BLOCK = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == 'torch' or name.startswith('torch.'):
            raise ImportError('torch is blocked in this test')
sys.meta_path.insert(0, Block())
"""


def test_device_and_hardware_import_without_torch():
    code = BLOCK + """
import pkgutil, importlib, device, hardware
for pkg in (device, hardware):
    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):
        try:
            importlib.import_module(m.name)
        except ImportError as e:
            if 'torch' in str(e):
                raise SystemExit(f'{m.name} needs torch: {e}')
assert 'torch' not in sys.modules
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_torch_block_works():
    out = subprocess.run([sys.executable, "-c", BLOCK + "import precompute.model"], capture_output=True, text=True)
    assert out.returncode != 0 and "torch is blocked" in out.stderr
