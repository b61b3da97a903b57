"""Passes on, and facts about, an exported ONNX graph: constant folding, exact output declarations and
the MACs its convolutions execute.

``fold_constants`` evaluates every node whose inputs are all constants (with ONNX's reference
implementation) and keeps the result as an initializer. The exporter leaves such subgraphs behind
(``F.pad`` computes its pads with ``ConstantOfShape``/``Concat``/``Reshape``/``Slice``/``Transpose``),
and ONNX shape inference cannot see through them, so the shapes downstream would stay unknown.

``declare_exact_shapes`` is the export's last structural step. The TorchScript exporter names the
spatial dimensions of every tensor downstream of a traced ``Resize``/``Expand`` after made-up
symbols (``Mulstate_out.X_dim_2``) because their sizes flow from ``Shape`` of the symbolic batch.
The contract wants every ``state_out.X`` declared with exactly ``state_in.X``'s shape (``batch``,
then fixed sizes), since serving systems size their buffers from the declarations. The pass writes
the shapes the compiler knows from its plan, then checks them against ONNX's own shape inference
run on the graph with every output shape erased (an independent derivation): a disagreement is an
error, never a silently wrong declaration.

``conv_macs`` counts the multiply-accumulates of the graph's convolutions from the inferred shapes,
float and int8 apart: the work a graph really executes, which the benchmark reports.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

BATCH = "batch"
Dim = int | str


def dims(value: onnx.ValueInfoProto) -> list[Dim | None]:
    """A value's declared dimensions: ints, symbol names, or None where unknown."""
    out: list[Dim | None] = []
    for d in value.type.tensor_type.shape.dim:
        out.append(d.dim_value if d.HasField("dim_value") else (d.dim_param if d.HasField("dim_param") else None))
    return out


def _set_dims(value: onnx.ValueInfoProto, shape: Sequence[Dim]) -> None:
    tt = value.type.tensor_type
    tt.ClearField("shape")
    for d in shape:
        dim = tt.shape.dim.add()
        if isinstance(d, str):
            dim.dim_param = d
        else:
            dim.dim_value = int(d)


FOLD_LIMIT = 1 << 16  # elements: a constant result larger than this stays a node (keeps the file small)


def fold_constants(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``proto`` in which every node computing only from constants (initializers and
    ``Constant`` nodes) is replaced by its value, and initializers nothing reads are dropped."""
    from onnx.reference import ReferenceEvaluator

    out = onnx.ModelProto()
    out.CopyFrom(proto)
    graph = out.graph
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    kept, new = [], {}
    for node in graph.node:
        inputs = [i for i in node.input if i]
        if node.op_type == "Shape" or not all(i in consts for i in inputs):
            kept.append(node)
            continue
        single = helper.make_model(
            helper.make_graph([node], "fold", [helper.make_tensor_value_info(
                i, helper.np_dtype_to_tensor_dtype(consts[i].dtype), consts[i].shape) for i in inputs],
                [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in node.output]),
            opset_imports=out.opset_import)
        values = [np.asarray(v) for v in ReferenceEvaluator(single).run(None, {i: consts[i] for i in inputs})]
        if any(v.size > FOLD_LIMIT for v in values):
            kept.append(node)
            continue
        for name, value in zip(node.output, values, strict=True):
            consts[name] = new[name] = value
    used = {i for n in kept for i in n.input} | {o.name for o in graph.output}
    initializers = [t for t in graph.initializer if t.name in used]
    initializers += [numpy_helper.from_array(v, name) for name, v in new.items() if name in used]
    del graph.node[:]
    graph.node.extend(kept)
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    return out


def _infer(proto: onnx.ModelProto) -> onnx.ModelProto:
    return shape_inference.infer_shapes(proto, check_type=True, strict_mode=True, data_prop=True)


def declare_exact_shapes(proto: onnx.ModelProto, outputs: Mapping[str, Sequence[Dim]]) -> onnx.ModelProto:
    """A copy of ``proto`` whose graph outputs declare ``outputs[name]`` (``batch`` symbolic, the rest
    fixed) and whose inputs name their first dimension ``batch``; the exporter's value_info is
    replaced by ONNX's strict inference. Raises ``ValueError`` naming the output when ONNX's own
    inference of a graph with erased output shapes disagrees with a declared size or rank."""
    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    del probe.graph.value_info[:]
    for out in probe.graph.output:
        out.type.tensor_type.ClearField("shape")
    inferred = {o.name: dims(o) for o in _infer(probe).graph.output}
    missing = [o.name for o in proto.graph.output if o.name not in outputs]
    if missing:
        raise ValueError(f"no declared shape for graph output {missing[0]!r}")
    for name, want in outputs.items():
        got = inferred.get(name)
        if got is None or len(got) != len(want):
            raise ValueError(f"{name}: ONNX infers rank {None if got is None else len(got)}, the plan says {len(want)}")
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            if isinstance(g, int) and isinstance(w, int) and g != w:
                raise ValueError(f"{name}: dimension {i} is {g} by ONNX shape inference, {w} by the plan")
    fixed = onnx.ModelProto()
    fixed.CopyFrom(proto)
    del fixed.graph.value_info[:]
    for out in fixed.graph.output:
        _set_dims(out, outputs[out.name])
    for inp in fixed.graph.input:
        shape = dims(inp)
        if shape and not isinstance(shape[0], int):
            _set_dims(inp, [BATCH, *shape[1:]])
    return _infer(fixed)


# op type -> index of its weight input (QLinearConv interleaves scales and zero points)
_CONV_WEIGHT = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3}


def conv_macs(proto: onnx.ModelProto) -> dict[str, int]:
    """MACs per sample of the graph's convolutions, ``{"float": ..., "int8": ...}``: a ``Conv`` whose
    input and weight come from ``DequantizeLinear`` (the QDQ form) and ``QLinearConv``/``ConvInteger``
    count as int8. From ONNX shape inference; a conv whose output shape is not fully known (other
    than batch) raises ``ValueError``."""
    inferred = _infer(proto)
    shapes = {v.name: dims(v) for v in [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]}
    weights = {t.name: list(t.dims) for t in inferred.graph.initializer}
    producer = {o: n.op_type for n in inferred.graph.node for o in n.output}
    totals = {"float": 0, "int8": 0}
    for node in inferred.graph.node:
        w_index = _CONV_WEIGHT.get(node.op_type)
        if w_index is None:
            continue
        w_shape = weights.get(node.input[w_index]) or shapes.get(node.input[w_index])
        out = shapes.get(node.output[0])
        if not w_shape or not out or not all(isinstance(d, int) for d in [*out[1:], *w_shape]):
            raise ValueError(f"{node.op_type} {node.name or node.output[0]}: shapes unknown, cannot count MACs")
        macs = int(np.prod(w_shape[1:])) * int(np.prod(out[1:]))  # (C_in / groups) * kernel per output
        qdq = node.op_type == "Conv" and all(producer.get(i) == "DequantizeLinear" for i in node.input[:2])
        totals["int8" if qdq or node.op_type != "Conv" else "float"] += macs
    return totals
