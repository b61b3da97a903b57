"""MVSEC-layout files: our synthetic ones and hand-built ones shaped like MVSEC's, and bad files."""

import os

import h5py
import numpy as np
import pytest

from runtime.data.events import DataError, make_events, to_mvsec
from runtime.data.mvsec import INDOOR_FLYING_FB, MVSEC_FB, MvsecRecording
from runtime.data.recording import ColumnReader, scan_index
from runtime.data.sources import open_recording, windows
from runtime.data.synth import SynthConfig, write_mvsec

H, W = 12, 16
T0 = 1_504_645_177.0  # MVSEC clocks are unix time in seconds


def write_maps(folder, family="indoor_flying", dx=0.0, dy=0.0, shape=(H, W)):
    """MVSEC's calibration text maps of one family: x_rect = x + dx, y_rect = y + dy."""
    os.makedirs(folder, exist_ok=True)
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    for side in ("left", "right"):
        np.savetxt(os.path.join(folder, f"{family}_{side}_x_map.txt"), xs + dx)
        np.savetxt(os.path.join(folder, f"{family}_{side}_y_map.txt"), ys + dy)
    return folder


def write_mvsec_like(folder, name="indoor_flying1", events=None, depth=None, depth_ts=None, extra=None,
                     maps=False):
    """A tiny file pair in MVSEC's layout (raw events, like MVSEC's); returns the data path.

    ``maps``: also write identity rectification maps of the file's family beside it."""
    rng = np.random.default_rng(0)
    if events is None:
        n = 400
        t = T0 + np.sort(rng.uniform(0, 0.2, n))
        events = np.stack([rng.integers(0, W, n), rng.integers(0, H, n), t, rng.choice([-1.0, 1.0], n)], 1)
    data = os.path.join(folder, f"{name}_data.hdf5")
    with h5py.File(data, "w") as f:
        for side in ("left", "right"):
            f[f"davis/{side}/events"] = events
            f[f"davis/{side}/image_raw"] = np.zeros((3, H, W), np.uint8)
            f[f"davis/{side}/image_raw_ts"] = T0 + np.array([0.0, 0.1, 0.2])
        for key, value in (extra or {}).items():
            f[key] = value
    if depth is not False:
        if depth is None:
            depth = np.full((4, H, W), 2.0, np.float32)
            depth[:, 0, :] = np.nan
        if depth_ts is None:
            depth_ts = T0 + 0.05 * np.arange(1, len(depth) + 1)
        with h5py.File(os.path.join(folder, f"{name}_gt.hdf5"), "w") as f:
            f["davis/left/depth_image_rect"] = depth
            f["davis/left/depth_image_rect_ts"] = depth_ts
    if maps:
        write_maps(folder, name.rstrip("0123456789"))
    return data


def test_synthetic_files_read_back_like_memory(tmp_path):
    data, _ = write_mvsec(SynthConfig(seconds=0.5, seed=2, height=48, width=64), tmp_path)
    mem = open_recording(seed=2, seconds=0.5, height=48, width=64)
    with open_recording(data) as rec:
        assert isinstance(rec, MvsecRecording)
        assert rec.fb == pytest.approx(mem.fb) and (rec.height, rec.width) == (48, 64)
        np.testing.assert_array_equal(rec.gt_timestamps_us, mem.gt_timestamps_us)
        ws_file, ws_mem = list(windows(rec)), list(windows(mem))
        assert len(ws_file) == len(ws_mem) == 10
        for a, b in zip(ws_file, ws_mem, strict=True):
            assert (a.t0_us, a.t1_us) == (b.t0_us, b.t1_us)
            np.testing.assert_array_equal(a.left, b.left)
            np.testing.assert_array_equal(a.right, b.right)
            np.testing.assert_allclose(a.disparity, b.disparity, rtol=1e-6)
        np.testing.assert_array_equal(rec.events("left", 0, 10**7), mem.events("left", 0, 10**7))
        ts, img = rec.image("left", 2)
        assert ts == 100_000 and img.shape == (48, 64)
        assert sum(rec.stats.values()) == 0
        assert rec.rectified and rec.rectification.startswith("rectified already")  # no maps needed


def test_mvsec_like_file_constants_and_ground_truth(tmp_path):
    path = write_mvsec_like(tmp_path, maps=True)
    with open_recording(path) as rec:  # the maps beside the file are found
        assert rec.fb == INDOOR_FLYING_FB  # from the indoor_flying name
        assert rec.rectified and rec.rectification.startswith(f"maps {tmp_path}")
        assert rec.t_start_us == int(T0 * 1e6)
        d = rec.disparity(1)
        assert d.dtype == np.float32 and np.isnan(d[0]).all()
        np.testing.assert_allclose(d[1:], INDOOR_FLYING_FB / 2.0, rtol=1e-6)
        ws = list(windows(rec))
        assert [w.gt_index for w in ws] == [0, 1, 2, 3]
        n_events = sum(len(rec.events("left", w.t0_us, w.t1_us)) for w in ws)
        assert n_events == 400  # all 400 events lie in the 4 windows [T0, T0 + 0.2 s)
        assert rec.events("left", ws[0].t0_us, ws[0].t1_us)["t"][0] >= int(T0 * 1e6)


@pytest.mark.parametrize("family", ["indoor_flying", "outdoor_day", "outdoor_night"])
def test_every_mvsec_family_has_its_fb(tmp_path, family):
    # deliberately changed: outdoor_day / outdoor_night used to have no fB; DDES's constants now
    path = write_mvsec_like(tmp_path, name=f"{family}2", maps=True)
    with open_recording(path) as rec:
        assert rec.fb == MVSEC_FB[family] and family in rec.fb_source
        np.testing.assert_allclose(rec.disparity(0)[1:], MVSEC_FB[family] / 2.0, rtol=1e-6)
    assert MVSEC_FB == {"indoor_flying": 19.941772, "outdoor_day": 19.635287, "outdoor_night": 19.651191}


def test_unknown_fb_needs_the_argument(tmp_path):
    path = write_mvsec_like(tmp_path, name="car")  # no MVSEC family in the name
    with open_recording(path, rectify=False) as rec:
        assert rec.fb is None
        with pytest.raises(DataError, match="pass fb="):
            rec.disparity(0)
    with open_recording(path, fb=10.0, rectify=False) as rec:
        assert np.nanmax(rec.disparity(0)) == pytest.approx(5.0) and rec.fb_source == "given (--fb)"
    with open_recording(write_mvsec_like(tmp_path, maps=True), fb=10.0) as rec:  # --fb beats the family
        assert rec.fb == 10.0


def test_rectification_maps_from_calibration_text(tmp_path):
    calib = write_maps(tmp_path / "calib", dx=2.2, dy=-0.9)  # shift right by 2 px and up by 1 px
    write_maps(tmp_path / "calib", family="outdoor_day", dx=-5)  # another family's maps beside them
    ev = np.array([[3, 5, T0 + 0.01, 1], [W - 1, 5, T0 + 0.02, -1], [4, 0, T0 + 0.03, 1]], dtype=np.float64)
    path = write_mvsec_like(tmp_path, events=ev, depth=False)
    with open_recording(path, calib=calib) as rec:  # the indoor_flying maps, chosen by the file name
        got = rec.events("left", int(T0 * 1e6), int(T0 * 1e6) + 100_000)
        np.testing.assert_array_equal(got["x"], [5])  # 3 + 2.2 -> 5
        np.testing.assert_array_equal(got["y"], [4])  # 5 - 0.9 -> 4
        assert rec.stats["outside_after_rectify"] == 2  # x = 17 and y = -1 leave the image


def test_rectification_map_of_wrong_shape_names_the_file(tmp_path):
    calib = write_maps(tmp_path / "calib", shape=(3, 4))
    path = write_mvsec_like(tmp_path, depth=False)
    with pytest.raises(DataError, match=r"indoor_flying_left_x_map.txt: map has shape \(3, 4\), expected \(12, 16\)"):
        open_recording(path, calib=calib)
    with pytest.raises(DataError, match=r"no indoor_flying_left_x_map.txt for this indoor_flying recording"):
        open_recording(path, calib=write_maps(tmp_path / "other", family="outdoor_day"))


def test_raw_events_without_maps_are_refused_unless_no_rectify(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    path = write_mvsec_like(data)
    with pytest.raises(DataError) as err:
        open_recording(path)
    msg = str(err.value)
    assert "\n" not in msg and "raw MVSEC events need rectification" in msg
    assert "indoor_flying_{left,right}_{x,y}_map.txt" in msg and "--calib DIR" in msg and "--no-rectify" in msg
    with open_recording(path, rectify=False) as rec:
        assert not rec.rectified and rec.rectification.startswith("none")
    write_maps(tmp_path / "indoor_flying_calib", dx=1.0)  # the unzipped calibration beside the data folder
    with open_recording(path) as rec:
        assert rec.rectification.startswith(f"maps {tmp_path / 'indoor_flying_calib'}")
        raw = rec.events("left", 0, 2**62)
    with open_recording(path, rectify=False) as rec:
        moved = rec.events("left", 0, 2**62)
    inside = moved["x"] + 1 < W
    np.testing.assert_array_equal(raw["x"], moved["x"][inside] + 1)


def test_ground_truth_rows_behind_dropped_maps(tmp_path):
    ts = T0 + np.array([0.05, np.nan, 0.1, 0.15])  # row 1 has no usable time
    path = write_mvsec_like(tmp_path, depth_ts=ts, maps=True)
    with open_recording(path) as rec:
        assert rec.stats["gt_dropped"] == 1
        np.testing.assert_array_equal(rec.gt_rows, [0, 2, 3])  # DDES frame k is row k, not index k


def test_reader_reads_only_the_rows_a_window_needs():
    n = 1_000_000
    t = np.arange(n, dtype=np.int64) * 10  # 100 kHz for 10 s
    ev = make_events(np.zeros(n), np.zeros(n), t, np.ones(n))
    read_rows = []

    def read(lo, hi):
        read_rows.append(hi - lo)
        s = ev[lo:hi]
        return s["x"], s["y"], s["t"], s["p"]

    index = scan_index(n, lambda lo, hi: t[lo:hi], block=4096)
    reader = ColumnReader(read, index, height=1, width=1, stats={})
    got = reader.events(5_000_000, 5_050_000)  # 50 ms in the middle
    assert len(got) == 5000 and got["t"][0] == 5_000_000 and got["t"][-1] == 5_049_990
    assert read_rows == [read_rows[0]] and read_rows[0] <= 5000 + 2 * 4096


# ---- the bad-data catalogue ------------------------------------------------------------------


def test_missing_dataset_names_file_and_key(tmp_path):
    path = tmp_path / "x_data.hdf5"
    with h5py.File(path, "w") as f:
        f["davis/left/events"] = np.zeros((3, 4))
    with pytest.raises(DataError, match=r"x_data.hdf5: missing dataset 'davis/right/events'"):
        open_recording(path)


def test_wrong_shape_names_file_and_key(tmp_path):
    path = tmp_path / "x_data.hdf5"
    with h5py.File(path, "w") as f:
        f["davis/left/events"] = np.zeros((3, 3))
        f["davis/right/events"] = np.zeros((3, 4))
    with pytest.raises(DataError, match=r"dataset 'davis/left/events' has shape \(3, 3\), expected \(N, 4\)"):
        open_recording(path)


def test_ground_truth_shape_and_length_mismatch(tmp_path):
    path = write_mvsec_like(tmp_path, depth=np.zeros((2, H + 1, W), np.float32))
    with pytest.raises(DataError, match=r"_gt.hdf5: dataset 'davis/left/depth_image_rect' has shape"):
        open_recording(path)
    path = write_mvsec_like(tmp_path, depth=np.zeros((2, H, W), np.float32), depth_ts=np.array([1.0]))
    with pytest.raises(DataError, match="1 timestamps for 2 depth maps"):
        open_recording(path)


def test_bad_events_are_dropped_and_counted(tmp_path):
    good = make_events([1, 2, 3, 4], [1, 1, 1, 1], [10, 20, 30, 40], [1, -1, 1, -1])
    arr = to_mvsec(good)
    arr[:, 2] += T0
    bad = np.array(
        [
            [W + 3, 1, T0 + 25e-6, 1],  # outside the sensor
            [2, np.nan, T0 + 26e-6, 1],  # NaN
            [2, 2, T0 + 5e-6, 1],  # time going backwards
        ]
    )
    rows = np.concatenate([arr[:2], bad, arr[2:]])
    path = write_mvsec_like(tmp_path, events=rows, depth=False)
    with open_recording(path, rectify=False) as rec:  # raw pixels, checked against the sensor
        got = rec.events("left", 0, 2**62)
        np.testing.assert_array_equal(got["x"], [1, 2, 3, 4])
        assert rec.stats["out_of_sensor"] == 1 and rec.stats["non_finite"] == 1
        assert rec.stats["time_reversed"] == 1
        rec.events("left", 0, 2**62)  # reading again does not count again
        assert rec.stats["time_reversed"] == 1


def test_file_without_usable_times_is_refused(tmp_path):
    ev = np.array([[1, 1, np.nan, 1.0], [2, 2, np.inf, -1.0]])
    path = tmp_path / "y_data.hdf5"
    with h5py.File(path, "w") as f:
        f["davis/left/events"] = ev
        f["davis/right/events"] = ev
    with pytest.raises(DataError, match="no events with a finite timestamp"):
        open_recording(path)


def test_non_hdf5_file_is_one_line_error(tmp_path):
    path = tmp_path / "notes_data.hdf5"
    path.write_text("this is not HDF5\n" * 10)
    with pytest.raises(DataError) as err:
        open_recording(path)
    msg = str(err.value)
    assert "notes_data.hdf5: not a readable HDF5 file" in msg and "\n" not in msg


def test_truncated_file_is_one_line_error(tmp_path):
    data, _ = write_mvsec(SynthConfig(seconds=0.3, height=16, width=16), tmp_path, "cut")
    size = os.path.getsize(data)
    with open(data, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(DataError) as err:
        with open_recording(data) as rec:
            list(windows(rec))
    msg = str(err.value)
    assert msg.startswith(str(data)) and "truncated" in msg and "\n" not in msg


def test_missing_file_and_gt_file_given_instead(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        open_recording(tmp_path / "nothing_data.hdf5")
    write_mvsec_like(tmp_path)
    with pytest.raises(DataError, match="open the matching \\*_data.hdf5"):
        open_recording(tmp_path / "indoor_flying1_gt.hdf5")
