"""The systemd units: `systemd-analyze verify` in a root tree shaped like the device, and the service's exposure."""
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

SYSTEMD = Path(__file__).resolve().parents[2] / "systemd"
UNITS = ["nsynth.service", "nsynth-firstboot.service", "nsynth-import@sda1.service"]
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed (scripts/install.sh dev)")


def device_root(tmp_path: Path, units_dir: Path = SYSTEMD) -> Path:
    """A root with systemd's own units, ours, and the executables our units name (as on an installed device)."""
    root = tmp_path / "root"
    shutil.copytree("/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    for unit in units_dir.glob("*.service"):
        shutil.copy(unit, root / "etc/systemd/system")
    for exe in ["var/lib/nsynth/current/bin/nsynth", "usr/local/lib/nsynth/nsynth-firstboot", "bin/kill"]:
        (root / exe).parent.mkdir(parents=True, exist_ok=True)
        (root / exe).write_text("#!/bin/sh\n")
        (root / exe).chmod(0o755)
    return root


def verify(root: Path, unit: str) -> subprocess.CompletedProcess:
    return subprocess.run([ANALYZE, "verify", f"--root={root}", f"/etc/systemd/system/{unit}"],
                          capture_output=True, text=True)


@needs_analyze
@pytest.mark.parametrize("unit", UNITS)
def test_unit_verifies_cleanly(tmp_path, unit):
    r = verify(device_root(tmp_path), unit)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr


@needs_analyze
def test_verify_catches_a_broken_unit(tmp_path):
    broken = tmp_path / "units"
    broken.mkdir()
    text = (SYSTEMD / "nsynth.service").read_text()
    (broken / "nsynth.service").write_text(text.replace("ProtectHome=", "ProtectHom=")
                                           .replace("current/bin/nsynth play", "current/bin/nsynth-missing play"))
    r = verify(device_root(tmp_path, broken), "nsynth.service")
    assert r.returncode != 0 and "ProtectHom" in r.stderr and "nsynth-missing" in r.stderr


def exposure(unit: Path) -> float:
    r = subprocess.run([ANALYZE, "security", "--offline=true", str(unit)], capture_output=True, text=True)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout + r.stderr)
    assert m, r.stdout + r.stderr
    return float(m.group(1))


@needs_analyze
def test_instrument_exposure_at_most_2_5():
    assert exposure(SYSTEMD / "nsynth.service") <= 2.5
    assert exposure(SYSTEMD / "nsynth-import@.service") <= 2.5


@needs_analyze
def test_exposure_measure_can_fail(tmp_path):
    original = tmp_path / "original.service"  # the original NSynth Super's unit: 9.2 UNSAFE
    original.write_text("[Service]\nUser=pi\nExecStart=/bin/true\nRestart=on-abort\n")
    assert exposure(original) > 9


def test_service_is_notify_with_watchdog_and_restart():
    text = (SYSTEMD / "nsynth.service").read_text()
    for line in ["Type=notify", "Restart=always", "User=nsynth", "ProtectSystem=strict", "ProtectHome=yes",
                 "PrivateTmp=yes", "NoNewPrivileges=yes", "DevicePolicy=closed", "RestrictAddressFamilies=AF_UNIX"]:
        assert line in text.splitlines(), line
    assert re.search(r"^WatchdogSec=\d+", text, re.M) and re.search(r"^StartLimitBurst=\d+", text, re.M)
    assert "SupplementaryGroups=audio gpio i2c dialout" in text
    assert "ExecReload=/bin/kill -HUP $MAINPID" in text.splitlines()  # play reloads its bank on SIGHUP
    rw = re.search(r"^ReadWritePaths=(.*)$", text, re.M).group(1).split()
    assert {"/var/lib/nsynth/patches", "/var/lib/nsynth/banks"} <= set(rw)


def test_udev_rule_starts_the_import_template():
    rule = (SYSTEMD / "99-nsynth-usb.rules").read_text()
    assert 'ENV{SYSTEMD_WANTS}+="nsynth-import@%k.service"' in rule and 'SUBSYSTEM=="block"' in rule


@pytest.mark.parametrize("script", ["nsynth-firstboot", "nsynth-install", "nsynth-banks", "nsynth-update"])
def test_target_scripts_parse_as_posix_sh(script):
    path = SYSTEMD / script
    assert os.access(path, os.X_OK) and path.read_text().startswith("#!/bin/sh\n")
    r = subprocess.run(["sh", "-n", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
