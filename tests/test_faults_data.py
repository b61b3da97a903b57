"""Hostile inputs to the data layer (issue 23, class 2): every event lost is counted or refused.
Rectification maps with NaN/inf or values far outside the image are refused when read, naming the file
and the count (they used to drop events as "outside after rectification", exempt from --max-dropped);
a DSEC ``ms_to_idx`` that is corrupt between the spots checked at open is caught at the read it would
have made lose events."""

from __future__ import annotations

import os

import numpy as np
import pytest
from test_data_dsec import identity_map, ms_to_idx, write_sequence
from test_data_mvsec import H, W, write_maps, write_mvsec_like

from runtime.data.events import DataError, make_events
from runtime.data.sources import open_recording, windows


@pytest.mark.parametrize("value, words", [(np.nan, "NaN or infinite"), (np.inf, "NaN or infinite"),
                                          (1e7, "outside the image")])
def test_mvsec_maps_with_bad_values_are_refused_naming_the_file(tmp_path, value, words):
    data = write_mvsec_like(str(tmp_path))
    calib = tmp_path / "calib"
    write_maps(str(calib))
    path = calib / "indoor_flying_left_x_map.txt"
    m = np.loadtxt(path)
    m[: H // 2] = value  # half the map
    np.savetxt(path, m)
    with pytest.raises(DataError, match=words) as info:
        open_recording(data, calib=str(calib))
    assert str(path) in str(info.value) and f"{(H // 2) * W:,} of {H * W:,}" in str(info.value)


def _dsec(folder, maps=None, index=None):
    rng = np.random.default_rng(0)
    n, h, w = 3000, 48, 64
    t = np.sort(rng.integers(0, 300_000, n))
    ev = make_events(rng.integers(0, w, n), rng.integers(0, h, n), t, rng.choice([-1, 1], n))
    write_sequence(str(folder), {"left": ev, "right": ev}, h, w, maps=maps)
    return ev, h, w


def test_dsec_maps_with_non_finite_values_are_refused(tmp_path):
    m = identity_map(48, 64)
    m[5, 7, 0] = np.nan
    m[9, 9, 1] = -np.inf
    _dsec(tmp_path / "seq", maps=m)
    with pytest.raises(DataError, match=r"rectify_map.h5: 2 of 6,144 values of rectify_map are NaN or infinite"):
        open_recording(str(tmp_path / "seq"))


def test_a_dsec_ms_to_idx_corrupt_between_the_spot_checks_is_caught_when_read(tmp_path):
    import h5py

    ev, h, w = _dsec(tmp_path / "seq", maps=identity_map(48, 64))
    path = os.path.join(tmp_path, "seq", "events", "left", "events.h5")
    with h5py.File(path, "r+") as f:
        index = f["ms_to_idx"][:]
        probe = set(np.unique(np.linspace(0, len(index) - 1, 9).astype(np.int64)).tolist())
        k = next(k for k in range(len(index) // 2, len(index)) if k not in probe and k + 1 not in probe)
        index[k] = index[k + 1] + 5  # the events of ms k and a few more skipped
        index[k + 1:] = np.maximum(index[k + 1:], index[k])
        del f["ms_to_idx"]
        f["ms_to_idx"] = index
    rec = open_recording(str(tmp_path / "seq"))
    with pytest.raises(DataError, match="'ms_to_idx'.*does not match the event times.*would be lost"):
        for _ in windows(rec, window_us=1000, bins=1):  # a window boundary at every millisecond
            pass
    assert ms_to_idx  # the writer's own index is the uncorrupted one (imported for the layout)
