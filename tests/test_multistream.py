"""Many streams through one ONNX Runtime session (runtime.multistream, python -m runtime.serve): each
stream's outputs equal to running it alone, with streams joining and leaving mid-run; slots; reports.

Spikes and state are bit-identical in every case. The tiny model's output is bit-identical too; the
compiled stereo genotype's disparity is within a few float32 ulps: its last op (the estimator's
ReduceSum over the disparities) is reduced by ONNX Runtime in another order for a batch of N than for a
batch of 1 (found by comparing every intermediate tensor: all others are identical)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from contract_models import stereo_model
from fake_source import FakeRecording, identity_encoder, patch_in
from helpers import ROOT, make_exact, small_genotype

from compiler import build_model, export_onnx
from runtime.core.errors import RuntimeInputError
from runtime.multistream import MultiSession, MultiStream
from runtime.serve import main as serve_main
from runtime.session import SNNSession
from runtime.stream import Stream


@pytest.fixture(scope="module", params=["tiny", "stereo_small"])
def model_path(request, tmp_path_factory):
    """The tiny contract model (1x1 convolutions) and a compiled genotype (3x3 and 3-D convolutions, cost
    volume, estimator) at 24x32: batching must not change any stream's numbers."""
    path = tmp_path_factory.mktemp("model") / f"{request.param}.onnx"
    if request.param == "tiny":
        stereo_model(path)
    else:
        torch.manual_seed(0)
        model = build_model(small_genotype("stereo_small")).eval()
        make_exact(model)
        export_onnx(model, path)
    return path


def assert_same_output(path, mine: np.ndarray, theirs: np.ndarray) -> None:
    if path.stem == "tiny":
        np.testing.assert_array_equal(mine, theirs)
    else:
        np.testing.assert_array_max_ulp(mine, theirs, maxulp=8)


def _size(path) -> tuple[int, int]:
    enc = SNNSession(path, device="cpu").spec.encoding
    return enc.height, enc.width


def _recording(path, seed: int) -> FakeRecording:
    h, w = _size(path)
    return FakeRecording(height=h, width=w, seconds=0.6, seed=seed)


# name, seed, join at tick, windows
PLAN = [("a", 0, 0, 8), ("b", 1, 2, 3), ("c", 2, 3, 6), ("d", 3, 5, 4)]


def test_each_stream_equals_itself_alone_while_others_join_and_leave(model_path):
    server = MultiStream(model_path, threads=1, max_streams=3, burn_in=1)
    got: dict[str, list] = {name: [] for name, *_ in PLAN}
    tick = 0
    while tick < 20 and (tick <= max(at for _, _, at, _ in PLAN) or server.active):
        for name, seed, at, n in PLAN:
            if at == tick:  # d joins after b has left: it gets b's freed slot
                server.join(name, max_steps=n, recording=_recording(model_path, seed), encoder=identity_encoder)
        for name, result in server.step().items():
            got[name].append(result)
        tick += 1
    assert max(server.multi.batch_sizes) == 3 and min(server.multi.batch_sizes) == 1
    report = server.report()
    for name, seed, at, n in PLAN:
        alone = Stream(model_path, device="cpu", threads=1, burn_in=1, max_steps=n,
                       recording=_recording(model_path, seed), encoder=identity_encoder)
        expected = list(alone)
        assert len(got[name]) == len(expected) == n
        for mine, theirs in zip(got[name], expected, strict=True):
            assert_same_output(model_path, mine.disparity, theirs.disparity)
            assert mine.spikes == theirs.spikes and mine.index == theirs.index
        r, ref = report["streams"][name], alone.report()
        assert r["serve"]["joined_at_tick"] == at and r["serve"]["left_at_tick"] == at + n
        assert r["sparsity"] == ref["sparsity"] and r["energy"] == ref["energy"]
        assert r["accuracy"] == pytest.approx(ref["accuracy"], rel=1e-5)
    agg = report["aggregate"]
    assert agg["steps"] == sum(n for *_, n in PLAN) and agg["counted_steps"] == sum(n - 1 for *_, n in PLAN)
    assert agg["accuracy"]["valid_pixels"] == sum(r["accuracy"]["valid_pixels"] for r in report["streams"].values())
    assert agg["streams"] == 4 and agg["active"] == 0 and agg["steps_per_s"] > 0


def test_slots_partial_steps_and_state(model_path):
    """Streams that skip a step keep their state; closing moves the last slot; reset and set_state act on
    one slot only. Checked against one SNNSession per stream."""
    h, w = _size(model_path)
    rng = np.random.default_rng(0)
    multi = MultiSession(model_path, threads=1)
    alone = {k: SNNSession(model_path, device="cpu", threads=1) for k in "xyz"}
    for k in "xyz":
        multi.open(k)
    schedule = ["xyz", "y", "xz", "close x", "yz", "reset z", "yz", "z"]
    for action in schedule:
        if action == "close x":
            multi.close("x")
            assert multi.keys == ["z", "y"]
            continue
        if action == "reset z":
            multi.reset("z")
            alone["z"].reset()
            continue
        inputs = {k: {s: np.sign(rng.standard_normal((5, h, w))).astype(np.float32) for s in ("left", "right")}
                  for k in action}
        outs = multi.step(inputs)
        for k, out in outs.items():
            ref = alone[k].step(inputs[k])
            assert_same_output(model_path, out.output, ref.output)
            assert out.spikes == ref.spikes
    for k in "yz":
        for name, value in multi.state(k).items():
            np.testing.assert_array_equal(value, alone[k].state[name])
    multi.set_state("y", alone["z"].state)
    for name, value in multi.state("y").items():
        np.testing.assert_array_equal(value, alone["z"].state[name])
    with pytest.raises(RuntimeInputError, match="is not open"):
        multi.step({"x": inputs["z"]})
    with pytest.raises(RuntimeInputError, match="already open"):
        multi.open("y")
    capped = MultiSession(model_path, max_streams=1)
    capped.open(0)
    with pytest.raises(RuntimeInputError, match="no free slot"):
        capped.open(1)


@pytest.fixture
def fake_data(monkeypatch):
    patch_in(monkeypatch)


def test_command_line(tmp_path, fake_data, capsys):
    path = tmp_path / "tiny.onnx"
    stereo_model(path)
    report = tmp_path / "serve.json"
    rc = serve_main(["--onnx", str(path), "--streams", "3", "--max-steps", "4", "--stagger", "1", "--max-streams", "2",
                     "--threads", "1", "--report", str(report)])
    out = capsys.readouterr().out
    assert rc == 0 and "cam2" in out and "aggregate 3 streams, 12 steps" in out
    data = json.loads(report.read_text())
    assert {k: (v["serve"]["joined_at_tick"], v["serve"]["left_at_tick"]) for k, v in data["streams"].items()} == {
        "cam0": (0, 4), "cam1": (1, 5), "cam2": (4, 8)}  # cam2 waits for cam0's slot
    assert data["aggregate"]["batch_size"]["max"] == 2 and data["streams"]["cam1"]["serve"]["seed"] == 1
    for argv, message in ((["--streams", "0"], "nothing to serve"), (["--stagger", "-1"], "--stagger"),
                          (["--max-streams", "0"], "--max-streams")):
        assert serve_main(["--onnx", str(path), "--quiet", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


def test_command_line_needs_no_torch(tmp_path):
    """A deployment host without torch serves the built-in synthetic streams."""
    path = tmp_path / "tiny.onnx"
    stereo_model(path)
    code = (
        "import importlib.abc, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ImportError('torch blocked by the test')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from runtime.serve import main\n"
        "rc = main(sys.argv[1:])\n"
        "assert 'torch' not in sys.modules\n"
        "sys.exit(rc)\n")
    report = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-c", code, "--onnx", str(path), "--streams", "2", "--max-steps", "3",
                           "--quiet", "--report", str(report)], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(report.read_text())["aggregate"]["steps"] == 6


def test_command_line_passes_the_data_protocol_to_every_stream(tmp_path):
    """--gt reaches each stream's report as with runtime.stream; --fb (files only) is refused alike."""
    path = tmp_path / "tiny.onnx"
    stereo_model(path)
    report = tmp_path / "serve.json"
    rc = serve_main(["--onnx", str(path), "--streams", "2", "--max-steps", "2", "--threads", "1", "--quiet",
                     "--gt", "ddes-full", "--report", str(report)])
    assert rc == 0
    for stream in json.loads(report.read_text())["streams"].values():
        assert stream["source"]["ground_truth"] == "ddes-full", stream["source"]
    assert serve_main(["--onnx", str(path), "--streams", "1", "--quiet", "--fb", "12.5"]) == 2
