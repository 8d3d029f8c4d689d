"""nsynth-firstboot against a folder laid out as the image builder leaves the data partition, with stand-ins on
PATH for the commands that touch the real system (partitioning, users, ownership, services, raspi-config)."""
import getpass
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.test_deploy import wheelhouse

SYSTEMD = Path(__file__).resolve().parents[2] / "systemd"
STANDINS = {
    "findmnt": 'echo /dev/mmcblk0p3',
    "lsblk": 'echo mmcblk0',
    "sfdisk": 'cat > /dev/null',
    "partx": 'true',
    "resize2fs": 'true',
    "dpkg": 'exit 0',           # libportaudio2 and libsndfile1 already installed
    "systemd-sysusers": 'true',
    "chown": 'true',            # the nsynth user exists only on the device
    "systemctl": 'true',
    "getent": 'echo "$2:x:1000:1000::/home/$2:/bin/bash"',
    "raspi-config": 'sed -i "s/$/ overlayroot=tmpfs/" "$NSYNTH_ROOT/boot/firmware/cmdline.txt"',
}


@pytest.fixture
def device(tmp_path):
    root = tmp_path / "root"
    home = root / "var/lib/nsynth"
    wh = wheelhouse(tmp_path, "1.2.0")
    (home / "firstboot").mkdir(parents=True)
    os.rename(wh, home / "wheelhouse")
    (home / "firstboot/version").write_text("1.2.0\n")
    (home / "firstboot/settings.env").write_text(f"ADMIN_USER={getpass.getuser()}\nREAD_ONLY=1\n")
    (home / "firstboot/authorized_keys").write_text("ssh-ed25519 AAAATEST admin\n")
    (root / "sys/class/block/mmcblk0p3").mkdir(parents=True)
    (root / "sys/class/block/mmcblk0p3/partition").write_text("3\n")
    (root / "usr/local/lib/nsynth").mkdir(parents=True)
    for script in ("nsynth-install", "nsynth-firstboot"):
        (root / "usr/local/lib/nsynth" / script).write_bytes((SYSTEMD / script).read_bytes())
    (root / "boot/firmware").mkdir(parents=True)
    (root / "boot/firmware/cmdline.txt").write_text("console=tty1 root=PARTUUID=1a2b3c4d-02 rootwait\n")
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    log = tmp_path / "calls.log"
    for name, body in STANDINS.items():
        (bin_ / name).write_text(f'#!/bin/sh\necho "{name} $*" >> {log}\n{body}\n')
        (bin_ / name).chmod(0o755)
    env = dict(os.environ, NSYNTH_ROOT=str(root), NSYNTH_PYTHON=sys.executable, PATH=f"{bin_}:{os.environ['PATH']}")
    return root, env, log


def test_first_boot_installs_enables_and_protects(device):
    root, env, log = device
    home = root / "var/lib/nsynth"
    r = subprocess.run(["sh", str(root / "usr/local/lib/nsynth/nsynth-firstboot")], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert os.readlink(home / "current") == "venvs/1.2.0-firstboot"
    assert subprocess.run([home / "current/bin/nsynth"], capture_output=True, text=True).stdout == "nsynth 1.2.0\n"
    calls = log.read_text().splitlines()
    assert "sfdisk --no-reread --no-tell-kernel -N 3 /dev/mmcblk0" in calls and "resize2fs /dev/mmcblk0p3" in calls
    assert f"systemd-sysusers {root}/usr/lib/sysusers.d/nsynth.conf" in calls
    assert calls.index("systemctl enable nsynth.service") < calls.index("systemctl start --no-block nsynth.service")
    assert f"chown -R nsynth:nsynth {home}/banks {home}/patches {home}/state" in calls
    key = root / f"home/{getpass.getuser()}/.ssh/authorized_keys"
    assert key.read_text() == "ssh-ed25519 AAAATEST admin\n" and (key.stat().st_mode & 0o777) == 0o600
    assert "overlayroot=tmpfs:recurse=0" in (root / "boot/firmware/cmdline.txt").read_text()
    assert "grew /dev/mmcblk0p3" in r.stdout and "done: the instrument is installed as 1.2.0-firstboot" in r.stdout


def test_first_boot_that_fails_to_install_leaves_no_current(device):
    root, env, _ = device
    for whl in (root / "var/lib/nsynth/wheelhouse").glob("pip-*.whl"):
        whl.unlink()
    r = subprocess.run(["sh", str(root / "usr/local/lib/nsynth/nsynth-firstboot")], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode != 0 and "no pip wheel" in r.stderr
    assert not (root / "var/lib/nsynth/current").exists()  # the unit runs again on the next boot
