"""DSEC-layout sequences (Blosc-compressed through hdf5plugin), written here and read back."""

import os

import h5py
import hdf5plugin
import numpy as np
import pytest
from PIL import Image

from runtime.data.dsec import DsecRecording
from runtime.data.events import DataError, make_events, to_dsec
from runtime.data.sources import open_recording, windows

BLOSC = hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE)
T_OFFSET = 1_627_000_000_000_000  # DSEC clocks: microseconds, large offset


def ms_to_idx(t_rel: np.ndarray) -> np.ndarray:
    """DSEC's index: the first event at or after each millisecond."""
    n_ms = int(t_rel[-1]) // 1000 + 2 if len(t_rel) else 1
    return np.searchsorted(t_rel, 1000 * np.arange(n_ms), side="left").astype(np.uint64)


def write_events_h5(path, events, t_offset=T_OFFSET, index=None, drop=()):
    """``events`` with times relative to ``t_offset``, as DSEC stores them."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    absolute = events.copy()
    absolute["t"] += t_offset
    cols = to_dsec(absolute, t_offset=t_offset)
    with h5py.File(path, "w") as f:
        for name in ("x", "y", "t", "p"):
            if name not in drop:
                f.create_dataset(f"events/{name}", data=cols[name], chunks=True, **BLOSC)
        f["ms_to_idx"] = ms_to_idx(cols["t"]) if index is None else index
        f["t_offset"] = np.int64(t_offset)


def write_sequence(folder, events_by_side, height, width, maps=None, disparities=None, disp_ts=None):
    for side in ("left", "right"):
        write_events_h5(os.path.join(folder, "events", side, "events.h5"), events_by_side[side])
        if maps is not None:
            with h5py.File(os.path.join(folder, "events", side, "rectify_map.h5"), "w") as f:
                f["rectify_map"] = maps
    if disparities is not None:
        os.makedirs(os.path.join(folder, "disparity", "event"))
        for i, d in enumerate(disparities):
            raw = np.where(np.isfinite(d), np.rint(d * 256), 0).astype(np.uint16)
            Image.fromarray(raw).save(os.path.join(folder, "disparity", "event", f"{2 * i:06d}.png"))
        np.savetxt(os.path.join(folder, "disparity", "timestamps.txt"), disp_ts, fmt="%d")


def identity_map(h, w, dx=0.0, dy=0.0):
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.stack([xs + dx, ys + dy], axis=-1)


@pytest.fixture(scope="module")
def synthetic_as_dsec(tmp_path_factory):
    mem = open_recording(seed=4, seconds=0.5, height=48, width=64)
    folder = str(tmp_path_factory.mktemp("dsec") / "zurich_city_00_a")
    disp = [mem.disparity(i) for i in range(len(mem.gt_timestamps_us))]
    write_sequence(
        folder,
        mem.data.events,
        48,
        64,
        maps=identity_map(48, 64),
        disparities=disp,
        disp_ts=mem.gt_timestamps_us + T_OFFSET,
    )
    return mem, folder


def test_blosc_compression_is_used(synthetic_as_dsec):
    _, folder = synthetic_as_dsec
    with h5py.File(os.path.join(folder, "events", "left", "events.h5")) as f:
        assert "32001" in f["events/t"]._filters  # the Blosc filter id
        assert f["events/t"].dtype == np.uint32 and f["events/p"].dtype == np.uint8


def test_dsec_reads_back_like_the_source(synthetic_as_dsec):
    mem, folder = synthetic_as_dsec
    with open_recording(folder) as rec:
        assert isinstance(rec, DsecRecording) and rec.rectified
        assert (rec.height, rec.width) == (48, 64)
        np.testing.assert_array_equal(rec.gt_timestamps_us, mem.gt_timestamps_us + T_OFFSET)
        got, want = list(windows(rec)), list(windows(mem))
        assert len(got) == len(want) == 10
        for a, b in zip(got, want, strict=True):
            assert a.t1_us == b.t1_us + T_OFFSET
            np.testing.assert_array_equal(a.left, b.left)
            np.testing.assert_array_equal(a.right, b.right)
            np.testing.assert_array_equal(np.isnan(a.disparity), np.isnan(b.disparity))
            np.testing.assert_allclose(a.disparity, b.disparity, atol=1 / 512 + 1e-6)
        assert sum(rec.stats.values()) == 0


def test_rectify_map_moves_events(tmp_path):
    ev = make_events([3, 10], [4, 4], [100, 2500], [1, -1])
    write_sequence(tmp_path, {"left": ev, "right": ev}, 8, 12, maps=identity_map(8, 12, dx=1.6, dy=-0.2))
    with open_recording(tmp_path) as rec:
        got = rec.events("left", T_OFFSET, T_OFFSET + 3000)
        np.testing.assert_array_equal(got["x"], [5])  # 3 + 1.6 -> 5; 10 + 1.6 -> 12 leaves the image
        np.testing.assert_array_equal(got["y"], [4])
        np.testing.assert_array_equal(got["p"], [1])
        assert rec.stats["outside_after_rectify"] == 1
    with DsecRecording(tmp_path, rectify=False) as raw:
        assert (raw.height, raw.width) == (480, 640) and not raw.rectified
        np.testing.assert_array_equal(raw.events("left", 0, 2**62)["x"], [3, 10])


def test_missing_rectify_map_is_refused_unless_no_rectify(tmp_path):
    ev = make_events([3, 10], [4, 4], [100, 2500], [1, -1])
    seq = tmp_path / "interlaken_00_c"
    write_sequence(seq, {"left": ev, "right": ev}, 8, 12)
    with pytest.raises(DataError) as err:
        open_recording(seq)
    msg = str(err.value)
    assert "\n" not in msg and "raw DSEC events need rectification" in msg and "events/left/rectify_map.h5" in msg
    assert "--calib DIR" in msg and "--no-rectify" in msg
    with open_recording(seq, rectify=False) as rec:
        assert not rec.rectified and rec.rectification.startswith("none")
    calib = tmp_path / "maps"  # DSEC ships the maps with the events; here they lie elsewhere
    for side in ("left", "right"):
        os.makedirs(calib / side)
        with h5py.File(calib / side / "rectify_map.h5", "w") as f:
            f["rectify_map"] = identity_map(8, 12, dx=1.0)
    with open_recording(seq, calib=calib) as rec:
        assert rec.rectified and (rec.height, rec.width) == (8, 12) and str(calib) in rec.rectification
        np.testing.assert_array_equal(rec.events("left", 0, 2**62)["x"], [4, 11])


CAM_TO_CAM = """\
intrinsics:
  camRect0: {camera_matrix: [569.7632987676102, 569.7632987676102, 335.0999870300293, 221.23667526245117]}
disparity_to_depth:
  cams_03:
  - [1, 0, 0, -335.0999870300293]
  - [0, 1, 0, -221.23667526245117]
  - [0, 0, 0, 569.7632987676102]
  - [0, 0, 1.6691407297504248, 0]
  cams_12:
  - [1, 0, 0, -1]
  - [0, 1, 0, -1]
  - [0, 0, 0, 1000]
  - [0, 0, 2, 0]
"""


def test_fb_from_cam_to_cam_yaml_and_override(tmp_path):
    ev = make_events([3], [4], [100], [1])
    write_sequence(tmp_path, {"left": ev, "right": ev}, 8, 12, maps=identity_map(8, 12))
    with open_recording(tmp_path) as rec:
        assert rec.fb is None  # DSEC disparity needs no fB; depth metrics then say so
    os.makedirs(tmp_path / "calibration")
    (tmp_path / "calibration" / "cam_to_cam.yaml").write_text(CAM_TO_CAM)
    with open_recording(tmp_path) as rec:  # Q[2][3] / Q[3][2] of the event cameras (cams_03)
        assert rec.fb == pytest.approx(569.7632987676102 / 1.6691407297504248)
        assert rec.fb == pytest.approx(341.35, abs=0.01) and "cams_03" in rec.fb_source
    with open_recording(tmp_path, fb=300.0) as rec:
        assert rec.fb == 300.0 and rec.fb_source == "given (--fb)"
    (tmp_path / "calibration" / "cam_to_cam.yaml").write_text("disparity_to_depth: {cams_12: []}\n")
    with pytest.raises(DataError, match="cam_to_cam.yaml: no 4x4 matrix 'disparity_to_depth.cams_03'"):
        open_recording(tmp_path)


def test_start_is_the_later_t_offset_and_10hz_ground_truth_tiles(tmp_path):
    # left camera starts 30 ms after the right; ground truth every 100 ms (DSEC's 10 Hz)
    n = 4000
    t = np.arange(n, dtype=np.int64) * 250  # 1 s at 4 kHz, relative to each camera's t_offset
    ev = make_events(np.arange(n) % 12, np.zeros(n), t, np.ones(n))
    offsets = {"left": T_OFFSET + 30_000, "right": T_OFFSET}
    for side in ("left", "right"):
        write_events_h5(os.path.join(tmp_path, "events", side, "events.h5"), ev, t_offset=offsets[side])
        with h5py.File(os.path.join(tmp_path, "events", side, "rectify_map.h5"), "w") as f:
            f["rectify_map"] = identity_map(4, 12)
    ts = T_OFFSET + 30_000 + 100_000 * np.arange(10)  # map 0 at the start: no window can end there
    os.makedirs(tmp_path / "disparity" / "event")
    for i in range(len(ts)):
        png = tmp_path / "disparity" / "event" / f"{2 * i:06d}.png"
        Image.fromarray(np.full((4, 12), 256 * (i + 1), np.uint16)).save(png)
    np.savetxt(tmp_path / "disparity" / "timestamps.txt", ts, fmt="%d")
    with open_recording(tmp_path) as rec:
        assert rec.t_start_us == T_OFFSET + 30_000  # max of the two t_offsets (SE-CFF), not the min
        assert rec.t_end_us == T_OFFSET + 1_000_000  # the right camera ends first
        ws = list(windows(rec))
    assert [w.t1_us - w.t0_us for w in ws] == [50_000] * len(ws)
    assert all(a.t1_us == b.t0_us for a, b in zip(ws[:-1], ws[1:], strict=True))  # back to back
    assert ws[0].t0_us == rec.t_start_us and len(ws) == 19
    assert [w.gt_index for w in ws] == [None, 1, None, 2, None, 3, None, 4, None, 5, None, 6, None, 7,
                                        None, 8, None, 9, None]
    assert [w.has_gt for w in ws] == [w.gt_index is not None for w in ws]
    assert all(w.disparity is None for w in ws if not w.has_gt)
    assert [float(w.disparity[0, 0]) for w in ws if w.has_gt] == [2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    used = sum(int(np.abs(w.left).sum() > 0) for w in ws)
    assert used == len(ws)  # no 50 ms gap is skipped


def test_windows_only_read_their_milliseconds(tmp_path):
    n = 20_000
    t = np.arange(n, dtype=np.int64) * 50  # 1 s at 20 kHz
    ev = make_events(np.zeros(n), np.zeros(n), t, np.ones(n))
    write_sequence(tmp_path, {"left": ev, "right": ev}, 4, 4, maps=identity_map(4, 4))
    with DsecRecording(tmp_path) as rec:
        reader = rec._readers["left"]
        calls = []
        inner = reader.read
        reader.read = lambda lo, hi: (calls.append(hi - lo), inner(lo, hi))[1]
        got = rec.events("left", T_OFFSET + 500_000, T_OFFSET + 510_000)
        assert len(got) == 200 and calls == [200]  # exactly the rows of those 10 ms


def test_time_going_backwards_is_dropped_and_counted(tmp_path):
    ev = make_events([1, 1, 1, 1], [1, 1, 1, 1], [100, 3000, 2000, 4000], [1, 1, -1, -1])
    t_rel = ev["t"]
    index = np.array([0, 1, 1, 1, 3], dtype=np.uint64)  # the first event at or after each ms
    path = os.path.join(tmp_path, "events", "left", "events.h5")
    write_events_h5(path, ev, index=index)
    write_events_h5(os.path.join(tmp_path, "events", "right", "events.h5"), ev[:1])
    assert t_rel[2] < t_rel[1]
    with open_recording(tmp_path, rectify=False) as rec:
        got = rec.events("left", T_OFFSET, T_OFFSET + 5000)
        np.testing.assert_array_equal(got["t"] - T_OFFSET, [100, 3000, 4000])
        assert rec.stats["time_reversed"] == 1


def test_missing_column_names_file_and_key(tmp_path):
    ev = make_events([1], [1], [5], [1])
    write_events_h5(os.path.join(tmp_path, "events", "left", "events.h5"), ev, drop=("p",))
    write_events_h5(os.path.join(tmp_path, "events", "right", "events.h5"), ev)
    with pytest.raises(DataError, match=r"left/events.h5: missing dataset 'events/p'"):
        open_recording(tmp_path)


def test_inconsistent_ms_to_idx_is_refused(tmp_path):
    ev = make_events([1, 1, 1], [1, 1, 1], [100, 1500, 2500], [1, 1, 1])
    write_events_h5(
        os.path.join(tmp_path, "events", "left", "events.h5"), ev, index=np.array([0, 2, 1, 3], np.uint64)
    )
    write_events_h5(os.path.join(tmp_path, "events", "right", "events.h5"), ev)
    with pytest.raises(DataError, match="'ms_to_idx' is not a non-decreasing index"):
        open_recording(tmp_path)
    write_events_h5(
        os.path.join(tmp_path, "events", "left", "events.h5"), ev, index=np.array([0, 0, 2, 3], np.uint64)
    )
    with pytest.raises(DataError, match=r"'ms_to_idx'\[\d\] = \d does not match 'events/t'"):
        open_recording(tmp_path)


def test_png_and_timestamp_counts_must_agree(tmp_path):
    ev = make_events([1], [1], [5], [1])
    write_sequence(
        tmp_path,
        {"left": ev, "right": ev},
        4,
        4,
        maps=identity_map(4, 4),
        disparities=[np.ones((4, 4))],
        disp_ts=np.array([10, 20]),
    )
    with pytest.raises(DataError, match="2 timestamps but 1 PNGs"):
        open_recording(tmp_path)


def test_wrong_png_size_names_the_file(tmp_path):
    ev = make_events([1], [1], [5], [1])
    write_sequence(
        tmp_path,
        {"left": ev, "right": ev},
        4,
        4,
        maps=identity_map(4, 4),
        disparities=[np.ones((3, 4))],
        disp_ts=np.array([T_OFFSET + 10]),
    )
    with open_recording(tmp_path) as rec, pytest.raises(DataError, match=r"000000.png: disparity PNG is"):
        rec.disparity(0)


def test_folder_that_is_not_dsec(tmp_path):
    with pytest.raises(DataError, match="not a DSEC sequence folder"):
        open_recording(tmp_path)
