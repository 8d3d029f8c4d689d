import pytest

from hardware.frame import Frame, FrameError, decode, encode

# A frame built by hand from DESIGN.md: payload bytes, then LE uint32 0xAA55AA55 + the three LE words.
PAYLOAD = bytes([3, 7, 0, 1, 255, 128, 0, 64, 128, 192, 255, 10])


def reference_frame(payload=PAYLOAD):
    words = [int.from_bytes(payload[i:i + 4], "little") for i in (0, 4, 8)]
    return payload + ((0xAA55AA55 + sum(words)) % 2**32).to_bytes(4, "little")


def test_decode_reads_the_fields_of_a_hand_built_frame():
    f = decode(reference_frame())
    assert f.touch == (3, 7) and f.touched
    assert f.rotaries == (0, 1, 255, 128)
    assert f.pots == (0, 64, 128, 192, 255, 10)


def test_encode_matches_the_hand_built_frame():
    assert encode(Frame((3, 7), (0, 1, 255, 128), (0, 64, 128, 192, 255, 10))) == reference_frame()


@pytest.mark.parametrize("index", range(16))
def test_any_flipped_bit_is_refused(index):
    data = bytearray(reference_frame())
    data[index] ^= 0x10
    with pytest.raises(FrameError, match="checksum"):
        decode(bytes(data))


def test_stuck_bus_and_short_reads_are_refused():
    with pytest.raises(FrameError, match="stuck"):
        decode(b"\xff" * 16)
    with pytest.raises(FrameError, match="15 bytes"):
        decode(reference_frame()[:15])
    with pytest.raises(FrameError, match="checksum"):
        decode(bytes(16))  # the firmware's buffer before its first latch


def test_no_touch_on_either_axis_is_no_touch():
    assert not Frame((255, 5), (0,) * 4, (0,) * 6).touched
    assert not Frame((5, 255), (0,) * 4, (0,) * 6).touched
    assert not Frame((255, 255), (0,) * 4, (0,) * 6).touched
    assert Frame((0, 10), (0,) * 4, (0,) * 6).touched
