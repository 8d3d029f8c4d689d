import json
import lzma
import struct

import pytest
import torch

from nsynth.cli import main as cli
from nsynth.errors import NsynthError
from precompute.datasets import pack
from precompute.datasets.pack import MAGIC, read_pack, write_pack
from precompute.train import load_notes


@pytest.fixture
def splits(tmp_path, write_dataset):
    """train/ (two instruments) and valid/ (one), pitches 60 and 64, velocities 25 and 127."""
    root = tmp_path / "data"
    write_dataset(root / "train", [("keyboard", "acoustic", 1), ("string", "acoustic", 3)])
    write_dataset(root / "valid", [("flute", "synthetic", 2)])
    return root


def test_pack_holds_the_same_codes_as_the_folders(splits, tmp_path):
    header = write_pack(splits, tmp_path / "d.nspack", progress=False)
    again, codes = read_pack(tmp_path / "d.nspack")
    assert again == header and header["samples"] == 64000
    for split in ("train", "valid"):
        assert codes[split].dtype == torch.int8
        assert torch.equal(codes[split], load_notes(splits / split).codes)
    assert [n["split"] for n in header["notes"]].count("valid") == 4


def test_filters_and_cut(splits, tmp_path):
    header = write_pack(splits, tmp_path / "d.nspack", pitches=[64], velocities=[127], samples=16000,
                        progress=False)
    _, codes = read_pack(tmp_path / "d.nspack")
    assert {(n["pitch"], n["velocity"]) for n in header["notes"]} == {(64, 127)}
    assert codes["train"].shape == (2, 16000) and codes["valid"].shape == (1, 16000)
    full = load_notes(splits / "valid").codes  # its notes sorted by note_str: 060-025, 060-127, 064-025, 064-127
    assert torch.equal(codes["valid"][0], full[3, :16000])
    with pytest.raises(NsynthError, match="no notes match"):
        write_pack(splits, tmp_path / "e.nspack", pitches=[61], progress=False)


def test_cli(splits, tmp_path, capsys):
    out = tmp_path / "gm.nspack"
    assert cli(["dataset", "pack", str(splits), "-o", str(out), "--velocities", "127", "--seconds", "1", "-q"]) == 0
    assert "4 train + 2 valid notes of 16000 samples" in capsys.readouterr().out
    assert cli(["dataset", "pack", str(tmp_path / "nothing"), "-o", str(out), "-q"]) == 1
    assert "no train/ folder" in capsys.readouterr().err


def _rewrite(path, header=None, stream=None):
    raw = path.read_bytes()
    n = struct.unpack("<I", raw[8:12])[0]
    h = json.loads(raw[12:12 + n]) if header is None else header
    blob = json.dumps(h).encode()
    path.write_bytes(MAGIC + struct.pack("<I", len(blob)) + blob + (raw[12 + n:] if stream is None else stream))
    return h


def test_damaged_packs_are_named_and_refused(splits, tmp_path):
    good = tmp_path / "d.nspack"
    write_pack(splits, good, velocities=[127], samples=4000, progress=False)
    raw = good.read_bytes()
    cases = {"not a dataset pack": b"RIFF" + raw[4:], "cut short": raw[:-50], "damaged header": raw[:40]}
    for expected, data in cases.items():
        bad = tmp_path / "bad.nspack"
        bad.write_bytes(data)
        with pytest.raises(NsynthError, match=rf"bad\.nspack: .*{expected}"):
            read_pack(bad)
    bad = tmp_path / "bad.nspack"
    bad.write_bytes(raw)
    h = _rewrite(bad)
    _rewrite(bad, header={**h, "format_version": 99})
    with pytest.raises(NsynthError, match="format version 99"):
        read_pack(bad)
    bad.write_bytes(raw)
    codes = bytearray(lzma.decompress(raw[12 + len(json.dumps(h).encode()):]))
    codes[100] ^= 1  # a well-formed stream whose codes were altered
    _rewrite(bad, stream=lzma.compress(bytes(codes)))
    with pytest.raises(NsynthError, match="checksum"):
        read_pack(bad)
    with pytest.raises(NsynthError, match="missing.nspack: cannot read"):
        read_pack(tmp_path / "missing.nspack")


def test_failed_pack_keeps_the_last_good_one(splits, tmp_path, monkeypatch):
    out = tmp_path / "packs" / "d.nspack"
    write_pack(splits, out, velocities=[25], progress=False)
    before = out.read_bytes()
    calls = []

    def failing(note):
        calls.append(note)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(note)

    real = pack.note_codes
    monkeypatch.setattr(pack, "note_codes", failing)
    with pytest.raises(KeyboardInterrupt):
        write_pack(splits, out, progress=False)
    assert out.read_bytes() == before
    assert [p.name for p in out.parent.iterdir()] == ["d.nspack"]
