"""uint8 nearest up-sampling through ONNX Runtime's 2x path (runtime.resize2x, a pass of the int8 graph):
the rewritten graph gives the original's bits; float tensors, an exact 2x already, and heights whose rows
could depend on float rounding are left alone."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from runtime.resize2x import doubled_rows


def _graph(src, dst, elem=TensorProto.UINT8):
    scales = np.array([1, 1, dst[2] / src[2], dst[3] / src[3]], np.float32)
    for a in (2, 3):
        while float(scales[a]) * src[a] < dst[a]:  # the scale whose floor(n_in * s) is n_out (in float64 too)
            scales[a] = np.nextafter(scales[a], np.float32(np.inf))
    node = helper.make_node("Resize", ["x", "", "s"], ["y"], mode="nearest",
                            coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", elem, ["batch", *src[1:]])],
                          [helper.make_tensor_value_info("y", elem, ["batch", *dst[1:]])],
                          [numpy_helper.from_array(scales, "s")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _run(proto, x):
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("src, dst, taken", [
    ((2, 3, 10, 12), (2, 3, 19, 24), 1),    # height < 2x, width 2x: the trellis's 44x58 -> 87x116 kind
    ((2, 3, 44, 58), (2, 3, 87, 116), 1),   # the paper-width case itself
    ((2, 3, 10, 12), (2, 3, 10, 24), 1),    # width alone
    ((2, 3, 10, 12), (2, 3, 20, 24), 0),    # an exact 2x already
    ((2, 3, 10, 12), (2, 3, 15, 24), 0),    # 10 -> 15: row 3 * 10 / 15 = 2 exactly, rounding could move it
    ((2, 3, 10, 12), (2, 3, 19, 23), 0),    # width not 2x
])
def test_uint8_resizes_take_the_2x_path_with_the_same_bits(src, dst, taken):
    before = _graph(src, dst)
    after, n = doubled_rows(_graph(src, dst))
    assert n == taken
    assert [nd.op_type for nd in after.graph.node] == (["Resize", "Gather"] if taken else ["Resize"])
    onnx.checker.check_model(after, full_check=True)
    x = np.random.default_rng(0).integers(0, 256, src, dtype=np.uint8)
    got, want = _run(after, x), _run(before, x)
    assert got.shape == tuple(dst) and got.tobytes() == want.tobytes()


def test_float_resizes_are_left_alone():
    _, n = doubled_rows(_graph((2, 3, 10, 12), (2, 3, 19, 24), TensorProto.FLOAT))
    assert n == 0


def test_resizes_of_unknown_shape_or_computed_scales_are_left_alone():
    """A height or width only known at run time, or scales computed in the graph, leave nothing to prove
    the rows by: the Resize stays."""
    dynamic = _graph((2, 3, 10, 12), (2, 3, 19, 24))
    dynamic.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "h"
    dynamic.graph.output[0].type.tensor_type.shape.dim[2].dim_param = "h2"
    assert doubled_rows(dynamic)[1] == 0
    computed = _graph((2, 3, 10, 12), (2, 3, 19, 24))
    scales = computed.graph.initializer.pop()
    computed.graph.input.append(helper.make_tensor_value_info(scales.name, TensorProto.FLOAT, [4]))
    assert doubled_rows(computed)[1] == 0
