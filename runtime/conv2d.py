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
