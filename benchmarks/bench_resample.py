"""``python benchmarks/bench_resample.py [--threads 2] [--rounds 15]``: the nearest resamplings of the
paper-width stereo graph (SpikeDHS-Stereo at C = 12, 260x346: the trellis moves spikes between the
1/3, 1/6 and 1/12 scales) written the ways ``compiler.resample`` chooses between, timed in ONNX
Runtime side by side (each form in turn, every round), with a check that every form gives the first
form's bits. What ``compiler.resample`` keeps for the last axis came from this (docs/deploy.md).

A benchmark, not a test: it reports what it measured on this machine.
"""

from __future__ import annotations

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
MAX_CHANNELS = 1 << 16  # (1, 65536, 87, 116) floats: 2.6 GB, more than a benchmark of this needs


def _resize(x: str, y: str, sizes: str) -> object:
    return N("Resize", [x, "", "", sizes], [y], mode="nearest", coordinate_transformation_mode="asymmetric",
             nearest_mode="floor")


def _ints(values, name: str):
    return numpy_helper.from_array(np.array(values, np.int64), name)


def cases(c: int) -> dict[str, tuple[list[int], dict[str, tuple[list, list]]]]:
    """name -> (input shape, {form: (nodes, initializers)}); every form maps ``x`` to ``y``."""
    rows = 2 * np.floor(np.arange(87) * 44 / 87).astype(np.int64)  # torch's nearest 44 -> 87, on doubled rows
    return {
        "width 2x down (87x116 -> 87x58)": ([1, c, 87, 116], {
            "Slice, step 2 on the last axis": ([N("Slice", ["x", "s", "e", "a", "k"], ["y"])],
                                               [_ints([0], "s"), _ints([116], "e"), _ints([3], "a"), _ints([2], "k")]),
            "Resize, scale 1/2": ([_resize("x", "y", "z")], [_ints([1, c, 87, 58], "z")])}),
        "87x116 -> 44x58 (the trellis down)": ([1, c, 87, 116], {
            "Slice (width), then Resize (height)": ([N("Slice", ["x", "s", "e", "a", "k"], ["w"]),
                                                     _resize("w", "y", "z")],
                                                     [_ints([0], "s"), _ints([116], "e"), _ints([3], "a"),
                                                      _ints([2], "k"), _ints([1, c, 44, 58], "z")]),
            "one Resize": ([_resize("x", "y", "z")], [_ints([1, c, 44, 58], "z")])}),
        "44x58 -> 87x116 (the trellis up)": ([1, c, 44, 58], {
            "one Resize": ([_resize("x", "y", "z")], [_ints([1, c, 87, 116], "z")]),
            "Resize 2x, then Gather of rows": ([_resize("x", "d", "z"), N("Gather", ["d", "r"], ["y"], axis=2)],
                                               [_ints([1, c, 88, 116], "z"), _ints(rows, "r")])}),
        "width 2x up (44x58 -> 44x116)": ([1, c, 44, 58], {
            "one Resize": ([_resize("x", "y", "z")], [_ints([1, c, 44, 116], "z")]),
            "Resize 2x, then Gather of rows": ([_resize("x", "d", "z"), N("Gather", ["d", "r"], ["y"], axis=2)],
                                               [_ints([1, c, 88, 116], "z"), _ints(2 * np.arange(44), "r")])}),
    }


def session(nodes, inits, shape, elem, threads: int):
    g = helper.make_graph(nodes, "resample", [helper.make_tensor_value_info("x", elem, shape)],
                          [helper.make_tensor_value_info("y", elem, None)], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.log_severity_level = threads, 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python benchmarks/bench_resample.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int_between(1, MAX_THREADS), default=2)
    parser.add_argument("--rounds", type=int_between(1), default=15)
    parser.add_argument("--channels", type=int_between(1, MAX_CHANNELS), default=792,
                        help="channels x disparities merged (default 792 = 24 x 33)")
    args = parser.parse_args(argv)
    print(f"onnxruntime {ort.__version__}, {args.threads} threads, median of {args.rounds} rounds")
    print("| resampling | dtype | form | ms | bits equal to the first form |\n|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for name, (shape, forms) in cases(args.channels).items():
        for dtype, elem in ((np.uint8, TensorProto.UINT8), (np.float32, TensorProto.FLOAT)):
            x = (rng.random(shape) < 0.1).astype(dtype)
            sessions = {f: session(nodes, inits, shape, elem, args.threads) for f, (nodes, inits) in forms.items()}
            times: dict[str, list[float]] = {f: [] for f in sessions}
            outs = {}
            for _ in range(args.rounds):
                for f, s in sessions.items():
                    t0 = time.perf_counter()
                    outs[f] = s.run(None, {"x": x})[0]
                    times[f].append(time.perf_counter() - t0)
            first = outs[next(iter(forms))]
            for f in forms:
                same = outs[f].shape == first.shape and outs[f].tobytes() == first.tobytes()
                print(f"| {name} | {np.dtype(dtype).name} | {f} | {1000 * np.median(times[f]):.2f} | {same} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
