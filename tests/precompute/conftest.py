import os

import torch

# One thread: deterministic, and no OpenMP spin-waiting when the machine's cores are shared. The commands choose
# their threads (precompute/threads.py) from OMP_NUM_THREADS when it is set: one here too, and in subprocesses.
torch.set_num_threads(1)
os.environ["OMP_NUM_THREADS"] = "1"
