"""Output channels of an int8 conv padded to what ONNX Runtime's fast int8 kernel takes (a pass of the
int8 graph, applied by ``runtime.quantize``).

ONNX Runtime's CPU ``QLinearConv`` has two paths for int8 weights that are symmetric (zero point 0, as
ours are): MLAS's "symmetric" direct conv over an indirection buffer, and im2col followed by an int8
GEMM. On x86 the first takes a conv only where it has at least 16 output channels (a multiple of 8 on
AVX2, of 4 on AVX-512) and input channels a multiple of 4 (``MlasConvSymPackWSize``); every other one
goes through im2col. The searched stereo networks are full of 4-, 8- and 12-channel convs, and there
the im2col path is the slower one even counting the padding's wasted work
(``benchmarks/bench_convpad.py``).

So a quantised conv with fewer than 16 output channels (input channels a multiple of 4, one group) is
computed with 16: the extra filters are zero (zero int8 weights and bias, scale 1), and a ``Slice`` of
the uint8 output keeps the first ``cout`` channels before its ``DequantizeLinear``. The kept channels'
int32 sums, bias and requantisation are the same numbers, so their uint8 values are the same bit for
bit (checked by tests/test_convpad.py on random convs and on the exported graphs' steps). Elsewhere
(ARM, whose symmetric kernel wants at least 64 input channels) the padding only adds the zero filters'
work; ``quantize_int8(..., pad_channels=False)`` leaves it out.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

FAST_MIN_OUT = 16  # MLAS's FilterOutputChannelPackCount on x86 (AVX2, AVX-VNNI, AVX-512)
FAST_IN_ALIGN = 4  # its KernelInputChannelAlignment there


def padded_out_channels(cout: int, cin: int, group: int = 1) -> int:
    """The output channels a quantised conv with ``cout`` outputs and ``cin`` inputs is computed with."""
    if group != 1 or cin % FAST_IN_ALIGN or cout >= FAST_MIN_OUT:
        return cout
    return FAST_MIN_OUT


def pad_conv(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], tag: str, weight_dims, group: int) -> None:
    """Pad the QDQ conv ``tag`` in place where ``padded_out_channels`` says so: ``nodes`` ends with its
    ``QuantizeLinear`` and ``DequantizeLinear`` of ``{tag}.y``, ``inits`` holds its int8 weights, scales,
    zero points and int32 bias (``{tag}.w.q``, ``.w.scale``, ``.w.zero``, ``.b.q``, ``.b.scale``,
    ``.b.zero``). Those are extended along the output channels with zero filters of scale 1, the
    quantised output becomes ``{tag}.y.padded``, and a ``Slice`` of its first channels is ``{tag}.y``."""
    cout = int(weight_dims[0])
    padded = padded_out_channels(cout, int(weight_dims[1]) * group, group)
    if padded == cout:
        return
    fill = {"w.q": 0, "w.scale": 1.0, "w.zero": 0, "b.q": 0, "b.scale": 1.0, "b.zero": 0}
    for i, t in enumerate(inits):
        part = t.name[len(tag) + 1:] if t.name.startswith(f"{tag}.") else None
        if part in fill:
            a = numpy_helper.to_array(t)
            extra = np.full((padded - a.shape[0], *a.shape[1:]), fill[part], dtype=a.dtype)
            inits[i] = numpy_helper.from_array(np.concatenate([a, extra]), t.name)
    quantize = nodes[-2]
    quantize.output[0] = f"{tag}.y.padded"
    names = [f"{tag}.keep.{k}" for k in ("starts", "ends", "axes")]
    inits += [numpy_helper.from_array(np.array([v], np.int64), n) for v, n in zip((0, cout, 1), names, strict=True)]
    nodes.insert(len(nodes) - 1, helper.make_node("Slice", [quantize.output[0], *names], [f"{tag}.y"],
                                                  name=f"{tag}.keep_channels"))
