"""Atomic file writes: write to a temporary name beside the target, fsync, then rename over it; folders are
built beside their final name (`<name>.partial-<pid>`) and swapped in by one exchange of names (renameat2), or a
rename where nothing stood."""
from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is fsynced and renamed onto `path`, on error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def fsync_dir(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists (so a temp file named after it may still be in use)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def remove_stale_partials(path: str | os.PathLike) -> None:
    """Remove `<path>.partial-<pid>` folders left by writers that were killed (their process is gone)."""
    path = Path(path)
    for stale in path.parent.glob(f"{path.name}.partial-*"):
        suffix = stale.name.rsplit("-", 1)[1]
        if suffix.isdigit() and (int(suffix) == os.getpid() or not pid_alive(int(suffix))):
            shutil.rmtree(stale, ignore_errors=True)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def exchange_paths(a: str | os.PathLike, b: str | os.PathLike) -> None:
    """Swap two names atomically (Linux renameat2 RENAME_EXCHANGE): e.g. a folder and a symlink. Where the system
    cannot (another OS, an old kernel or file system), two renames: `b` is missing for an instant."""
    a, b = os.fsencode(a), os.fsencode(b)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        renameat2 = None
    if renameat2 is not None and renameat2(_AT_FDCWD, a, _AT_FDCWD, b, _RENAME_EXCHANGE) == 0:
        return
    if renameat2 is not None and ctypes.get_errno() not in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), os.fsdecode(a), None, os.fsdecode(b))
    tmp = b + b".exchange-" + str(os.getpid()).encode()
    os.rename(b, tmp)
    os.rename(a, b)
    os.rename(tmp, a)


def replace_dir(partial: str | os.PathLike, path: str | os.PathLike) -> None:
    """Put the finished folder `partial` at `path` (an old folder there is exchanged with it in one step, then
    removed), and fsync the parent."""
    partial, path = Path(partial), Path(path)
    if path.exists() or path.is_symlink():
        exchange_paths(partial, path)  # `partial` now names the old folder
        fsync_dir(path.parent)
        shutil.rmtree(partial, ignore_errors=True)
    else:
        os.rename(partial, path)
        fsync_dir(path.parent)
