"""Real-time scheduling for the audio thread, where the system allows it: nsynth.service sets LimitRTPRIO=90 and
NSYNTH_RT_PRIORITY=70; elsewhere (a desktop, the tests) it stays off unless asked for."""
from __future__ import annotations

import os

try:  # imported here, not in the audio callback's first call: loading it from disk took 0.4 ms
    import resource
except ImportError:  # pragma: no cover - not a Unix
    resource = None

GIL_SWITCH_S = 0.0005  # sys.setswitchinterval while playing: the audio callback waits at most this for the GIL


def configured_priority(environ=None) -> int:
    """NSYNTH_RT_PRIORITY (1..99), or 0 = leave the scheduling alone."""
    value = (os.environ if environ is None else environ).get("NSYNTH_RT_PRIORITY", "0")
    return max(0, min(99, int(value))) if value.strip().isdigit() else 0


def promote_current_thread(priority: int) -> bool:
    """Put the calling thread (only it: Linux applies pid 0 to the caller's thread) on SCHED_FIFO at `priority`,
    capped by RLIMIT_RTPRIO for an unprivileged process. False (and nothing changed) when off or not allowed."""
    if priority < 1 or not hasattr(os, "sched_setscheduler") or resource is None:
        return False
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_RTPRIO)
        if os.geteuid() != 0 and soft != resource.RLIM_INFINITY:
            priority = min(priority, soft)
        if priority < 1:
            return False
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        return True
    except (OSError, ValueError):
        return False


def promote_threads(priority: int, threads=None) -> int:
    """Put the process's other Python threads (default: all that run now) on SCHED_FIFO at `priority`, below the
    audio thread's: a thread that holds the GIL is then not preempted by the rest of the system while the audio
    callback waits for it. Returns how many were moved (0 when off or not allowed)."""
    import threading
    if priority < 1 or not hasattr(os, "sched_setscheduler"):
        return 0
    moved = 0
    for t in threads if threads is not None else threading.enumerate():
        tid = getattr(t, "native_id", None)
        if not tid:
            continue
        try:
            os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(priority))
            moved += 1
        except (OSError, ValueError):
            pass
    return moved
