"""Atomic file writes: write to a temporary name beside the target, fsync, then rename over it; folders are
built beside their final name (`<name>.partial-<pid>`) and swapped in with renames."""
from __future__ import annotations

import contextlib
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


def replace_dir(partial: str | os.PathLike, path: str | os.PathLike) -> None:
    """Put the finished folder `partial` at `path` with renames (an old folder there is kept until the new one
    is in place, then removed), and fsync the parent."""
    partial, path = Path(partial), Path(path)
    old = path.with_name(f"{path.name}.old-{os.getpid()}")
    had_old = path.exists()
    if had_old:
        if old.exists():
            shutil.rmtree(old)
        os.rename(path, old)
    try:
        os.rename(partial, path)
    except BaseException:
        if had_old:
            os.rename(old, path)
        raise
    fsync_dir(path.parent)
    if had_old:
        shutil.rmtree(old, ignore_errors=True)
