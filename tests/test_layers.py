"""The layers are enforced, not only written down (pyproject.toml's import-linter contracts; docs/architecture.md):
the core depends on no side, the instrument and the board never import torch or precompute, the board never
imports the instrument, precompute reaches the device side only through the bank format, and the product never
imports what only tests and benchmarks use (testkit/, bench/, tests/)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def lint_imports(root: Path, config: Path) -> subprocess.CompletedProcess:
    """import-linter's `lint-imports` command, run by this Python (whichever folder pip put its scripts in)."""
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run([sys.executable, "-c", code, "--config", str(config), "--no-cache"], cwd=root,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(root)}, timeout=300)


def test_the_import_contracts_hold():
    r = lint_imports(ROOT, ROOT / "pyproject.toml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "5 kept, 0 broken" in r.stdout


@pytest.mark.parametrize("imported, contract", [
    ("precompute.render.post", "the instrument and the board never import torch or the precompute side"),
    ("testkit", "the product never imports the test kit, the benchmarks or the tests")])  # outside: named whole
def test_a_forbidden_import_breaks_its_contract(tmp_path, imported, contract):
    """The same contracts on a copy of the tree where the instrument imports the precompute side, or the test kit:
    broken."""
    for pkg in ("nsynth", "precompute", "device", "hardware"):
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    engine = tmp_path / "device" / "engine.py"
    engine.write_text(engine.read_text() + f"\nimport {imported}  # noqa\n")
    r = lint_imports(tmp_path, ROOT / "pyproject.toml")
    assert r.returncode != 0
    assert f"{contract} BROKEN" in r.stdout
    assert f"device.engine -> {imported}" in r.stdout


def test_the_board_and_the_engine_share_their_defaults():
    """One source for the parameters: what the board's screen shows before a pot moves is what the engine plays."""
    from device import engine, midi_map
    from hardware import controls, mapping
    from nsynth.params import DEFAULT_PARAMS, PARAMS, POT_PARAMS

    assert controls.DEFAULT_PARAMS is engine.DEFAULT_PARAMS is DEFAULT_PARAMS and set(DEFAULT_PARAMS) == set(PARAMS)
    assert mapping.POT_PARAMS is controls.POT_PARAMS is POT_PARAMS and engine.PARAMS is midi_map.PARAMS is PARAMS
