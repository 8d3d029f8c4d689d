"""The shared core: what the precompute side, the device side and the hardware side all use (the `nsynth`
command line, the user-facing error, atomic file writes, progress, sustain loops, the engine's parameters),
depending on none of them. See docs/architecture.md for the layers and what may import what."""
