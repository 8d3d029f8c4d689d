"""Helpers for the image tests: a small synthetic Raspberry Pi OS-like base image and ways to look inside one."""
import lzma
import os
import subprocess
import zipfile
from pathlib import Path

MIB = 1 << 20
LABEL_ID = "0x1a2b3c4d"
CONFIG_TXT = """# For more options and information see http://rptl.io/configtxt
#dtparam=i2c_arm=on
# Enable audio (loads snd_bcm2835)
dtparam=audio=on
dtoverlay=vc4-kms-v3d
max_framebuffers=2
[cm4]
otg_mode=1
[all]
"""
CMDLINE = (f"console=serial0,115200 console=tty1 root=PARTUUID={LABEL_ID[2:]}-02 rootfstype=ext4 fsck.repair=yes "
           "rootwait quiet init=/usr/lib/raspberrypi-sys-mods/firstboot\n")


def run(*cmd, **kw):
    return subprocess.run([str(c) for c in cmd], check=True, capture_output=True, **kw)


def make_base(tmp: Path, rpi: bool = True, xz: bool = False) -> Path:
    """1 MiB gap + 8 MiB FAT boot (config.txt, cmdline.txt) + 16 MiB ext4 root, MBR as in Raspberry Pi OS."""
    boot, root, stage = tmp / "boot.vfat", tmp / "root.ext4", tmp / "rootstage"
    run("mkfs.vfat", "-n", "bootfs", "-C", boot, 8 * 1024)
    for name, text in (("config.txt", CONFIG_TXT), ("cmdline.txt", CMDLINE)):
        (tmp / name).write_text(text)
        run("mcopy", "-i", boot, tmp / name, f"::{name}", env=dict(os.environ, MTOOLS_SKIP_CHECK="1"))
    (stage / "etc").mkdir(parents=True)
    (stage / "etc/os-release").write_text('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n')
    if rpi:
        (stage / "etc/rpi-issue").write_text("Raspberry Pi reference 2024-11-19\n")
    (stage / "etc/hostname").write_text("raspberrypi\n")
    (stage / "etc/hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\t\traspberrypi\n")
    (stage / "etc/fstab").write_text(f"PARTUUID={LABEL_ID[2:]}-01  /boot/firmware  vfat    defaults  0  2\n"
                                     f"PARTUUID={LABEL_ID[2:]}-02  /               ext4    defaults,noatime  0  1\n")
    run("mkfs.ext4", "-q", "-L", "rootfs", "-d", stage, root, "16M")
    image = tmp / "raspios-lite.img"
    with open(image, "wb") as out:
        out.truncate(MIB)
        out.seek(MIB)
        out.write(boot.read_bytes())
        out.write(root.read_bytes())
    script = f"label: dos\nlabel-id: {LABEL_ID}\nstart=2048, size=16384, type=c\nstart=18432, size=32768, type=83\n"
    run("sfdisk", "-q", "--no-reread", "--no-tell-kernel", image, input=script.encode())
    if xz:
        xz_path = image.with_name(image.name + ".xz")
        xz_path.write_bytes(lzma.compress(image.read_bytes(), preset=0))
        image.unlink()
        return xz_path
    return image


def make_wheelhouse(tmp: Path, version: str = "0.1.0") -> Path:
    wh = tmp / "wheelhouse"
    wh.mkdir(exist_ok=True)
    for name in (f"nsynth_super-{version}-py3-none-any.whl", "pip-24.0-py3-none-any.whl"):
        with zipfile.ZipFile(wh / name, "w") as z:
            z.writestr("placeholder.txt", name)
    return wh


def extract(image: Path, start_sector: int, sectors: int, dest: Path) -> Path:
    with open(image, "rb") as src, open(dest, "wb") as out:
        src.seek(start_sector * 512)
        out.write(src.read(sectors * 512))
    return dest


def debugfs(fs: Path, command: str) -> str:
    return subprocess.run(["debugfs", "-R", command, str(fs)], capture_output=True, text=True).stdout


def mtype(fat: Path, name: str) -> str:
    return run("mcopy", "-n", "-i", fat, f"::{name}", "-", env=dict(os.environ, MTOOLS_SKIP_CHECK="1")).stdout.decode()
