"""Graph rewrites that compute the same values with kernels ONNX Runtime's CPU provider runs faster.

Both are pure passes on an exported one-step graph (a new proto; the input is left as it was) and
leave inputs, outputs and state as they were. Measured on this project's stereo graphs (README,
Benchmarks): ONNX Runtime's 5-D ``Resize`` and its ``Softmax`` over a non-last axis are generic,
slow kernels.

- ``nearest_resize_to_gather``: a nearest-neighbour ``Resize`` between fixed sizes (the trellis
  resampling of spikes between levels) becomes one ``Gather`` per resized axis with constant source
  indices. The indices are those of the torch model's ``F.interpolate(mode=
  "nearest")`` (computed with it), so the graph follows the model it came from exactly.
  ``rewrite`` then writes each chain of these Gathers as strided ``Slice``s, 4-D nearest ``Resize``s
  and the Gathers left (``compiler.resample``): the same bits, in ops ONNX Runtime runs cheaply.
- ``softmax_to_elementwise``: ``Softmax`` over an axis other than the last (the disparity axis of the
  matching cost) becomes ``exp(x - max) / sum`` with ``ReduceMax``, ``Sub``, ``Exp``, ``ReduceSum``,
  ``Div`` over that axis: the same function, rounding aside.
- ``fold_threshold_compare``: a neuron's fire ``(u - th) >= 0`` becomes ``u >= th`` (bit-identical).
- ``spike_counts_as_one_reduce``: a layer's spike count ``ReduceSum(Flatten(y))`` becomes one
  ``ReduceSum`` over the non-batch axes (bit-identical: sums of 0/1 below 2**24).

The neurons' reset stays arithmetic (``u * (1 - y)``): ``Where(u >= th, 0, u)`` is one op less but was
slower in ONNX Runtime (``benchmarks/bench_neuron.py``; numbers in docs/deploy.md).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

from .onnxgraph import dims
from .resample import nearest_gathers_as_slices_and_resizes


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            value = helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _copy(proto: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    return out


def nearest_source_indices(n_in: int, n_out: int) -> np.ndarray:
    """For each of ``n_out`` positions the source position ``F.interpolate(mode="nearest")`` reads."""
    import torch
    import torch.nn.functional as F

    src = torch.arange(n_in, dtype=torch.float64).view(1, 1, n_in)
    return F.interpolate(src, size=n_out, mode="nearest").view(-1).round().long().numpy()


def nearest_resize_to_gather(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """The graph with every nearest ``Resize`` of known fixed sizes as ``Gather``s; how many were replaced.

    Only the exporter's form of nearest resampling is touched (coordinate transformation
    ``asymmetric``, ``floor`` rounding), and only when batch and channels keep their size."""
    out = _copy(proto)
    inferred = shape_inference.infer_shapes(out, strict_mode=True, data_prop=True)
    shapes = {v.name: dims(v) for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}
    nodes, inits, replaced = [], [], 0
    for node in out.graph.node:
        src, dst = shapes.get(node.input[0]) if node.input else None, shapes.get(node.output[0])
        if (node.op_type != "Resize" or _attr(node, "mode", "nearest") != "nearest"
                or _attr(node, "coordinate_transformation_mode", "half_pixel") != "asymmetric"
                or _attr(node, "nearest_mode", "round_prefer_floor") != "floor"
                or not src or not dst or len(src) != len(dst) or src[1] != dst[1]
                or not all(isinstance(d, int) for d in [*src[1:], *dst[1:]])):
            nodes.append(node)
            continue
        # shrinking axes first, outermost first, then growing axes, innermost first: the order with the
        # least data moved (measured on the 5-D stereo trellis, 1.5-2x apart from the worst order)
        axes = ([a for a in range(2, len(src)) if dst[a] < src[a]]
                + [a for a in range(len(src) - 1, 1, -1) if dst[a] > src[a]])
        current = node.input[0]
        if not axes:
            nodes.append(helper.make_node("Identity", [current], [node.output[0]], name=f"{node.name}.same"))
        for k, axis in enumerate(axes):
            index = f"{node.output[0]}.gather{axis}"
            inits.append(numpy_helper.from_array(nearest_source_indices(src[axis], dst[axis]), index))
            target = node.output[0] if k == len(axes) - 1 else f"{index}.out"
            nodes.append(helper.make_node("Gather", [current, index], [target], axis=axis, name=f"{node.name}.{axis}"))
            current = target
        replaced += 1
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    out.graph.initializer.extend(inits)
    return _drop_unused(out), replaced


def softmax_to_elementwise(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """The graph with every ``Softmax`` over a non-last axis written out elementwise; how many."""
    out = _copy(proto)
    inferred = shape_inference.infer_shapes(out, strict_mode=True)
    ranks = {v.name: len(dims(v)) for v in [*inferred.graph.value_info, *inferred.graph.input]}
    nodes, inits, replaced = [], [], 0
    for node in out.graph.node:
        rank = ranks.get(node.input[0]) if node.input else None
        axis = _attr(node, "axis", -1)
        if node.op_type != "Softmax" or not rank or axis % rank == rank - 1:
            nodes.append(node)
            continue
        x, y, tag = node.input[0], node.output[0], node.output[0]
        axes = f"{tag}.axes"
        inits.append(numpy_helper.from_array(np.array([axis % rank], np.int64), axes))
        nodes += [helper.make_node("ReduceMax", [x], [f"{tag}.max"], axes=[axis % rank], keepdims=1),
                  helper.make_node("Sub", [x, f"{tag}.max"], [f"{tag}.shifted"]),
                  helper.make_node("Exp", [f"{tag}.shifted"], [f"{tag}.exp"]),
                  helper.make_node("ReduceSum", [f"{tag}.exp", axes], [f"{tag}.sum"], keepdims=1),
                  helper.make_node("Div", [f"{tag}.exp", f"{tag}.sum"], [y])]
        replaced += 1
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    out.graph.initializer.extend(inits)
    return out, replaced


def _consumers(graph: onnx.GraphProto) -> dict[str, int]:
    """How many node inputs and graph outputs read each tensor."""
    count: dict[str, int] = {}
    for name in [i for n in graph.node for i in n.input if i] + [o.name for o in graph.output]:
        count[name] = count.get(name, 0) + 1
    return count


def fold_threshold_compare(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """The neurons' fire ``(u - th) >= 0`` as ``u >= th``: one op less per neuron, exactly the same
    result (a rounded difference of floats has the sign of the exact one, and is 0 only when they are
    equal), for a finite constant ``th`` and a difference nothing else reads; how many were folded."""
    out = _copy(proto)
    consts = {t.name: numpy_helper.to_array(t) for t in out.graph.initializer}
    producer = {o: n for n in out.graph.node for o in n.output}
    readers = _consumers(out.graph)
    folded: set[int] = set()
    for node in out.graph.node:
        diff = producer.get(node.input[0]) if node.op_type == "GreaterOrEqual" else None
        zero = consts.get(node.input[1]) if diff is not None else None
        if (diff is None or diff.op_type != "Sub" or zero is None or zero.size != 1 or zero.ndim > 1
                or np.any(zero != 0) or readers.get(diff.output[0]) != 1 or diff.input[1] not in consts
                or not np.all(np.isfinite(consts[diff.input[1]]))):
            continue
        del node.input[:]
        node.input.extend(diff.input)
        folded.add(id(diff))
    kept = [n for n in out.graph.node if id(n) not in folded]
    del out.graph.node[:]
    out.graph.node.extend(kept)
    return _drop_unused(out), len(folded)


def spike_counts_as_one_reduce(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """``ReduceSum(Flatten(y, 1), axes=[1])`` of a spike tensor (a cast comparison: 0 or 1) as one
    ``ReduceSum`` over every axis but the batch; exact (integers below 2**24 in any order); how many."""
    out = _copy(proto)
    inferred = shape_inference.infer_shapes(out, strict_mode=True, data_prop=True)
    shapes = {v.name: dims(v) for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}
    consts = {t.name: numpy_helper.to_array(t) for t in out.graph.initializer}
    producer = {o: n for n in out.graph.node for o in n.output}
    readers = _consumers(out.graph)
    folded: set[int] = set()
    for node in out.graph.node:
        flat = producer.get(node.input[0]) if node.op_type == "ReduceSum" and len(node.input) > 1 else None
        if flat is None or flat.op_type != "Flatten" or _attr(flat, "axis", 1) != 1 \
                or readers.get(flat.output[0]) != 1 or _attr(node, "keepdims", 1) != 0 \
                or node.input[1] not in consts or consts[node.input[1]].tolist() not in ([1], [-1]):
            continue
        cast, shape = producer.get(flat.input[0]), shapes.get(flat.input[0])
        spiking = cast is not None and cast.op_type == "Cast" and producer.get(cast.input[0]) is not None \
            and producer[cast.input[0]].op_type in ("GreaterOrEqual", "Greater")
        if not spiking or not shape or not all(isinstance(d, int) for d in shape[1:]) \
                or int(np.prod(shape[1:])) >= 1 << 24:
            continue
        axes = f"{node.output[0]}.axes"
        out.graph.initializer.append(numpy_helper.from_array(np.arange(1, len(shape), dtype=np.int64), axes))
        del node.input[:]
        node.input.extend([flat.input[0], axes])
        folded.add(id(flat))
    kept = [n for n in out.graph.node if id(n) not in folded]
    del out.graph.node[:]
    out.graph.node.extend(kept)
    return _drop_unused(out), len(folded)


def _drop_unused(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Remove nodes whose outputs nothing reads (the replaced Resize's size arithmetic), then unread initializers."""
    graph = proto.graph
    needed = {o.name for o in graph.output}
    kept = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    inits = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    return proto


def rewrite(proto: onnx.ModelProto, resample: bool = True) -> tuple[onnx.ModelProto, list[dict]]:
    """Every rewrite; the records of the resampling and softmax ones that changed something (for
    ``snn.passes``; the neurons' rewrites and ``compiler.resample``'s are exact op for op and not listed).
    ``resample=False`` leaves the resampling as Gathers (only to measure ``compiler.resample``)."""
    records = []
    proto, n = nearest_resize_to_gather(proto)
    if n:
        records.append({"pass": "nearest_resize_to_gather", "nodes": n})
    # exact data movement (compiler.resample), not listed: the resampling's record stays the one above
    if resample:
        proto, _ = nearest_gathers_as_slices_and_resizes(proto)
    proto, n = softmax_to_elementwise(proto)
    if n:
        records.append({"pass": "softmax_to_elementwise", "nodes": n})
    # exact op-level rewrites of the neurons' step: the same bits, so not listed in ``snn.passes`` (the
    # metadata of every shipped graph stays as it was; tests/test_kept.py pins it)
    proto, _ = fold_threshold_compare(proto)
    proto, _ = spike_counts_as_one_reduce(proto)
    return proto, records
