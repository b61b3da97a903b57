"""uint8 nearest up-sampling through ONNX Runtime's fast exact-2x path (a pass of the int8 graph).

The trellis up-samples spikes between scales with a nearest ``Resize`` over the last two axes
(``compiler.resample``), often 2x along the width and a little less than 2x along the height (the
paper-width graph: ``44x58 -> 87x116``). ONNX Runtime runs an exact 2x of both axes far faster than
any other factor on uint8 (``benchmarks/bench_resample.py``, 816 channels, 2 threads: ``44x58 ->
87x116`` 7.1 ms, ``-> 88x116`` then a ``Gather`` of whole rows 1.8 ms; on float32 the two-step form is
slower, so only the int8 graph takes it). Here such a ``Resize`` becomes the 2x ``Resize`` and a
``Gather`` of rows ``2 * r(i)``, where ``r(i)`` is the row the original ``Resize`` reads: taken only
where that row is the same in any float arithmetic (``floor(i * n_in / n_out)`` with ``i * n_in /
n_out`` never an integer for ``0 < i < n_out``, or no height change at all) and checked against
ONNX Runtime's own ``Resize`` when the pass runs. Pure data movement: bit-identical outputs.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference


def _attr(node: onnx.NodeProto, name: str, default: bytes) -> bytes:
    return next((a.s for a in node.attribute if a.name == name), default)


def _rows(n_in: int, n_out: int) -> np.ndarray | None:
    """The rows a nearest ``Resize`` (asymmetric, floor) from ``n_in`` to ``n_out`` reads, where every
    float implementation reads the same ones; None elsewhere."""
    i = np.arange(n_out, dtype=np.int64)
    if n_out == n_in:
        return i
    if not n_in < n_out < 2 * n_in or np.any((i[1:] * n_in) % n_out == 0):
        return None
    return (i * n_in) // n_out


def _ort_rows(n_in: int, scale: float) -> np.ndarray:
    """The rows ONNX Runtime's nearest ``Resize`` reads along the height at ``scale``: an index image
    resized (float32 holds every row number exactly)."""
    import onnxruntime as ort

    node = helper.make_node("Resize", ["x", "", "s"], ["y"], mode="nearest",
                            coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    scales = numpy_helper.from_array(np.array([1, 1, scale, 1], np.float32), "s")
    g = helper.make_graph([node], "rows", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 1, n_in, 1])],
                          [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)], [scales])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.arange(n_in, dtype=np.float32).reshape(1, 1, n_in, 1)
    return session.run(None, {"x": x})[0].reshape(-1).astype(np.int64)


def _candidate(node: onnx.NodeProto, types: dict, shapes: dict, consts: dict) -> np.ndarray | None:
    """The rows ``node`` reads where it can take the 2x path; None otherwise."""
    if node.op_type != "Resize" or len(node.input) != 3 or not node.input[2] \
            or _attr(node, "mode", b"nearest") != b"nearest" \
            or _attr(node, "coordinate_transformation_mode", b"half_pixel") != b"asymmetric" \
            or _attr(node, "nearest_mode", b"round_prefer_floor") != b"floor":
        return None
    x, y, scales = node.input[0], node.output[0], consts.get(node.input[2])
    sin, sout = shapes.get(x), shapes.get(y)
    if types.get(x) != onnx.TensorProto.UINT8 or scales is None or scales.shape != (4,) or not sin or not sout \
            or len(sin) != 4 or len(sout) != 4 or not all(isinstance(d, int) for d in [*sin[2:], *sout[2:]]):
        return None
    if list(scales[:2]) != [1, 1] or scales[3] != 2 or sout[3] != 2 * sin[3] or sout[2] == 2 * sin[2]:
        return None  # not a 2x width, or already the 2x path
    rows = _rows(sin[2], sout[2])
    if rows is None or not np.array_equal(rows, _ort_rows(sin[2], float(scales[2]))):
        return None
    return rows


def doubled_rows(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """``proto`` (changed in place) with every uint8 nearest ``Resize`` that can take the 2x path
    rewritten (module docstring); how many."""
    try:
        inferred = shape_inference.infer_shapes(proto)
    except Exception:  # noqa: BLE001 - a graph ONNX cannot infer: nothing is known to be safe, keep it as it is
        return proto, 0
    values = [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    types = {v.name: v.type.tensor_type.elem_type for v in values}
    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else d.dim_param for d in v.type.tensor_type.shape.dim]
              for v in values if v.type.tensor_type.HasField("shape")}
    consts = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    nodes, inits, count = [], [], 0
    for node in proto.graph.node:
        rows, tag = _candidate(node, types, shapes, consts), node.output[0]
        if rows is None:
            nodes.append(node)
            continue
        inits += [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), f"{tag}.x2.scales"),
                  numpy_helper.from_array(2 * rows, f"{tag}.x2.rows")]
        twice = helper.make_node("Resize", [node.input[0], "", f"{tag}.x2.scales"], [f"{tag}.x2"],
                                 name=f"{node.name or tag}.x2", mode="nearest",
                                 coordinate_transformation_mode="asymmetric", nearest_mode="floor")
        nodes += [twice, helper.make_node("Gather", [f"{tag}.x2", f"{tag}.x2.rows"], [tag], axis=2,
                                          name=f"{node.name or tag}.x2.rows")]
        count += 1
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    proto.graph.initializer.extend(inits)
    return proto, count
