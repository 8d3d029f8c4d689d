"""USB bank import: verified banks are swapped in atomically, bad ones refused with the old ones kept."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nsynth.cli import main
from hardware.errors import HardwareError
from hardware.image import bank_import
from hardware.image.bank_import import import_banks, install_bank, write_status

# Stands in for `nsynth bank verify` (device/bank.py, another module): the manifest's declared sample count must match
# samples.i16. Exit status and message are the contract the importer relies on.
VERIFY_SCRIPT = """
import json, os, sys
bank = sys.argv[1]
n = json.load(open(os.path.join(bank, "manifest.json")))["samples"]
size = os.path.getsize(os.path.join(bank, "samples.i16"))
if size != 2 * n:
    sys.exit(f"{bank}/samples.i16: {size} bytes, manifest says {2 * n}")
print(f"{bank}: OK")
"""


@pytest.fixture
def verify(tmp_path):
    script = tmp_path / "verify.py"
    script.write_text(VERIFY_SCRIPT)
    return (sys.executable, str(script))


def make_bank(parent: Path, name: str, samples: int, payload: bytes = b"\1\0") -> Path:
    bank = parent / name
    bank.mkdir(parents=True)
    (bank / "manifest.json").write_text(json.dumps({"samples": samples}))
    (bank / "samples.i16").write_bytes(payload * (len(payload) and 4))
    return bank


def test_good_bank_is_installed_as_symlink(tmp_path, verify):
    stick, banks = tmp_path / "stick", tmp_path / "banks"
    make_bank(stick, "strings", 4)
    report = import_banks(stick, banks, verify)
    assert report.installed == ["strings"] and not report.refused
    assert (banks / "strings").is_symlink()
    assert (banks / "strings" / "samples.i16").read_bytes() == b"\1\0" * 4


def test_update_replaces_old_bank_and_frees_its_store(tmp_path, verify):
    banks = tmp_path / "banks"
    install_bank(make_bank(tmp_path / "a", "keys", 4, b"\1\0"), banks, verify)
    install_bank(make_bank(tmp_path / "b", "keys", 4, b"\2\0"), banks, verify)
    assert (banks / "keys" / "samples.i16").read_bytes() == b"\2\0" * 4
    assert len(list((banks / ".store").iterdir())) == 1
    assert not list(banks.glob(".*.link"))


def test_bad_bank_is_refused_and_old_bank_stays(tmp_path, verify):
    banks, stick = tmp_path / "banks", tmp_path / "stick"
    install_bank(make_bank(tmp_path / "old", "pads", 4, b"\7\0"), banks, verify)
    make_bank(stick / "banks", "pads", 99, b"\0\0")       # truncated samples: verify fails
    make_bank(stick / "banks", "bells", 4)
    report = import_banks(stick, banks, verify)
    assert report.installed == ["bells"]
    assert "samples.i16" in report.refused["pads"] and "manifest says 198" in report.refused["pads"]
    assert (banks / "pads" / "samples.i16").read_bytes() == b"\7\0" * 4
    assert not [p for p in (banks / ".store").iterdir() if p.name.endswith(".tmp")]
    status = tmp_path / "state" / "import.json"
    write_status(status, report)
    data = json.loads(status.read_text())
    assert data["refused"].keys() == {"pads"} and data["installed"] == ["bells"]
    assert status.stat().st_mode & 0o777 == 0o644  # root writes it, the instrument's user reads it


def test_banks_are_made_readable_and_links_refused(tmp_path, verify):
    banks = tmp_path / "banks"
    bank = make_bank(tmp_path / "stick", "private", 4)
    (bank / "samples.i16").chmod(0o600)
    install_bank(bank, banks, verify)
    assert ((banks / "private/samples.i16").stat().st_mode & 0o777) == 0o644
    evil = make_bank(tmp_path / "stick2", "evil", 4)
    (evil / "extra").symlink_to("/etc/passwd")
    with pytest.raises(HardwareError, match="evil: extra is a link or special file"):
        install_bank(evil, banks, verify)
    assert not (banks / "evil").exists()


def test_plain_folder_from_an_image_is_replaced(tmp_path, verify):
    banks = tmp_path / "banks"
    make_bank(banks, "default", 4, b"\1\0")
    install_bank(make_bank(tmp_path / "new", "default", 4, b"\3\0"), banks, verify)
    assert (banks / "default").is_symlink()
    assert (banks / "default" / "samples.i16").read_bytes() == b"\3\0" * 4
    assert len(list((banks / ".store").iterdir())) == 1


def test_cli_reports_refusal_and_exit_status(tmp_path, verify, monkeypatch, capsys):
    monkeypatch.setattr(bank_import, "VERIFY", verify)
    stick = tmp_path / "stick"
    make_bank(stick, "broken", 10)
    rc = main(["bank", "import", "--from", str(stick), "--banks", str(tmp_path / "banks"),
               "--status", str(tmp_path / "import.json")])
    err = capsys.readouterr().err
    assert rc == 1 and "refused bank broken" in err and "installed banks are unchanged" in err
    assert not (tmp_path / "banks" / "broken").exists()
    assert json.loads((tmp_path / "import.json").read_text())["refused"]


def test_nothing_on_the_stick(tmp_path, verify):
    (tmp_path / "stick").mkdir()
    report = import_banks(tmp_path / "stick", tmp_path / "banks", verify)
    assert report.lines() == [f"no banks (folders with manifest.json) found on {tmp_path / 'stick'}"]


def _can_mount(tmp_path: Path) -> bool:
    """Root with loop devices (CI, this machine): mount really works; elsewhere the mount path cannot run."""
    if os.geteuid() != 0:
        return False
    probe, mnt = tmp_path / "probe.ext4", tmp_path / "probe"
    mnt.mkdir()
    subprocess.run(["mkfs.ext4", "-q", str(probe), "1M"], check=True, capture_output=True)
    ok = subprocess.run(["mount", "-o", "ro", str(probe), str(mnt)], capture_output=True).returncode == 0
    if ok:
        subprocess.run(["umount", str(mnt)], check=True)
    return ok


def test_import_from_a_usb_filesystem_mounted_read_only(tmp_path, verify, monkeypatch):
    if not _can_mount(tmp_path):
        pytest.skip("needs root and loop devices to mount a filesystem image")
    stick = tmp_path / "stick"
    make_bank(stick / "banks", "choir", 4)
    make_bank(stick / "banks", "torn", 50)
    image = tmp_path / "usb.ext4"
    subprocess.run(["mkfs.ext4", "-q", "-d", str(stick), str(image), "4M"], check=True, capture_output=True)
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(run))  # as systemd sets it for the import unit
    report = bank_import.import_from_device(str(image), tmp_path / "banks", verify)
    assert report.source == str(image) and report.installed == ["choir"] and list(report.refused) == ["torn"]
    assert (tmp_path / "banks/choir/samples.i16").read_bytes() == b"\1\0" * 4
    assert not list(run.iterdir()) and str(run) not in Path("/proc/mounts").read_text()  # unmounted, removed
    with pytest.raises(HardwareError, match="cannot mount"):
        bank_import.import_from_device(str(tmp_path / "stick"), tmp_path / "banks", verify)
