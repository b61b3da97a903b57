"""``python -m runtime.stream`` on small files of MVSEC's and DSEC's real layout: rectification, fB,
the window policy and the ground-truth protocol in the report, and the overlap warning."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from contract_models import stereo_model
from test_data_dsec import CAM_TO_CAM, T_OFFSET, identity_map, write_sequence
from test_data_mvsec import T0, H, W, write_maps, write_mvsec_like

from runtime.data.events import make_events
from runtime.data.mvsec import INDOOR_FLYING_FB
from runtime.data.protocol import ddes_quantise, recent_event_mask
from runtime.data.sources import open_recording, windows
from runtime.data.tiling import window_ends
from runtime.stream import main


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.onnx"
    stereo_model(path, height=H, width=W)
    return path


def run(argv, tmp_path, capsys):
    """Run the command line; returns (exit code, stderr lines, report or None)."""
    report = tmp_path / "report.json"
    report.unlink(missing_ok=True)
    rc = main([*argv, "--device", "cpu", "--quiet", "--report", str(report)])
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err, json.loads(report.read_text()) if report.exists() else None  # a refused run's says why


def test_mvsec_raw_events_rectified_from_the_calibration_folder(model_path, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    path = write_mvsec_like(data)
    base = ["--onnx", str(model_path), "--events", str(path)]
    rc, err, _ = run(base, tmp_path, capsys)
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: --events")
    assert "raw MVSEC events need rectification" in err[0] and "--calib DIR" in err[0] and "--no-rectify" in err[0]
    calib = write_maps(tmp_path / "calib")
    rc, err, report = run([*base, "--calib", str(calib)], tmp_path, capsys)
    assert rc == 0 and err == []
    src = report["source"]
    assert src["rectification"] == f"maps {calib / 'indoor_flying'}_{{left,right}}_{{x,y}}_map.txt"
    assert src["fb"] == INDOOR_FLYING_FB and src["fb_source"].startswith("MVSEC indoor_flying")
    assert src["windows"]["count"] == 4 and src["windows"]["with_gt"] == 4 and src["ground_truth"] == "full"
    assert src["windows"]["policy"].startswith("back to back") and src["windows"]["length_ms"] == [50.0, 50.0]
    assert src["gt_overlap"] == {"gt_maps": 4, "gt_windows": 4, "gt_windows_in_events": 4, "warning": None}
    rc, _, report = run([*base, "--no-rectify", "--fb", "10", "--gt", "ddes-full"], tmp_path, capsys)
    src = report["source"]
    assert src["rectification"].startswith("none") and src["fb"] == 10.0 and src["fb_source"] == "given (--fb)"
    assert src["ground_truth"] == "ddes-full"
    rc, err, _ = run([*base, "--calib", str(tmp_path / "nowhere")], tmp_path, capsys)
    assert rc == 2 and err == [f"error: --calib {tmp_path / 'nowhere'}: no such folder"]
    rc, err, _ = run(["--onnx", str(model_path), "--fb", "3"], tmp_path, capsys)  # the built-in stream
    assert rc == 2 and err == ["error: --fb: applies to recordings read from files (--events)"]


def test_summary_names_rectification_fb_and_windows(model_path, tmp_path, capsys):
    path = write_mvsec_like(tmp_path, maps=True)
    assert main(["--onnx", str(model_path), "--events", str(path), "--device", "cpu", "--quiet"]) == 0
    assert main(["--onnx", str(model_path), "--events", str(path), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert f"rectification: maps {tmp_path / 'indoor_flying'}_{{left,right}}_{{x,y}}_map.txt" in out
    assert "fB 19.9418 px*m from MVSEC indoor_flying" in out
    assert "windows: 4 x 50 ms, back to back, ending at the ground-truth maps; 4 with ground truth, scored" in out
    assert "(full protocol)" in out


def test_ground_truth_outside_the_events_is_a_warning(model_path, tmp_path, capsys):
    rng = np.random.default_rng(0)
    n = 300
    t = T0 + np.sort(rng.uniform(0, 0.2, n))  # events for 0.2 s, gray images (and so the recording) 2 s
    ev = np.stack([rng.integers(0, W, n), rng.integers(0, H, n), t, rng.choice([-1.0, 1.0], n)], 1)
    path = write_mvsec_like(tmp_path, events=ev, depth=np.full((3, H, W), 2.0, np.float32),
                            depth_ts=T0 + np.array([1.0, 1.05, 1.1]), maps=True)
    with h5py.File(path, "a") as f:
        for side in ("left", "right"):
            del f[f"davis/{side}/image_raw_ts"]
            f[f"davis/{side}/image_raw_ts"] = T0 + np.array([0.0, 1.0, 2.0])
    rc, err, report = run(["--onnx", str(model_path), "--events", str(path)], tmp_path, capsys)
    # no window with ground truth holds an event: exit 2, the report says why (issue 12); the warning is
    # part of the one error line, after the reason (issue 23: a warning line before the error made two)
    assert rc == 2 and len(err) == 1 and f"(warning: --events {path}: 3 of 3 windows" in err[0]
    assert err[0].startswith(f"error: {path}: none of the 3 counted windows with ground truth holds an event")
    assert report["error"] in err[0] and report["accuracy"] is None
    assert "hold no events of both cameras (events of both cameras 0.000 s to 0.1" in err[0]
    overlap = report["source"]["gt_overlap"]
    assert overlap["gt_windows"] == 3 and overlap["gt_windows_in_events"] == 0 and "3 of 3" in overlap["warning"]
    path = write_mvsec_like(tmp_path, name="indoor_flying2", depth_ts=T0 + 3600 + 0.05 * np.arange(1, 5))
    rc, err, report = run(["--onnx", str(model_path), "--events", str(path), "--calib", str(tmp_path)],
                          tmp_path, capsys)
    assert "none of the 4 ground-truth maps (3600.050 s to 3600.200 s after the start) ends a window" in err[0]
    assert report["source"]["gt_overlap"]["gt_windows"] == 0


def test_dsec_sequence_in_the_report(model_path, tmp_path, capsys):
    mem = open_recording(seed=3, seconds=0.4, height=H, width=W)
    keep = np.arange(1, len(mem.gt_timestamps_us), 2)  # 10 Hz
    write_sequence(tmp_path / "seq", mem.data.events, H, W, maps=identity_map(H, W),
                   disparities=[mem.disparity(k) for k in keep], disp_ts=mem.gt_timestamps_us[keep] + T_OFFSET)
    (tmp_path / "seq" / "calibration").mkdir()
    (tmp_path / "seq" / "calibration" / "cam_to_cam.yaml").write_text(CAM_TO_CAM)
    rc, err, report = run(["--onnx", str(model_path), "--events", str(tmp_path / "seq")], tmp_path, capsys)
    src = report["source"]
    assert rc == 0 and src["rectification"].startswith("rectify_map.h5 ") and src["fb"] == pytest.approx(341.35, 1e-4)
    assert src["windows"]["count"] == 8 and src["windows"]["with_gt"] == 4
    assert report["steps"]["total"] == 8 and report["accuracy"]["windows"] == 4  # scored: the windows with gt


def test_windows_tile_between_irregular_maps():
    rec = open_recording(seed=1, seconds=0.5, height=H, width=W)
    rec.gt_timestamps_us = np.array([50_000, 100_000, 200_000, 253_000, 300_000])  # 150 ms missing, 253 late
    ends, gt = window_ends(rec)
    assert ends.tolist() == [50_000, 100_000, 150_000, 200_000, 253_000, 300_000, 350_000, 400_000, 450_000,
                             500_000]
    assert gt.tolist() == [0, 1, -1, 2, 3, 4, -1, -1, -1, -1]
    ws = list(windows(rec, max_windows=6))
    assert [(w.t0_us, w.t1_us) for w in ws][3:5] == [(150_000, 200_000), (200_000, 253_000)]  # one 53 ms window
    assert [w.has_gt for w in ws] == [True, True, False, True, True, True]
    assert [w.index for w in windows(rec, start_us=120_000, max_windows=2)] == [3, 4]  # numbers stay
    ends, gt = window_ends(rec, window_us=100_000)  # maps denser than windows: those 3/4 window apart
    assert ends.tolist() == [100_000, 200_000, 300_000, 400_000, 500_000] and gt.tolist() == [1, 2, 4, -1, -1]


def test_ddes_ground_truth_protocols():
    d = np.array([1.0, 1.08, 36.0, 36.3, 36.4, np.nan, 0.0], np.float32)
    q = ddes_quantise(d)
    np.testing.assert_allclose(q[:4], [1.0, 8 / 7, 36.0, 254 / 7], rtol=1e-6)  # round(7 d) / 7
    assert np.isnan(q[4]) and np.isnan(q[5]) and q[6] == 0.0  # round(7 * 36.4) = 255: invalid in DDES
    rec = open_recording(seed=2, seconds=0.4, height=H, width=W)
    ev = rec.events("left", 0, 300_000)
    mask = recent_event_mask(rec, 300_000, n=500)
    want = np.zeros((H, W), bool)
    want[ev["y"][-500:], ev["x"][-500:]] = True
    np.testing.assert_array_equal(mask, want)
    full, ddes = (list(windows(rec, gt_protocol=p)) for p in ("full", "ddes"))
    for a, b in zip(full, ddes, strict=True):
        hit = recent_event_mask(rec, a.t1_us)
        np.testing.assert_array_equal(np.isfinite(b.disparity), np.isfinite(ddes_quantise(a.disparity)) & hit)
    with pytest.raises(ValueError, match="unknown ground-truth protocol 'kitti'"):
        next(windows(rec, gt_protocol="kitti"))


def test_dsec_t_offsets_taken_from_each_camera(tmp_path):
    ev = make_events([1, 2], [1, 1], [0, 60_000], [1, 1])
    write_sequence(tmp_path, {"left": ev, "right": ev}, 4, 4, maps=identity_map(4, 4))
    with open_recording(tmp_path) as rec:
        assert rec.event_span("left") == (T_OFFSET, T_OFFSET + 60_000)


def test_a_camera_without_events_is_an_overlap_warning(tmp_path):
    from runtime.data.protocol import describe

    ev = make_events(np.arange(40) % 4, np.zeros(40), np.arange(40) * 5000, np.ones(40))
    write_sequence(tmp_path, {"left": ev, "right": ev[:0]}, 4, 4, maps=identity_map(4, 4),
                   disparities=[np.ones((4, 4))], disp_ts=np.array([T_OFFSET + 100_000]))
    with open_recording(tmp_path) as rec:
        overlap = describe(rec, window_us=50_000)["gt_overlap"]
    assert overlap["gt_windows"] == 1 and overlap["gt_windows_in_events"] == 0
    assert "1 of 1 windows with ground truth hold no events of both cameras" in overlap["warning"]
