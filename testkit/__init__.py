"""Reference implementations and test-signal generators shared by tests/ and bench/: the oracles a test holds the
product to and the benchmarks measure it against (the textbook WaveNet generator, exact bf16 matmul emulation, the
SFZ export's harmonic bank and its reader, hostile MIDI bytes). Never imported by the product (nsynth, precompute,
device, hardware: an import-linter contract in pyproject.toml) and not shipped in the wheel."""
