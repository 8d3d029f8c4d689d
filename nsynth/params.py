"""The instrument's parameters, one source for the engine, the board's mapping and screen, MIDI's CC map and the
SFZ export: all normalised 0..1 like the original's pots (their meaning: device/engine.py)."""

POT_PARAMS = ("position", "attack", "decay", "sustain", "release", "volume")  # the board's six pots, in its order
XY_PARAMS = ("x", "y")  # the position on the timbre grid (0 = left / bottom)
PARAMS = POT_PARAMS + XY_PARAMS  # the order the engine holds them in
DEFAULT_PARAMS = {"position": 0.0, "attack": 0.0, "decay": 0.5, "sustain": 0.8, "release": 0.2, "volume": 0.8,
                  "x": 0.5, "y": 0.5}
