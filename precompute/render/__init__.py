"""Rendering a sample bank: corners -> embeddings -> grid -> plan -> shards (resumable, scale-out) -> bank.

Modules: grid (weights, unique cells), plan (notes, seeds, shards), job (the resumable job folder), backends
(torch / onnxruntime), scale (torchrun, Ray), post (numpy post-processing, loops), assemble (the bank),
timbre_map (the PNG), render (`nsynth render`).
"""
