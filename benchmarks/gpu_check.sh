#!/usr/bin/env bash
# The prepared GPU check (benchmarks/gpu_check.py): training steps on CUDA with a falling loss, CUDA and
# CPU outputs of the same steps, full-size steps/s (eager, CUDA graphs, torch.compile), and the exported
# ONNX graph on ONNX Runtime's CUDA and TensorRT providers at the paper and full widths (steps/s, spike
# counts against the CPU provider; reported as not available where the image lacks onnx/onnxruntime-gpu);
# one table, under 5 minutes. Run from the checkout on the lent machine with the image's python3 and nothing installed:
#     bash benchmarks/gpu_check.sh            # or: bash benchmarks/gpu_check.sh --no-compile
# Dry run on a CPU (what the tests run): python3 benchmarks/gpu_check.py --device cpu --size small --no-compile
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=.
python3 - <<'PY'
import importlib.util, sys
missing = [m for m in ("torch", "numpy", "yaml", "networkx") if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"error: this python3 lacks {', '.join(missing)} (the check installs nothing)")
PY
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec timeout 290 python3 benchmarks/gpu_check.py --device cuda "$@"
