"""An exported SFZ instrument played by a real SFZ player (sfizz, through the pysfizz wheel) against the engine
(`nsynth render-midi`) on the same MIDI file.

A synthetic bank whose every stream (cell x velocity layer) is one harmonic of a 62.5 Hz tone (so each stream's
weight can be read off the spectrum; testkit/sfz_player.py) is exported with `--exact-cc`; a MIDI file plays notes
at several X/Y (CC 16 and 17) positions and velocities. Per note, in the held part, the amplitude of each harmonic
gives each stream's weight in either render; reported: the largest weight difference between sfizz and the engine
(after one level factor for the whole render), sfizz's and the engine's largest difference from the bilinear x
velocity weights, the level ratio, and the time to render each.

    python bench/sfz_player.py [--grid 3] [--out DIR]

Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from device.bank import open_bank  # noqa: E402
from testkit.sfz_player import NOTES, compare  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--grid", type=int, default=3)
    ap.add_argument("--out", help="keep the bank, .sfz, song and renders here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.out or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        result = compare(folder, args.grid)
        assert open_bank(folder / "bank").info.grid == args.grid
    weights = result.pop("weights")
    for i, note in enumerate(NOTES):
        print(f"note {note}: max |engine - sfizz| "
              f"{np.abs(np.array(weights['engine'][i]) - np.array(weights['sfizz'][i])).max():.4f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
