"""`render-midi`'s inputs and output refused with their reason before any work: an output folder that does not
exist (no folders made), and MIDI files that cannot be played (empty, lying lengths, cut-off events, type 2,
SMPTE timing)."""
import struct

import mido
import pytest

from nsynth.cli import main
from nsynth.errors import NsynthError
from device.midi_file import midi_file_messages


def good_song(path, **kw):
    mid = mido.MidiFile(**kw)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    track += [mido.Message("note_on", note=60, velocity=100), mido.Message("note_off", note=60, time=240)]
    mid.save(path)
    return path


def render(bank, song, out):
    return main(["render-midi", "--bank", str(bank), str(song), "-o", str(out)])


def test_an_output_folder_that_does_not_exist_is_refused_and_not_made(small_bank, tmp_path, capsys):
    song = good_song(tmp_path / "a.mid")
    assert render(small_bank, song, tmp_path / "missing" / "dir" / "out.wav") == 1
    assert f"the folder {tmp_path / 'missing' / 'dir'} does not exist" in capsys.readouterr().err
    assert not (tmp_path / "missing").exists()
    assert render(small_bank, song, tmp_path) == 1  # a folder, not a file name
    assert "is a folder" in capsys.readouterr().err
    assert render(small_bank, song, tmp_path / "out.wav") == 0 and (tmp_path / "out.wav").is_file()


def lying(data: bytes, pos: int, length: int) -> bytes:
    """`data` with the 32-bit chunk length at byte `pos` replaced."""
    return data[:pos] + struct.pack(">I", length) + data[pos + 4:]


CASES = {  # name: (how the good file is changed, what the reason says)
    "empty": (lambda d: b"", "the file is empty"),
    "short": (lambda d: d[:9], "only 9 bytes, shorter than a MIDI header"),
    "track length lies": (lambda d: lying(d, 18, 1000), "chunk 'MTrk' at byte 14 claims 1000 bytes but only"),
    "header length lies": (lambda d: lying(d, 4, 100), "chunk 'MThd' at byte 0 claims 100 bytes"),
    "header length too short": (lambda d: lying(d, 4, 2), "its header chunk claims 2 bytes; a MIDI header has 6"),
    "tracks missing": (lambda d: d[:10] + struct.pack(">H", 3) + d[12:],
                       "the header announces 3 track(s) but the file holds 1"),
    "event cut off": (lambda d: d[:14] + b"MTrk" + struct.pack(">I", 3) + b"\x00\x90\x3c",
                      "a track ends in the middle of an event"),
    "not midi": (lambda d: b"RIFF" + d[4:], "MThd not found"),
}


@pytest.mark.parametrize("case", CASES)
def test_every_unreadable_midi_file_says_why(tmp_path, case):
    change, reason = CASES[case]
    path = tmp_path / "bad.mid"
    path.write_bytes(change(good_song(tmp_path / "good.mid").read_bytes()))
    with pytest.raises(NsynthError) as e:
        midi_file_messages(path, 48000)
    assert str(e.value).startswith(f"{path}: not a readable MIDI file: ") and reason in str(e.value)


def test_midi_files_that_read_but_cannot_be_played_say_why(tmp_path):
    path = good_song(tmp_path / "t2.mid", type=2)
    with pytest.raises(NsynthError, match="t2.mid: a type 2 MIDI file"):
        midi_file_messages(path, 48000)
    data = bytearray(good_song(tmp_path / "ok.mid").read_bytes())
    data[12:14] = b"\xe7\x28"  # SMPTE: 25 frames per second, 40 ticks per frame
    (tmp_path / "smpte.mid").write_bytes(bytes(data))
    with pytest.raises(NsynthError, match="smpte.mid: time division -6360 is not ticks per beat"):
        midi_file_messages(tmp_path / "smpte.mid", 48000)
    with pytest.raises(NsynthError, match="nope.mid: no such MIDI file"):
        midi_file_messages(tmp_path / "nope.mid", 48000)


@pytest.mark.parametrize("case", ["empty", "track length lies"])
def test_render_midi_gives_the_reason(small_bank, tmp_path, capsys, case):
    change, reason = CASES[case]
    song = tmp_path / "song.mid"
    song.write_bytes(change(good_song(tmp_path / "good.mid").read_bytes()))
    assert render(small_bank, song, tmp_path / "out.wav") == 1
    assert reason in capsys.readouterr().err and not (tmp_path / "out.wav").exists()
