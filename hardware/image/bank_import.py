"""`nsynth bank import`: verify banks from a USB stick (or a folder) and install the good ones atomically.

BANKS/NAME is a symlink to BANKS/.store/NAME.STAMP. A bank is copied beside the live ones, verified *as copied*
with `nsynth bank verify`, and only then swapped in by replacing the symlink with rename(2): the instrument sees the
old bank or the new one, never a partial copy, and a bad bank leaves the old one in place. The outcome goes to the
journal (stdout/stderr) and to a status file the instrument shows on its OLED.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from hardware.errors import HardwareError

VERIFY = (sys.executable, "-m", "nsynth.cli", "bank", "verify")
STORE = ".store"


@dataclass
class ImportReport:
    source: str
    installed: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = [f"installed bank {n}" for n in self.installed]
        out += [f"refused bank {n}: {why}" for n, why in self.refused.items()]
        return out or [f"no banks (folders with manifest.json) found on {self.source}"]


def find_banks(source: Path) -> list[Path]:
    """Bank folders (holding manifest.json) at the top of `source` or one level down (e.g. a banks/ folder)."""
    found = [d for d in sorted(source.iterdir()) if d.is_dir() and (d / "manifest.json").is_file()]
    for sub in sorted(source.iterdir()):
        if sub.is_dir() and not (sub / "manifest.json").exists() and not sub.name.startswith("."):
            found += [d for d in sorted(sub.iterdir()) if d.is_dir() and (d / "manifest.json").is_file()]
    return found


def _check_plain(bank: Path) -> None:
    """Only plain files and folders: a symlink on a stick could point at any file of the device."""
    for dirpath, dirs, files in os.walk(bank):
        for entry in dirs + files:
            path = Path(dirpath) / entry
            if path.is_symlink() or not (path.is_dir() or path.is_file()):
                raise HardwareError(f"{bank}: {path.relative_to(bank)} is a link or special file; banks hold plain files")


def _readable(root: Path) -> None:
    """Installed banks are readable by the instrument's user whatever modes they had on the stick."""
    for dirpath, dirs, files in os.walk(root):
        os.chmod(dirpath, 0o755)
        for f in files:
            os.chmod(os.path.join(dirpath, f), 0o644)


def _fsync_tree(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for f in files:
            fd = os.open(os.path.join(dirpath, f), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def verify_bank(bank: Path, verify=None, shown_as: Path | None = None) -> None:
    """Run `nsynth bank verify` (or the given command) on a bank folder; HardwareError with its message if bad."""
    check = subprocess.run([*(verify or VERIFY), str(bank)], capture_output=True, text=True)
    if check.returncode != 0:
        reason = (check.stderr.strip() or check.stdout.strip() or f"exit status {check.returncode}").splitlines()[-1]
        shown = shown_as or bank
        raise HardwareError(f"{shown}: bank verify failed: {reason.replace(str(bank), shown.name)}")


def install_bank(bank: Path, banks_dir: Path, verify: tuple[str, ...] | list[str] | None = None) -> Path:
    """Copy, verify and atomically install one bank as banks_dir/<bank name>; raises HardwareError if it is bad.
    `verify` is the command a bank folder is appended to (default: `nsynth bank verify`)."""
    name = bank.name
    _check_plain(bank)
    store = banks_dir / STORE
    store.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=store, prefix=f"{name}.{time.strftime('%Y%m%d%H%M%S')}.", suffix=".tmp"))
    final = tmp.with_suffix("")
    try:
        tmp.chmod(0o755)
        shutil.copytree(bank, tmp, dirs_exist_ok=True)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise HardwareError(f"{bank}: cannot copy into {banks_dir}: {e.strerror or e}") from None
    _fsync_tree(tmp)
    _readable(tmp)
    try:
        verify_bank(tmp, verify, shown_as=bank)
    except HardwareError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.rename(tmp, final)
    link = banks_dir / name
    old = None
    if link.is_symlink():
        old = banks_dir / os.readlink(link)
    elif link.is_dir():  # a plain folder from before: move it into the store first
        old = store / f"{name}.legacy.{os.getpid()}"
        os.rename(link, old)
    tmp_link = banks_dir / f".{name}.link"
    tmp_link.unlink(missing_ok=True)
    os.symlink(os.path.relpath(final, banks_dir), tmp_link)
    os.replace(tmp_link, link)
    fd = os.open(banks_dir, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    if old is not None and old.resolve() != final.resolve():
        shutil.rmtree(old, ignore_errors=True)
    return link


def import_banks(source: Path, banks_dir: Path, verify=None, label: str | None = None) -> ImportReport:
    """Install every good bank found in `source`; bad ones are refused and the installed ones stay."""
    report = ImportReport(label or str(source))
    for bank in find_banks(Path(source)):
        try:
            install_bank(bank, Path(banks_dir), verify)
            report.installed.append(bank.name)
        except HardwareError as e:
            report.refused[bank.name] = str(e).split(": ", 1)[-1]
    return report


def write_status(path: Path, report: ImportReport) -> None:
    """The last import's outcome for the OLED, written atomically (temp name + rename)."""
    data = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "source": report.source, "installed": report.installed,
            "refused": report.refused, "lines": report.lines()}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.fchmod(fd, 0o644)  # written by root, read by the instrument's user (mkstemp makes it 0600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def import_from_device(device: str, banks_dir: Path, verify=None) -> ImportReport:
    """Mount a USB partition read-only (in the unit's private mount namespace), import its banks, unmount."""
    base = os.environ.get("RUNTIME_DIRECTORY") or None
    mnt = Path(tempfile.mkdtemp(prefix="usb-", dir=base))
    r = subprocess.run(["mount", "-o", "ro,nosuid,nodev,noexec", device, str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        mnt.rmdir()
        raise HardwareError(f"{device}: cannot mount: {r.stderr.strip() or r.returncode}")
    try:
        return import_banks(mnt, banks_dir, verify, label=device)
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
        mnt.rmdir()


def run(args: argparse.Namespace) -> int:
    banks = Path(args.banks)
    if args.source:
        report = import_banks(Path(args.source), banks)
    else:
        report = import_from_device(args.device, banks)
    for line in report.lines():
        print(line, file=sys.stderr if line.startswith("refused") else sys.stdout)
    if args.status:
        write_status(Path(args.status), report)
    if report.refused:
        raise HardwareError(f"{len(report.refused)} bank(s) refused from {report.source}; the installed banks are unchanged")
    return 0


def configure(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--device", help="block device of a USB partition, e.g. /dev/sda1 (mounted read-only)")
    src.add_argument("--from", dest="source", help="a folder holding bank folders")
    parser.add_argument("--banks", default="/var/lib/nsynth/banks", help="installed banks (default %(default)s)")
    parser.add_argument("--status", help="write the outcome as JSON here (for the OLED)")
    parser.set_defaults(func=run)
