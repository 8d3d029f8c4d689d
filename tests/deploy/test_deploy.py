"""`nsynth deploy` against a real sshd on 127.0.0.1 (started here, as the current user) with the target a folder.

On the target side, a stand-in for systemctl starts the installed unit's ExecStart (from the `current` venv) under
a NOTIFY_SOCKET it owns and reports the restart as done only once READY=1 arrives, as systemd does for Type=notify.
The deployed wheels are tiny stand-ins for the project: one that comes up, one that crashes at start-up.
"""
import base64
import ensurepip
import getpass
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest

from nsynth.cli import main
from hardware.errors import HardwareError
from hardware.image.deploy import deploy, ssh_command
from tests.deploy.test_bank_import import VERIFY_SCRIPT, make_bank

STUB = textwrap.dedent('''
    import os, socket, sys, time
    VERSION, BEHAVIOUR = {version!r}, {behaviour!r}
    def main():
        if sys.argv[1:2] == ["play"]:
            if BEHAVIOUR == "crash":
                sys.exit("nsynth play: error: simulated crash at start-up")
            s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            s.sendto(("READY=1\\nSTATUS=playing " + " ".join(sys.argv[2:])).encode(), os.environ["NOTIFY_SOCKET"])
            time.sleep(60)
        print("nsynth", VERSION)
        return 0
''')

# systemctl on the target: restart = run ExecStart of the installed nsynth.service (paths under NSYNTH_ROOT) and
# wait for READY=1 on our own NOTIFY_SOCKET; is-active = whether the last restart came up.
SYSTEMCTL = textwrap.dedent('''
    import os, re, shlex, socket, subprocess, sys, tempfile, time
    root = os.environ["NSYNTH_ROOT"]
    state = os.path.join(root, "systemctl.state")
    with open(os.path.join(root, "systemctl.log"), "a") as log:
        log.write(" ".join(sys.argv[1:]) + "\\n")
    cmd = sys.argv[1]
    if cmd == "daemon-reload":
        sys.exit(0)
    if cmd == "is-active":
        sys.exit(0 if open(state).read() == "active" else 3)
    assert cmd == "restart" and sys.argv[2] == "nsynth.service", sys.argv
    unit = open(os.path.join(root, "etc/systemd/system/nsynth.service")).read()
    env = dict(kv.split("=", 1) for kv in shlex.split(re.search(r"^Environment=(.*)$", unit, re.M).group(1)))
    line = re.search(r"^ExecStart=(.*)$", unit, re.M).group(1).replace("$NSYNTH_ARGS", "")
    argv = [a.replace("/var/lib/nsynth", root + "/var/lib/nsynth") for a in
            shlex.split(line.replace("${NSYNTH_BANK}", env["NSYNTH_BANK"]))]
    path = os.path.join(tempfile.mkdtemp(), "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); sock.bind(path); sock.settimeout(0.05)
    proc = subprocess.Popen(argv, env=dict(os.environ, NOTIFY_SOCKET=path))
    ready, deadline = False, time.monotonic() + 20  # TimeoutStartSec
    while proc.poll() is None and not ready and time.monotonic() < deadline:
        try:
            ready = sock.recv(4096).startswith(b"READY=1")
        except socket.timeout:
            pass
    proc.kill(); proc.wait()
    open(state, "w").write("active" if ready else "failed")
    sys.exit(0 if ready else 1)
''')


def make_wheel(dest: Path, version: str, behaviour: str = "ok", requires: str = "") -> Path:
    """A minimal installable wheel named nsynth-super with an `nsynth` console script."""
    dist = f"nsynth_super-{version}.dist-info"
    files = {
        "nsynth_stub.py": STUB.format(version=version, behaviour=behaviour),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: nsynth-super\nVersion: {version}\n"
                            + (f"Requires-Dist: {requires}\n" if requires else ""),
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist}/entry_points.txt": "[console_scripts]\nnsynth = nsynth_stub:main\n",
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(text.encode())}")
    files[f"{dist}/RECORD"] = "\n".join(record + [f"{dist}/RECORD,,"]) + "\n"
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / f"nsynth_super-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return path


def pip_wheel() -> Path:
    """pip's own wheel, as bundled with Python (ensurepip) or Debian (python3-pip-whl)."""
    candidates = sorted((Path(ensurepip.__file__).parent / "_bundled").glob("pip-*.whl"))
    candidates += sorted(Path("/usr/share/python-wheels").glob("pip-*.whl"))
    assert candidates, "no pip wheel found (ensurepip bundle or python3-pip-whl)"
    return candidates[-1]


def wheelhouse(tmp: Path, version: str, **kw) -> Path:
    wh = tmp / f"wh-{version}"
    make_wheel(wh, version, **kw)
    shutil.copy(pip_wheel(), wh)
    return wh


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    d = tmp_path_factory.mktemp("sshd")
    for key in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], check=True)
    shutil.copy(d / "client_key.pub", d / "authorized_keys")
    port = _free_port()
    (d / "sshd_config").write_text(textwrap.dedent(f"""
        Port {port}
        ListenAddress 127.0.0.1
        HostKey {d}/host_key
        PidFile {d}/sshd.pid
        AuthorizedKeysFile {d}/authorized_keys
        AllowUsers {getpass.getuser()}
        PermitRootLogin prohibit-password
        PasswordAuthentication no
        KbdInteractiveAuthentication no
        UsePAM no
        StrictModes no
        LogLevel ERROR
    """))
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    proc = subprocess.Popen([shutil.which("sshd") or "/usr/sbin/sshd", "-D", "-e", "-f", str(d / "sshd_config")],
                            stderr=open(d / "sshd.log", "w"))
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, (d / "sshd.log").read_text()
            time.sleep(0.05)
    yield {"port": port, "key": d / "client_key", "dir": d}
    proc.terminate()
    proc.wait(timeout=10)


def ssh_for(sshd, key=None):
    return ssh_command(f"{getpass.getuser()}@127.0.0.1", sshd["port"], key or sshd["key"],
                       ["StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null", "LogLevel=ERROR"])


@pytest.fixture
def target(tmp_path):
    root = tmp_path / "target"
    for d in ("var/lib/nsynth/banks", "var/lib/nsynth/patches", "var/lib/nsynth/state", "etc/systemd/system"):
        (root / d).mkdir(parents=True)
    shim = tmp_path / "systemctl.py"
    shim.write_text(SYSTEMCTL)
    return root, f"{sys.executable} {shim}"


@pytest.fixture
def verify(tmp_path):
    script = tmp_path / "verify.py"
    script.write_text(VERIFY_SCRIPT)
    return (sys.executable, str(script))


def run_deploy(sshd, target, wh, env=None, **kw):
    root, systemctl = target
    lines = []
    try:
        return deploy("127.0.0.1", wh, ssh=ssh_for(sshd), remote_root=str(root), systemctl=systemctl, settle=0.2,
                      env={"NSYNTH_PYTHON": sys.executable, **(env or {})}, echo=lines.append, **kw), lines
    finally:
        print("\n".join(lines))


def current(root: Path) -> str:
    return os.readlink(root / "var/lib/nsynth/current")


def test_deploy_installs_switches_and_rolls_back_a_version_that_does_not_come_up(sshd, target, tmp_path, verify):
    root, _ = target
    home = root / "var/lib/nsynth"
    (home / "venvs/0.9.0-old/bin").mkdir(parents=True)  # an older release, to be pruned
    os.utime(home / "venvs/0.9.0-old", (1e9, 1e9))
    banks = tmp_path / "banks"
    make_bank(banks, "default", 4)
    name1, lines = run_deploy(sshd, target, wheelhouse(tmp_path, "1.0.0"), banks=banks, verify=verify, name="1.0.0-a")
    assert current(root) == "venvs/1.0.0-a"
    assert subprocess.run([home / "current/bin/nsynth"], capture_output=True, text=True).stdout == "nsynth 1.0.0\n"
    assert (root / "etc/systemd/system/nsynth.service").read_text().startswith("# The instrument")
    assert (root / "etc/udev/rules.d/99-nsynth-usb.rules").exists()
    assert (home / "banks/default").is_symlink() and (home / "banks/default/samples.i16").stat().st_size == 8
    assert (root / "systemctl.log").read_text().splitlines()[-2:] == ["restart nsynth.service", "is-active --quiet nsynth.service"]
    assert any("ok: 1.0.0-a is running" in l for l in lines)

    with pytest.raises(HardwareError) as e:
        run_deploy(sshd, target, wheelhouse(tmp_path, "2.0.0", behaviour="crash"), name="2.0.0-b")
    assert "deploy of 2.0.0-b failed; the device is back on 1.0.0-a" in str(e.value)
    assert current(root) == "venvs/1.0.0-a" and not (home / "venvs/2.0.0-b").exists()
    assert (root / "systemctl.state").read_text() == "active"  # the old version was restarted and came up
    assert not list((home / "incoming").glob("2.0.0-b/*"))

    assert (home / "venvs/0.9.0-old").exists()
    run_deploy(sshd, target, wheelhouse(tmp_path, "3.0.0"), name="3.0.0-c")
    assert current(root) == "venvs/3.0.0-c"
    assert sorted(os.listdir(home / "venvs")) == ["1.0.0-a", "3.0.0-c"]  # running + previous kept


def test_install_failure_or_full_disk_leaves_the_running_version(sshd, target, tmp_path):
    root, _ = target
    run_deploy(sshd, target, wheelhouse(tmp_path, "1.0.0"), name="1.0.0-a")
    restarts = (root / "systemctl.log").read_text().count("restart")
    with pytest.raises(HardwareError, match="installing 5.0.0-x failed; still on 1.0.0-a"):
        run_deploy(sshd, target, wheelhouse(tmp_path, "5.0.0", requires="nsynth-missing-dependency>=1"),
                   name="5.0.0-x")
    assert current(root) == "venvs/1.0.0-a" and not (root / "var/lib/nsynth/venvs/5.0.0-x").exists()
    with pytest.raises(HardwareError, match=r"not enough space on the device .* MB free, .* MB needed; still on "
                                          r"1.0.0-a"):
        run_deploy(sshd, target, wheelhouse(tmp_path, "6.0.0"), name="6.0.0-y",
                   env={"NSYNTH_RESERVE_KB": str(1 << 40)})
    assert current(root) == "venvs/1.0.0-a" and sorted(os.listdir(root / "var/lib/nsynth/venvs")) == ["1.0.0-a"]
    assert (root / "systemctl.log").read_text().count("restart") == restarts  # never touched the service


def test_bad_bank_is_refused_before_connecting(sshd, target, tmp_path, verify):
    banks = tmp_path / "banks"
    make_bank(banks, "broken", 99)
    with pytest.raises(HardwareError, match="broken: bank verify failed"):
        run_deploy(sshd, target, wheelhouse(tmp_path, "1.0.0"), banks=banks, verify=verify)
    assert not (target[0] / "var/lib/nsynth/venvs").exists()


def test_not_an_nsynth_device(sshd, tmp_path):
    with pytest.raises(HardwareError, match="does not exist: not an NSynth device"):
        deploy("127.0.0.1", wheelhouse(tmp_path, "1.0.0"), ssh=ssh_for(sshd), remote_root=str(tmp_path / "empty"))


def test_refusing_ssh_hosts(sshd, tmp_path):
    wh = wheelhouse(tmp_path, "1.0.0")
    closed = ssh_command("127.0.0.1", _free_port(), sshd["key"], ["StrictHostKeyChecking=no"])
    with pytest.raises(HardwareError, match="127.0.0.1: cannot connect over SSH: .*Connection refused"):
        deploy("127.0.0.1", wh, ssh=closed)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "stranger")], check=True)
    with pytest.raises(HardwareError, match="cannot connect over SSH: .*Permission denied"):
        deploy("127.0.0.1", wh, ssh=ssh_for(sshd, tmp_path / "stranger"))


def test_cli_reports_refused_host(tmp_path, capsys):
    wh = wheelhouse(tmp_path, "1.0.0")
    rc = main(["deploy", "127.0.0.1", "-p", str(_free_port()), "--wheelhouse", str(wh),
               "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"])
    assert rc == 1 and "cannot connect over SSH" in capsys.readouterr().err
