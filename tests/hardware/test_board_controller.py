import errno
import logging

from hardware.controller import ControllerBoard
from hardware.frame import ADDRESS, Frame
from hardware.sim import FakeSMBus, SimulatedBoard


def rig(**kw):
    twin = SimulatedBoard()
    bus = FakeSMBus({ADDRESS: twin})
    return twin, bus, ControllerBoard(bus, **kw)


def test_a_poll_reads_the_boards_state_through_the_bus():
    twin, bus, board = rig()
    twin.set_touch((4, 9))
    for i, v in enumerate((10, 20, 30, 40, 50, 60)):
        twin.set_pot(i, v)
    assert board.poll_once()
    frame, steps = board.snapshot()
    assert frame == Frame((4, 9), (0, 0, 0, 0), (10, 20, 30, 40, 50, 60))
    assert steps == (0, 0, 0, 0) and bus.transactions == 1
    assert board.snapshot() == (None, (0, 0, 0, 0))   # nothing new


def test_the_smbus_block_read_the_originals_tool_uses_sees_the_same_frame():
    twin, bus, board = rig()
    twin.set_touch((1, 2))
    board.poll_once()
    assert bytes(bus.read_i2c_block_data(ADDRESS, 0, 16))[:2] == bytes([1, 2])


def test_encoder_steps_accumulate_across_wraps():
    twin, bus, board = rig()
    board.poll_once()
    for _ in range(3):
        twin.turn(0, 100)      # 300 steps: wraps the 8-bit counter, < 128 between polls
        twin.turn(3, -90)
        board.poll_once()
    assert board.snapshot()[1] == (300, 0, 0, -270)


def test_bad_frames_are_dropped_counted_and_never_move_anything():
    twin, bus, board = rig()
    twin.set_touch((2, 2))
    board.poll_once()
    good, _ = board.snapshot()
    twin.set_touch((9, 9))
    twin.turn(1, 5)
    bus.fail("checksum", 2)
    bus.fail("stuck", 2)
    bus.fail("nack", 2)
    assert [board.poll_once() for _ in range(6)] == [False] * 6
    assert board.snapshot() == (None, (0, 0, 0, 0))
    assert (board.counts["checksum"], board.counts["stuck"], board.counts["io_error"]) == (2, 2, 2)
    assert board.poll_once()
    frame, steps = board.snapshot()
    assert frame.touch == (9, 9) and steps == (0, 5, 0, 0)   # the steps survived the bad frames


def test_failures_are_logged_at_a_rate_limit(caplog):
    twin, bus, board = rig(reconnect_after=1000)
    bus.fail("nack", 500)
    with caplog.at_level(logging.WARNING, logger="hardware.controller"):
        for _ in range(500):
            board.poll_once()
    assert board.counts["io_error"] == 500
    assert len(caplog.records) == 1 and "I/O error" in caplog.text


class Opener:
    """Opens a fresh fake bus each time, like smbus2.SMBus(1) reopening /dev/i2c-1."""

    def __init__(self, twin, fail_opens=0):
        self.twin, self.fail_opens, self.buses = twin, fail_opens, []

    def __call__(self):
        if self.fail_opens:
            self.fail_opens -= 1
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", "/dev/i2c-1")
        self.buses.append(FakeSMBus({ADDRESS: self.twin}))
        return self.buses[-1]


def test_reconnects_after_failures_in_a_row_and_forgets_the_encoder_baseline():
    twin = SimulatedBoard()
    opener = Opener(twin)
    board = ControllerBoard(open_bus=opener, reconnect_after=3)
    board.poll_once()
    opener.buses[0].fail("nack", 3)
    for _ in range(3):
        board.poll_once()
    assert board.counts["reconnects"] == 1 and opener.buses[0].closed
    twin.rotaries = [77, 0, 0, 0]   # the board was reset: its counters start over
    assert board.poll_once() and len(opener.buses) == 2
    assert board.snapshot()[1] == (0, 0, 0, 0)   # no phantom 77-step turn
    twin.turn(0, 2)
    board.poll_once()
    assert board.snapshot()[1] == (2, 0, 0, 0)


def test_a_missing_bus_device_is_retried_until_it_appears():
    twin = SimulatedBoard()
    opener = Opener(twin, fail_opens=5)
    board = ControllerBoard(open_bus=opener, reconnect_after=2)
    results = [board.poll_once() for _ in range(6)]
    assert results == [False] * 5 + [True] and board.counts["io_error"] == 5


def test_a_dead_bus_is_retried_slowly_and_picked_up_again():
    twin, bus, board = rig(poll_hz=500, reconnect_after=3, retry_s=0.2)
    bus.fail("nack", 10**6)
    board.start()
    board._stop.wait(0.5)
    tries = bus.transactions
    assert 3 <= tries <= 3 + 4        # 3 fast failures, then one try per 0.2 s
    bus._faults.clear()
    for _ in range(100):
        if board.counts["frames"]:
            break
        board._stop.wait(0.05)
    board.stop()
    assert board.counts["frames"] and board.counts["reconnects"] >= 1


def test_the_thread_polls_until_stopped():
    twin, bus, board = rig(poll_hz=500)
    board.start()
    twin.set_touch((6, 1))
    for _ in range(500):
        frame, _ = board.snapshot()
        if frame is not None and frame.touch == (6, 1):
            break
        board._stop.wait(0.01)
    board.stop()
    assert frame.touch == (6, 1)
    n = bus.transactions
    board._stop.wait(0.05)
    assert bus.transactions == n   # stopped means stopped
