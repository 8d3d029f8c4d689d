import torch

# One thread: deterministic, and no OpenMP spin-waiting when the machine's cores are shared.
torch.set_num_threads(1)
