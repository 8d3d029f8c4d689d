"""`nsynth bank verify` and `nsynth bank inspect`."""
from __future__ import annotations

import argparse
import os

from device.bank import SAMPLES, TIMBRE_MAP, Bank, open_bank, read_stamp


def verify_bank(path: str | os.PathLike) -> str:
    """Fully check a bank (manifest, sizes, loops, sha256, hashed afresh whatever its stamp says, and stamped);
    returns a one-line OK message, raises BankError."""
    bank = open_bank(path, verify=True)
    return f"{bank.path}: OK ({int(bank.samples.size)} samples, sha256 {bank.info.sha256[:16]}...)"


def verified_line(bank: Bank) -> str:
    """Whether the bank's samples have been checked against the manifest's sha256 (from its stamp; no hashing)."""
    stamp = read_stamp(bank.path)
    if stamp is None:
        return "no: never checked (the first play, or `nsynth bank verify`, hashes it)"
    if not stamp.current:
        return f"no: {SAMPLES} or the manifest changed since the check on {stamp.checked}"
    if stamp.ok:
        return f"yes, the samples matched the manifest's sha256 on {stamp.checked}"
    return (f"FAILED on {stamp.checked}: {SAMPLES} hashes to {stamp.sha256}, not the manifest's sha256 "
            f"(corrupt; refused by the players)")


def inspect_bank(path: str | os.PathLike) -> str:
    """A human-readable summary of a bank's manifest and its verification stamp (does not hash the samples)."""
    bank = open_bank(path)
    i = bank.info
    seconds = i.note_length / i.sample_rate
    lines = [
        f"bank        {bank.path}",
        f"grid        {i.grid} x {i.grid}",
        f"pitches     {len(i.pitches)}: {', '.join(map(str, i.pitches))}",
        f"velocities  {len(i.velocities)}: {', '.join(map(str, i.velocities))}",
        f"notes       {len(i.pitches) * len(i.velocities) * i.grid * i.grid} x {i.note_length} samples "
        f"({seconds:.3g} s at {i.sample_rate} Hz)",
        f"size        {bank.samples.nbytes / 1e6:.1f} MB",
        "corners     " + ", ".join(f"{pos}={name}" for pos, name in zip(("BL", "BR", "TL", "TR"), i.corners)),
        f"loops       start {int(bank.loops[..., 0].min())}..{int(bank.loops[..., 0].max())}, "
        f"end {int(bank.loops[..., 1].min())}..{int(bank.loops[..., 1].max())}",
        f"model       {i.model or '-'}",
        f"config      {i.config_hash or '-'}",
        f"sha256      {i.sha256}",
        f"verified    {verified_line(bank)}",
        f"created     {i.created}",
        f"timbre map  {'yes' if (bank.path / TIMBRE_MAP).exists() else 'no'}",
    ]
    if i.extra:
        lines.append(f"extra       {', '.join(sorted(i.extra))}")
    return "\n".join(lines)


def configure_verify(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bank", help="bank directory")
    parser.set_defaults(func=lambda a: print(verify_bank(a.bank)) or 0)


def configure_inspect(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bank", help="bank directory")
    parser.set_defaults(func=lambda a: print(inspect_bank(a.bank)) or 0)
