"""Long jobs show progress with a rate and an ETA (nsynth/progress.py, drawn by tqdm)."""
import io
import re

from nsynth.progress import ETA


def test_progress_names_the_job_counts_and_ends_at_the_total():
    out = io.StringIO()
    eta = ETA("render", unit="notes", stream=out, every=0)
    for done in range(1, 41):
        eta(done, 40)
    lines = [s.rstrip() for s in re.split(r"[\r\n]", out.getvalue()) if s.strip()]  # tqdm pads a shorter line
    assert re.fullmatch(r"render: 40/40 notes \([0-9.,]+k? notes/s, ETA 00:00\)", lines[-1]), lines[-1]
    assert any(re.fullmatch(r"render: \d+/40 notes \(.*, ETA \d\d:\d\d\)", s) for s in lines[:-1])
    assert out.getvalue().endswith("\n") and eta.bar is None  # closed at the total
    eta(1, 7)  # a new total: a new bar
    assert eta.bar is not None and eta.bar.total == 7


def test_a_slow_job_still_counts_notes_per_second():
    """Under one note a second tqdm would turn the rate over ("1.20s/ notes"): the line keeps notes/s."""
    import time

    out = io.StringIO()
    eta = ETA("render", unit="notes", stream=out, every=0)
    eta(0, 4)
    for done in range(1, 4):
        time.sleep(1.2)
        eta(done, 4)
    lines = [s.strip() for s in re.split(r"[\r\n]", out.getvalue()) if s.strip()]
    assert re.fullmatch(r"render: 3/4 notes \( ?0\.[0-9]+ notes/s, ETA 00:0\d\)", lines[-1]), lines[-1]
