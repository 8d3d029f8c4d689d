"""Real-time priority for the audio thread only, or a clean refusal."""
import os
import threading

from device.realtime import configured_priority, promote_current_thread


def _in_thread(fn):
    box = {}

    def body():
        box["result"] = fn()
        box["policy"] = os.sched_getscheduler(0)
        box["priority"] = os.sched_getparam(0).sched_priority
    t = threading.Thread(target=body)
    t.start()
    t.join()
    return box


def test_promotes_only_the_calling_thread_or_changes_nothing():
    main_policy = os.sched_getscheduler(0)
    box = _in_thread(lambda: promote_current_thread(20))
    if box["result"]:
        assert box["policy"] == os.SCHED_FIFO and 1 <= box["priority"] <= 20
    else:
        assert box["policy"] == main_policy
    assert os.sched_getscheduler(0) == main_policy


def test_zero_priority_is_refused():
    box = _in_thread(lambda: promote_current_thread(0))
    assert box["result"] is False and box["policy"] != os.SCHED_FIFO


def test_priority_comes_from_the_service_environment():
    assert configured_priority({}) == 0
    assert configured_priority({"NSYNTH_RT_PRIORITY": "70"}) == 70
    assert configured_priority({"NSYNTH_RT_PRIORITY": "500"}) == 99
    assert configured_priority({"NSYNTH_RT_PRIORITY": "high"}) == 0
