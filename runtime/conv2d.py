"""A float 3-D convolution over spikes as one 2-D convolution and shifted sums (the int8 graph's pass).

The stereo cost conv (the matching network's last layer: a few output channels, ``k_d x k x k`` over
the (D, h, w) volume, stride 1) stays float in the int8 graph, and ONNX Runtime runs a 3-D Conv with
few output channels through a huge im2col buffer at ~1 GMAC/s (the paper-width graph, full size:
447 ms of a 1.7 s step). Convolution is linear along the disparity axis too::

    out[:, :, d] = b + sum over taps t of conv2d(x[:, :, d + t - p], W[:, :, t])   (zero outside 0..D-1)

so the volume's D slices are put on the batch axis (a uint8 Transpose of the spikes, then a Cast), one
2-D conv computes every tap (``k_d * Co`` output channels, ONNX Runtime's blocked 2-D kernels), and
``k_d`` shifted slices of its output are summed. The same sums in another order: float rounding apart,
the values of the 3-D conv (this is why only the int8 graph, already rounded, takes it; fp32 graphs
stay bit-identical to torch's).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper


def _ints(node: onnx.NodeProto, name: str, default: Sequence[int]) -> list[int]:
    for a in node.attribute:
        if a.name == name:
            return list(a.ints) if a.ints else [a.i]
    return list(default)


def applies(node: onnx.NodeProto, weight: np.ndarray | None, shape: Sequence | None) -> bool:
    """A plain 3-D Conv (group 1, stride 1, dilation 1, symmetric pads, output the input's size) of known
    fixed input size (batch aside) with initializer weights."""
    if node.op_type != "Conv" or weight is None or weight.ndim != 5 or not shape or len(shape) != 5:
        return False
    k = list(weight.shape[2:])
    pads = _ints(node, "pads", [0] * 6)
    return (_ints(node, "group", [1]) == [1] and set(_ints(node, "strides", [1])) == {1}
            and set(_ints(node, "dilations", [1])) == {1} and pads[:3] == pads[3:]
            and all(p == kk // 2 and kk % 2 == 1 for p, kk in zip(pads[:3], k, strict=True))
            and all(isinstance(d, int) for d in shape[1:]))


def as_2d(node: onnx.NodeProto, x_u8: str, weight: np.ndarray, bias: np.ndarray | None,
          shape: Sequence[int]) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """The nodes and initializers computing ``node``'s output (same name) from the uint8 spikes ``x_u8``."""
    _, c, big_d, h, w = shape
    co, _, kd, kh, kw = weight.shape
    pd = kd // 2
    tag, y = node.output[0], node.output[0]
    w2 = np.ascontiguousarray(weight.transpose(2, 0, 1, 3, 4).reshape(kd * co, c, kh, kw))  # tap t: rows t*Co..
    inits = [numpy_helper.from_array(w2.astype(np.float32), f"{tag}.w2d"),
             numpy_helper.from_array(np.array([-1, c, h, w], np.int64), f"{tag}.shape_in"),
             numpy_helper.from_array(np.array([-1, big_d, kd, co, h * w], np.int64), f"{tag}.shape_taps"),
             numpy_helper.from_array(np.array([0, pd, 0, 0, 0, 0, pd, 0, 0, 0], np.int64), f"{tag}.pad_d"),
             numpy_helper.from_array(np.array([-1, big_d, co, h, w], np.int64), f"{tag}.shape_out"),
             numpy_helper.from_array(np.array([1, 2], np.int64), f"{tag}.axes")]
    nodes = [helper.make_node("Transpose", [x_u8], [f"{tag}.dfirst"], perm=[0, 2, 1, 3, 4]),
             helper.make_node("Cast", [f"{tag}.dfirst"], [f"{tag}.dfirst_f"], to=onnx.TensorProto.FLOAT),
             helper.make_node("Reshape", [f"{tag}.dfirst_f", f"{tag}.shape_in"], [f"{tag}.slices"]),
             helper.make_node("Conv", [f"{tag}.slices", f"{tag}.w2d"], [f"{tag}.taps2d"], kernel_shape=[kh, kw],
                              pads=[kh // 2, kw // 2, kh // 2, kw // 2]),
             helper.make_node("Reshape", [f"{tag}.taps2d", f"{tag}.shape_taps"], [f"{tag}.taps"]),
             helper.make_node("Pad", [f"{tag}.taps", f"{tag}.pad_d"], [f"{tag}.taps_padded"])]
    terms = []
    for t in range(kd):  # out[d] += taps[d + t - pd, t]: slice d + t of the padded taps
        inits += [numpy_helper.from_array(np.array([t, t], np.int64), f"{tag}.start{t}"),
                  numpy_helper.from_array(np.array([t + big_d, t + 1], np.int64), f"{tag}.end{t}")]
        nodes.append(helper.make_node("Slice", [f"{tag}.taps_padded", f"{tag}.start{t}", f"{tag}.end{t}",
                                                f"{tag}.axes"], [f"{tag}.tap{t}"]))
        terms.append(f"{tag}.tap{t}")
    total = terms[0]
    for k, term in enumerate(terms[1:], 1):
        nodes.append(helper.make_node("Add", [total, term], [f"{tag}.sum{k}"]))
        total = f"{tag}.sum{k}"
    last = y if bias is None else f"{tag}.nobias"
    if co == 1:  # (B, D, 1, 1, h*w) is (B, 1, D, h, w) in memory
        inits.append(numpy_helper.from_array(np.array([-1, 1, big_d, h, w], np.int64), f"{tag}.shape_final"))
        nodes.append(helper.make_node("Reshape", [total, f"{tag}.shape_final"], [last]))
    else:
        nodes += [helper.make_node("Reshape", [total, f"{tag}.shape_out"], [f"{tag}.dco"]),
                  helper.make_node("Transpose", [f"{tag}.dco"], [last], perm=[0, 2, 1, 3, 4])]
    if bias is not None:
        inits.append(numpy_helper.from_array(bias.astype(np.float32).reshape(1, co, 1, 1, 1), f"{tag}.bias5"))
        nodes.append(helper.make_node("Add", [last, f"{tag}.bias5"], [y]))
    return nodes, inits


# The int8 3-D convs (the matching network's, QLinearConv): ONNX Runtime's 3-D QLinearConv ran 1.5-5x
# slower than this 2-D form on the stereo graphs' shapes (demo graph: (1, 12, 6, 32, 43) -> 12 channels,
# 2.08 ms against 0.44 ms with the data movement; docs/deploy.md). Integer accumulation is exact in any
# order, so the ``k_d`` disparity taps go on the input channels instead: the D slices on the batch axis,
# input slice ``d + t - p`` as channels ``t*C..``, one 2-D QLinearConv with the kernel
# (Co, k_d*C, kh, kw). The same int32 sums, the same scales and requantisation: the uint8 output is
# bit-identical (tests/test_conv2d_int8.py).


def int8_applies(node: onnx.NodeProto, weight: np.ndarray | None, shape: Sequence | None) -> bool:
    """A 3-D Conv (group 1, dilation 1, stride 1 and 'same' symmetric padding along D) of fixed input
    size (batch aside) with initializer weights: its taps can be stacked on the channels."""
    if node.op_type != "Conv" or weight is None or weight.ndim != 5 or not shape or len(shape) != 5:
        return False
    kd = weight.shape[2]
    pads = _ints(node, "pads", [0] * 6)
    auto = next((a.s for a in node.attribute if a.name == "auto_pad"), b"NOTSET")
    return (auto == b"NOTSET" and _ints(node, "group", [1]) == [1] and set(_ints(node, "dilations", [1])) == {1}
            and _ints(node, "strides", [1, 1, 1])[0] == 1 and kd % 2 == 1 and pads[0] == pads[3] == kd // 2
            and all(isinstance(d, int) for d in shape[1:]))


def taps_on_channels(tag: str, x_u8: str, shape: Sequence[int], kd: int):
    """Nodes and initializers making ``(B*D, k_d*C, h, w)`` (uint8) from ``x_u8`` ``(B, C, D, h, w)``;
    the name of the result. Channels ``t*C..(t+1)*C`` of slice ``d`` are input slice ``d + t - p``
    (zeros outside): one Gather of whole ``(C, h, w)`` blocks from the zero-padded D slices."""
    _, c, big_d, h, w = shape
    p = kd // 2
    index = np.arange(big_d)[:, None] + np.arange(kd)[None, :]  # (D, k_d): padded slice d + t
    inits = [numpy_helper.from_array(np.array([0, p, 0, 0, 0, 0, p, 0, 0, 0], np.int64), f"{tag}.taps.pad"),
             numpy_helper.from_array(np.array(0, np.uint8), f"{tag}.taps.zero"),
             numpy_helper.from_array(index.astype(np.int64), f"{tag}.taps.index"),
             numpy_helper.from_array(np.array([-1, kd * c, h, w], np.int64), f"{tag}.taps.shape")]
    nodes = [helper.make_node("Transpose", [x_u8], [f"{tag}.taps.dfirst"], perm=[0, 2, 1, 3, 4]),
             helper.make_node("Pad", [f"{tag}.taps.dfirst", f"{tag}.taps.pad", f"{tag}.taps.zero"],
                              [f"{tag}.taps.padded"]),
             helper.make_node("Gather", [f"{tag}.taps.padded", f"{tag}.taps.index"], [f"{tag}.taps.stacked"], axis=1),
             helper.make_node("Reshape", [f"{tag}.taps.stacked", f"{tag}.taps.shape"], [f"{tag}.taps.2d"])]
    return nodes, inits, f"{tag}.taps.2d"


def conv_2d_of(node: onnx.NodeProto, x2d: str, w2d: str) -> onnx.NodeProto:
    """``node`` (a 3-D Conv, ``int8_applies``) as the 2-D Conv over the stacked taps."""
    pads, strides = _ints(node, "pads", [0] * 6), _ints(node, "strides", [1, 1, 1])
    conv = onnx.NodeProto()
    conv.CopyFrom(node)
    del conv.attribute[:], conv.input[:]
    conv.input.extend([x2d, w2d, *node.input[2:]])
    kernel = _ints(node, "kernel_shape", [])
    conv.attribute.extend([helper.make_attribute("pads", [pads[1], pads[2], pads[4], pads[5]]),
                           helper.make_attribute("strides", strides[1:])]
                          + ([helper.make_attribute("kernel_shape", kernel[1:])] if kernel else []))
    return conv


def stacked_weight(weight: np.ndarray) -> np.ndarray:
    """(Co, C, k_d, kh, kw) -> (Co, k_d*C, kh, kw): input channel t*C + c holds tap t of channel c."""
    co, c, kd, kh, kw = weight.shape
    return np.ascontiguousarray(weight.transpose(0, 2, 1, 3, 4).reshape(co, kd * c, kh, kw))


def back_to_3d(tag: str, y2d: str, y: str, shape: Sequence[int], node: onnx.NodeProto, co: int, kernel: Sequence[int]):
    """Nodes and initializers taking the 2-D conv's ``(B*D, Co, h', w')`` (uint8) to ``y`` ``(B, Co, D, h', w')``."""
    _, _, big_d, h, w = shape
    pads, strides = _ints(node, "pads", [0] * 6), _ints(node, "strides", [1, 1, 1])
    ho = (h + pads[1] + pads[4] - kernel[1]) // strides[1] + 1
    wo = (w + pads[2] + pads[5] - kernel[2]) // strides[2] + 1
    inits = [numpy_helper.from_array(np.array([-1, big_d, co, ho, wo], np.int64), f"{tag}.taps.shape_out")]
    nodes = [helper.make_node("Reshape", [y2d, f"{tag}.taps.shape_out"], [f"{tag}.taps.dco"]),
             helper.make_node("Transpose", [f"{tag}.taps.dco"], [y], perm=[0, 2, 1, 3, 4])]
    return nodes, inits
