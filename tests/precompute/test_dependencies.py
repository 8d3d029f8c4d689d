"""What precompute/ imports is what pyproject.toml's `precompute` extra (or the base dependencies) installs: a
module is not left to an extra that only developers install."""
import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OURS = {"nsynth", "precompute", "device", "hardware"}
ELSEWHERE = {"ray": "cluster"}  # --ray only


def _third_party_imports(package: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in OURS and top != "__future__":
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def test_precompute_imports_are_in_its_extra():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    dists = importlib.metadata.packages_distributions()
    imports = _third_party_imports(ROOT / "precompute")
    assert {"torch", "librosa", "numpy"} <= set(imports)  # the walk sees imports inside functions too
    for module, files in sorted(imports.items()):
        declared = _names(project["dependencies"] + extras[ELSEWHERE.get(module, "precompute")])
        wanted = {d.lower().replace("_", "-") for d in dists.get(module, [module])}
        assert wanted & declared, (f"{module} (imported by {', '.join(sorted(files))}) is not in pyproject.toml's "
                                   f"{ELSEWHERE.get(module, 'precompute')} extra")
