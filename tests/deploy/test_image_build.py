"""`nsynth image build` on a small synthetic Raspberry Pi OS-like base image, inspected afterwards."""
import json
import re
import sys

import pytest

from nsynth.cli import main
from hardware.errors import HardwareError
from hardware.image.bootconfig import BEGIN, patch_cmdline, patch_config_txt
from hardware.image.build import ImageOptions, build_image
from tests.deploy.imagetools import LABEL_ID, debugfs, extract, make_base, make_wheelhouse, mtype, run
from tests.deploy.test_bank_import import VERIFY_SCRIPT, make_bank


@pytest.fixture
def verify(tmp_path):
    script = tmp_path / "verify.py"
    script.write_text(VERIFY_SCRIPT)
    return (sys.executable, str(script))


def partitions(image):
    return json.loads(run("sfdisk", "--json", image).stdout)["partitiontable"]


@pytest.mark.parametrize("xz", [False, True])
def test_build_customises_boot_root_and_adds_data_partition(tmp_path, verify, xz):
    base = make_base(tmp_path, xz=xz)
    key = tmp_path / "id.pub"
    key.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTest test@host\n")
    banks = tmp_path / "banks"
    make_bank(banks, "default", 4)
    out = build_image(base, tmp_path / "out" / "nsynth.img",
                      ImageOptions(wheelhouse=make_wheelhouse(tmp_path), banks=banks, hostname="nsynth",
                                   ssh_key=key, read_only=True, data_free_mb=4, verify=verify))
    table = partitions(out)
    assert table["id"] == LABEL_ID  # PARTUUIDs in cmdline.txt and fstab stay valid
    p1, p2, p3 = table["partitions"]
    assert (p1["start"], p1["type"], p2["start"], p2["type"], p3["type"]) == (2048, "c", 18432, "83", "83")
    assert p3["start"] * 512 % (1 << 20) == 0 and (p3["start"] + p3["size"]) * 512 == out.stat().st_size

    boot = extract(out, p1["start"], p1["size"], tmp_path / "boot.vfat")
    config = mtype(boot, "config.txt")
    block = config[config.index(BEGIN):]
    for line in ["dtparam=audio=off", "dtoverlay=iqaudio-dac", "dtparam=i2c_arm=on", "dtparam=i2c_arm_baudrate=640000",
                 "enable_uart=1", "dtoverlay=miniuart-bt", "dtoverlay=midi-uart0"]:
        assert line in block.splitlines()
    assert "\ndtparam=audio=on" not in config and "dtoverlay=vc4-kms-v3d,noaudio" in config
    cmdline = mtype(boot, "cmdline.txt")
    assert "console=serial0" not in cmdline and f"root=PARTUUID={LABEL_ID[2:]}-02" in cmdline
    assert cmdline.count("\n") == 1 and "console=tty1" in cmdline
    assert mtype(boot, "ssh") == "" and mtype(boot, "userconf.txt") == "pi:!\n"

    root = extract(out, p2["start"], p2["size"], tmp_path / "root.ext4")
    run("e2fsck", "-fn", root)
    assert debugfs(root, "cat /etc/hostname") == "nsynth\n"
    assert "127.0.1.1\tnsynth" in debugfs(root, "cat /etc/hosts")
    assert re.search(r"^LABEL=NSYNTH-DATA\s+/var/lib/nsynth\s+ext4", debugfs(root, "cat /etc/fstab"), re.M)
    assert debugfs(root, "cat /etc/modules-load.d/nsynth.conf") == "i2c-dev\n"
    assert "u nsynth" in debugfs(root, "cat /usr/lib/sysusers.d/nsynth.conf")
    assert "Type=notify" in debugfs(root, "cat /etc/systemd/system/nsynth.service")
    assert "nsynth-import@" in debugfs(root, "cat /etc/udev/rules.d/99-nsynth-usb.rules")
    stat = debugfs(root, "stat /usr/local/lib/nsynth/nsynth-firstboot")
    assert re.search(r"Mode:\s+0755", stat) and re.search(r"User:\s+0\s+Group:\s+0", stat)
    assert "/etc/systemd/system/nsynth-firstboot.service" in debugfs(
        root, "stat /etc/systemd/system/multi-user.target.wants/nsynth-firstboot.service")
    assert "Type: directory" in debugfs(root, "stat /var/lib/nsynth")

    data = extract(out, p3["start"], p3["size"], tmp_path / "data.ext4")
    run("e2fsck", "-fn", data)
    assert "NSYNTH-DATA" in run("dumpe2fs", "-h", data).stdout.decode()
    assert "nsynth_super-0.1.0-py3-none-any.whl" in debugfs(data, "ls /wheelhouse")
    assert debugfs(data, "cat /firstboot/version") == "0.1.0\n"
    assert "READ_ONLY=1" in debugfs(data, "cat /firstboot/settings.env")
    assert "FakeKeyForTest" in debugfs(data, "cat /firstboot/authorized_keys")
    assert "Fast link dest: \".store/default.image\"" in debugfs(data, "stat /banks/default")
    assert debugfs(data, "cat /banks/.store/default.image/manifest.json") == json.dumps({"samples": 4})
    assert "NSYNTH_BANK=/var/lib/nsynth/banks/default" in debugfs(data, "cat /nsynth.env")
    assert not list((tmp_path / "out").glob(".*"))  # no partial output or temp folder left


def test_not_a_raspberry_pi_os_image(tmp_path):
    wh = make_wheelhouse(tmp_path)
    junk = tmp_path / "junk.img"
    junk.write_bytes(b"\0" * (1 << 20))
    with pytest.raises(HardwareError, match="junk.img: not a Raspberry Pi OS image: no partition table"):
        build_image(junk, tmp_path / "o.img", ImageOptions(wheelhouse=wh))
    debian = make_base(tmp_path, rpi=False)
    with pytest.raises(HardwareError, match="not a Raspberry Pi OS image: no /etc/rpi-issue"):
        build_image(debian, tmp_path / "o.img", ImageOptions(wheelhouse=wh))
    assert not list(tmp_path.glob("*o.img*"))


def test_already_customised_image_is_refused(tmp_path):
    wh = make_wheelhouse(tmp_path)
    once = build_image(make_base(tmp_path), tmp_path / "once.img", ImageOptions(wheelhouse=wh, data_free_mb=1))
    with pytest.raises(HardwareError, match="expected 2 partitions"):
        build_image(once, tmp_path / "twice.img", ImageOptions(wheelhouse=wh))


def test_bad_bank_or_wheelhouse_refuses_the_build(tmp_path, verify):
    base = make_base(tmp_path)
    banks = tmp_path / "banks"
    make_bank(banks, "broken", 10)
    with pytest.raises(HardwareError, match="broken: bank verify failed"):
        build_image(base, tmp_path / "o.img", ImageOptions(wheelhouse=make_wheelhouse(tmp_path), banks=banks,
                                                           verify=verify))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(HardwareError, match="no nsynth_super-"):
        build_image(base, tmp_path / "o.img", ImageOptions(wheelhouse=empty))
    assert not list(tmp_path.glob("*o.img*"))


def test_cli_reports_bad_base(tmp_path, capsys):
    wh = make_wheelhouse(tmp_path)
    rc = main(["image", "build", "--base", str(tmp_path / "missing.img.xz"), "-o", str(tmp_path / "x.img"),
               "--wheelhouse", str(wh)])
    assert rc == 1 and "missing.img.xz: no such image file" in capsys.readouterr().err


def test_config_patch_is_idempotent_and_cmdline_keeps_one_line():
    once = patch_config_txt("dtparam=audio=on\n")
    assert patch_config_txt(once) == once and once.count(BEGIN) == 1
    assert patch_cmdline("console=ttyAMA0,115200 console=serial0,115200 root=/dev/x rootwait\n") == \
        "root=/dev/x rootwait\n"
