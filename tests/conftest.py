import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

# Test shapes are tiny: one thread is faster than two and does not collapse when the machine is busy.
torch.set_num_threads(1)
