"""Events that sound-looking calibration maps move out of the image (issue 23, class 2): counted as
``outside_after_rectify`` and refused above ``--max-outside-rectify`` (default 0.2), a limit of their own
beside ``--max-dropped`` (real maps lose a few per cent at the image's edges, which the 1 % for broken
rows would refuse). Applied by ``runtime.stream``, by each stream of ``runtime.serve`` (that stream alone
is refused) and by the MVSEC and DSEC training readers. Before, a map that moved half the events out
was streamed, scored and trained on without a word."""

from __future__ import annotations

import json

import numpy as np
import pytest
from contract_models import stereo_model
from test_data_dsec import identity_map, write_sequence
from test_data_mvsec import H, W, write_maps, write_mvsec_like

from runtime.data.options import DEFAULT_MAX_OUTSIDE_RECTIFY, RecordingOptions
from runtime.serve import main as serve_main
from runtime.stream import main as stream_main
from training.errors import TrainError

LIMIT = f"--max-outside-rectify {DEFAULT_MAX_OUTSIDE_RECTIFY:g}"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.onnx"
    stereo_model(path, height=H, width=W)
    return path


def _recording(folder, dx):
    """An MVSEC-like file with maps beside it that shift x by ``dx``; returns it and the share they lose."""
    folder.mkdir(parents=True, exist_ok=True)
    path = write_mvsec_like(str(folder))
    write_maps(str(folder), dx=dx)
    import h5py

    with h5py.File(path) as f:
        x = np.concatenate([f[f"davis/{side}/events"][:, 0] for side in ("left", "right")])
    return path, float(np.mean(np.rint(x + dx) >= W))


def test_runtime_stream_refuses_maps_that_move_many_events_out(model, tmp_path, capsys):
    path, lost = _recording(tmp_path / "broken", dx=W / 2)  # half the image shifted away
    assert 0.4 < lost < 0.6
    report = tmp_path / "report.json"
    base = ["--onnx", str(model), "--events", path, "--device", "cpu", "--quiet"]
    assert stream_main([*base, "--report", str(report)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {path}: the rectification maps moved {lost:.1%} of the ")
    assert "outside_after_rectify" in err and f"more than {LIMIT}" in err, err
    got = json.loads(report.read_text())
    assert got["accuracy"] is None and got["error"] in err
    assert stream_main([*base, "--max-outside-rectify", "0.6"]) == 0  # the user accepts the loss
    ok, lost = _recording(tmp_path / "sound", dx=1.0)  # one column lost: 6.25 %, as real maps' edges
    assert 0.03 < lost < 0.1 and stream_main(["--onnx", str(model), "--events", ok, "--device", "cpu", "--quiet"]) == 0
    for value in ("1.5", "nan", "-0.1"):
        assert stream_main([*base, "--max-outside-rectify", value]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--max-outside-rectify: must be a fraction from 0 to 1" in err, err
    assert stream_main(["--onnx", str(model), "--device", "cpu", "--quiet", "--max-outside-rectify", "0.5"]) == 2
    assert "applies to recordings read from files" in capsys.readouterr().err


def test_runtime_serve_refuses_that_stream_alone(model, tmp_path, capsys):
    good, _ = _recording(tmp_path / "good", dx=0.0)
    bad, lost = _recording(tmp_path / "bad", dx=W / 2)
    out = tmp_path / "serve.json"
    base = ["--onnx", str(model), "--events", good, "--events", bad, "--threads", "1", "--quiet"]
    assert serve_main([*base, "--report", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cam1 ({bad}) refused: the rectification maps moved {lost:.1%}" in err, err
    assert f"more than {LIMIT}" in err
    report = json.loads(out.read_text())
    cam0, cam1 = report["streams"]["cam0"], report["streams"]["cam1"]
    assert cam0["status"] == "ok" and cam1["status"] == "refused" and cam1["accuracy"] is None
    assert report["aggregate"]["ok"] == 1 and report["aggregate"]["refused"] == 1
    assert report["aggregate"]["counted_steps"] == cam0["data_quality"]["windows"]  # cam0 alone is pooled
    assert serve_main([*base, "--max-outside-rectify", "0.6"]) == 0
    assert serve_main([*base, "--max-outside-rectify", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--max-outside-rectify: must be a fraction from 0 to 1, got 2" in err, err


def test_mvsec_training_reader_refuses_maps_that_move_many_events_out(tmp_path, monkeypatch):
    import training.data as d

    (tmp_path / "data").mkdir()
    for n in (1, 2, 3):
        write_mvsec_like(tmp_path / "data", name=f"indoor_flying{n}")
    write_maps(tmp_path / "data", dx=W / 2)
    monkeypatch.setattr(d, "DDES_TEST_FRAMES", {1: (1, 4)})
    monkeypatch.setattr(d, "DDES_TRAIN_FRAMES", {2: (0, 4), 3: (0, 4)})
    monkeypatch.setattr(d, "MVSEC_VAL_SIZE", 2)
    opts = dict(height=H, width=W, encoding="sbt", bins=5, window_us=50_000, length=2, stride=1, burn_in=1)
    with pytest.raises(TrainError) as info:
        d.mvsec_stereo(tmp_path, 1, **opts)
    msg = str(info.value)
    assert "\n" not in msg and "indoor_flying2_data.hdf5: the rectification maps moved " in msg
    assert f"more than {LIMIT}" in msg
    assert d.mvsec_stereo(tmp_path, 1, real=RecordingOptions(max_outside_rectify=0.6), **opts).train


def test_dsec_training_reader_refuses_maps_that_move_many_events_out(tmp_path):
    from test_data_dsec import T_OFFSET

    from runtime.data.sources import open_recording
    from training.dsec_data import dsec_stereo

    for i, seed in enumerate((5, 6)):
        mem = open_recording(seed=seed, seconds=0.3, height=24, width=32)
        disp = [mem.disparity(k) for k in range(len(mem.gt_timestamps_us))]
        write_sequence(str(tmp_path / f"seq_{i}"), mem.data.events, 24, 32, maps=identity_map(24, 32, dx=16.0),
                       disparities=disp, disp_ts=mem.gt_timestamps_us + T_OFFSET)
    opts = dict(encoding="sbt", bins=5, window_us=50_000, length=2, stride=1, burn_in=1)
    with pytest.raises(TrainError) as info:
        dsec_stereo(tmp_path, **opts)
    msg = str(info.value)
    assert "\n" not in msg and f"{tmp_path / 'seq_0'}: the rectification maps moved " in msg
    assert f"more than {LIMIT}" in msg
    assert dsec_stereo(tmp_path, real=RecordingOptions(max_outside_rectify=0.9), **opts).train


def test_training_command_line_checks_the_limit(tmp_path, capsys):
    from tests.test_resume_options import FIRST
    from training.train import main

    assert main([*FIRST, "--out", str(tmp_path / "run"), "--max-outside-rectify", "1.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--max-outside-rectify must be at most 1, got 1.5" in err, err
