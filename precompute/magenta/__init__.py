"""Magenta's released NSynth WaveNet checkpoint: a TensorFlow-free V2 checkpoint reader (tfckpt), the variable
mapping onto our model (mapping), and `nsynth import-magenta` (commands)."""
