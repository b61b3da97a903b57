"""Graph rewrites (compiler.rewrite): nearest Resize as Gathers and Softmax over a non-last axis written
out give the values of the nodes they replace (and of the torch model: the golden tests run every
shipped genotype's graph with them); other Resize and Softmax nodes are left alone."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from helpers import ROOT
from onnx import TensorProto, helper, numpy_helper

from compiler.rewrite import nearest_resize_to_gather, softmax_to_elementwise


def _model(node, x_shape, y_shape, inits=()):
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)], list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _run(proto, x):
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("src, dst", [((1, 3, 9, 11, 13), (1, 3, 17, 22, 26)),  # up, odd ratios
                                      ((2, 3, 17, 22, 26), (2, 3, 9, 11, 13)),  # down
                                      ((1, 2, 5, 7), (1, 2, 10, 3))])            # one up, one down, 4-D
def test_nearest_resize_becomes_gathers_with_the_same_values(src, dst):
    sizes = numpy_helper.from_array(np.array(dst, np.int64), "sizes")
    node = helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="nearest",
                            coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    proto = _model(node, src, dst, [sizes])
    rewritten, n = nearest_resize_to_gather(proto)
    assert n == 1 and {nd.op_type for nd in rewritten.graph.node} == {"Gather"}
    x = np.random.default_rng(0).standard_normal(src).astype(np.float32)
    np.testing.assert_array_equal(_run(rewritten, x), _run(proto, x))
    want = F.interpolate(torch.from_numpy(x), size=dst[2:], mode="nearest").numpy()
    np.testing.assert_array_equal(_run(rewritten, x), want)


def test_other_resizes_are_left_alone():
    sizes = numpy_helper.from_array(np.array((1, 2, 8, 8), np.int64), "sizes")
    node = helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="linear")
    proto = _model(node, (1, 2, 4, 4), (1, 2, 8, 8), [sizes])
    assert nearest_resize_to_gather(proto)[1] == 0


def test_softmax_over_a_middle_axis_is_written_out():
    proto = _model(helper.make_node("Softmax", ["x"], ["y"], axis=1), (2, 7, 5, 6), (2, 7, 5, 6))
    rewritten, n = softmax_to_elementwise(proto)
    assert n == 1 and "Softmax" not in {nd.op_type for nd in rewritten.graph.node}
    x = (np.random.default_rng(1).standard_normal((2, 7, 5, 6)) * 20).astype(np.float32)
    x[:, 3] = -1e4  # masked entries, as the sub-pixel estimator writes them
    np.testing.assert_allclose(_run(rewritten, x), _run(proto, x), rtol=1e-5, atol=1e-7)
    last = _model(helper.make_node("Softmax", ["x"], ["y"], axis=-1), (2, 7), (2, 7))
    assert softmax_to_elementwise(last)[1] == 0


def _neuron(shape, th=0.7, axis=1):
    """A LIF neuron's fire and spike count as the exporter writes them (the count's axis 1 or -1 of the
    flattened spikes: torch's exporter writes -1)."""
    inits = [numpy_helper.from_array(np.float32(th), "th"), numpy_helper.from_array(np.float32(0), "zero"),
             numpy_helper.from_array(np.array([axis], np.int64), "axis1")]
    nodes = [helper.make_node("Sub", ["x", "th"], ["d"]), helper.make_node("GreaterOrEqual", ["d", "zero"], ["ge"]),
             helper.make_node("Cast", ["ge"], ["y"], to=TensorProto.FLOAT),
             helper.make_node("Flatten", ["y"], ["flat"], axis=1),
             helper.make_node("ReduceSum", ["flat", "axis1"], ["count"], keepdims=0)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape),
                           helper.make_tensor_value_info("count", TensorProto.FLOAT, shape[:1])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("axis", [1, -1])
def test_neuron_fire_and_spike_count_rewrites_give_the_same_bits(axis):
    from compiler.rewrite import fold_threshold_compare, spike_counts_as_one_reduce

    proto = _neuron([2, 3, 5, 7], axis=axis)
    folded, n = fold_threshold_compare(proto)
    assert n == 1 and "Sub" not in {nd.op_type for nd in folded.graph.node}
    counted, n = spike_counts_as_one_reduce(folded)
    assert n == 1 and "Flatten" not in {nd.op_type for nd in counted.graph.node}
    x = np.random.default_rng(2).standard_normal((2, 3, 5, 7)).astype(np.float32)
    x[0, 0, 0, :3] = [0.7, np.nextafter(np.float32(0.7), np.float32(0)), np.inf]  # at, just below, far above
    x[1, 0, 0, :2] = [-np.inf, np.nan]
    got_all, want_all = (ort.InferenceSession(p.SerializeToString(), providers=["CPUExecutionProvider"])
                         .run(None, {"x": x}) for p in (counted, proto))
    for got, want in zip(got_all, want_all, strict=True):
        assert got.tobytes() == want.tobytes()


def test_neuron_rewrites_leave_other_graphs_alone():
    from compiler.rewrite import fold_threshold_compare, spike_counts_as_one_reduce

    proto = _neuron([2, 3, 5, 7])
    proto.graph.output.append(helper.make_tensor_value_info("d", TensorProto.FLOAT, [2, 3, 5, 7]))
    assert fold_threshold_compare(proto)[1] == 0  # the difference is read elsewhere: kept
    proto = _neuron([2, 3, 5, 7])
    proto.graph.node[2].input[0] = "d"  # counting a float tensor, not spikes: the order of the sum matters
    proto.graph.node[2].op_type = "Identity"
    del proto.graph.node[2].attribute[:]
    assert spike_counts_as_one_reduce(proto)[1] == 0


def test_exported_graphs_count_spikes_with_one_reduce():
    """The exporter's counts (``Flatten`` then ``ReduceSum`` over axis -1) are folded in a real graph: no
    ``Flatten`` is left in the demo stereo graph (the pass once looked for axis 1 only and left all 80)."""
    import torch

    from compiler import build_model, load_genotype
    from compiler.export import to_onnx

    torch.manual_seed(0)
    proto = to_onnx(build_model(load_genotype(ROOT / "genotypes/stereo_small.yaml")).eval())
    ops = [nd.op_type for nd in proto.graph.node]
    assert "Flatten" not in ops and ops.count("ReduceSum") >= 80
    # a neuron layer's state and count leave the step as they are: no Slice computed from a Shape per
    # layer (a one-part torch.chunk exported that way, doubling the graph's nodes; compiler.interpret._parts)
    assert ops.count("Shape") <= 3 and ops.count("Div") <= 1 and len(ops) < 900
