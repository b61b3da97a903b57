"""benchmarks/bench_transfer.py runs end to end on a tiny setting (its numbers are a benchmark's; this
checks that it still loads checkpoints and scores every model on every set after refactors)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)


def _bench():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_transfer
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return bench_transfer


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
                              "--json", str(out), "--pictures", str(tmp_path / "pics")])
    assert rc == 0
    result = json.loads(out.read_text())
    for part in ("held_out", "motorcycle"):
        rows = result[part]
        assert set(rows) >= {"snn", "relu", "constant"}
        # the same checkpoint twice scores the same; the constant is scored on the same pixels
        assert rows["snn"]["one_pixel_accuracy_pct"] == rows["relu"]["one_pixel_accuracy_pct"]
        assert rows["snn"]["valid_pixels"] == rows["constant"]["valid_pixels"] > 0
        assert 0.0 <= rows["snn"]["one_pixel_accuracy_pct"] <= 100.0
    # issue 22's targets: one per scene type seen (seed 1000 is a room), Motorcycle, pooled over the best
    # constant, the twin pooled and per type, the mean disparity error
    assert len(result["targets"]) == 6 and "targets" in capsys.readouterr().out
    assert [r["judged"] for r in result["targets"]] == [False] + [True] * 5  # one room seed: too few to judge
    for part in ("held_out", "motorcycle"):
        rows = result[part]
        # the best constant is scored on the same pixels; the distances are model minus reference
        assert rows["best_constant"]["valid_pixels"] == rows["snn"]["valid_pixels"]
        d = rows["distance"]["snn"]["best_constant"]
        assert d["one_pixel_accuracy_points"] == pytest.approx(
            rows["snn"]["one_pixel_accuracy_pct"] - rows["best_constant"]["one_pixel_accuracy_pct"])
        assert rows["distance"]["relu"]["constant"]["mean_disparity_error_px"] == pytest.approx(
            rows["relu"]["mean_disparity_error_px"] - rows["constant"]["mean_disparity_error_px"])
    assert set(result["by_scene_type"]) == {"room"} and result["seeds_per_type"] == {"room": 1}
    # one recording: its own best constant is the set's median
    rec = result["recordings"][0]
    assert rec["seed"] == 1000 and rec["kind"] == "room"
    assert rec["best_constant_px"] == pytest.approx(result["held_out"]["oracle"]["constant_px"])
    assert rec["one_pixel_accuracy_pct"]["best_constant"] == pytest.approx(
        result["held_out"]["best_constant"]["one_pixel_accuracy_pct"])
    from PIL import Image

    for name in ("room", "motorcycle"):
        with Image.open(tmp_path / "pics" / f"{name}.png") as im:
            assert im.mode == "RGB" and im.size == (2 * (4 * 128 + 12), 2 * 96)


def test_default_seeds_hold_six_of_every_scene_type():
    """The default held-out seeds: at least 6 of every scene type, none used by training or selection."""
    from collections import Counter

    bench_transfer = _bench()
    seeds = bench_transfer.balanced_seeds()
    kinds = Counter(bench_transfer.scene_type(s) for s in seeds)
    assert set(kinds) == {"room", "street", "clutter", "corridor"} and min(kinds.values()) >= 6
    assert not set(seeds) & (set(range(0, 4)) | set(range(100, 164)))
    # the type drawn is the held-out recording's
    from compiler import load_genotype

    g = load_genotype(ROOT / "genotypes" / "stereo_small.yaml")
    seq = bench_transfer.held_out_sequences(g, [seeds[0]], 0.1)[0]
    assert seq.kind == bench_transfer.scene_type(seeds[0])


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


def test_precision_diagnostics_on_known_maps():
    """bench_precision's regions and resolution ceiling on hand-made maps."""
    import numpy as np

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_precision
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    gt = np.full((12, 12), 2.0, np.float32)
    gt[:, 6:] = 8.0  # a depth edge between columns 5 and 6
    gt[0, 0] = np.nan  # no ground truth
    gt[11, 11] = 20.0  # beyond a 15 px model
    events = np.zeros((2, 12, 12), np.float32)
    events[0, 9, 2] = 1.0
    masks = bench_precision.regions(gt, events, top=15.0)
    assert masks["beyond range"].sum() == 1 and masks["beyond range"][11, 11]
    edge = masks["near a depth edge"]
    assert edge[5, 3:9].all() and not edge[5, :3].any() and not edge[5, 9].any()  # columns 5, 6 +- 2
    assert masks["interior, events near"][9, 0] and masks["interior, events near"][11, 0]
    assert masks["near a depth edge"][1, 1]  # next to a pixel without ground truth
    assert not masks["interior, events near"][6, 0] and masks["interior, no event near"][6, 0]
    valid = np.isfinite(gt) & (gt > 0)
    total = sum(m.astype(int) for m in masks.values())
    assert (total[valid] == 1).all() and (total[~valid] == 0).all()  # a partition of the valid pixels
    # a map constant on 3 x 3 blocks survives the 1/3 resolution exactly; a block without ground truth is 0
    blocks = np.kron(np.arange(16, dtype=np.float32).reshape(4, 4) + 1, np.ones((3, 3), np.float32))[None]
    low = bench_precision.low_resolution(blocks, 3)
    assert low.shape == blocks.shape and np.allclose(low[0, 4, 4], blocks[0, 4, 4])
    assert np.allclose(bench_precision.low_resolution(np.full((1, 6, 6), np.nan, np.float32), 3), 0.0)


def test_bad_genotype_edit_is_one_line(capsys):
    """--set edits the checkpoints' genotypes; a bad edit is one line on stderr and exit status 2."""
    bench_transfer = _bench()
    model = str(ROOT / "models" / "stereo_small.pt")
    assert bench_transfer.main(["--snn", model, "--set", "mixing=sideways", "--constant", "3.0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_precision_resolution_ceiling_follows_the_models_cost():
    """The ground-truth ceiling is taken at the model's own cost resolution: 1/3 of the input for
    stereo_small, 1/2 for stereo_small_fine."""
    from tests.helpers import small_genotype

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_precision
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    for stem, factor in (("stereo_small", 3), ("stereo_small_fine", 2)):
        g = small_genotype(stem)
        assert bench_precision.cost_factor(g) == factor, stem
