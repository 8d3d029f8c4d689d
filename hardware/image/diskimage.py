"""Partitioned disk images edited without root or loop mounts: sfdisk for the MBR, mtools for the FAT boot
partition, debugfs for ext4 (both addressed at a byte offset inside the image file)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hardware.errors import HardwareError

SECTOR = 512
TOOLS = {"sfdisk": "fdisk", "mcopy": "mtools", "mdir": "mtools", "debugfs": "e2fsprogs", "mkfs.ext4": "e2fsprogs",
         "e2fsck": "e2fsprogs"}


def require_tools() -> None:
    missing = sorted({pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None})
    if missing:
        raise HardwareError(f"missing tools: apt-get install {' '.join(missing)}")


def _run(cmd: list[str], what: str, data: bytes | None = None, env: dict | None = None) -> bytes:
    r = subprocess.run(cmd, input=data, capture_output=True, env=env)
    if r.returncode != 0:
        raise HardwareError(f"{what}: {r.stderr.decode(errors='replace').strip() or f'exit status {r.returncode}'}")
    return r.stdout


@dataclass
class Partition:
    number: int
    start: int  # sectors
    size: int  # sectors
    type: str  # MBR type id, hex without 0x (c = FAT32 LBA, 83 = Linux)

    @property
    def offset(self) -> int:
        return self.start * SECTOR

    @property
    def end(self) -> int:
        return (self.start + self.size) * SECTOR


def read_partitions(image: Path) -> tuple[str, list[Partition]]:
    """(disk identifier, partitions) of an MBR image; raises HardwareError when there is no partition table."""
    r = subprocess.run(["sfdisk", "--json", str(image)], capture_output=True, text=True)
    if r.returncode != 0 or not r.stdout.strip():
        raise HardwareError(f"{image}: no partition table found ({r.stderr.strip() or 'empty'})")
    table = json.loads(r.stdout)["partitiontable"]
    if table.get("label") != "dos":
        raise HardwareError(f"{image}: partition table is {table.get('label')!r}, expected an MBR (dos) table")
    parts = [Partition(i + 1, p["start"], p["size"], p["type"].lower()) for i, p in enumerate(table["partitions"])]
    return table["id"], parts


def write_partitions(image: Path, label_id: str, parts: list[Partition]) -> None:
    """Rewrite the MBR keeping the disk identifier (so PARTUUID=<id>-02 in cmdline.txt/fstab stays valid)."""
    script = ["label: dos", f"label-id: {label_id}", "unit: sectors", ""]
    script += [f"start={p.start}, size={p.size}, type={p.type}" for p in parts]
    _run(["sfdisk", "--no-reread", "--no-tell-kernel", "-q", str(image)], f"{image}: sfdisk",
         ("\n".join(script) + "\n").encode())


class FatFs:
    """A FAT filesystem at a byte offset inside an image file, through mtools."""

    def __init__(self, image: Path, offset: int):
        self.spec = f"{image}@@{offset}"
        self.env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
        self.image = image

    def exists(self, path: str) -> bool:
        return subprocess.run(["mdir", "-b", "-i", self.spec, f"::{path}"], capture_output=True,
                              env=self.env).returncode == 0

    def read(self, path: str) -> bytes:
        return _run(["mcopy", "-n", "-i", self.spec, f"::{path}", "-"], f"{self.image}: reading {path}",
                    env=self.env)

    def write(self, path: str, data: bytes) -> None:
        with tempfile.NamedTemporaryFile() as f:
            f.write(data)
            f.flush()
            _run(["mcopy", "-o", "-i", self.spec, f.name, f"::{path}"], f"{self.image}: writing {path}", env=self.env)


class ExtFs:
    """An ext4 filesystem at a byte offset inside an image file, through debugfs (files owned by root)."""

    def __init__(self, image: Path, offset: int):
        self.device = f"{image}?offset={offset}"
        self.image = image

    def _debugfs(self, commands: list[str], write: bool = False) -> str:
        with tempfile.NamedTemporaryFile("w", suffix=".debugfs") as f:
            f.write("\n".join(commands) + "\n")
            f.flush()
            r = subprocess.run(["debugfs", *(["-w"] if write else []), "-f", f.name, self.device],
                               capture_output=True, text=True)
        # debugfs exits 0 even when a command fails: its errors are the stderr lines besides the version banner
        errors = [line for line in r.stderr.splitlines() if line.strip() and not line.startswith("debugfs ")]
        if r.returncode != 0 or errors:
            raise HardwareError(f"{self.image}: root filesystem: {'; '.join(errors) or r.returncode}")
        return r.stdout

    def exists(self, path: str) -> bool:
        r = subprocess.run(["debugfs", "-R", f"stat {path}", self.device], capture_output=True, text=True)
        return "File not found" not in r.stderr and r.returncode == 0 and bool(r.stdout.strip())

    def read(self, path: str) -> bytes:
        with tempfile.TemporaryDirectory() as d:
            out = Path(d) / "f"
            self._debugfs([f'dump "{path}" "{out}"'])
            return out.read_bytes()

    def read_text(self, path: str, default: str = "") -> str:
        return self.read(path).decode() if self.exists(path) else default

    def makedirs(self, path: str) -> None:
        parts = [p for p in path.split("/") if p]
        missing = []
        for i in range(1, len(parts) + 1):
            d = "/" + "/".join(parts[:i])
            if not self.exists(d):
                missing.append(d)
        if missing:
            self._debugfs([f'mkdir "{d}"' for d in missing] + [cmd for d in missing for cmd in self._owner(d, 0o40755)],
                          write=True)

    @staticmethod
    def _owner(path: str, mode: int) -> list[str]:
        return [f'sif "{path}" uid 0', f'sif "{path}" gid 0', f'sif "{path}" mode 0{mode:o}']

    def write(self, path: str, data: bytes, mode: int = 0o644) -> None:
        """Create or replace a regular file (root:root, `mode`), creating its parent folders."""
        self.makedirs(os.path.dirname(path))
        with tempfile.TemporaryDirectory() as d:
            src = Path(d) / "f"
            src.write_bytes(data)
            rm = [f'rm "{path}"'] if self.exists(path) else []
            self._debugfs(rm + [f'write "{src}" "{path}"'] + self._owner(path, 0o100000 | mode), write=True)

    def symlink(self, path: str, target: str) -> None:
        self.makedirs(os.path.dirname(path))
        rm = [f'rm "{path}"'] if self.exists(path) else []
        self._debugfs(rm + [f'symlink "{path}" "{target}"'], write=True)


def check_ext4(image: Path, what: str) -> None:
    """e2fsck -fn on a filesystem image file; raises HardwareError when it reports damage."""
    r = subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True, text=True)
    if r.returncode != 0:
        raise HardwareError(f"{what}: filesystem check failed: {(r.stdout + r.stderr).strip()[-400:]}")


def make_ext4(image: Path, source: Path, size_bytes: int, label: str) -> None:
    """An ext4 filesystem image holding `source`'s tree (mkfs.ext4 -d: no mounting, no root)."""
    _run(["mkfs.ext4", "-q", "-F", "-L", label, "-E", "root_owner=0:0", "-d", str(source), str(image),
          f"{size_bytes // 1024}k"], f"{image}: mkfs.ext4")
