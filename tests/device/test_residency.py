"""Resident pages: the engine never reads a page that is not marked resident (it mutes the voice instead), and the
prefetch thread brings in what voices will read before they read it, heads first, or the whole bank in budget."""
import time

import numpy as np
import pytest

from device.bank import BankWriter, open_bank
from device.engine import Engine, EngineConfig
from synth_banks import render_events
from device.residency import HELD, PINNED, Prefetcher, Residency, memory_budget

L = 16384  # 8 pages of int16 samples per note


@pytest.fixture(scope="module")
def trap_bank(tmp_path_factory):
    """Every note: a sine for its first 3 pages, loud noise after; the sustain loop lies in the noise."""
    path = tmp_path_factory.mktemp("res") / "bank"
    rng = np.random.default_rng(0)
    t = np.arange(L) / 16000
    with BankWriter(path, grid=2, pitches=[60], velocities=[100], note_length=L, corners="abcd") as w:
        for y in range(2):
            for x in range(2):
                note = np.round(np.sin(2 * np.pi * 262 * (1 + x + 2 * y) * t) * 8000).astype(np.int16)
                note[3 * 2048:] = rng.integers(-30000, 30000, L - 3 * 2048)
                w.write(0, 0, y, x, note, loop=(8000, 12000))
    return path


def gated(path, pages):
    """The bank with only the first `pages` pages of every note marked resident."""
    bank = open_bank(path)
    res = Residency(bank)
    for note in range(4):
        res.bits[note * 8:note * 8 + pages] = 1
    bank.residency = res
    return bank


def test_the_engine_never_reads_a_page_that_is_not_resident(trap_bank, engine_path):
    events = [(0, ("params", {"x": 0.4, "y": 0.7, "sustain": 1.0})), (0, ("on", 0, 60, 100))]
    free = Engine(open_bank(trap_bank))
    for f, ev in events:
        free.post(ev, f)
    ungated = free.render(48000)
    e = Engine(gated(trap_bank, 3))
    for f, ev in events:
        e.post(ev, f)
    out = e.render(48000)[:, 0]
    audible = np.flatnonzero(out)
    assert audible.size > 9000 and e.starved > 0  # it played the sine, then was muted
    np.testing.assert_array_equal(out[audible], ungated[audible, 0])  # exactly what it played ungated
    assert not out[audible[-1] + 1:].any()
    assert np.abs(ungated[audible[-1] + 1:, 0]).max() > 3 * np.abs(out).max()  # ungated, the noise was next
    # with every page resident, gating changes nothing
    e = Engine(gated(trap_bank, 8))
    for f, ev in events:
        e.post(ev, f)
    np.testing.assert_array_equal(e.render(48000), ungated)
    assert e.starved == 0


def test_a_voice_whose_state_is_corrupt_is_freed_not_read(trap_bank, engine_path):
    bank = open_bank(trap_bank)
    e = Engine(bank, params={"x": 0.0, "y": 0.0})
    e.note_on(60, 100)
    e.note_on(67, 100)
    e.render(1280)
    victim = int(np.flatnonzero(e.key == 67)[0])
    e.streams[victim, :, 0] = bank.samples.size  # points past the end of the samples
    e.pos[victim] = np.nan
    out = e.render(4800)
    assert e.faults == 1 and e.active_voices() == 1 and np.abs(out).max() > 0.05
    # the other voice goes on as if alone
    alone = render_events(bank, [(0, ("on", 0, 60, 100))], 1280 + 4800, params={"x": 0.0, "y": 0.0})
    np.testing.assert_allclose(out, alone[1280:], atol=1e-6)


def test_the_resampling_rate_is_capped(trap_bank, engine_path):
    """Above max_rate source samples per output sample every pitch reads at max_rate: the same samples."""
    bank = open_bank(trap_bank)
    cfg = EngineConfig(max_rate=1.5)
    render = lambda bend: render_events(bank, [(0, ("bend", 0, bend)), (0, ("on", 0, 72, 100))], 4800, config=cfg)
    np.testing.assert_array_equal(render(30.0), render(48.0))  # key 72 + 30: rate 3.8 -> 1.5
    assert not np.array_equal(render(0.0), render(30.0))


def _play(e, seconds, step_s=0.02):
    """Render in real time (what the audio thread does), giving the prefetch thread its time."""
    n = int(step_s * e.fs)
    for _ in range(int(seconds / step_s)):
        t0 = time.monotonic()
        e.render(n)
        time.sleep(max(0.0, step_s - (time.monotonic() - t0)))


def test_heads_then_what_voices_read_next(trap_bank, engine_path):
    """A bank over budget: the heads of all notes are in before the first note, then each voice's next pages
    come in ahead of it (no muted segment while playing through the note into its loop), and what nobody reads
    any more is let go."""
    bank = open_bank(trap_bank)
    e = Engine(bank, params={"x": 0.0, "y": 0.0, "sustain": 1.0})
    pf = Prefetcher(e, budget_bytes=0, head_s=0.3, ahead_s=0.5, linger_s=0.2)
    res = pf.prepare(bank)
    assert res.bits.reshape(4, 8)[:, :3].all() and not res.bits.reshape(4, 8)[:, 3:].any()  # 0.3 s: 3 pages
    e = Engine(bank, params={"x": 0.0, "y": 0.0, "sustain": 1.0})
    e.render(256)  # the kernel is loaded (or compiled) before the clock starts
    pf.engine = e
    pf.start()
    try:
        e.note_on(60, 100)
        _play(e, 1.2)  # 1.2 s of the 1 s note: into its loop
        assert e.starved == 0
        assert res.bits.reshape(4, 8)[0, 2:6].all()  # the loop (8000..12000) and its crossfade's run-up (6000..)
        e.post(("all_sound_off",))
        _play(e, 0.6)
        assert not (res.state == HELD).any()  # let go once nobody needed them for linger_s
        assert res.bits.reshape(4, 8)[:, :3].all()  # the heads stay
        e.post_params(position=1.0)  # notes now start half-way (sample 8192, page 4): the heads move there
        _play(e, 0.3)
        heads = res.state.reshape(4, 8) == PINNED
        assert heads[:, 4:6].all() and not heads[:, :3].any()
    finally:
        pf.stop()


def test_a_bank_within_budget_is_held_whole(trap_bank, engine_path):
    bank = open_bank(trap_bank)
    e = Engine(bank)
    pf = Prefetcher(e, budget_bytes=bank.samples.nbytes)
    pf.prepare(bank)
    pf.start()
    try:
        assert pf.wait_whole(bank, 10)
    finally:
        pf.stop()
    assert bank.residency.bits.all() and (bank.residency.state == PINNED).all()


def test_prepare_compiles_what_the_rounds_call(trap_bank):
    """The prefetch thread's first rounds must not compile (seconds, while voices wait for their pages): prepare()
    compiles each function for the argument types of the thread's own calls, the engine's strided voice columns
    included."""
    from device import residency
    pytest.importorskip("numba", reason="the numpy reference compiles nothing")
    bank = open_bank(trap_bank)
    e = Engine(bank, params={"x": 0.3, "y": 0.6})
    pf = Prefetcher(e, budget_bytes=0)
    pf.prepare(bank)
    funcs = (residency.plan, residency.settle, residency.heads)
    before = [len(f.signatures) for f in funcs]
    e.note_on(60, 100)
    e.render(256)
    pf._round()
    assert bank.residency.state.any() and [len(f.signatures) for f in funcs] == before


def test_memory_budget_setting():
    assert memory_budget({"NSYNTH_PRELOAD_MB": "300"}) == 300 << 20
    assert memory_budget({}) > 0
