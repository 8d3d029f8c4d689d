"""`nsynth deploy HOST`: update a running instrument over SSH, switching back if the new version does not come up.

One tar stream uploads a stage (wheelhouse, units, banks verified here first, the target-side scripts) into
/var/lib/nsynth/incoming/NAME; then systemd/nsynth-update runs on the device, detached from the SSH session
(nohup: a dropped connection cannot leave it half-way), installs into a fresh venv beside the running one, switches
the `current` symlink, restarts nsynth.service (Type=notify, so the restart waits for READY=1) and rolls back to
the previous venv and units when the service does not come up and stay up.
"""
from __future__ import annotations

import argparse
import io
import shlex
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

from hardware.errors import HardwareError
from hardware.image.bank_import import find_banks, verify_bank
from hardware.image.build import fetch_wheelhouse, units_dir, wheel_version

SCRIPTS = ["nsynth-update", "nsynth-install", "nsynth-banks"]


def ssh_command(host: str, port: int | None = None, identity: Path | None = None, options=()) -> list[str]:
    cmd = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=15"]
    if port:
        cmd += ["-p", str(port)]
    if identity:
        cmd += ["-i", str(identity)]
    for opt in options:
        cmd += ["-o", opt]
    return cmd + [host]


def _root_owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _stage_tar(wheelhouse: Path, banks: list[Path]) -> bytes:
    """The upload: wheelhouse/, units/, banks/ and the target-side scripts, as one tar stream (root-owned)."""
    units = units_dir()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        files = [(whl, f"wheelhouse/{whl.name}") for whl in sorted(wheelhouse.glob("*.whl"))]
        files += [(f, f"units/{f.name}") for f in sorted(units.glob("*.service")) + [units / "99-nsynth-usb.rules"]]
        files += [(bank, f"banks/{bank.name}") for bank in banks] + [(units / s, s) for s in SCRIPTS]
        empty = tarfile.TarInfo("banks")
        empty.type, empty.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(_root_owned(empty))
        for path, arcname in files:
            tar.add(path, arcname, filter=_root_owned)
    return buf.getvalue()


def _last_error(text: str) -> str:
    lines = [l for l in text.strip().splitlines() if l.strip()]
    errors = [l for l in lines if "error" in l.lower() or "refused" in l.lower() or "denied" in l.lower()]
    return (errors or lines or ["no output"])[-1]


def deploy(host: str, wheelhouse: Path, banks: Path | None = None, *, ssh: list[str] | None = None,
           remote_root: str = "/", systemctl: str | None = None, settle: float | None = None,
           verify=None, name: str | None = None, env: dict[str, str] | None = None, echo=print) -> str:
    """Deploy to `host`; returns the installed release name; raises HardwareError (device on its old version).
    `env` adds variables for the target-side script (e.g. NSYNTH_PYTHON, NSYNTH_RESERVE_KB)."""
    _, version = wheel_version(wheelhouse)
    name = name or f"{version}-{time.strftime('%Y%m%d%H%M%S')}"
    bank_dirs = find_banks(banks) if banks else []
    if banks and not bank_dirs:
        raise HardwareError(f"{banks}: no banks (folders with manifest.json) found")
    for bank in bank_dirs:
        verify_bank(bank, verify)
    ssh = ssh or ssh_command(host)
    root = remote_root.rstrip("/")
    home = f"{root}/var/lib/nsynth"
    stage = f"{home}/incoming/{name}"
    # root's own shell runs things directly; another login user goes through sudo (only for the real root, /)
    sudo = "" if root else '$([ "$(id -u)" = 0 ] || echo sudo -n) '

    r = subprocess.run([*ssh, "true"], capture_output=True, text=True)
    if r.returncode != 0:
        raise HardwareError(f"{host}: cannot connect over SSH: {_last_error(r.stderr)}")

    upload = (f'{sudo}sh -c \'[ -d "$1" ] || {{ echo "error: $1 does not exist: not an NSynth device" >&2; exit 1; }}; '
              f'rm -rf "$1/incoming"; mkdir -p "$2" && tar -x -C "$2"\' - {shlex.quote(home)} {shlex.quote(stage)}')
    r = subprocess.run([*ssh, upload], input=_stage_tar(wheelhouse, bank_dirs), capture_output=True)
    if r.returncode != 0:
        subprocess.run([*ssh, f"{sudo}rm -rf {shlex.quote(stage)}"], capture_output=True)
        raise HardwareError(f"{host}: upload failed (nothing was changed): "
                          f"{_last_error(r.stderr.decode(errors='replace'))}")
    echo(f"uploaded {name} to {host}:{stage}")

    env = {"NSYNTH_ROOT": root, "NSYNTH_SYSTEMCTL": systemctl, "NSYNTH_SETTLE": settle, **(env or {})}
    env_args = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in env.items() if v not in (None, ""))
    log = f"{stage}.log"
    q = shlex.quote
    # nohup: the update carries on (and rolls back by itself) if the connection drops; tail shows its log meanwhile
    inner = (f"touch {q(log)}; env {env_args} nohup sh {q(stage + '/nsynth-update')} {q(stage)} {q(name)} "
             f"> {q(log)} 2>&1 < /dev/null & pid=$!; tail -n +1 -s 0.2 --pid=$pid -f {q(log)}; wait $pid; rc=$?; "
             f"rm -rf {q(stage)}; exit $rc")
    update = f"{sudo}sh -c {q(inner)}"
    r = subprocess.run([*ssh, update], capture_output=True, text=True)
    for line in r.stdout.splitlines():
        echo(f"{host}: {line}")
    if r.returncode == 255:
        raise HardwareError(f"{host}: connection lost during the update; it carries on on the device and rolls "
                          f"back by itself if {name} does not come up (log: {log})")
    if r.returncode != 0:
        raise HardwareError(f"{host}: {_last_error(r.stdout + r.stderr)}")
    return name


def run(args: argparse.Namespace) -> int:
    ssh = ssh_command(args.host, args.port, args.identity, args.ssh_option or ())
    with tempfile.TemporaryDirectory(prefix="nsynth-wheelhouse-") as tmp:
        wheelhouse = Path(args.wheelhouse) if args.wheelhouse else fetch_wheelhouse(Path(tmp))
        name = deploy(args.host, wheelhouse, args.banks, ssh=ssh, remote_root=args.remote_root,
                      systemctl=args.systemctl, settle=args.settle)
    print(f"{args.host}: running {name}")
    return 0


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("host", help="[user@]host of the instrument (a sudo-capable login, or root)")
    parser.add_argument("--wheelhouse", help="pre-fetched aarch64 wheels incl. nsynth_super and pip "
                                             "(default: build the project wheel and `pip download` the rest)")
    parser.add_argument("--banks", type=Path, help="folder of banks to install (each verified here first)")
    parser.add_argument("-p", "--port", type=int, help="SSH port")
    parser.add_argument("-i", "--identity", type=Path, help="SSH private key")
    parser.add_argument("-o", "--ssh-option", action="append", help="extra `ssh -o` option (repeatable)")
    parser.add_argument("--remote-root", default="/", help="filesystem root on the target (default %(default)s)")
    parser.add_argument("--systemctl", help="command that controls services on the target (default systemctl)")
    parser.add_argument("--settle", type=float, help="seconds the service must stay up after READY=1 (default 3)")
    parser.set_defaults(func=run)
