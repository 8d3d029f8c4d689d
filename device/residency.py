"""Which pages of a bank are in memory, so that the audio thread never waits on the disk (the streaming-sampler
rule of DESIGN.md), and the prefetch thread that keeps them there.

`Residency(bank)` holds one byte per page of the bank's samples (`bits`, 2**shift samples each): non-zero once the
page is locked in RAM (mlock, or faulted in where locking is not allowed). The engine reads a stream only when
every page it needs for the segment is marked (device/kernels.py `needed_range`); otherwise that voice is muted
for the segment and counted (`Engine.starved`).

`Prefetcher(engine, budget_bytes)` is the thread that marks pages, off the audio thread (every system call here:
madvise, mlock, munlock, and the page faults they wait for, runs on it, with the GIL released):
  1. the head of every note at the current start position (`position`), so a new note can start at once;
  2. the whole bank, when it fits the memory budget;
  3. otherwise, every few milliseconds, what each sounding voice will read next: from its read position on for
     `ahead_s` of its pitch, and the whole loop (with the run-up its crossfade reads) once it gets near it, for the
     cells of its square and of the square its X/Y heads for, in both velocity layers; pages nobody needs any more
     are unlocked after a while.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import math
import mmap
import os
import threading
import time

import numpy as np

from device.bank import SAMPLES, Bank
from device.kernels import FREE, jit, needed_range

_PAGE = mmap.PAGESIZE
_MADV_POPULATE_READ = 22  # Linux 5.14: fault pages in (mapped, not locked)
# chunk states in Residency.state
NONE, HELD, PINNED = 0, 1, 2


def _libc():
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        for name in ("mlock", "munlock", "madvise"):
            getattr(lib, name).argtypes = (ctypes.c_void_p, ctypes.c_size_t) + ((ctypes.c_int,) if name == "madvise" else ())
            getattr(lib, name).restype = ctypes.c_int
        return lib
    except (OSError, AttributeError):
        return None


_LIBC = _libc()  # ctypes calls release the GIL while they run


class Residency:
    """Resident pages of one bank: `bits[c]` (uint8) covers samples [c << shift, (c + 1) << shift) of the flat
    samples array; `state[c]` is NONE, HELD (locked for a voice, `last[c]`: when last wanted) or PINNED (a note's
    head, or the whole bank)."""

    def __init__(self, bank: Bank, lock: bool = True):
        self.bank = bank
        self.itemsize = itemsize = bank.samples.dtype.itemsize
        self.shift = int(math.log2(_PAGE // itemsize))
        self.chunk = 1 << self.shift
        n = -(-bank.samples.size // self.chunk)
        self.bits = np.zeros(n, np.uint8)
        self.state = np.zeros(n, np.uint8)
        self.want = np.zeros(n, np.uint8)  # the prefetcher's scratch
        self.loops = np.ascontiguousarray(bank.loops.reshape(-1, 2))
        self.flat = np.asarray(bank.samples).reshape(-1)
        self.last = np.zeros(n, np.float64)
        self.addr = bank.samples.ctypes.data  # page-aligned: the start of the mapping
        self.nbytes = bank.samples.nbytes
        self.lock = lock and _LIBC is not None
        self._fd: int | None = None
        self._buf = memoryview(bytearray(1 << 20))
        self.locked_bytes = 0
        self.failures = 0  # mlock refused (RLIMIT_MEMLOCK): pages were faulted in instead

    def mark_all(self) -> None:
        """Declare everything resident without reading it (offline use, tests)."""
        self.bits[:] = 1
        self.state[:] = PINNED

    def resident_fraction(self) -> float:
        return float(np.count_nonzero(self.bits)) / max(1, self.bits.size)

    def _bytes(self, c0: int, c1: int) -> tuple[int, int]:
        start = c0 * self.chunk * self.itemsize
        return start, min(c1 * self.chunk * self.itemsize, self.nbytes) - start

    def bring_in(self, c0: int, c1: int, state: int) -> None:
        """Make chunks [c0, c1) resident, then mark them (`state`). The file is read first (into the page cache,
        with plain reads that take no lock the audio thread could need), then the pages are locked (or mapped,
        where locking is not allowed), which is then quick: the mapping's lock is held only briefly."""
        start, length = self._bytes(c0, c1)
        if length <= 0:
            return
        self._read(start, length)
        addr = self.addr + start
        if _LIBC is not None:
            if not (self.lock and _LIBC.mlock(addr, length) == 0):
                self.failures += self.lock
                self.lock = False  # not allowed here: fault the pages in instead, for the rest of this bank
                if _LIBC.madvise(addr, length, _MADV_POPULATE_READ) != 0:
                    _touch(self.flat, c0 * self.chunk, min(c1 * self.chunk, self.flat.size))
            else:
                self.locked_bytes += length
        else:
            _touch(self.flat, c0 * self.chunk, min(c1 * self.chunk, self.flat.size))
        self.state[c0:c1] = np.maximum(self.state[c0:c1], state)
        self.bits[c0:c1] = 1

    def _read(self, start: int, length: int) -> None:
        """Read bytes [start, start + length) of the samples file (the GIL is released while it waits)."""
        if self._fd is None:
            try:
                self._fd = os.open(self.bank.path / SAMPLES, os.O_RDONLY)
            except OSError:
                return
        end = start + length
        while start < end:
            n = os.preadv(self._fd, [self._buf[:min(len(self._buf), end - start)]], start)
            if n <= 0:
                return
            start += n

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def let_go(self, c0: int, c1: int) -> None:
        """Unmark chunks [c0, c1) (first, so the audio thread stops reading them), then unlock them."""
        self.bits[c0:c1] = 0
        self.state[c0:c1] = NONE
        start, length = self._bytes(c0, c1)
        if self.lock and length > 0:
            _LIBC.munlock(self.addr + start, length)
            self.locked_bytes -= length


@jit(nogil=True)
def _touch(flat, a, b):
    """Read one sample per page of flat[a:b] (faulting the pages in), without the GIL where compiled."""
    acc = 0
    for i in range(a, b, 1024):
        acc += flat[i]
    return acc


@jit(nogil=True)
def plan(want, stage, pos, base_rate, p_idx, v_idx, sxy, vxy, gxy, loops, nv, grid, length, loop_xf, ahead,
         shift, max_rate):
    """Mark in `want` (uint8 per chunk) every chunk the sounding voices will read in the next `ahead` output frames:
    for each voice, the cells of its square and of the square of its target X/Y (and every square between), both
    velocity layers, from its read position on (through the loop once it gets there). Reads engine arrays that
    the audio thread is changing: every index is clamped, so a torn value only plans the wrong pages."""
    notes = loops.shape[0]
    g1 = grid - 1
    for v in range(stage.shape[0]):
        if stage[v] == FREE:
            continue
        p = min(max(p_idx[v], 0), notes - 1)
        p0 = pos[v]
        if not (p0 >= 0.0 and p0 < 4.0e15):
            continue
        rate = min(max(base_rate[v], 0.0) * 4.0, max_rate)  # room for a bend of two octaves
        span = int(rate * ahead) + 8
        tx = (gxy[0] if math.isnan(vxy[v, 0]) else vxy[v, 0]) * g1
        ty = (gxy[1] if math.isnan(vxy[v, 1]) else vxy[v, 1]) * g1
        x0 = min(max(int(math.floor(min(sxy[v, 0], tx))), 0), grid - 2)
        x1 = min(max(int(math.floor(max(sxy[v, 0], tx))), 0), grid - 2)
        y0 = min(max(int(math.floor(min(sxy[v, 1], ty))), 0), grid - 2)
        y1 = min(max(int(math.floor(max(sxy[v, 1], ty))), 0), grid - 2)
        ip0 = int(p0) - 1
        for lay in range(2):
            vl = min(max(v_idx[v, lay], 0), nv - 1)
            for y in range(y0, y1 + 2):
                for x in range(x0, x1 + 2):
                    note = ((p * nv + vl) * grid + y) * grid + x
                    if note < 0 or note >= notes:
                        continue
                    ls, le = loops[note, 0], loops[note, 1]
                    if not (0 <= ls < le <= length):
                        continue
                    xf = min(loop_xf, (le - ls) // 2, ls)
                    ph0 = ip0 if ip0 < le else ls + (ip0 - ls) % (le - ls)
                    lo, hi = needed_range(max(ph0, 0), span, ls, le, xf)
                    off = note * length
                    for c in range((off + lo) >> shift, min(((off + hi - 1) >> shift) + 1, want.shape[0])):
                        want[c] = 1


@jit(nogil=True)
def heads(want, notes, length, start, count, shift):
    """Mark the chunks of samples [start, start + count) of every note."""
    for note in range(notes):
        off = note * length
        for c in range((off + start) >> shift, min(((off + min(start + count, length) - 1) >> shift) + 1,
                                                   want.shape[0])):
            want[c] = 1


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """The [start, end) runs of True in a boolean array."""
    d = np.diff(np.concatenate(([0], mask.view(np.int8), [0])))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))


@jit(nogil=True)
def _run_edge(runs, n, was_in, is_in, c):
    """One step of collecting [start, end) runs into runs [k, 2] as chunk c is or is not in one: a run opens at
    c where it begins and closes at c where it ends. Returns the number of closed runs."""
    if is_in and not was_in:
        runs[n, 0] = c
    if was_in and not is_in:
        runs[n, 1] = c
        n += 1
    return n


@jit(nogil=True)
def settle(want, state, last, now, linger, new_runs, old_runs):
    """Compare what is wanted with what is held, clearing `want` as it goes: chunks wanted and not resident go
    into new_runs ([start, end) pairs), HELD chunks wanted are stamped `now`, HELD chunks unwanted since
    `now - linger` go into old_runs. Returns (number of new runs, number of old runs); a full list stops early
    (the rest waits for the next round)."""
    nn = no = 0
    in_new = in_old = False
    for c in range(want.shape[0]):
        w = want[c] != 0
        want[c] = 0
        st = state[c]
        is_new = w and st == NONE and nn < new_runs.shape[0]
        is_old = (not w) and st == HELD and last[c] < now - linger and no < old_runs.shape[0]
        if w and st == HELD:
            last[c] = now
        nn = _run_edge(new_runs, nn, in_new, is_new, c)
        no = _run_edge(old_runs, no, in_old, is_old, c)
        in_new, in_old = is_new, is_old
    end = want.shape[0]  # a run still open closes at the end
    return _run_edge(new_runs, nn, in_new, False, end), _run_edge(old_runs, no, in_old, False, end)


def memory_budget(environ=None) -> int:
    """Bytes of bank the instrument may hold in RAM: $NSYNTH_PRELOAD_MB, else a quarter of the machine's memory."""
    value = (os.environ if environ is None else environ).get("NSYNTH_PRELOAD_MB", "").strip()
    if value.isdigit():
        return int(value) << 20
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    except (ValueError, OSError, AttributeError):
        return 256 << 20


class Prefetcher:
    """The thread that keeps what the engine's voices will read resident (see the module docstring).

    `prepare(bank)` gives a bank its Residency (unless it has one) and brings in the heads of its notes, on the
    calling thread, before the bank is handed to the engine (an engine takes a bank's residency when it starts
    playing that bank: give the first bank its Residency before making the engine); `start()` runs the thread,
    which follows the engine's bank."""

    def __init__(self, engine, budget_bytes: int, *, head_s: float = 0.25, ahead_s: float = 1.0,
                 period_s: float = 0.01, linger_s: float = 2.0, slice_bytes: int = 4 << 20):
        self.engine, self.budget = engine, int(budget_bytes)
        self.head_s, self.ahead_s, self.period_s, self.linger_s = head_s, ahead_s, period_s, linger_s
        self.slice_bytes = slice_bytes
        self.rounds = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._heads: dict[int, int] = {}  # id(residency) -> the start sample its heads were brought in at
        self._whole: dict[int, int] = {}  # id(residency) -> next chunk of the whole-bank preload
        self._new = np.zeros((256, 2), np.int64)
        self._old = np.zeros((256, 2), np.int64)
        self._bank: Bank | None = None

    def whole(self, bank: Bank) -> bool:
        """Whether `bank` is held whole (it fits the budget)."""
        return bank.samples.nbytes <= self.budget

    def prepare(self, bank: Bank) -> "Residency":
        """Give `bank` its Residency (if it has none) and bring in its notes' heads; returns the residency."""
        res = bank.residency
        if res is None:
            res = bank.residency = Residency(bank)
        self._warm(res)
        self._bring_heads(res)
        return res

    def _warm(self, res: Residency) -> None:
        """Compile (or load) the planning functions here, with the argument types of the thread's calls (the
        engine's own arrays: its voice columns are strided views, another signature than a copy's), so that its
        first rounds do not spend seconds on it while voices wait for their pages."""
        e, info = self.engine, res.bank.info
        want = np.zeros_like(res.want)  # plan only reads the engine's arrays
        plan(want, e.stage, e.pos, e.base_rate, e.p_idx, e.v_idx, e.sxy, e.vxy, e._target[6:8],
             res.loops, len(info.velocities), info.grid, info.note_length, e.config.loop_crossfade,
             self.ahead_s * e.fs, res.shift, e.config.max_rate)
        settle(want, np.zeros_like(res.state), np.zeros_like(res.last), 0.0, 1.0, self._new, self._old)
        heads(want, 0, info.note_length, 0, 1, res.shift)
        _touch(res.flat, 0, 1)

    def start(self) -> "Prefetcher":
        self._thread = threading.Thread(target=self._run, name="bank-prefetch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _start_sample(self, bank: Bank) -> int:
        """Where notes start at the engine's current `position` (as Engine._note_on), less the interpolator's
        run-up."""
        pos = max(1.0, float(self.engine._target[0]) * (bank.info.note_length // 2))
        return max(int(pos) - 2, 0)

    def _bring_heads(self, res: Residency) -> None:
        bank = res.bank
        start = self._start_sample(bank)
        if self._heads.get(id(res)) == start:
            return
        info = bank.info
        count = int(self.head_s * info.sample_rate) + 4
        want = np.zeros(res.bits.size, np.uint8)
        heads(want, int(np.prod(info.shape[:4])), info.note_length, start, count, res.shift)
        for c0, c1 in runs((want != 0) & (res.state != PINNED)):
            res.bring_in(c0, c1, PINNED)
        previous = self._heads.get(id(res))
        self._heads[id(res)] = start
        if previous is not None and not self.whole(bank):  # the old heads: held a while, then let go
            old = (res.state == PINNED) & (want == 0)
            res.state[old] = HELD
            res.last[old] = time.monotonic()

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                self._round()
            except Exception as e:  # never die: the audio thread only mutes what is not resident
                print(f"nsynth: bank prefetch: {e!r}", flush=True)
            self.rounds += 1
            self._stop.wait(max(0.0, self.period_s - (time.monotonic() - t0)))

    def _round(self) -> None:
        e = self.engine
        bank = e.bank
        res = bank.residency
        if res is None:
            return
        if bank is not self._bank:  # the engine switched banks: let the old one go
            if self._bank is not None and self._bank.residency is not None:
                old = self._bank.residency
                for c0, c1 in runs(old.state != NONE):
                    old.let_go(c0, c1)
                old.close()
                self._heads.pop(id(old), None)
                self._whole.pop(id(old), None)
            self._bank = bank
        if self._start_sample(bank) != self._heads.get(id(res)):
            self._bring_heads(res)
        whole = self.whole(bank)
        nxt = self._whole.get(id(res), 0)
        if whole and nxt >= res.bits.size:
            return  # all of it is in
        info = bank.info
        want = res.want
        for ahead in (self.head_s, self.ahead_s):  # what voices read soonest first (a cold start: every voice at once)
            plan(want, e.stage, e.pos, e.base_rate, e.p_idx, e.v_idx, e.sxy, e.vxy, e._target[6:8], res.loops,
                 len(info.velocities), info.grid, info.note_length, e.config.loop_crossfade,
                 ahead * e.fs, res.shift, e.config.max_rate)
            now = time.monotonic()
            nn, no = settle(want, res.state, res.last, now, self.linger_s, self._new, self._old)
            for c0, c1 in self._new[:nn].tolist():
                res.bring_in(c0, c1, HELD)
                res.last[c0:c1] = now
        if not whole:
            for c0, c1 in self._old[:no].tolist():
                res.let_go(c0, c1)
            return
        step = max(1, self.slice_bytes // (res.chunk * res.itemsize))  # the whole bank, a slice per round
        end = min(nxt + step, res.bits.size)
        for c0, c1 in runs(res.state[nxt:end] != PINNED):
            res.bring_in(nxt + c0, nxt + c1, PINNED)
        self._whole[id(res)] = end

    def wait_whole(self, bank: Bank, timeout: float) -> bool:
        """Wait until the whole bank is in (when it fits the budget); False on timeout."""
        res = bank.residency
        t_end = time.monotonic() + timeout
        while self._whole.get(id(res), 0) < res.bits.size:
            if time.monotonic() > t_end:
                return False
            time.sleep(0.01)
        return True
