"""Board faults the checksum cannot see: two errors that cancel in the additive checksum (touch x + 8, a pot - 8)
must not move the sound, and a controller that resets between two good frames must not report its encoder
counters restarting as a turn. Driven through the real driver on the fake bus speaking the 16-byte frames."""
import pytest

from hardware.frame import ADDRESS, Frame, decode, encode
from hardware.plausible import POWER_ON_ROTARIES, TouchGuard, board_reset
from hardware.sim import FakeSMBus, SimulatedBoard

from test_board_controller import rig as driver_rig
from test_board_controls import rig  # noqa: F401  (the fixture: the sim board ticked by the controls)

NO_TOUCH = (255, 255)


def frame(touch, rotaries=(0, 0, 0, 0), pots=(0, 0, 128, 255, 40, 200)):
    return Frame(tuple(touch), tuple(rotaries), tuple(pots))


def cancelling(good: Frame) -> Frame:
    """The issue's fault, byte by byte: touch x + 8 (byte 0) and pot 2 - 8 (byte 8), checksum untouched."""
    data = bytearray(encode(good))
    data[0] += 8
    data[8] -= 8
    return decode(bytes(data))  # passes the checksum


def test_the_cancelling_errors_pass_the_checksum():
    bad = cancelling(frame((2, 5)))
    assert bad.touch == (10, 5) and bad.pots[2] == 120 and bad.rotaries == (0, 0, 0, 0)


def test_the_fake_bus_injects_the_same_fault():
    twin = SimulatedBoard()
    twin.set_touch((2, 5))
    bus = FakeSMBus({ADDRESS: twin})
    bus.fail("cancel")
    twin.i2c_write(b"\x00")
    assert decode(bus.read_i2c_block_data(ADDRESS, 0, 16)) == cancelling(frame((2, 5), pots=twin.pots))


def test_a_touch_that_jumps_is_refused_unless_the_next_frame_confirms_it():
    guard = TouchGuard()
    good = frame((2, 5))
    assert guard.accept(good)
    assert not guard.accept(cancelling(good))       # one frame at x = 10: no finger moves 8 cells in 5 ms
    assert guard.accept(good) and guard.last == (2, 5)
    assert guard.accept(frame((10, 5))) is False   # a real jump (lift and touch elsewhere unseen) ...
    assert guard.accept(frame((10, 5))) and guard.last == (10, 5)  # ... is confirmed by the next frame


def test_slides_lifts_and_failed_polls():
    guard = TouchGuard()
    assert all(guard.accept(frame((x, 3))) for x in range(11))  # a swipe, one cell per poll
    assert all(guard.accept(frame((10 - 2 * i, 3))) for i in range(6))  # a fast one, two cells per poll
    assert guard.accept(frame(NO_TOUCH))                          # a lift moves nothing
    assert guard.accept(frame((1, 4)))                            # touching near where it was: at once
    assert guard.accept(frame(NO_TOUCH))
    assert not guard.accept(frame((9, 9)))                        # elsewhere: one poll later
    assert guard.accept(frame((9, 8)))
    for _ in range(3):
        guard.missed()                                            # 3 polls lost: the finger had 4 polls to move
    assert guard.accept(frame((9, 1)))
    assert not guard.accept(frame((0, 0)))


def test_the_first_frame_is_taken_as_it_comes():
    assert TouchGuard().accept(frame((7, 7)))


@pytest.mark.parametrize("previous, current, reset", [
    ((50, 3, 0, 200), POWER_ON_ROTARIES, True),   # every counter restarted
    ((50, 0, 0, 0), POWER_ON_ROTARIES, True),     # one counter, by more than a poll's turn
    ((206, 0, 0, 0), POWER_ON_ROTARIES, True),    # -50 the other way round
    ((1, 0, 0, 0), POWER_ON_ROTARIES, False),     # a player turning back one detent
    ((0, 0, 255, 0), POWER_ON_ROTARIES, False),
    (POWER_ON_ROTARIES, POWER_ON_ROTARIES, False),
    ((50, 3, 0, 200), (0, 0, 0, 1), False),       # not the power-on values
])
def test_board_reset(previous, current, reset):
    assert board_reset(previous, current) is reset


def test_the_driver_drops_the_cancelling_frame_and_keeps_the_good_state():
    twin, bus, board = driver_rig()
    twin.set_touch((2, 5))
    assert board.poll_once()
    good, _ = board.snapshot()
    bus.fail("cancel")
    assert not board.poll_once()
    assert board.counts["implausible"] == 1 and board.counts["checksum"] == 0
    assert board.snapshot() == (None, (0, 0, 0, 0))
    assert board.poll_once() and board.snapshot()[0] == good


def test_a_reset_between_two_good_frames_reports_no_turn():
    twin, bus, board = driver_rig()
    board.poll_once()
    twin.turn(0, 50)
    twin.turn(2, -3)
    board.poll_once()
    assert board.snapshot()[1] == (50, 0, -3, 0)
    twin.reset()
    assert board.poll_once()
    assert board.snapshot()[1] == (0, 0, 0, 0) and board.counts["resets"] == 1  # not (-50, 0, 3, 0)
    twin.turn(0, 2)
    board.poll_once()
    assert board.snapshot()[1] == (2, 0, 0, 0)  # counting goes on from the new baseline
    twin.turn(0, -2)
    board.poll_once()
    assert board.snapshot()[1] == (-2, 0, 0, 0) and board.counts["resets"] == 1  # back to 0 by hand: a turn


def test_the_cancelling_fault_does_not_move_the_sound(rig):
    rig.sim.board.set_touch((2, 5))
    rig.tick(60)
    assert rig.posted()["x"] == 0.2
    rig.posts.clear()
    for _ in range(5):
        rig.sim.bus.fail("cancel", addr=ADDRESS)
        rig.tick(3)
    assert rig.controls.board.counts["implausible"] == 5
    assert all(p.get("x", 0.2) == 0.2 for p in rig.posts) and "decay" not in rig.posted()


def test_a_controller_reset_does_not_change_the_instruments(rig):
    rig.tick()
    rig.sim.board.turn(0, 1)
    rig.tick()
    assert rig.corner_reports[-1][0] == "organ"
    reports = len(rig.corner_reports)
    rig.sim.board.turn(0, 49)   # the counter at 50 (the instrument cycles on)
    rig.tick()
    names = rig.corner_reports[-1]
    rig.sim.board.reset()
    rig.tick(5)
    assert rig.corner_reports[-1] == names and len(rig.corner_reports) == reports + 1
    assert rig.controls.board.counts["resets"] == 1
