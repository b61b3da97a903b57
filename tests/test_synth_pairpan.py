"""A real stereo pair with ground truth turned into an event recording (runtime.data.synth.pairpan)."""

import numpy as np
import pytest

from runtime.data.synth.pairpan import (
    PairPanScene,
    motorcycle_pair,
    motorcycle_recording,
    pair_config,
    pan_scene,
    reduce_pair,
)


def test_reduce_pair_scales_disparity_and_drops_edges_and_holes():
    rng = np.random.default_rng(0)
    left = rng.random((16, 32))
    disp = np.full((16, 32), 8.0)
    disp[0:2, 0:2] = np.nan  # a hole: its block becomes invalid
    disp[8:16, 16:32] = 20.0  # a depth edge at column 16, row 8: blocks straddling it are invalid
    disp[8:16, 15] = 14.0  # ... a block spanning 8..14 px at factor 2 (> 2 source px of range)
    l_r, r_r, d_r = reduce_pair(left, left, disp, 2.0)
    assert l_r.shape == (8, 16) and d_r.shape == (8, 16)
    np.testing.assert_allclose(l_r[0, 0], left[0:2, 0:2].mean(), rtol=1e-6)
    assert np.isnan(d_r[0, 0]) and np.isnan(d_r[4, 7])
    assert d_r[1, 1] == pytest.approx(4.0) and d_r[6, 12] == pytest.approx(10.0)


def test_motorcycle_pair_convention():
    left, right, disp = motorcycle_pair()
    yy, xx = np.nonzero(np.isfinite(disp))
    pick = np.random.default_rng(1).choice(len(yy), 5000)
    yy, xx = yy[pick], xx[pick]
    x_r = np.round(xx - disp[yy, xx]).astype(int)
    ok = x_r >= 0
    err = np.abs(left[yy[ok], xx[ok]] - right[yy[ok], x_r[ok]])
    wrong = np.abs(left[yy[ok], xx[ok]] - right[yy[ok], np.clip(x_r[ok] + 6, 0, left.shape[1] - 1)])
    assert np.median(err) < 0.5 * np.median(wrong)


@pytest.fixture(scope="module")
def small_pan():
    return pan_scene(*motorcycle_pair(), pair_config(24, 32, seconds=0.5))


@pytest.mark.parametrize("t_us", [0, 300_000])
def test_panned_views_match_at_the_ground_truth_disparity(small_pan, t_us):
    scene = small_pan
    left, right = scene.render(t_us, "left"), scene.render(t_us, "right")
    depth = scene.ground_truth(t_us)
    valid = np.isfinite(depth)
    assert valid.mean() > 0.1  # at 32 px wide a reduced pixel holds 17x17 source pixels: many depth edges
    d = scene.fb / depth[valid]
    d_max = scene.config.focal_baseline / scene.config.min_depth_m
    assert d.max() <= d_max * 1.001 and d.min() > 0
    yy, xx = np.nonzero(valid)
    xr = xx - d
    x0 = np.floor(xr).astype(int)
    f = xr - x0
    match = right[yy, x0] * (1 - f) + right[yy, np.minimum(x0 + 1, 31)] * f
    shifted = right[yy, np.clip(x0 + 3, 0, 31)]
    assert np.median(np.abs(left[valid] - match)) < 0.5 * np.median(np.abs(left[valid] - shifted))


def test_pan_moves_both_views_together(small_pan):
    a, b = small_pan.render(0, "left"), small_pan.render(400_000, "left")
    assert np.abs(a - b).mean() > 1e-3  # the window moves
    assert small_pan.max_speed_px() > 0


def test_window_larger_than_the_pair_is_refused():
    config = pair_config(24, 32, seconds=0.5)
    with pytest.raises(ValueError, match="at least 2 px larger"):
        PairPanScene(np.ones((20, 40)), np.ones((20, 40)), np.ones((20, 40)), config)


def test_motorcycle_recording_has_events_and_ground_truth():
    rec = motorcycle_recording(24, 32, seconds=0.3)
    assert len(rec.data.events["left"]) > 100 and len(rec.data.events["right"]) > 100
    assert len(rec.gt_timestamps_us) == 6
    disp = rec.disparity(3)
    assert np.isfinite(disp).mean() > 0.1
