"""The runtime streams files of the real layouts: MVSEC (our synthetic files and a hand-built
indoor_flying-like pair) and DSEC (Blosc-compressed events, rectify maps, disparity PNGs)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from contract_models import stereo_model
from helpers import ROOT
from test_data_dsec import T_OFFSET, identity_map, write_sequence

from runtime.data.sources import open_recording
from runtime.data.synth import SynthConfig, write_mvsec
from runtime.stream import Stream

H, W = 48, 64


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "m.onnx"
    onnx.save(stereo_model(height=H, width=W), str(path))
    return path


def stream_cli(*args) -> dict:
    out = args[args.index("--report") + 1]
    res = subprocess.run([sys.executable, "-m", "runtime.stream", *map(str, args), "--quiet"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return json.loads(open(out).read())


def test_mvsec_layout_streams_with_ground_truth(model_path, tmp_path):
    data, gt = write_mvsec(SynthConfig(seconds=0.5, seed=2, height=H, width=W), tmp_path)
    assert data.endswith("_data.hdf5") and gt.endswith("_gt.hdf5")
    report = stream_cli("--onnx", model_path, "--events", data, "--report", tmp_path / "r.json")
    assert report["source"]["kind"] == "mvsec" and report["source"]["fb"] > 0
    assert report["steps"]["total"] == 10  # one window per ground-truth map, each 50 ms
    acc = report["accuracy"]
    assert acc["valid_pixels"] > 0 and acc["mean_depth_error_cm"] is not None
    assert 0 <= acc["one_pixel_accuracy_pct"] <= 100
    # the file streams exactly like the in-memory recording it was written from
    with Stream(str(model_path), data) as file_stream:
        file_steps = list(file_stream)
    with Stream(str(model_path), recording=open_recording(seed=2, seconds=0.5, height=H, width=W)) as mem_stream:
        mem_steps = list(mem_stream)
    assert len(file_steps) == len(mem_steps) == 10
    for a, b in zip(file_steps, mem_steps, strict=True):
        np.testing.assert_array_equal(a.disparity, b.disparity)
        assert a.spikes == b.spikes


def test_dsec_layout_streams(model_path, tmp_path):
    mem = open_recording(seed=4, seconds=0.5, height=H, width=W)
    folder = tmp_path / "zurich_city_00_a"
    disp = [mem.disparity(i) for i in range(len(mem.gt_timestamps_us))]
    write_sequence(str(folder), mem.data.events, H, W, maps=identity_map(H, W), disparities=disp,
                   disp_ts=mem.gt_timestamps_us + T_OFFSET)
    report = stream_cli("--onnx", model_path, "--events", folder, "--report", tmp_path / "r.json")
    assert report["source"]["kind"] == "dsec"
    assert report["steps"]["total"] >= 1
    acc = report["accuracy"]
    assert acc["valid_pixels"] > 0 and acc["mean_disparity_error_px"] is not None
    assert acc["mean_depth_error_cm"] is None  # DSEC gives no fB unless one is passed
    assert np.isfinite(report["speed"]["fps_model"])
