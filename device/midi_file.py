"""MIDI files for `render-midi`: their channel messages, frame-stamped; every refusal says why.

mido reads the file; when it gives up without a reason (an empty file, a chunk whose length runs past the end
of the file, an event cut off at the end), `_structure_problem` walks the chunk layout (chunks of a 4-byte tag
and a big-endian 32-bit length: the 6-byte "MThd" header, then "MTrk" tracks) and names what is wrong.
"""
from __future__ import annotations

import io
import struct
from pathlib import Path

import mido

from nsynth.errors import NsynthError

_HEADER = 14  # "MThd", length 6, format, tracks, division


def _structure_problem(data: bytes) -> str:
    """What is wrong with a MIDI file's chunk layout, or a general reason when the layout holds."""
    if not data:
        return "the file is empty (0 bytes)"
    if len(data) < _HEADER:
        return f"only {len(data)} bytes, shorter than a MIDI header ({_HEADER})"
    tracks = struct.unpack(">H", data[10:12])[0]
    pos, found = 0, 0
    while pos < len(data):
        if len(data) - pos < 8:
            return f"{len(data) - pos} stray bytes at byte {pos}, too few for a chunk header"
        tag, size = data[pos:pos + 4], struct.unpack(">I", data[pos + 4:pos + 8])[0]
        if size > len(data) - pos - 8:
            return (f"chunk {tag.decode('latin-1')!r} at byte {pos} claims {size} bytes but only "
                    f"{len(data) - pos - 8} follow (a truncated file or a wrong length)")
        if pos == 0 and size < 6:
            return f"its header chunk claims {size} bytes; a MIDI header has 6"
        found += tag == b"MTrk"
        pos += 8 + size
    if found < tracks:
        return f"the header announces {tracks} track(s) but the file holds {found} (truncated?)"
    return "a track ends in the middle of an event"


def midi_file_messages(path: str | Path, sample_rate: int) -> list[tuple[int, mido.Message]]:
    """The channel messages of a MIDI file with their frame (at `sample_rate`), in playing order. Raises
    NsynthError naming the file and the reason it cannot be played."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise NsynthError(f"{path}: no such MIDI file") from None
    except OSError as e:
        raise NsynthError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        song = mido.MidiFile(file=io.BytesIO(data))
    except (OSError, ValueError, EOFError, KeyError, IndexError, struct.error) as e:
        reason = str(e) if str(e) and not isinstance(e, EOFError) else _structure_problem(data)
        raise NsynthError(f"{path}: not a readable MIDI file: {reason}") from None
    if song.type == 2:
        raise NsynthError(f"{path}: a type 2 MIDI file (independent sequences) has no single timeline to play; "
                          "save it as type 0 or 1")
    if song.ticks_per_beat <= 0:
        raise NsynthError(f"{path}: time division {song.ticks_per_beat} is not ticks per beat (SMPTE timing or "
                          "0) and cannot be played")
    out, t = [], 0.0
    for msg in song:  # merged tracks, `time` in seconds since the previous message
        t += msg.time
        if not msg.is_meta and msg.type != "sysex":
            out.append((int(round(t * sample_rate)), msg))
    return out

