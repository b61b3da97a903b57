"""open_recording and windows on the built-in synthetic source."""


import numpy as np
import pytest

from runtime.data.sources import SyntheticRecording, Window, open_recording, windows
from runtime.data.tiling import window_ends

SMALL = dict(height=48, width=64)


@pytest.fixture(scope="module")
def rec():
    with open_recording(seed=1, seconds=0.6, **SMALL) as r:
        yield r


def test_recording_attributes(rec):
    assert isinstance(rec, SyntheticRecording)
    assert (rec.height, rec.width) == (48, 64)
    assert rec.fb == pytest.approx(19.941772 * 64 / 346)
    assert rec.gt_timestamps_us.dtype == np.int64 and len(rec.gt_timestamps_us) == 12
    assert (rec.t_start_us, rec.t_end_us) == (0, 600_000)
    assert sum(rec.stats.values()) == 0


def test_events_slice_half_open(rec):
    ev = rec.events("left", 100_000, 150_000)
    assert len(ev) > 0 and ev["t"].min() >= 100_000 and ev["t"].max() < 150_000
    both = rec.events("left", 100_000, 200_000)
    assert len(both) == len(ev) + len(rec.events("left", 150_000, 200_000))
    with pytest.raises(ValueError, match="side"):
        rec.events("middle", 0, 1)


def test_disparity_is_fb_over_depth_nan_invalid(rec):
    d = rec.disparity(3)
    assert d.dtype == np.float32 and d.shape == (48, 64)
    assert np.isnan(d).any() and np.isfinite(d).mean() > 0.5
    np.testing.assert_allclose(d, rec.fb / rec.depth(3), rtol=1e-6)
    with pytest.raises(IndexError):
        rec.disparity(12)


def test_windows_end_at_ground_truth(rec):
    ws = list(windows(rec))
    assert len(ws) == 12
    w = ws[2]
    assert isinstance(w, Window)
    assert (w.index, w.gt_index, w.t0_us, w.t1_us) == (2, 2, 100_000, 150_000)
    assert w.left.shape == (5, 48, 64) and w.left.dtype == np.float32
    assert set(np.unique(w.left)) <= {-1.0, 0.0, 1.0} and np.abs(w.left).sum() > 0
    np.testing.assert_array_equal(w.disparity, rec.disparity(2))


def test_windows_start_and_limit(rec):
    ws = list(windows(rec, start_us=260_000, max_windows=3, encoding="count", bins=2))
    assert [w.t1_us for w in ws] == [350_000, 400_000, 450_000]
    assert [w.gt_index for w in ws] == [6, 7, 8]
    assert ws[0].right.shape == (4, 48, 64)
    ev = rec.events("right", 300_000, 350_000)
    assert ws[0].right.sum() == len(ev)


def test_windows_tile_without_ground_truth(rec):
    class NoGt(SyntheticRecording):
        pass

    bare = NoGt(rec.data)
    bare.gt_timestamps_us = None
    ends, idx = window_ends(bare, window_us=200_000)
    assert idx is None and list(ends) == [200_000, 400_000, 600_000]
    ws = list(windows(bare, window_us=200_000))
    assert [w.disparity for w in ws] == [None, None, None]


def test_default_synthetic_is_at_mvsec_size():
    # Its speed is a benchmark's business (benchmarks/bench_data.py measures the generator), not a
    # timed test's: the ray-cast world is ~5x slower than the layered one and CI machines vary.
    with open_recording(seconds=1.0) as r:
        assert (r.height, r.width) == (260, 346)
        first = next(windows(r))
    assert first.left.shape == (5, 260, 346)


def test_unknown_options_are_named():
    with pytest.raises(TypeError, match="'nosie_hz' \\(did you mean 'noise_hz'\\?\\)"):
        open_recording(nosie_hz=1.0)
    with pytest.raises(TypeError, match="synthetic"):
        open_recording("x_data.hdf5", noise_hz=1.0)
