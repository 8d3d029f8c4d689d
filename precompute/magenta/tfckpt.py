"""Read TensorFlow V2 checkpoints (tensor bundles) without TensorFlow.

A bundle is PREFIX.index plus PREFIX.data-SSSSS-of-NNNNN shards. The index is a LevelDB-format table (SSTable):
data blocks of prefix-compressed (key, value) entries, an index block pointing at them, and a 48-byte footer.
Key "" holds a serialized BundleHeaderProto; every other key is a tensor name whose value is a serialized
BundleEntryProto (dtype, shape, shard_id, offset, size, masked crc32c). The shards hold the raw little-endian
tensor bytes. Protobuf wire format is parsed by hand (varints), so nothing here needs TensorFlow or protobuf.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nsynth.errors import NsynthError

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER = 5  # 1-byte compression type + 4-byte masked crc32c
COMPRESSION = {0: None, 1: "snappy"}

# tensorflow.DataType codes -> numpy dtypes (little-endian); others (string, resource, ...) cannot be read raw.
DTYPES = {1: "<f4", 2: "<f8", 3: "<i4", 4: "u1", 5: "<i2", 6: "i1", 9: "<i8", 10: "?", 17: "<u2", 19: "<f2",
          22: "<u4", 23: "<u8"}


class CorruptCheckpoint(NsynthError):
    """A checkpoint file whose bytes contradict its own structure or checksums."""


def _crc32c(data: bytes | memoryview) -> int:
    try:
        import google_crc32c
    except ImportError:
        raise NsynthError("verifying checkpoint checksums needs the google-crc32c package "
                          "(pip install google-crc32c), or skip verification") from None
    return google_crc32c.value(bytes(data))


def unmask_crc(masked: int) -> int:
    """Undo LevelDB/TensorFlow's crc masking: masked = rotr15(crc) + 0xa282ead8."""
    rot = (masked - 0xA282EAD8) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


def _varint(buf: bytes | memoryview, pos: int, where: str) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise CorruptCheckpoint(f"{where}: truncated or overlong varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes | memoryview, where: str):
    """Yield (field number, wire type, value) of a protobuf message; value is int (varint/fixed) or bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos, where)
        num, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos, where)
        elif wire == 1:
            value, pos = int.from_bytes(buf[pos: pos + 8], "little"), pos + 8
        elif wire == 5:
            value, pos = int.from_bytes(buf[pos: pos + 4], "little"), pos + 4
        elif wire == 2:
            n, pos = _varint(buf, pos, where)
            value, pos = bytes(buf[pos: pos + n]), pos + n
        else:
            raise CorruptCheckpoint(f"{where}: unsupported protobuf wire type {wire}")
        if pos > len(buf):
            raise CorruptCheckpoint(f"{where}: truncated protobuf message")
        yield num, wire, value


@dataclass(frozen=True)
class TensorEntry:
    """One BundleEntryProto: where a tensor's bytes lie and what they hold."""

    name: str
    dtype: int  # tensorflow.DataType code
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc32c: int | None  # masked, as stored
    sliced: bool  # a partitioned variable (slices stored elsewhere)

    @property
    def numpy_dtype(self) -> np.dtype | None:
        code = DTYPES.get(self.dtype)
        return np.dtype(code) if code else None


def _shape(buf: bytes, where: str) -> tuple[int, ...]:
    dims = []
    for num, _, value in _fields(buf, where):
        if num == 2:  # Dim { int64 size = 1; string name = 2; }
            dims.append(next((v for n, _, v in _fields(value, where) if n == 1), 0))
        elif num == 3 and value:
            raise NsynthError(f"{where}: tensor of unknown rank")
    return tuple(dims)


def _entry(name: str, buf: bytes, where: str) -> TensorEntry:
    f = {"dtype": 0, "shape": (), "shard": 0, "offset": 0, "size": 0, "crc32c": None, "sliced": False}
    for num, _, value in _fields(buf, f"{where}: entry {name!r}"):
        if num == 1:
            f["dtype"] = value
        elif num == 2:
            f["shape"] = _shape(value, f"{where}: entry {name!r}")
        elif num in (3, 4, 5):
            f[{3: "shard", 4: "offset", 5: "size"}[num]] = value
        elif num == 6:
            f["crc32c"] = value
        elif num == 7:
            f["sliced"] = True
    return TensorEntry(name, **f)


class TableReader:
    """The (key, value) pairs of a LevelDB-format table file, in key order."""

    def __init__(self, path: Path, verify: bool = True):
        self.path, self.verify = path, verify
        try:
            self.data = path.read_bytes()
        except OSError as e:
            raise NsynthError(f"{path}: cannot read: {e.strerror or e}") from None

    def _block(self, handle: bytes | memoryview, what: str) -> memoryview:
        offset, pos = _varint(handle, 0, f"{self.path}: {what} handle")
        size, _ = _varint(handle, pos, f"{self.path}: {what} handle")
        end = offset + size
        if end + BLOCK_TRAILER > len(self.data):
            raise CorruptCheckpoint(f"{self.path}: {what} at {offset}+{size} runs past the end of the file "
                                    f"({len(self.data)} bytes); the file is truncated")
        kind = self.data[end]
        if kind not in COMPRESSION:
            raise CorruptCheckpoint(f"{self.path}: {what} has unknown compression type {kind}")
        if COMPRESSION[kind]:
            raise NsynthError(f"{self.path}: {what} is {COMPRESSION[kind]}-compressed, which this reader does not "
                              "support; TensorFlow writes checkpoint indexes uncompressed, so re-save it with "
                              "TensorFlow's default options")
        if self.verify:
            stored = unmask_crc(int.from_bytes(self.data[end + 1: end + 5], "little"))
            if _crc32c(memoryview(self.data)[offset: end + 1]) != stored:
                raise CorruptCheckpoint(f"{self.path}: {what} at offset {offset} fails its crc32c check")
        return memoryview(self.data)[offset:end]

    def _entries(self, block: memoryview, what: str):
        where = f"{self.path}: {what}"
        if len(block) < 4:
            raise CorruptCheckpoint(f"{where}: block too short")
        restarts = int.from_bytes(block[-4:], "little")
        limit = len(block) - 4 - 4 * restarts
        if limit < 0:
            raise CorruptCheckpoint(f"{where}: bad restart count {restarts}")
        pos, key = 0, b""
        while pos < limit:
            shared, pos = _varint(block, pos, where)
            unshared, pos = _varint(block, pos, where)
            vlen, pos = _varint(block, pos, where)
            if shared > len(key) or pos + unshared + vlen > limit:
                raise CorruptCheckpoint(f"{where}: entry at {pos} is malformed")
            key = key[:shared] + bytes(block[pos: pos + unshared])
            pos += unshared
            yield key, block[pos: pos + vlen]
            pos += vlen

    def items(self):
        if len(self.data) < FOOTER_SIZE:
            raise CorruptCheckpoint(f"{self.path}: {len(self.data)} bytes is too short for a checkpoint index")
        footer = memoryview(self.data)[-FOOTER_SIZE:]
        if int.from_bytes(footer[-8:], "little") != TABLE_MAGIC:
            raise NsynthError(f"{self.path}: not a TensorFlow V2 checkpoint index (bad table magic number)")
        _, pos = _varint(footer, 0, f"{self.path}: footer")  # metaindex offset
        _, pos = _varint(footer, pos, f"{self.path}: footer")  # metaindex size (TensorFlow leaves it empty)
        index = self._block(footer[pos:], "index block")
        for n, (_, handle) in enumerate(self._entries(index, "index block")):
            yield from self._entries(self._block(handle, f"data block {n}"), f"data block {n}")


class Checkpoint:
    """A TensorFlow V2 checkpoint: `entries` maps every tensor name to its TensorEntry; `read(name)` loads one."""

    def __init__(self, path: str | os.PathLike, verify: bool = True):
        """path: the checkpoint prefix (model.ckpt-200000), or its .index or one .data file."""
        p = str(path)
        if p.endswith(".index"):
            p = p[: -len(".index")]
        if ".data-" in Path(p).name:
            p = p[: p.rindex(".data-")]
        self.prefix, self.verify = Path(p), verify
        self.index = Path(p + ".index")
        if not self.index.is_file():
            raise NsynthError(f"{self.index}: no such checkpoint index (give the checkpoint prefix, "
                              "e.g. PATH/model.ckpt-200000)")
        self.num_shards = 1
        self.entries: dict[str, TensorEntry] = {}
        header_seen = False
        for key, value in TableReader(self.index, verify).items():
            name = key.decode("utf-8", "replace")
            if not name:
                header_seen = True
                self._header(bytes(value))
            else:
                self.entries[name] = _entry(name, bytes(value), str(self.index))
        if not header_seen:
            raise NsynthError(f"{self.index}: no bundle header; not a TensorFlow V2 checkpoint index")

    def _header(self, buf: bytes) -> None:
        for num, _, value in _fields(buf, f"{self.index}: header"):
            if num == 1:
                self.num_shards = value
            elif num == 2 and value != 0:
                raise NsynthError(f"{self.index}: big-endian checkpoints are not supported")

    def shard_path(self, shard: int) -> Path:
        return Path(f"{self.prefix}.data-{shard:05d}-of-{self.num_shards:05d}")

    def read(self, name: str) -> np.ndarray:
        """The named tensor as a numpy array of its stored dtype and shape (checksum verified if enabled)."""
        e = self.entries[name]
        where = f"{self.index}: tensor {name!r}"
        if e.sliced:
            raise NsynthError(f"{where} is a partitioned variable, which is not supported")
        dtype = e.numpy_dtype
        if dtype is None:
            raise NsynthError(f"{where} has TensorFlow dtype code {e.dtype}, which cannot be read as numbers")
        count = int(np.prod(e.shape, dtype=np.int64))
        if count * dtype.itemsize != e.size:
            raise CorruptCheckpoint(f"{where}: {e.size} bytes do not hold shape {list(e.shape)} of {dtype}")
        path = self.shard_path(e.shard)
        try:
            with open(path, "rb") as f:
                f.seek(e.offset)
                raw = f.read(e.size)
        except OSError as err:
            raise NsynthError(f"{path}: cannot read data shard: {err.strerror or err}") from None
        if len(raw) != e.size:
            raise CorruptCheckpoint(f"{path}: truncated; tensor {name!r} needs bytes {e.offset}..{e.offset + e.size}")
        if self.verify and e.crc32c is not None and _crc32c(raw) != unmask_crc(e.crc32c):
            raise CorruptCheckpoint(f"{path}: tensor {name!r} fails its crc32c check (the file is corrupt)")
        return np.frombuffer(raw, dtype).reshape(e.shape)
