"""``python benchmarks/bench_ort_settings.py [--size mid|demo|paper|full] [--steps N]``: ONNX Runtime's
session options on the stereo graphs (fp32 factorised and int8), measured side by side.

Graph optimisation level (disable, basic, extended, all), intra-op threads (1, 2), spinning of idle
pool threads (``session.intra_op.allow_spinning``), ONNX Runtime's NHWC layout transformer (the runtime disables
it: ``runtime.session.DISABLED_OPTIMIZERS``), its NCHWc transformer (blocked layouts for float convolutions:
in the int8 graph only the cost convolutions, whose input it reorders every step) and execution mode
(sequential, parallel with 2 inter-op threads). Every configuration is a session of its own; per graph,
each round steps every session once on the same window with its own carried state, so the shared
machine's load drifts hit all alike.
The load average before and after is printed with the table: two-thread numbers depend on whether
the second core is free. The defaults of ``runtime.session.SNNSession`` come from these numbers
(docs/runtime.md). A benchmark: it reports what it measured and asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sys

from deploy_graphs import SIZES, OrtStepper, event_windows, graphs, interleaved, load_model, median_ms, ort_session

from runtime.session import DISABLED_OPTIMIZERS  # (deploy_graphs puts the project on the path)

# (label, level, intra-op threads, parallel execution, spinning[, optimisers disabled; default the runtime's])
CONFIGS = [
    ("disable, 1 thread", "disable", 1, False, True),
    ("basic, 1 thread", "basic", 1, False, True),
    ("extended, 1 thread", "extended", 1, False, True),
    ("all, 1 thread", "all", 1, False, True),
    ("all, 1 thread, NCHWc transformer off too", "all", 1, False, True, (*DISABLED_OPTIMIZERS, "NchwcTransformer")),
    ("all, 2 threads, spinning", "all", 2, False, True),
    ("all, 2 threads, no spinning", "all", 2, False, False),
    ("all, 2 threads, no spinning, NHWC transformer on", "all", 2, False, False, ()),  # the runtime disables it
    ("extended, 2 threads, no spinning", "extended", 2, False, False),
    ("all, 1 thread, parallel (2 inter-op)", "all", 1, True, True),
    ("all, 2 threads, parallel (2 inter-op), no spinning", "all", 2, True, False),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/bench_ort_settings.py",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="mid",
                        help="mid: stereo.yaml at 130x173, C = 24 (at full size 9 sessions would hold about 13 GB)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per configuration (after one warm-up)")
    parser.add_argument("--calib-windows", type=int, default=4)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    genotype, overrides, weights = SIZES[args.size]
    model = load_model(genotype, overrides, weights)
    built = graphs(model, args.calib_windows)["graphs"]
    chosen = {k: v for k, v in built.items() if k != "ONNX fp32 unfactorised"}
    feeds = event_windows(model, 4)
    load_before = os.getloadavg()
    times = {}
    for g, proto in chosen.items():  # one graph at a time: its sessions' memory is freed before the next
        steppers = {(g, c[0]): OrtStepper(ort_session(proto, c[2], c[1], c[3], c[4], *c[5:])) for c in CONFIGS}
        times.update(interleaved(steppers, feeds, args.steps))
        del steppers
    load_after = os.getloadavg()
    inp = model.genotype.input
    print(f"{model.genotype.name} ({args.size}): {inp.height}x{inp.width}, {model.plan.params:,} parameters; "
          f"median of {args.steps} steps after 1 warm-up, interleaved; onnxruntime CPU provider, {os.cpu_count()} "
          f"CPUs; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    names = list(chosen)
    print("| configuration | " + " | ".join(f"{g} ms/step" for g in names) + " |")
    print("|---|" + "---|" * len(names))
    for c in CONFIGS:
        print(f"| {c[0]} | " + " | ".join(f"{median_ms(times[(g, c[0])]):.1f}" for g in names) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
