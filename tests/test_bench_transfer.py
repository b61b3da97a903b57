"""benchmarks/bench_transfer.py runs end to end on a tiny setting (its numbers are a benchmark's; this
checks that it still loads checkpoints and scores every model on every set after refactors)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)


def test_bench_transfer_tiny(tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_transfer
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    out = tmp_path / "t.json"
    model = str(ROOT / "models" / "stereo_small.pt")
    rc = bench_transfer.main(["--snn", model, "--relu", model, "--seeds", "1000", "--seconds", "0.4",
                              "--moto-seeds", "0", "--moto-seconds", "0.4", "--constant", "3.0",
                              "--json", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    for part in ("held_out", "motorcycle"):
        rows = result[part]
        assert set(rows) >= {"snn", "relu", "constant"}
        # the same checkpoint twice scores the same; the constant is scored on the same pixels
        assert rows["snn"]["one_pixel_accuracy_pct"] == rows["relu"]["one_pixel_accuracy_pct"]
        assert rows["snn"]["valid_pixels"] == rows["constant"]["valid_pixels"] > 0
        assert 0.0 <= rows["snn"]["one_pixel_accuracy_pct"] <= 100.0
    assert len(result["targets"]) == 3 and "targets" in capsys.readouterr().out


def test_training_disparities_are_the_training_ground_truth():
    """The constant's value comes from the training data's ground truth, as training.data makes it."""
    from types import SimpleNamespace

    import numpy as np

    from compiler import load_genotype

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_transfer
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    g = load_genotype(ROOT / "genotypes" / "stereo_small.yaml")
    d = bench_transfer.training_disparities(SimpleNamespace(train_seeds=[100], seconds=0.2), g)
    # 0.2 s at the ground-truth rate: 4 maps of the 112 x 144 training recording (96 x 128 + margin 16)
    assert d.ndim == 1 and 0 < d.size <= 4 * 112 * 144
    assert np.isfinite(d).all() and (d > 0).all()
