"""int8 convs with few output channels computed with 16 (runtime.convpad, runtime.quantize): the kept
channels give the unpadded conv's uint8 output bit for bit, on random single convs (2-D and 3-D, with
and without bias, every output channel count from 1 to 17) and on the demo stereo graph stepped 30
times with its state carried; which convs are padded."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from helpers import ROOT, assert_graphs_step_alike, ort_session, small_genotype, spiking_conv
from onnx import numpy_helper

from compiler import build_model, load_genotype
from compiler.build import load_weights
from compiler.export import to_onnx
from runtime import convpad, quantize
from runtime.calibrate import calibration_windows, output_ranges
from runtime.calibrate import main as calibrate_main


def test_which_convs_are_padded():
    assert [convpad.padded_out_channels(c, 12) for c in (1, 4, 8, 12, 15)] == [16] * 5
    assert convpad.padded_out_channels(16, 12) == 16 and convpad.padded_out_channels(36, 12) == 36
    assert convpad.padded_out_channels(8, 6) == 8  # input channels not a multiple of 4: no fast kernel
    assert convpad.padded_out_channels(8, 12, group=2) == 8


@pytest.mark.parametrize("trial", range(6))
def test_random_convs_keep_their_bits(trial):
    rng = np.random.default_rng(trial)
    three_d = trial % 3 == 2
    cout, cin = int(rng.integers(1, 18)), int(rng.choice([4, 8, 12, 24]))
    kernel = (cout, cin, 3, 3, 3) if three_d else (cout, cin, 3, int(rng.choice([1, 3])))
    shape = (1, cin, 5, 9, 11) if three_d else (1, cin, int(rng.integers(4, 30)), int(rng.integers(4, 30)))
    pads = [1] * 6 if three_d else [1, kernel[3] // 2, 1, kernel[3] // 2]
    weight = rng.standard_normal(kernel).astype(np.float32)
    bias = rng.standard_normal(cout).astype(np.float32) if trial % 2 else None
    proto = spiking_conv(shape, weight, bias, pads=pads)
    lo, hi = -float(rng.random() * 9 + 1), float(rng.random() * 9 + 1)
    padded = quantize.quantize_int8(proto, {"y": (lo, hi)})
    plain = quantize.quantize_int8(proto, {"y": (lo, hi)}, pad_channels=False)
    n_slices = sum(n.name.endswith(".keep_channels") for n in padded.graph.node)
    assert n_slices == (cout < 16) and not any(n.name.endswith(".keep_channels") for n in plain.graph.node)
    w_q = numpy_helper.to_array(next(t for t in padded.graph.initializer if t.name.endswith(".w.q")))
    assert w_q.shape[0] == max(cout, 16) and not w_q[cout:].any()
    x = rng.random((2, *shape[1:])).astype(np.float32)
    got, want = ort_session(padded).run(None, {"x": x})[0], ort_session(plain).run(None, {"x": x})[0]
    assert got.shape == want.shape == (2, cout, *want.shape[2:]) and got.tobytes() == want.tobytes()
    assert np.ptp(want) > 0
    # the graph's metadata is that of the unpadded graph (tests/test_kept.py pins it)
    assert {p.key: p.value for p in padded.metadata_props} == {p.key: p.value for p in plain.metadata_props}


def test_demo_int8_graph_steps_bit_identical():
    """The trained demo model's int8 graph with and without the padding: 30 steps, state carried, every
    output (disparity, every state, every spike count) the same bits."""
    model = build_model(load_genotype(ROOT / "genotypes/stereo_small.yaml"))
    load_weights(model, str(ROOT / "models/stereo_small.pt"))
    fp32 = to_onnx(model.eval())
    ranges = output_ranges(fp32, quantize.int8_conv_outputs(fp32), calibration_windows(fp32, None, 2), None)
    padded, plain = quantize.quantize_int8(fp32, ranges), quantize.quantize_int8(fp32, ranges, pad_channels=False)
    assert sum(n.name.endswith(".keep_channels") for n in padded.graph.node) >= 20
    last = assert_graphs_step_alike(padded, plain, seed=5)
    assert sum(float(v.sum()) for k, v in last.items() if k.startswith("spikes.")) > 0


def test_calibrate_command_line_pads_unless_told_not_to(tmp_path, capsys):
    """``python -m runtime.calibrate``: padded by default, ``--no-pad-channels`` leaves it out; the two
    graphs step alike; a bad value of the switch is one line and exit 2."""
    torch.manual_seed(0)
    fp32 = tmp_path / "fp32.onnx"
    onnx.save(to_onnx(build_model(small_genotype("stereo")).eval()), str(fp32))
    graphs = {}
    for name, extra in (("padded", []), ("plain", ["--no-pad-channels"])):
        out = tmp_path / f"{name}.onnx"
        assert calibrate_main([str(fp32), "-o", str(out), "--calib-windows", "2", "--threads", "1", *extra]) == 0
        graphs[name] = onnx.load(str(out))
    slices = {k: sum(n.name.endswith(".keep_channels") for n in g.graph.node) for k, g in graphs.items()}
    assert slices["padded"] > 0 and slices["plain"] == 0
    assert_graphs_step_alike(graphs["padded"], graphs["plain"], steps=5, seed=6)
    with pytest.raises(SystemExit) as exc:
        calibrate_main([str(fp32), "-o", str(tmp_path / "x.onnx"), "--pad-channels=no"])
    assert exc.value.code == 2 and capsys.readouterr().err.count("\n") == 1
    assert not (tmp_path / "x.onnx").exists()
    for bad, says in ((tmp_path, "is a folder"), (fp32 / "x.onnx", "cannot write the int8 graph")):
        assert calibrate_main([str(fp32), "-o", str(bad), "--calib-windows", "2", "--threads", "1"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: -o {bad}: {says}") and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fp32.onnx", "padded.onnx", "plain.onnx"]
