"""The int8 graph: a pure pass on an exported one-step graph that puts every convolution whose input
is spike-valued into the QDQ form ONNX Runtime fuses into ``QLinearConv`` (uint8 input, int8 weight).

Spikes are exactly 0 or 1, and the sums and rearrangements of spikes a network makes (a node adding
its edges' spikes, nearest resampling, the cost volume's shifts and concatenations, zero padding) are
small non-negative integers: uint8 with scale 1 and zero point 0 holds them without loss. Which
tensors are such integers is a value-domain walk over the graph (``integer_bounds``): a ``Cast`` of a
comparison is in [0, 1], an ``Add`` adds its inputs' bounds, data-movement ops keep them. A conv
whose input bound fits uint8 is quantised; every other conv (the stems on the signed event frames,
layers after leaky integrators or pooling) stays float, and so does everything that is not a conv:
the neurons, the state and the outputs. Inputs, outputs and state of the graph do not change.

Per quantised conv (``X`` its input, ``Y`` its output, both float tensors of the original graph)::

    X -> QuantizeLinear(1, 0 uint8) -> DequantizeLinear -> Conv -> QuantizeLinear(s_y, z_y uint8)
    W: int8, symmetric per output channel, DequantizeLinear(axis 0)     -> DequantizeLinear -> Y
    B: int32 with scale s_w (the input scale is 1)

A quantised 3-D conv (the matching network's) becomes a 2-D one with its disparity taps stacked on the
input channels (``runtime.conv2d``; ONNX Runtime's 3-D QLinearConv is several times slower): the same
int32 sums and requantisation, so the same uint8 output bit for bit. A uint8 nearest up-sampling that
doubles the width goes through ONNX Runtime's fast exact-2x ``Resize`` and a ``Gather`` of rows
(``runtime.resize2x``; bit for bit the same). A quantised conv with fewer than 16 output channels is
computed with 16, the extra filters zero, and a ``Slice`` keeps its channels of the uint8 output: ONNX
Runtime's faster symmetric int8 kernel takes only such widths (``runtime.convpad``; the same bits).

The output QuantizeLinear is what makes the pattern fusable (ONNX Runtime has no QLinearConv with a
float output; a float-output ``DQ -> Conv`` runs as float, and ``ConvInteger`` is slower than float on
CPU). It rounds each conv's output current to 256 levels over its calibrated range ``[lo, hi]``:
the one lossy step. ``s_y = (hi - lo) / 255`` with 0 exactly representable.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

from runtime import conv2d, convpad, resize2x

# A conv with fewer output channels stays float: ONNX Runtime's QLinearConv is slower than its float
# Conv there (the 1-channel matching cost at the paper's width, full size: 709 ms against 311 ms).
MIN_OUT_CHANNELS = 4
COMPARISONS = {"Greater", "GreaterOrEqual", "Less", "LessOrEqual", "Equal", "And", "Or", "Not", "Xor"}
# ops whose output values are a selection of their (first / every, for Concat) input's values
MOVERS = {"Identity", "Slice", "Expand", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Transpose", "Gather",
          "Split", "MaxPool", "Tile"}


def integer_bounds(graph: onnx.GraphProto) -> dict[str, tuple[int, int]]:
    """Tensors known to hold integers in [lo, hi] by construction: name -> (lo, hi)."""
    consts = {t.name for t in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    boolean: set[str] = set()
    bounds: dict[str, tuple[int, int]] = {}
    for node in graph.node:  # topologically sorted
        ins = [i for i in node.input if i]
        op = node.op_type
        if op in COMPARISONS:
            boolean.update(node.output)
        elif op == "Cast" and ins[0] in boolean:
            bounds[node.output[0]] = (0, 1)
        elif op in ("Add", "Sum") and ins and all(i in bounds for i in ins):
            bounds[node.output[0]] = (sum(bounds[i][0] for i in ins), sum(bounds[i][1] for i in ins))
        elif op == "Resize" and ins[0] in bounds and _attr(node, "mode", b"nearest") == b"nearest":
            bounds[node.output[0]] = bounds[ins[0]]
        elif op == "Pad" and ins[0] in bounds and _attr(node, "mode", b"constant") == b"constant" \
                and (len(ins) < 3 or _zero_constant(graph, ins[2])):
            lo, hi = bounds[ins[0]]
            bounds[node.output[0]] = (min(lo, 0), max(hi, 0))
        elif op == "Concat" and all(i in bounds for i in ins):
            bounds[node.output[0]] = (min(bounds[i][0] for i in ins), max(bounds[i][1] for i in ins))
        elif op in MOVERS and ins and ins[0] in bounds and all(i in consts for i in ins[1:]):
            for out in node.output:
                bounds[out] = bounds[ins[0]]
    return bounds


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _zero_constant(graph: onnx.GraphProto, name: str) -> bool:
    for t in graph.initializer:
        if t.name == name:
            return bool(np.all(numpy_helper.to_array(t) == 0))
    return False


def plan_int8(proto: onnx.ModelProto) -> tuple[list[onnx.NodeProto], dict[str, str]]:
    """The convs to quantise (their input is an integer tensor in [0, 255], their weights initializers,
    at least ``MIN_OUT_CHANNELS`` outputs) and, for every other conv, why it stays float: name -> reason."""
    bounds = integer_bounds(proto.graph)
    initializers = {t.name: t for t in proto.graph.initializer}
    planned, kept = [], {}
    for node in proto.graph.node:
        if node.op_type != "Conv":
            continue
        b = bounds.get(node.input[0])
        name = node.name or node.output[0]
        if not all(i in initializers for i in node.input[1:] if i):
            kept[name] = "weights computed in the graph, not initializers"
        elif initializers[node.input[1]].dims[0] < MIN_OUT_CHANNELS:
            kept[name] = f"fewer than {MIN_OUT_CHANNELS} output channels (int8 is slower there)"
        elif b is not None and 0 <= b[0] and b[1] <= 255:
            planned.append(node)
        else:
            kept[name] = ("input not integer-valued (float data: event frames, "
                                                 "membrane potentials or pooled values)" if b is None else
                                                 f"input integers in [{b[0]}, {b[1]}], outside uint8")
    return planned, kept


def quantize_int8(proto: onnx.ModelProto, ranges: Mapping[str, tuple[float, float]],
                  calibration: Mapping | None = None, stack_3d: bool = True,
                  pad_channels: bool = True) -> onnx.ModelProto:
    """A copy of ``proto`` with the convs of ``plan_int8`` in QDQ form (module docstring).

    ``ranges`` maps each planned conv's output tensor to the (min, max) it took on calibration data
    (``runtime.calibrate``); ``calibration`` describes that data for ``snn.quantization``.
    ``stack_3d=False`` keeps the 3-D convs 3-D (the same values; only for measuring the 2-D form);
    ``pad_channels=False`` computes every conv with its own output channels (``runtime.convpad``: the
    same values).
    """
    planned, kept = plan_int8(proto)
    missing = [n.output[0] for n in planned if n.output[0] not in ranges]
    if missing:
        raise ValueError(f"no calibrated range for conv output {missing[0]!r}")
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    g = out.graph
    weights = {t.name: t for t in g.initializer}
    targets = {n.output[0] for n in planned}
    nodes: list[onnx.NodeProto] = []
    spikes = _Uint8Spikes(g, nodes)
    new_inits: list[onnx.TensorProto] = [
        numpy_helper.from_array(np.array(1.0, np.float32), "qdq.one"),
        numpy_helper.from_array(np.array(0, np.uint8), "qdq.zero_u8"),
    ]
    few = _few_channel_3d_convs(out, kept, spikes.bounds)
    stacked = _stackable_3d_convs(out, planned, weights) if stack_3d else {}
    taps: dict[tuple[str, int], str] = {}  # (uint8 input, k_d) -> its stacked taps, built once
    for node in g.node:
        if node.output[0] in few:
            qnodes, qinits = conv2d.as_2d(node, spikes.uint8(node.input[0]), *few[node.output[0]])
            nodes += qnodes
            new_inits += qinits
            continue
        if node.output[0] not in targets:
            nodes.append(node)
            continue
        make = functools.partial(_qdq_conv_stacked, shape=stacked[node.output[0]], built=taps) \
            if node.output[0] in stacked else _qdq_conv
        qnodes, qinits = make(node, spikes.uint8(node.input[0]), weights, ranges[node.output[0]], pad=pad_channels)
        nodes += qnodes
        new_inits += qinits
    del g.node[:]
    g.node.extend(_live(nodes, {o.name for o in g.output}))
    g.initializer.extend(new_inits)
    used = {i for n in g.node for i in n.input}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    resize2x.doubled_rows(out)
    _record(out, {"format": "QDQ (ONNX Runtime fuses it into QLinearConv at graph optimisation level >= extended)",
                  "weights": "int8, symmetric, per output channel",
                  "inputs": "uint8, scale 1, zero point 0 (spike values, exact)",
                  "outputs": "uint8, asymmetric over the calibrated range of each conv's output",
                  "int8_convs": len(planned), "float_convs": kept,
                  "float_3d_convs_as_2d": sorted(few), "calibration": dict(calibration or {})})
    onnx.checker.check_model(out, full_check=True)
    return out


class _Uint8Spikes:
    """The uint8 twin of a spike-integer tensor, built where its float form was: a neuron's comparison
    is cast straight to uint8, and the sums, concatenations, zero pads and moves of spikes between it
    and a quantised conv run on uint8 (exact: every value is an integer in [0, 255], ``plan_int8``).
    Only a tensor made some other way is quantised from float (QuantizeLinear, scale 1, zero point 0).
    The twins are appended to ``nodes`` (the new graph's node list) when first asked for, after their
    inputs, so the order stays topological; the float forms stay where anything else reads them."""

    def __init__(self, graph: onnx.GraphProto, nodes: list[onnx.NodeProto]):
        self.nodes = nodes
        self.producer = {o: n for n in graph.node for o in n.output}
        self.bounds = integer_bounds(graph)
        self.consts = {t.name for t in graph.initializer} | {
            o for n in graph.node if n.op_type == "Constant" for o in n.output}
        self.twin: dict[str, str] = {}

    def uint8(self, name: str) -> str:
        if name not in self.twin:
            self.twin[name] = self._make(name)
        return self.twin[name]

    def _make(self, name: str) -> str:
        node, out = self.producer.get(name), f"{name}.u8"
        op = node.op_type if node is not None else None
        ins = [i for i in node.input if i] if node is not None else []
        if op == "Cast" and self.producer.get(ins[0]) is not None \
                and self.producer[ins[0]].op_type in COMPARISONS:
            self._emit(node, [ins[0]], out, to=onnx.TensorProto.UINT8)
        elif op in ("Add", "Concat") and all(i in self.bounds and i not in self.consts for i in ins):
            self._emit(node, [self.uint8(i) for i in ins], out)
        elif op == "Pad" and ins[0] in self.bounds and all(i in self.consts for i in ins[1:2]):
            self._emit(node, [self.uint8(ins[0]), ins[1], "qdq.zero_u8", *node.input[3:]], out)
        elif (op in MOVERS or op == "Resize" and _attr(node, "mode", b"nearest") == b"nearest") \
                and len(node.output) == 1 and ins[0] in self.bounds and all(i in self.consts for i in ins[1:]):
            self._emit(node, [self.uint8(ins[0]), *node.input[1:]], out)
        else:
            self.nodes.append(helper.make_node("QuantizeLinear", [name, "qdq.one", "qdq.zero_u8"], [out],
                                               name=f"{name}.quantize"))
        return out

    def _emit(self, node: onnx.NodeProto, inputs: list[str], out: str, **override) -> None:
        twin = onnx.NodeProto()
        twin.CopyFrom(node)
        del twin.input[:], twin.output[:]
        twin.input.extend(inputs)
        twin.output.append(out)
        twin.name = f"{node.name or node.output[0]}.u8"
        for a in twin.attribute:
            if a.name in override:
                a.i = override[a.name]
        self.nodes.append(twin)


def _few_channel_3d_convs(proto: onnx.ModelProto, kept: Mapping[str, str], bounds) -> dict[str, tuple]:
    """The float 3-D convs over spikes kept float for their few output channels (the stereo cost conv)
    that ``runtime.conv2d`` computes as 2-D: output name -> (weight, bias, input shape)."""
    inferred = shape_inference.infer_shapes(proto)
    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
              for v in [*inferred.graph.value_info, *inferred.graph.input]}
    weights = {t.name: t for t in proto.graph.initializer}
    out = {}
    for node in proto.graph.node:
        name = node.name or node.output[0]
        if node.op_type != "Conv" or "output channels" not in kept.get(name, "") \
                or bounds.get(node.input[0], (0, 256))[1] > 255 \
                or not all(i in weights for i in node.input[1:] if i):
            continue
        weight = numpy_helper.to_array(weights[node.input[1]])
        bias = numpy_helper.to_array(weights[node.input[2]]) if len(node.input) > 2 and node.input[2] else None
        if conv2d.applies(node, weight, shapes.get(node.input[0])):
            out[node.output[0]] = (weight, bias, shapes[node.input[0]])
    return out


def _stackable_3d_convs(proto: onnx.ModelProto, planned: list[onnx.NodeProto], weights: dict) -> dict[str, list]:
    """The quantised 3-D convs ``runtime.conv2d`` runs as 2-D with the taps on the channels: output
    name -> input shape."""
    inferred = shape_inference.infer_shapes(proto)
    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
              for v in [*inferred.graph.value_info, *inferred.graph.input]}
    return {n.output[0]: shapes[n.input[0]] for n in planned
            if conv2d.int8_applies(n, numpy_helper.to_array(weights[n.input[1]]), shapes.get(n.input[0]))}


def _qdq_conv_stacked(node: onnx.NodeProto, x_u8: str, weights: dict, y_range: tuple[float, float], shape,
                      built: dict[tuple[str, int], str], pad: bool = True):
    """A 3-D conv in QDQ form as a 2-D one over its taps stacked on the channels (``runtime.conv2d``):
    the same int8 weights (permuted), scales and uint8 output; the output keeps the conv's name. Convs
    reading the same input share its stacked taps (``built``)."""
    tag = node.output[0]
    weight = numpy_helper.to_array(weights[node.input[1]])
    move_in, inits = [], []
    if (x_u8, weight.shape[2]) not in built:
        move_in, inits, built[x_u8, weight.shape[2]] = conv2d.taps_on_channels(tag, x_u8, shape, weight.shape[2])
    x2d = built[x_u8, weight.shape[2]]
    w2d = f"{tag}.taps.w"
    local = {**weights, w2d: numpy_helper.from_array(conv2d.stacked_weight(weight), w2d)}
    nodes, qinits = _qdq_conv(conv2d.conv_2d_of(node, x2d, w2d), x2d, local, y_range, pad)
    dequantize = nodes[-1]  # reads the 2-D conv's uint8 output
    move_out, out_inits = conv2d.back_to_3d(tag, dequantize.input[0], f"{tag}.taps.y", shape, node,
                                            weight.shape[0], weight.shape[2:])
    dequantize.input[0] = f"{tag}.taps.y"
    return move_in + nodes[:-1] + move_out + [dequantize], inits + qinits + out_inits


def _live(nodes: list[onnx.NodeProto], outputs: set[str]) -> list[onnx.NodeProto]:
    """``nodes`` less those whose outputs nothing reads (float spike moves only quantised convs read)."""
    needed, kept = set(outputs), []
    for node in reversed(nodes):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    return kept[::-1]


def _qdq_conv(node: onnx.NodeProto, x_u8: str, weights: dict, y_range: tuple[float, float], pad: bool = True):
    """The nodes and initializers of one conv in QDQ form; its output keeps the conv's tensor name. With
    ``pad``, a conv with few output channels is computed with more (``runtime.convpad``)."""
    tag = node.output[0]
    nodes = [helper.make_node("DequantizeLinear", [x_u8, "qdq.one", "qdq.zero_u8"], [f"{tag}.x"],
                              name=f"{tag}.dequantize_x")]
    conv_inputs, inits = _quantized_weights(node, weights, tag)
    nodes += [helper.make_node("DequantizeLinear", [f"{tag}.{p}.q", f"{tag}.{p}.scale", f"{tag}.{p}.zero"],
                               [f"{tag}.{p}"], axis=0, name=f"{tag}.dequantize_{p}") for p in conv_inputs]
    conv = onnx.NodeProto()
    conv.CopyFrom(node)
    del conv.input[:]
    conv.input.extend([f"{tag}.x"] + [f"{tag}.{p}" for p in conv_inputs])
    conv.output[0] = f"{tag}.float"
    lo, hi = min(float(y_range[0]), 0.0), max(float(y_range[1]), 0.0)
    scale = max(hi - lo, 1e-8) / 255.0
    zero = int(np.clip(np.round(-lo / scale), 0, 255))
    inits += [numpy_helper.from_array(np.array(scale, np.float32), f"{tag}.y.scale"),
              numpy_helper.from_array(np.array(zero, np.uint8), f"{tag}.y.zero")]
    nodes += [conv,
              helper.make_node("QuantizeLinear", [f"{tag}.float", f"{tag}.y.scale", f"{tag}.y.zero"], [f"{tag}.y"],
                               name=f"{tag}.quantize_y"),
              helper.make_node("DequantizeLinear", [f"{tag}.y", f"{tag}.y.scale", f"{tag}.y.zero"], [tag],
                               name=f"{tag}.dequantize_y")]
    if pad:
        convpad.pad_conv(nodes, inits, tag, weights[node.input[1]].dims, int(_attr(node, "group", 1)))
    return nodes, inits


def _record(out: onnx.ModelProto, record: dict) -> None:
    """``snn.quantization`` = ``record``; ``quantize_int8`` appended to ``snn.passes``."""
    meta = {p.key: p.value for p in out.metadata_props}
    meta["snn.quantization"] = json.dumps(record)
    passes = json.loads(meta.get("snn.passes", "[]")) + [{"pass": "quantize_int8", "int8_convs": record["int8_convs"]}]
    meta["snn.passes"] = json.dumps(passes)
    del out.metadata_props[:]
    for key, value in meta.items():
        out.metadata_props.add(key=key, value=value)


def _quantized_weights(node: onnx.NodeProto, weights: dict, tag: str) -> tuple[list[str], list[onnx.TensorProto]]:
    """int8 per-channel weights and the int32 bias of one conv: the names (``w``, ``b``) and initializers."""
    w = numpy_helper.to_array(weights[node.input[1]]).astype(np.float32)
    cout = w.shape[0]
    scale = np.abs(w.reshape(cout, -1)).max(axis=1) / 127.0
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    q = np.clip(np.round(w / scale.reshape(-1, *([1] * (w.ndim - 1)))), -127, 127).astype(np.int8)
    inits = [numpy_helper.from_array(q, f"{tag}.w.q"), numpy_helper.from_array(scale, f"{tag}.w.scale"),
             numpy_helper.from_array(np.zeros(cout, np.int8), f"{tag}.w.zero")]
    parts = ["w"]
    if len(node.input) > 2 and node.input[2]:
        b = numpy_helper.to_array(weights[node.input[2]]).astype(np.float64)
        inits += [numpy_helper.from_array(np.round(b / scale).astype(np.int32), f"{tag}.b.q"),
                  numpy_helper.from_array(scale, f"{tag}.b.scale"),
                  numpy_helper.from_array(np.zeros(cout, np.int32), f"{tag}.b.zero")]
        parts.append("b")
    return parts, inits


def int8_conv_outputs(proto: onnx.ModelProto) -> list[str]:
    """The output tensors whose ranges ``quantize_int8`` needs: those of the planned convs."""
    return [n.output[0] for n in plan_int8(proto)[0]]

