"""``python benchmarks/bench_convpad.py [--size demo] [--rounds 50] [--threads 1]``: the int8 convs that
``runtime.convpad`` pads, each cut out of the size's int8 graph and timed alone as it was (its own output
channels) and as it is now (16 output channels, then the ``Slice`` that keeps the first ones).

For every padded conv of the graph (the QDQ conv of ``runtime.quantize`` with its int8 weights, bias and
input shape; placeholder output ranges, which change the values but not the work) both forms are
single-conv graphs on the same random spike input (20 % ones), stepped in turn, the order alternating
round by round; their outputs are compared bit for bit. The table gives one row per distinct shape:
how many convs of the graph have it, the median ms of each form, their ratio, and the sum over the
graph. A benchmark, not a test: it reports what it measured.
"""

from __future__ import annotations

import collections
import os
import sys
import time

import numpy as np
from deploy_graphs import SIZES, load_model, median_ms, ort_session

from runtime.core.errors import ArgumentParser, int_between


def padded_convs(size: str) -> list[dict]:
    """Each padded conv of ``size``'s int8 graph: its single-conv graphs unpadded and padded, its input
    shape and a label."""
    from onnx import shape_inference

    from compiler.export import to_onnx
    from runtime.quantize import int8_conv_outputs, quantize_int8

    genotype, overrides, weights = SIZES[size]
    fp32 = to_onnx(load_model(genotype, overrides, weights))
    ranges = {k: (-1.0, 1.0) for k in int8_conv_outputs(fp32)}
    graphs = {pad: shape_inference.infer_shapes(quantize_int8(fp32, ranges, pad_channels=pad)) for pad in (False, True)}
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*graphs[True].graph.value_info, *graphs[True].graph.input]}
    out = []
    for keep in (n for n in graphs[True].graph.node if n.name.endswith(".keep_channels")):
        tag = keep.name[:-len(".keep_channels")]
        x = shapes[f"{tag}.x"]
        x[0] = 1 if not x[0] else x[0]
        out.append({"x": x, "graphs": {pad: _cut(graphs[pad], tag, x) for pad in (False, True)}})
    return out


def _cut(proto, tag: str, x_shape: list[int]):
    """The nodes of conv ``tag`` from its uint8 input's dequantisation to its uint8 output (sliced where
    padded), as a graph with input ``x``."""
    from onnx import TensorProto, helper

    names = {f"{tag}.{s}" for s in ("dequantize_x", "dequantize_w", "dequantize_b", "quantize_y", "keep_channels")}
    nodes = [n for n in proto.graph.node if n.name in names or n.output[0] == f"{tag}.float"]
    first = nodes[0]
    x_name = first.input[0]
    used = {i for n in nodes for i in n.input}
    inits = [t for t in proto.graph.initializer if t.name in used]
    g = helper.make_graph(nodes, tag, [helper.make_tensor_value_info(x_name, TensorProto.UINT8, x_shape)],
                          [helper.make_tensor_value_info(f"{tag}.y", TensorProto.UINT8, None)], inits)
    return helper.make_model(g, opset_imports=list(proto.opset_import), ir_version=proto.ir_version)


def run(convs: list[dict], rounds: int, threads: int) -> list[dict]:
    rng = np.random.default_rng(0)
    for c in convs:
        sessions = {pad: ort_session(p, threads=threads, spinning=False) for pad, p in c["graphs"].items()}
        name = sessions[False].get_inputs()[0].name
        x = (rng.random(c["x"]) < 0.2).astype(np.uint8)
        c["ms"], c["same"] = {False: [], True: []}, True
        for r in range(rounds + 2):
            outs = {}
            for pad in ((False, True) if r % 2 else (True, False)):
                t0 = time.perf_counter()
                outs[pad] = sessions[pad].run(None, {name: x})[0]
                if r >= 2:
                    c["ms"][pad].append(time.perf_counter() - t0)
            c["same"] &= outs[False].tobytes() == outs[True].tobytes()
    return convs


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python benchmarks/bench_convpad.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="demo", choices=list(SIZES), help="model size (default demo)")
    parser.add_argument("--rounds", type=int_between(1, 100_000), default=50,
                        help="timed rounds per conv after 2 warm-up rounds")
    parser.add_argument("--threads", type=int_between(1, 1024), default=1, help="intra-op threads (default 1)")
    args = parser.parse_args(argv)
    import onnxruntime as ort

    t0, load0 = time.perf_counter(), os.getloadavg()
    convs = run(padded_convs(args.size), args.rounds, args.threads)
    rows = collections.defaultdict(list)
    for c in convs:
        w = next(t for t in c["graphs"][False].graph.initializer if t.name.endswith(".w.q"))
        rows[(w.dims[0], w.dims[1], *w.dims[2:], *c["x"][2:])].append(c)
    print(f"{args.size}: onnxruntime {ort.__version__} CPU provider (level all), {args.threads} thread(s), "
          f"load average {os.getloadavg()[0]:.2f} (start {load0[0]:.2f}); median of {args.rounds} rounds per conv "
          f"({time.perf_counter() - t0:.0f} s)")
    print("| output x input channels, kernel, input h x w | convs | as it was, ms | 16 channels + Slice, ms | "
          "speed-up | outputs |")
    print("|---|---|---|---|---|---|")
    total = {False: 0.0, True: 0.0}
    for (co, ci, *rest), cs in sorted(rows.items()):
        ms = {pad: float(np.median([median_ms(c["ms"][pad]) for c in cs])) for pad in (False, True)}
        for pad in ms:
            total[pad] += ms[pad] * len(cs)
        kernel, hw = "x".join(map(str, rest[:-2])), "x".join(map(str, rest[-2:]))
        print(f"| {co} x {ci}, {kernel}, {hw} | {len(cs)} | {ms[False]:.3f} | {ms[True]:.3f} | "
              f"{ms[False] / ms[True]:.2f}x | {'bit-identical' if all(c['same'] for c in cs) else 'DIFFERENT'} |")
    if convs:
        print(f"| all {len(convs)} padded convs | {len(convs)} | {total[False]:.2f} | {total[True]:.2f} | "
              f"{total[False] / total[True]:.2f}x | |")
    else:
        print("no conv of this graph is padded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
