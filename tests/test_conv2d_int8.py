"""The int8 graph's 3-D convs as 2-D convs over their disparity taps stacked on the channels
(runtime.conv2d, runtime.quantize): bit for bit the 3-D QLinearConv's output, on single convs of several
shapes (strides and uneven pads in h, w; k_d 1, 3, 5) and on the demo stereo graph stepped 30 times with its
state carried."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import ROOT, assert_graphs_step_alike, ort_session, spiking_conv
from onnx import helper, numpy_helper

from compiler import build_model, load_genotype
from compiler.build import load_weights
from compiler.export import to_onnx
from runtime import quantize
from runtime.calibrate import calibration_windows, output_ranges


@pytest.mark.parametrize("shape, kernel, attrs", [
    ((1, 12, 6, 32, 43), (12, 12, 3, 3, 3), {"pads": [1] * 6}),
    ((1, 8, 5, 9, 11), (6, 8, 5, 3, 3), {"pads": [2, 1, 0, 2, 1, 2], "strides": [1, 2, 2]}),
    ((1, 4, 3, 10, 7), (5, 4, 1, 3, 1), {"pads": [0, 1, 0, 0, 1, 0]}),
])
def test_one_conv_gives_the_3d_convs_bits(shape, kernel, attrs):
    weight = np.random.default_rng(1).standard_normal(kernel).astype(np.float32)
    bias = np.random.default_rng(0).standard_normal(weight.shape[0]).astype(np.float32)
    proto = spiking_conv(shape, weight, bias, **attrs)
    stacked = quantize.quantize_int8(proto, {"y": (-6.0, 9.0)})
    plain = quantize.quantize_int8(proto, {"y": (-6.0, 9.0)}, stack_3d=False)
    ops = {n.op_type for n in stacked.graph.node}
    assert "Gather" in ops and "Transpose" in ops and len(numpy_helper.to_array(
        next(t for t in stacked.graph.initializer if t.name == "y.w.q")).shape) == 4
    x = np.random.default_rng(2).random((2, *shape[1:])).astype(np.float32)
    got, want = ort_session(stacked).run(None, {"x": x})[0], ort_session(plain).run(None, {"x": x})[0]
    assert got.shape == want.shape and got.tobytes() == want.tobytes()
    assert np.ptp(want) > 0


def test_other_convs_are_not_stacked():
    conv = helper.make_node("Conv", ["s", "w"], ["y"], pads=[0, 1, 1, 0, 1, 1])  # no 'same' padding along D
    weight = np.zeros((4, 2, 3, 3, 3), np.float32)
    from runtime.conv2d import int8_applies

    assert not int8_applies(conv, weight, [None, 2, 5, 6, 6])
    assert not int8_applies(helper.make_node("Conv", ["s", "w"], ["y"], pads=[1] * 6, group=2), weight,
                            [None, 4, 5, 6, 6])
    assert int8_applies(helper.make_node("Conv", ["s", "w"], ["y"], pads=[1] * 6), weight, [None, 2, 5, 6, 6])


def test_demo_int8_graph_steps_bit_identical():
    """The trained demo model's int8 graph with and without the stacking: 30 steps, state carried,
    every output (disparity, every state, every spike count) the same bits."""
    model = build_model(load_genotype(ROOT / "genotypes/stereo_small.yaml"))
    load_weights(model, str(ROOT / "models/stereo_small.pt"))
    fp32 = to_onnx(model.eval())
    ranges = output_ranges(fp32, quantize.int8_conv_outputs(fp32), calibration_windows(fp32, None, 2), None)
    stacked, plain = quantize.quantize_int8(fp32, ranges), quantize.quantize_int8(fp32, ranges, stack_3d=False)
    assert sum(n.output[0].endswith(".taps.dfirst") for n in stacked.graph.node) >= 10
    last = assert_graphs_step_alike(stacked, plain, seed=4)
    assert sum(float(v.sum()) for k, v in last.items() if k.startswith("spikes.")) > 0
