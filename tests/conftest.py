import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

# The cache of synthetic recordings (training.datacache) stays out of the tests: each test generates its
# data, and nothing is written to the user's cache; tests/test_data_cache.py turns it on in a temporary folder.
os.environ["SNN_DATA_CACHE"] = "off"

# Test shapes are tiny: one thread is faster than two and does not collapse when the machine is busy.
torch.set_num_threads(1)
