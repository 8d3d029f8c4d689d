import subprocess
import sys


def test_datasets_and_corners_do_not_need_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import precompute.datasets.nsynth, precompute.datasets.split, precompute.datasets.soundfont\n"
            "import precompute.corners\n"
            "from precompute.corners import load_corner\n"
            "c = load_corner('sf2:0', pitches=[60], velocities=[100])\n"
            "assert c.audio.shape == (1, 1, 64000)\n")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
