"""The TensorFlow-free V2 checkpoint reader, on files TensorFlow itself wrote."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nsynth.errors import NsynthError
from precompute.magenta.tfckpt import FOOTER_SIZE, Checkpoint, CorruptCheckpoint

from magenta_tf import save_v2

TENSORS = {
    "a/W": np.arange(24, dtype=np.float32).reshape(1, 3, 2, 4) / 7,
    "a/biases": np.array([1.5, -2.25, 3.0, 0.0], np.float32),
    "double": np.linspace(-1, 1, 5),
    "global_step": np.int64(200000),
    "counts": np.array([[1, -2], [3, 4]], np.int32),
    "half": np.array([0.5, 1.0, -8.0], np.float16),
    "flags": np.array([True, False]),
}


@pytest.fixture
def ckpt(tf, tmp_path):
    tensors = dict(TENSORS, text=tf.constant(["not numbers"]))
    return Path(save_v2(tf, tmp_path / "model.ckpt-5", tensors))


def test_reads_every_numeric_dtype_exactly(ckpt):
    c = Checkpoint(ckpt)
    assert set(c.entries) == set(TENSORS) | {"text"}
    for name, want in TENSORS.items():
        got = c.read(name)
        assert got.dtype == np.asarray(want).dtype and got.shape == np.shape(want), name
        assert np.array_equal(got, want), name
    with pytest.raises(NsynthError, match="'text' has TensorFlow dtype code 7"):
        c.read("text")


@pytest.mark.parametrize("suffix", ["", ".index", ".data-00000-of-00001"])
def test_accepts_prefix_index_or_data_path(ckpt, suffix):
    assert Checkpoint(f"{ckpt}{suffix}").entries["a/W"].shape == (1, 3, 2, 4)


def test_index_spanning_many_blocks(tf, tmp_path):
    """Enough entries that TensorFlow's writer starts new data blocks and restart points."""
    tensors = {f"{i:05d}_{'x' * (i % 97)}/{'long_scope_name' * 6}/W": np.full((2,), i, np.float32)
               for i in range(2600)}
    c = Checkpoint(save_v2(tf, tmp_path / "many", tensors))
    assert (tmp_path / "many.index").stat().st_size > 300_000  # larger than one 256 KiB block
    assert set(c.entries) == set(tensors)
    for name in list(tensors)[::97]:
        assert np.array_equal(c.read(name), tensors[name])


def test_corrupt_tensor_fails_its_checksum(ckpt):
    data = Path(f"{ckpt}.data-00000-of-00001")
    entry = Checkpoint(ckpt).entries["a/biases"]
    raw = bytearray(data.read_bytes())
    raw[entry.offset + 1] ^= 0x40
    data.write_bytes(bytes(raw))
    with pytest.raises(CorruptCheckpoint, match=r"data-00000-of-00001: tensor 'a/biases' fails its crc32c"):
        Checkpoint(ckpt).read("a/biases")
    assert not np.array_equal(Checkpoint(ckpt, verify=False).read("a/biases"), TENSORS["a/biases"])
    assert np.array_equal(Checkpoint(ckpt).read("a/W"), TENSORS["a/W"])  # the others still verify


def test_corrupt_index_block_fails_its_checksum(ckpt):
    index = Path(f"{ckpt}.index")
    raw = bytearray(index.read_bytes())
    raw[10] ^= 0x01
    index.write_bytes(bytes(raw))
    with pytest.raises(CorruptCheckpoint, match=r"model.ckpt-5.index: data block 0 .* crc32c"):
        Checkpoint(ckpt)


@pytest.mark.parametrize("kind,message", [(1, "snappy-compressed, which this reader does not support"),
                                          (9, "unknown compression type 9")])
def test_compressed_blocks_are_refused_clearly(ckpt, kind, message):
    index = Path(f"{ckpt}.index")
    raw = bytearray(index.read_bytes())
    raw[-FOOTER_SIZE - 5] = kind  # the index block's trailer sits just before the footer
    index.write_bytes(bytes(raw))
    with pytest.raises(NsynthError, match=message):
        Checkpoint(ckpt)


def test_truncated_and_foreign_files(ckpt, tmp_path):
    index = Path(f"{ckpt}.index")
    good = index.read_bytes()
    index.write_bytes(good[: len(good) // 2])
    with pytest.raises(NsynthError, match="not a TensorFlow V2 checkpoint index"):
        Checkpoint(ckpt)
    index.write_bytes(good[:20])
    with pytest.raises(NsynthError, match="too short for a checkpoint index"):
        Checkpoint(ckpt)
    index.write_bytes(good)
    data = Path(f"{ckpt}.data-00000-of-00001")
    data.write_bytes(data.read_bytes()[:10])
    with pytest.raises(CorruptCheckpoint, match="data-00000-of-00001: truncated; tensor 'a/W'"):
        Checkpoint(ckpt).read("a/W")
    data.unlink()
    with pytest.raises(NsynthError, match="cannot read data shard"):
        Checkpoint(ckpt).read("a/W")
    with pytest.raises(NsynthError, match=r"nothere.index: no such checkpoint index"):
        Checkpoint(tmp_path / "nothere")


def test_reader_needs_no_tensorflow(ckpt):
    code = ("import sys; sys.modules['tensorflow'] = None; sys.modules['google.protobuf'] = None\n"
            "from precompute.magenta.tfckpt import Checkpoint\n"
            f"print(Checkpoint({str(ckpt)!r}).read('a/biases').tolist())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[1.5, -2.25, 3.0, 0.0]"
