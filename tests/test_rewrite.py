"""Graph rewrites (compiler.rewrite): nearest Resize as Gathers and Softmax over a non-last axis written
out give the values of the nodes they replace (and of the torch model: the golden tests run every
shipped genotype's graph with them); other Resize and Softmax nodes are left alone."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
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
