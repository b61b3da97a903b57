"""``python benchmarks/bench_neuron.py [--shape 1,8,130,173] [--rounds 40]``: one LIF neuron step (charge,
fire, hard reset) written four ways in ONNX, timed in ONNX Runtime (CPU, 1 thread) in turn, with a check
that every form gives the exported form's bits. What ``compiler.rewrite`` keeps came from this (docs/deploy.md).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

N = helper.make_node
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/bench_neuron.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="1,8,130,173", help="the layer's tensor shape (default 1,8,130,173)")
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args(argv)
    shape = [int(x) for x in args.shape.split(",")]
    inits = [numpy_helper.from_array(np.array(v, np.float32), n)
             for n, v in (("tau", 0.5), ("th", 1.0), ("zero", 0.0), ("one", 1.0))]
    rng = np.random.default_rng(0)
    feeds = {"v": rng.standard_normal(shape).astype(np.float32), "i": rng.standard_normal(shape).astype(np.float32)}
    sessions, times, outs = {}, {}, {}
    for name, nodes in VARIANTS.items():
        g = helper.make_graph(nodes, "neuron", [helper.make_tensor_value_info(x, TensorProto.FLOAT, shape)
                                                for x in ("v", "i")],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, shape) for x in ("y", "vo")], inits)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.log_severity_level = 1, 3
        model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
        sessions[name] = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        times[name] = []
    for _ in range(args.rounds):
        for name, session in sessions.items():
            t0 = time.perf_counter()
            outs[name] = session.run(None, feeds)
            times[name].append(time.perf_counter() - t0)
    base = outs[next(iter(VARIANTS))]
    print(f"LIF step on {shape}, onnxruntime {ort.__version__}, 1 thread, median of {args.rounds}")
    print("| form | ms | bits equal to the exported form |\n|---|---|---|")
    for name in VARIANTS:
        same = all(a.tobytes() == b.tobytes() for a, b in zip(base, outs[name], strict=True))
        print(f"| {name} | {1000 * np.median(times[name]):.3f} | {same} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
