"""`nsynth image build`: an official Raspberry Pi OS Lite image turned into one that boots into the instrument.

No root and no loop mounts: the base is copied (or xz-decompressed), its boot partition edited with mtools and its
root with debugfs, and a third partition (ext4, label NSYNTH-DATA, mounted at /var/lib/nsynth) is made with
`mkfs.ext4 -d` and appended. The data partition holds the banks, patches and an offline wheelhouse; on first boot
nsynth-firstboot.service grows it to the end of the card, installs the wheelhouse into a venv and starts the
instrument. Code and data live off the root filesystem, so the root can be made read-only (overlay).
"""
from __future__ import annotations

import argparse
import errno
import lzma
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hardware.errors import HardwareError
from hardware.image import bootconfig
from hardware.image.bank_import import find_banks, verify_bank
from hardware.image.diskimage import (
    ExtFs,
    FatFs,
    Partition,
    check_ext4,
    make_ext4,
    read_partitions,
    require_tools,
    write_partitions,
)

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "systemd"
DATA_LABEL = "NSYNTH-DATA"
DATA_MOUNT = "/var/lib/nsynth"
SCRIPTS = ["nsynth-firstboot", "nsynth-install", "nsynth-banks", "nsynth-update"]
MIB = 1 << 20
AARCH64 = ["manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_28_aarch64", "linux_aarch64"]


@dataclass
class ImageOptions:
    wheelhouse: Path
    banks: Path | None = None
    hostname: str | None = None
    ssh_key: Path | None = None
    user: str = "pi"
    password_hash: str | None = None
    read_only: bool = False
    data_free_mb: int = 256
    debs: Path | None = None
    verify: tuple[str, ...] | None = None
    play_args: str = "--board ons"


def units_dir() -> Path:
    if not (UNITS / "nsynth.service").is_file():
        raise HardwareError(f"{UNITS}: the systemd units are missing (run nsynth from a repository checkout)")
    return UNITS


def wheel_version(wheelhouse: Path) -> tuple[Path, str]:
    """The project wheel in a wheelhouse and its version; also checks that pip itself is there."""
    wheels = sorted(wheelhouse.glob("nsynth_super-*.whl"))
    if not wheels:
        raise HardwareError(f"{wheelhouse}: no nsynth_super-*.whl (build one with `pip wheel --no-deps .`)")
    if not list(wheelhouse.glob("pip-*.whl")):
        raise HardwareError(f"{wheelhouse}: no pip-*.whl (the device installs the wheelhouse offline with it)")
    return wheels[-1], wheels[-1].name.split("-")[1]


def build_project_wheel(dest: Path) -> Path:
    """`pip wheel --no-deps .` of this repository into dest."""
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dest), str(REPO)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise HardwareError(f"{REPO}: building the wheel failed: {r.stderr.strip()[-400:]}")
    return sorted(dest.glob("nsynth_super-*.whl"))[-1]


def fetch_wheelhouse(dest: Path, python_version: str = "3.11") -> Path:
    """The project wheel plus aarch64 wheels of its device extras and pip (needs the network, at build time)."""
    dest.mkdir(parents=True, exist_ok=True)
    wheel = build_project_wheel(dest)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--python-version", python_version,
           "--implementation", "cp", "-d", str(dest), *[a for p in AARCH64 for a in ("--platform", p)],
           f"{wheel}[device]", "pip"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise HardwareError(f"fetching aarch64 wheels into {dest} failed: {r.stderr.strip()[-600:]}")
    return dest


def _copy_base(base: Path, out: Path) -> None:
    """Copy or xz-decompress the base image; a full disk becomes a clear error."""
    opener = lzma.open if base.name.endswith(".xz") else open
    try:
        with opener(base, "rb") as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, 4 * MIB)
    except lzma.LZMAError as e:
        raise HardwareError(f"{base}: not a valid .xz file ({e})") from None
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise HardwareError(f"{out.parent}: no space left on the disk while writing {out.name}") from None
        raise HardwareError(f"{base}: {e.strerror or e}") from None


def check_raspios(image: Path, base: Path) -> tuple[str, list[Partition]]:
    """The partition table of a Raspberry Pi OS image, or a clear HardwareError saying why it is not one."""
    not_rpi = f"{base}: not a Raspberry Pi OS image"
    try:
        label_id, parts = read_partitions(image)
    except HardwareError as e:
        raise HardwareError(f"{not_rpi}: {str(e).split(': ', 1)[1]}") from None
    if len(parts) != 2:
        raise HardwareError(f"{not_rpi}: expected 2 partitions (boot, root), found {len(parts)}")
    if parts[0].type not in ("b", "c", "e"):
        raise HardwareError(f"{not_rpi}: partition 1 is type {parts[0].type}, expected FAT (c)")
    boot = FatFs(image, parts[0].offset)
    for name in ("config.txt", "cmdline.txt"):
        if not boot.exists(name):
            raise HardwareError(f"{not_rpi}: no {name} in the boot partition")
    root = ExtFs(image, parts[1].offset)
    if parts[1].type != "83" or not root.exists("/etc/os-release"):
        raise HardwareError(f"{not_rpi}: partition 2 is not an ext4 Linux root with /etc/os-release")
    if not root.exists("/etc/rpi-issue"):
        raise HardwareError(f"{not_rpi}: no /etc/rpi-issue in the root partition")
    return label_id, parts


def _stage_data(stage: Path, opts: ImageOptions, version: str) -> None:
    """The data partition's tree: wheelhouse, first-boot settings, banks, patches, state, nsynth.env."""
    shutil.copytree(opts.wheelhouse, stage / "wheelhouse")
    fb = stage / "firstboot"
    fb.mkdir()
    (fb / "version").write_text(version + "\n")
    (fb / "settings.env").write_text(f"ADMIN_USER={opts.user}\nREAD_ONLY={int(opts.read_only)}\n")
    if opts.ssh_key:
        (fb / "authorized_keys").write_text(opts.ssh_key.read_text().strip() + "\n")
    if opts.debs:
        shutil.copytree(opts.debs, fb / "debs")
    for d in ("banks/.store", "patches", "state"):
        (stage / d).mkdir(parents=True)
    names = []
    for bank in find_banks(opts.banks) if opts.banks else []:
        verify_bank(bank, opts.verify)
        shutil.copytree(bank, stage / "banks/.store" / f"{bank.name}.image")
        os.symlink(f".store/{bank.name}.image", stage / "banks" / bank.name)
        names.append(bank.name)
    if opts.banks and not names:
        raise HardwareError(f"{opts.banks}: no banks (folders with manifest.json) found")
    default = "default" if "default" in names or not names else names[0]
    (stage / "nsynth.env").write_text(f"NSYNTH_BANK={DATA_MOUNT}/banks/{default}\nNSYNTH_ARGS={opts.play_args}\n")


def _tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def _edit_boot(boot: FatFs, opts: ImageOptions) -> None:
    boot.write("config.txt", bootconfig.patch_config_txt(boot.read("config.txt").decode()).encode())
    boot.write("cmdline.txt", bootconfig.patch_cmdline(boot.read("cmdline.txt").decode()).encode())
    if opts.ssh_key:
        boot.write("ssh", b"")  # Raspberry Pi OS enables sshd on first boot when this file exists
    if opts.ssh_key or opts.password_hash:
        # the first user (renamed from pi by Raspberry Pi OS); '!' = password login locked, SSH key only
        boot.write("userconf.txt", f"{opts.user}:{opts.password_hash or '!'}\n".encode())


def _edit_root(root: ExtFs, opts: ImageOptions) -> None:
    units = units_dir()
    if opts.hostname:
        root.write("/etc/hostname", f"{opts.hostname}\n".encode())
        hosts = root.read_text("/etc/hosts")
        line = f"127.0.1.1\t{opts.hostname}"
        hosts = re.sub(r"^127\.0\.1\.1\s.*$", line, hosts, flags=re.M) if "127.0.1.1" in hosts else hosts + line + "\n"
        root.write("/etc/hosts", hosts.encode())
    fstab = root.read_text("/etc/fstab")
    if DATA_LABEL not in fstab:
        fstab += f"LABEL={DATA_LABEL}  {DATA_MOUNT}  ext4  defaults,noatime,commit=5  0  2\n"
        root.write("/etc/fstab", fstab.encode())
    root.makedirs(DATA_MOUNT)
    root.write("/etc/modules-load.d/nsynth.conf", "".join(m + "\n" for m in bootconfig.MODULES).encode())
    root.write("/usr/lib/sysusers.d/nsynth.conf", (units / "nsynth.sysusers").read_bytes())
    for unit in sorted(units.glob("*.service")):
        root.write(f"/etc/systemd/system/{unit.name}", unit.read_bytes())
    root.write("/etc/udev/rules.d/99-nsynth-usb.rules", (units / "99-nsynth-usb.rules").read_bytes())
    for script in SCRIPTS:
        root.write(f"/usr/local/lib/nsynth/{script}", (units / script).read_bytes(), mode=0o755)
    root.symlink("/etc/systemd/system/multi-user.target.wants/nsynth-firstboot.service",
                 "/etc/systemd/system/nsynth-firstboot.service")


def build_image(base: Path, output: Path, opts: ImageOptions) -> Path:
    """Write `output` (atomically: temp name + rename); raises HardwareError naming the file and the problem."""
    require_tools()
    base, output = Path(base), Path(output)
    if not base.is_file():
        raise HardwareError(f"{base}: no such image file")
    _, version = wheel_version(opts.wheelhouse)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.partial")
    try:
        with tempfile.TemporaryDirectory(prefix="nsynth-image-", dir=output.parent) as tmp:
            stage, data = Path(tmp) / "data", Path(tmp) / "data.ext4"
            stage.mkdir()
            _stage_data(stage, opts, version)
            data_size = -(-(int(_tree_bytes(stage) * 1.15) + opts.data_free_mb * MIB + 8 * MIB) // MIB) * MIB
            if not base.name.endswith(".xz"):
                need = base.stat().st_size + 2 * data_size
                if shutil.disk_usage(output.parent).free < need:
                    raise HardwareError(f"{output.parent}: not enough free space ({need // MIB} MB needed)")
            _copy_base(base, partial)
            label_id, (p1, p2) = check_raspios(partial, base)
            _edit_boot(FatFs(partial, p1.offset), opts)
            _edit_root(ExtFs(partial, p2.offset), opts)
            check_ext4(Path(f"{partial}?offset={p2.offset}"), f"{base}: root partition after editing")
            make_ext4(data, stage, data_size, DATA_LABEL)
            # The root is no longer the last partition, so Raspberry Pi OS's first boot leaves it at its size
            # (pi-gen builds it with 20% + 200 MB free); the data partition is grown instead (nsynth-firstboot).
            start = -(-p2.end // MIB) * MIB
            with open(partial, "r+b") as out, open(data, "rb") as src:
                out.truncate(start)
                out.seek(start)
                shutil.copyfileobj(src, out, 4 * MIB)
            write_partitions(partial, label_id, [p1, p2, Partition(3, start // 512, data_size // 512, "83")])
        os.replace(partial, output)
    except OSError as e:
        partial.unlink(missing_ok=True)
        if e.errno == errno.ENOSPC:
            raise HardwareError(f"{output.parent}: no space left on the disk while building {output.name}") from None
        raise
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return output


def run(args: argparse.Namespace) -> int:
    opts = ImageOptions(wheelhouse=Path(args.wheelhouse) if args.wheelhouse else Path(), banks=args.banks,
                        hostname=args.hostname, ssh_key=args.ssh_key, user=args.user,
                        password_hash=args.password_hash, read_only=args.read_only, data_free_mb=args.data_free_mb,
                        debs=args.debs, play_args=args.play_args)
    if args.ssh_key and not args.ssh_key.is_file():
        raise HardwareError(f"{args.ssh_key}: no such SSH public key file")
    with tempfile.TemporaryDirectory(prefix="nsynth-wheelhouse-") as tmp:
        if not args.wheelhouse:
            print("fetching aarch64 wheels for the device (pip download) ...")
            opts.wheelhouse = fetch_wheelhouse(Path(tmp))
        out = build_image(Path(args.base), Path(args.output), opts)
    print(f"wrote {out} ({out.stat().st_size // MIB} MB): flash it with `dd` or Raspberry Pi Imager (custom image)")
    return 0


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base", required=True, help="Raspberry Pi OS Lite image (.img or .img.xz, 64-bit)")
    parser.add_argument("-o", "--output", required=True, help="the instrument image to write")
    parser.add_argument("--banks", type=Path, help="folder of banks to put on the image (each is verified)")
    parser.add_argument("--hostname", help="the device's hostname (e.g. nsynth)")
    parser.add_argument("--ssh-key", type=Path, help="public key allowed to log in as --user (enables sshd)")
    parser.add_argument("--user", default="pi", help="admin login user (default %(default)s)")
    parser.add_argument("--password-hash", help="crypt hash for --user (e.g. from `openssl passwd -6`)")
    parser.add_argument("--wheelhouse", help="pre-fetched aarch64 wheels incl. nsynth_super and pip "
                                             "(default: build the project wheel and `pip download` the rest)")
    parser.add_argument("--debs", type=Path, help="arm64 .deb files to install on first boot (e.g. libportaudio2)")
    parser.add_argument("--read-only", action="store_true", help="make the root filesystem a read-only overlay "
                                                                 "after first boot (data partition stays writable)")
    parser.add_argument("--data-free-mb", type=int, default=256, help="free space on the data partition before it "
                                                                      "is grown on first boot (default %(default)s)")
    parser.add_argument("--play-args", default="--board ons", help="`nsynth play` options for the instrument "
                        "service, e.g. '--board ons --uart /dev/ttyAMA0' for DIN MIDI (default %(default)r)")
    parser.set_defaults(func=run)
