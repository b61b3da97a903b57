"""``python benchmarks/bench_neuron.py [--shape 1,8,130,173] [--rounds 40] [--threads 1] [--int8]``: one
LIF neuron step (charge, fire, hard reset) written several ways in ONNX, timed in ONNX Runtime (CPU) in
turn, with a check that every form gives the first form's bits. What ``compiler.rewrite`` keeps came
from this (docs/deploy.md).

``--int8``: the neuron as the int8 graph runs it (the current dequantised from a QLinearConv's uint8
output, uint8 spikes out for the next QLinearConv, the layer's spike count, the membrane state), the
exported form against other ways to count and reset.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from runtime.core.errors import ArgumentParser, int_between  # noqa: E402
from runtime.session import MAX_THREADS  # noqa: E402

N = helper.make_node
MAX_ELEMENTS = 1 << 28  # a layer of 268M membranes: 1 GB a float tensor, beyond any layer of the shipped models


def layer_shape(text: str) -> list[int]:
    """``--shape``: comma-separated sizes, each at least 1, at most ``MAX_ELEMENTS`` elements in all."""
    try:
        shape = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not comma-separated integers: {text!r}") from None
    if len(shape) < 2 or min(shape) < 1 or math.prod(shape) > MAX_ELEMENTS:
        raise argparse.ArgumentTypeError(f"needs 2 or more sizes, each at least 1, at most {MAX_ELEMENTS} "
                                         f"elements in all, got {text!r}")
    return shape


CHARGE = [N("Mul", ["tau", "v"], ["m"]), N("Add", ["m", "i"], ["u"])]
FOLDED = [N("GreaterOrEqual", ["u", "th"], ["ge"]), N("Cast", ["ge"], ["y"], to=TensorProto.FLOAT)]
VARIANTS = {
    "as exported (7 ops)": CHARGE + [N("Sub", ["u", "th"], ["d"]), N("GreaterOrEqual", ["d", "zero"], ["ge"]),
                                     N("Cast", ["ge"], ["y"], to=TensorProto.FLOAT),
                                     N("Sub", ["one", "y"], ["r"]), N("Mul", ["u", "r"], ["vo"])],
    "u >= th, u * (1 - y) (6 ops)": CHARGE + FOLDED + [N("Sub", ["one", "y"], ["r"]), N("Mul", ["u", "r"], ["vo"])],
    "u >= th, Where reset (5 ops)": CHARGE + FOLDED + [N("Where", ["ge", "zero", "u"], ["vo"])],
    "u >= th, u * (u < th) (7 ops)": CHARGE + FOLDED + [N("Less", ["u", "th"], ["lt"]),
                                                       N("Cast", ["lt"], ["k"], to=TensorProto.FLOAT),
                                                       N("Mul", ["u", "k"], ["vo"])],
}
# the int8 graph's neuron: q (uint8 conv output) and v in; s (uint8 spikes), c (count per sample), vo out
CHARGE8 = [N("DequantizeLinear", ["q", "qs", "qz"], ["i"]), *CHARGE, N("GreaterOrEqual", ["u", "th"], ["ge"]),
           N("Cast", ["ge"], ["s"], to=TensorProto.UINT8)]
COUNT_CAST = [N("Cast", ["ge"], ["y"], to=TensorProto.FLOAT), N("Flatten", ["y"], ["yf"], axis=1),
              N("ReduceSum", ["yf", "axis1"], ["c"], keepdims=0)]
COUNT_INT = [N("Reshape", ["s", "rows"], ["s2"]), N("MatMulInteger", ["s2", "ones"], ["c32"]),
             N("Reshape", ["c32", "per_sample"], ["c32b"]), N("ReduceSum", ["c32b", "axis1"], ["c32s"], keepdims=0),
             N("Cast", ["c32s"], ["c"], to=TensorProto.FLOAT)]
COUNT_DQ = [N("DequantizeLinear", ["s", "one", "zero8"], ["y"]), N("Flatten", ["y"], ["yf"], axis=1),
            N("ReduceSum", ["yf", "axis1"], ["c"], keepdims=0)]
RESET = [N("Sub", ["one", "y"], ["r"]), N("Mul", ["u", "r"], ["vo"])]
WHERE = [N("Where", ["ge", "zero", "u"], ["vo"])]
VARIANTS8 = {
    "as exported: Cast count, u * (1 - y)": CHARGE8 + COUNT_CAST + RESET,
    "Cast count, Where reset": CHARGE8 + COUNT_CAST + WHERE,
    "MatMulInteger count, Where reset": CHARGE8 + COUNT_INT + WHERE,
    "MatMulInteger count, u * (1 - y)": CHARGE8 + COUNT_INT + [N("Cast", ["ge"], ["y"], to=TensorProto.FLOAT)] + RESET,
    "DequantizeLinear count, u * (1 - y)": CHARGE8 + COUNT_DQ + RESET,
    "DequantizeLinear count, Where reset": CHARGE8 + COUNT_DQ + WHERE,
}


def _graph(nodes, shape: list[int], int8: bool):
    """The neuron step as a model: float ``v`` and ``i`` (or uint8 ``q``) in; ``y``/``vo`` (or ``s``, ``c``,
    ``vo``) out."""
    f, u8 = TensorProto.FLOAT, TensorProto.UINT8
    width = shape[-1]
    inits = [numpy_helper.from_array(np.array(v, np.float32), n)
             for n, v in (("tau", 0.5), ("th", 1.0), ("zero", 0.0), ("one", 1.0), ("qs", 0.05))]
    inits += [numpy_helper.from_array(np.array(0, np.uint8), "zero8"),
              numpy_helper.from_array(np.array(100, np.uint8), "qz"),
              numpy_helper.from_array(np.array([1], np.int64), "axis1"),
              numpy_helper.from_array(np.ones((width, 1), np.uint8), "ones"),
              numpy_helper.from_array(np.array([-1, width], np.int64), "rows"),
              numpy_helper.from_array(np.array([shape[0], -1], np.int64), "per_sample")]
    used = {i for n in nodes for i in n.input}
    inits = [t for t in inits if t.name in used]
    if int8:
        ins = [helper.make_tensor_value_info("v", f, shape), helper.make_tensor_value_info("q", u8, shape)]
        outs = [helper.make_tensor_value_info("s", u8, shape), helper.make_tensor_value_info("c", f, None),
                helper.make_tensor_value_info("vo", f, shape)]
    else:
        ins = [helper.make_tensor_value_info(x, f, shape) for x in ("v", "i")]
        outs = [helper.make_tensor_value_info(x, f, shape) for x in ("y", "vo")]
    g = helper.make_graph(nodes, "neuron", ins, outs, inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python benchmarks/bench_neuron.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", type=layer_shape, default="1,8,130,173",
                        help="the layer's tensor shape (default 1,8,130,173)")
    parser.add_argument("--rounds", type=int_between(1), default=40)
    parser.add_argument("--threads", type=int_between(1, MAX_THREADS), default=1)
    parser.add_argument("--int8", action="store_true", help="the int8 graph's neuron (uint8 current and spikes)")
    args = parser.parse_args(argv)
    shape = args.shape
    variants = VARIANTS8 if args.int8 else VARIANTS
    rng = np.random.default_rng(0)
    feeds = {"v": rng.standard_normal(shape).astype(np.float32)}
    if args.int8:
        feeds["q"] = rng.integers(60, 160, shape).astype(np.uint8)
    else:
        feeds["i"] = rng.standard_normal(shape).astype(np.float32)
    sessions, times, outs = {}, {}, {}
    for name, nodes in variants.items():
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.log_severity_level = args.threads, 3
        sessions[name] = ort.InferenceSession(_graph(nodes, shape, args.int8).SerializeToString(), opts,
                                              providers=["CPUExecutionProvider"])
        times[name] = []
    for _ in range(args.rounds):
        for name, session in sessions.items():
            t0 = time.perf_counter()
            outs[name] = session.run(None, feeds)
            times[name].append(time.perf_counter() - t0)
    base = outs[next(iter(variants))]
    kind = "int8 graph's LIF step" if args.int8 else "LIF step"
    print(f"{kind} on {shape}, onnxruntime {ort.__version__}, {args.threads} thread(s), median of {args.rounds}")
    print("| form | ms | bits equal to the exported form |\n|---|---|---|")
    for name in variants:
        same = all(a.tobytes() == b.tobytes() for a, b in zip(base, outs[name], strict=True))
        print(f"| {name} | {1000 * np.median(times[name]):.3f} | {same} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
