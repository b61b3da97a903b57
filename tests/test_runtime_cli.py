"""``python -m runtime.stream`` end to end: report JSON, saved maps, one-line errors, no torch needed."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from contract_models import stereo_model
from fake_source import patch_in

from runtime.stream import main

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
HAVE_DATA_LAYER = all(importlib.util.find_spec(f"runtime.data.{m}") is not None for m in ("sources", "encoding"))


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.onnx"
    stereo_model(path, height=16, width=20)
    return path


@pytest.fixture
def fake_data(monkeypatch):
    """Replace the data layer by the in-memory fake for in-process runs."""
    patch_in(monkeypatch)


REPORT_KEYS = {
    "schema", "model", "runtime", "source", "steps", "speed", "sparsity", "energy", "accuracy", "data_quality"
}


def test_cli_report_and_save_dir(model_path, tmp_path, fake_data, capsys):
    report_path, save = tmp_path / "out" / "report.json", tmp_path / "maps"
    rc = main(
        [
            "--onnx",
            str(model_path),
            "--device",
            "cpu",
            "--max-steps",
            "5",
            "--burn-in",
            "1",
            "--report",
            str(report_path),
            "--save-dir",
            str(save),
            "--threads",
            "1",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    report = json.loads(report_path.read_text())
    assert set(report) == REPORT_KEYS
    assert report["steps"]["counted"] == 4 and report["steps"]["burn_in"] == 1
    assert report["runtime"]["device"] == "cpu" and report["runtime"]["threads"] == 1
    assert set(report["sparsity"]["firing_rate"]) == {"layer0", "layer1"}
    assert 0.0 <= report["sparsity"]["network_sparsity"] <= 1.0
    assert report["energy"]["energy_per_step_uj"] > 0
    assert report["accuracy"]["valid_pixels"] > 0 and report["accuracy"]["mean_depth_error_cm"] is not None
    for key in ("fps_model", "fps_end_to_end"):
        assert report["speed"][key] > 0
    assert set(report["speed"]["time_per_step_ms"]) == {
        "decode",
        "encode",
        "model",
        "metrics",
        "other",
        "total",
    }
    for word in ("steps/s", "firing rate", "sparsity", "energy", "MDE"):
        assert word in out
    npys = sorted(save.glob("disparity_*.npy"))
    assert len(npys) == 5 and len(list(save.glob("disparity_*.png"))) == 5
    assert np.load(npys[0]).shape == (16, 20)


def test_cli_state_files_make_chunks_equal_one_run(model_path, tmp_path, fake_data):
    def run(*extra):
        save = tmp_path / f"maps{len(list(tmp_path.iterdir()))}"
        assert (
            main(["--onnx", str(model_path), "--device", "cpu", "--quiet", "--save-dir", str(save), *extra])
            == 0
        )
        return {p.name: np.load(p) for p in save.glob("*.npy")}

    whole = run("--max-steps", "6")
    state = tmp_path / "state.npz"
    part = run("--max-steps", "3", "--save-state", str(state))
    part.update(run("--max-steps", "3", "--start", "0.15", "--load-state", str(state)))
    assert sorted(whole) == sorted(part)
    for name in whole:
        np.testing.assert_array_equal(whole[name], part[name])


def _error(argv, capsys) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    return lines[0]


def test_cli_errors(model_path, tmp_path, fake_data, capsys):
    assert "absent.onnx: no such model file" in _error(["--onnx", str(tmp_path / "absent.onnx")], capsys)
    assert f"{tmp_path}: is a folder, not a model file" in _error(["--onnx", str(tmp_path)], capsys)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x01garbage")
    assert "not an ONNX model" in _error(["--onnx", str(junk)], capsys)
    off = tmp_path / "off.onnx"
    stereo_model(off, drop_metadata=("snn.layers",))
    assert "snn.layers missing" in _error(["--onnx", str(off)], capsys)
    table = tmp_path / "table.json"
    table.write_text("{bad")
    assert "--energy-table" in _error(["--onnx", str(model_path), "--energy-table", str(table)], capsys)
    assert "--events" in _error(
        ["--onnx", str(model_path), "--events", str(tmp_path / "none_data.hdf5")], capsys
    )
    assert "--max-steps" in _error(["--onnx", str(model_path), "--max-steps", "0"], capsys)
    # the fake recording lasts 1 s
    assert "no window to stream" in _error(["--onnx", str(model_path), "--start", "5"], capsys)


def test_cli_cuda_without_gpu(model_path, fake_data, capsys):
    rc = main(["--onnx", str(model_path), "--device", "cuda", "--max-steps", "1", "--quiet"])
    if rc == 0:
        pytest.skip("this host runs CUDA")
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith("error: --device: cuda:")


NO_TORCH = """
import importlib.abc, sys
class _BlockTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is not installed on this deployment host (blocked by the test)")
        return None
sys.meta_path.insert(0, _BlockTorch())
sys.path.insert(0, {tests!r})
if {fake!r}:
    import fake_source
    fake_source.install()
from runtime.stream import main
rc = main(sys.argv[1:])
assert "torch" not in sys.modules, "torch was imported"
sys.exit(rc)
"""


def _run_without_torch(argv, *, fake: bool) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = NO_TORCH.format(tests=str(TESTS), fake=fake)
    return subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
    )


def test_cli_without_torch_fake_source(model_path, tmp_path):
    report = tmp_path / "r.json"
    proc = _run_without_torch(
        ["--onnx", str(model_path), "--max-steps", "3", "--report", str(report), "--device", "auto"],
        fake=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(report.read_text())["steps"]["counted"] == 3
    assert "firing rate" in proc.stdout


@pytest.mark.skipif(not HAVE_DATA_LAYER, reason="runtime.data.sources / runtime.data.encoding not merged yet")
def test_cli_without_torch_real_synthetic_source(model_path, tmp_path):
    report = tmp_path / "r.json"
    proc = _run_without_torch(
        ["--onnx", str(model_path), "--max-steps", "4", "--burn-in", "1", "--report", str(report)], fake=False
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(report.read_text())
    assert data["steps"]["counted"] == 3
    assert data["source"]["kind"]
    assert data["accuracy"] is None or "valid_pixels" in data["accuracy"]
