"""Every test decodes in fp32 whatever the CPU has (bf16 hardware makes bf16 the default, precompute/generate.py's
decode_dtype): the same codes on every machine, here and in the commands the tests run. A test of the dtype
choice itself removes NSYNTH_DTYPE."""
import os

os.environ["NSYNTH_DTYPE"] = "float32"
