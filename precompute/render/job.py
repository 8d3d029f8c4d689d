"""The job folder (default BANK.job/): the plan and the finished shards, so a killed render picks up where it
stopped.

    plan.npz              the plan's arrays (written first)
    plan.json             the plan's header; its presence marks the plan complete
    shards/NNNNN.npy      int8 mu-law codes [notes, samples] of one shard
    shards/NNNNN.json     its index entry: {"sha256", "shape"}; written after the data, so a shard counts as
                          finished only when both exist and the data matches the checksum
    onnx/                 the ONNX export (--backend onnxruntime)
    .lock                 flock()ed by the process that plans and assembles (one render per folder)

Every file is written atomically (temporary name, fsync, rename), so a kill at any moment leaves only whole
files; each process writes only the shards it decoded, so ranks and Ray's driver never write the same file.
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import io
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np

from nsynth.errors import NsynthError
from nsynth.fsutil import atomic_write_bytes, pid_alive
from precompute.render.plan import PLAN_VERSION, Plan

log = logging.getLogger(__name__)
LOCK = ".lock"


def _write(path: Path, data: bytes) -> None:
    """Atomically write `data` at `path`; a failed write becomes a clear, resumable error."""
    try:
        atomic_write_bytes(path, data)
    except OSError as e:
        raise NsynthError(f"{path}: cannot write ({e.strerror or e}); free space and run the same command again "
                          "to continue") from None


class Job:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.shards = self.path / "shards"
        self.onnx = self.path / "onnx"

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the folder's lock for a render (one render per job folder; a killed holder frees it)."""
        import fcntl

        try:
            self.path.mkdir(parents=True, exist_ok=True)
            f = open(self.path / LOCK, "w")
        except OSError as e:
            raise NsynthError(f"{self.path}: cannot create the job folder ({e.strerror or e})") from None
        with f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise NsynthError(f"{self.path}: another render is working in this job folder; wait for it to "
                                  "finish or stop it") from None
            yield

    # -- plan ------------------------------------------------------------------------------------------------
    def load_plan(self) -> Plan | None:
        """The recorded plan, or None if there is none yet."""
        header_path = self.path / "plan.json"
        if not header_path.is_file():
            return None
        try:
            header = json.loads(header_path.read_text())
            if header.get("plan_version") != PLAN_VERSION:
                raise NsynthError(f"{header_path}: plan version {header.get('plan_version')!r}, this software "
                                  f"writes {PLAN_VERSION}; delete {self.path} to start over")
            with np.load(self.path / "plan.npz") as z:
                arrays = {k: z[k] for k in Plan.ARRAYS + tuple(k for k in Plan.OPTIONAL if k in z.files)}
            return Plan.from_parts(header, arrays)
        except (OSError, ValueError, KeyError) as e:
            raise NsynthError(f"{self.path}: unreadable job plan ({e}); delete the folder to start over") from None

    def save_plan(self, plan: Plan) -> None:
        try:
            self.shards.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise NsynthError(f"{self.shards}: cannot create the job folder ({e.strerror or e})") from None
        buf = io.BytesIO()
        np.savez(buf, **{k: getattr(plan, k) for k in Plan.ARRAYS + Plan.OPTIONAL if getattr(plan, k) is not None})
        _write(self.path / "plan.npz", buf.getvalue())
        _write(self.path / "plan.json", (json.dumps(plan.header(), indent=1) + "\n").encode())

    # -- shards ----------------------------------------------------------------------------------------------
    def _data(self, i: int) -> Path:
        return self.shards / f"{i:05d}.npy"

    def _entry(self, i: int) -> Path:
        return self.shards / f"{i:05d}.json"

    def write_shard(self, plan: Plan, i: int, codes: np.ndarray) -> None:
        """Store shard i's codes (int8 [notes, samples]) and then its index entry."""
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(codes, dtype=np.int8))
        data = buf.getvalue()
        entry = {"plan": plan.key, "sha256": hashlib.sha256(data).hexdigest(), "shape": list(codes.shape)}
        _write(self._data(i), data)
        _write(self._entry(i), json.dumps(entry).encode())

    def read_shard(self, plan: Plan, i: int) -> np.ndarray | None:
        """Shard i's codes if it is finished, intact and of this plan, else None."""
        try:
            entry = json.loads(self._entry(i).read_text())
            data = self._data(i).read_bytes()
        except (OSError, ValueError):
            return None
        if entry.get("plan") != plan.key:
            return None
        if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
            log.warning("%s: checksum mismatch; the shard will be rendered again", self._data(i))
            return None
        codes = np.load(io.BytesIO(data))
        expected = [len(plan.shard_notes(i)), plan.length]
        return codes if list(codes.shape) == entry.get("shape") == expected else None

    def pending(self, plan: Plan, shards=None) -> list[int]:
        """Shards (of `shards`, default all) not yet finished intact; broken ones are removed."""
        todo = []
        for i in range(plan.n_shards) if shards is None else shards:
            if self.read_shard(plan, i) is None:
                for p in (self._entry(i), self._data(i)):
                    p.unlink(missing_ok=True)
                todo.append(i)
        return todo

    def remove(self) -> None:
        """Delete the folder (renamed first, so a kill midway leaves no half-deleted job under its name), and
        what killed removals left."""
        doomed = self.path.with_name(f".{self.path.name}.removing-{os.getpid()}")
        os.rename(self.path, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        remove_stale(self.path.parent, f".{self.path.name}.removing-")


def remove_stale(folder: Path, prefix: str) -> None:
    """Delete `<prefix><pid>` entries in `folder` whose process is gone (left by a killed render)."""
    for path in folder.glob(f"{glob.escape(prefix)}*"):
        pid = path.name[len(prefix):]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


