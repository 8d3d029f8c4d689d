"""The instrument (numpy only, never torch): bank reader, voice engine, MIDI, and the `nsynth` CLI."""
