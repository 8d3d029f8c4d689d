"""Real-time scheduling for the audio thread, where the system allows it (nsynth.service sets LimitRTPRIO=90)."""
from __future__ import annotations

import os


def promote_current_thread(priority: int = 70) -> bool:
    """Put the calling thread (only it: Linux applies pid 0 to the caller's thread) on SCHED_FIFO at `priority`,
    capped by RLIMIT_RTPRIO for an unprivileged process. False (and nothing changed) when not allowed."""
    if not hasattr(os, "sched_setscheduler"):
        return False
    try:
        import resource
        soft, _ = resource.getrlimit(resource.RLIMIT_RTPRIO)
        if os.geteuid() != 0 and soft != resource.RLIM_INFINITY:
            priority = min(priority, soft)
        if priority < 1:
            return False
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        return True
    except (OSError, ValueError):
        return False
