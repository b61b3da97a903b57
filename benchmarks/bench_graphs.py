"""``python benchmarks/bench_graphs.py [NAME=]MODEL.onnx [NAME=]MODEL.onnx ... [--rounds 300] [--threads 1]
[--ort-defaults NAME,...]``: saved graphs of one model stepped in turn, the A/B of docs/deploy.md.

Every graph is a stereo model of the ONNX contract (checked as ``runtime.stream`` checks it) taking the same
input (event windows of one size, bins and length); each round steps every graph once, with its own carried
state, on the same window of the built-in synthetic stream (windows cycle), the order rotating round by round
so that a drift of the machine's load hits all alike. The table gives each graph's median ms per step,
steps/s, its speed against the first graph, and how far its disparity is from the first graph's over the
same steps (bit-identical, or the largest absolute difference in px). Every session has the runtime's
settings (``runtime.session.session_options``: level all, sequential, threads that do not spin) with the
optimisers it leaves out (``runtime.session.DISABLED_OPTIMIZERS``); graphs exported by code before issue 21's
fifth round ran with every ONNX Runtime optimiser on: ``--ort-defaults`` names those that should. A
benchmark, not a test: it reports what it measured on this machine.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from deploy_graphs import OrtStepper, median_ms, ort_session, stream_windows

from runtime.core.errors import ArgumentParser, RuntimeInputError, int_between, run_main


def parse_graphs(entries: Sequence[str]) -> dict[str, Path]:
    """``NAME=PATH`` or ``PATH`` (named by its file's stem) -> {name: path}; names unique."""
    graphs: dict[str, Path] = {}
    for entry in entries:
        name, sep, path = entry.partition("=")
        if not sep:
            name, path = Path(entry).stem, entry
        if not name or not path:
            raise RuntimeInputError(entry, "expected NAME=MODEL.onnx or MODEL.onnx")
        if name in graphs:
            raise RuntimeInputError(entry, f"the name {name!r} is given twice (name them: NAME=MODEL.onnx)")
        graphs[name] = Path(path)
    return graphs


def open_graphs(graphs: dict[str, Path], threads: int, ort_defaults: set[str]):
    """(steppers, their common encoding): each checked against the contract; one input for all."""
    import onnx

    from runtime.session import SNNSession

    unknown = sorted(ort_defaults - set(graphs))
    if unknown:
        raise RuntimeInputError("--ort-defaults", f"names no graph given: {', '.join(unknown)}")
    steppers, encoding = {}, None
    for name, path in graphs.items():
        spec = SNNSession(path, threads=threads).spec  # the contract's checks and one-line errors
        if spec.max_disparity is None:
            raise RuntimeInputError(str(path), f"a {spec.task} model; this benchmark steps stereo models")
        enc = spec.encoding
        if encoding is not None and (enc.height, enc.width, enc.bins, enc.window_us, enc.kind) != \
                (encoding.height, encoding.width, encoding.bins, encoding.window_us, encoding.kind):
            raise RuntimeInputError(str(path), f"takes {enc.kind} windows of {enc.bins} bins at {enc.height}x"
                                    f"{enc.width}, {enc.window_ms:g} ms, unlike the first graph's")
        encoding = encoding or enc
        disabled = [] if name in ort_defaults else None
        steppers[name] = OrtStepper(ort_session(onnx.load(str(path)), threads=threads, spinning=False,
                                                disabled=disabled))
    return steppers, encoding


def step_in_turn(steppers: dict, windows: list, rounds: int, warmup: int) -> tuple[dict, dict]:
    """Per graph: the seconds of each timed step, and the largest |disparity - the first graph's| over all
    steps (warm-up included; 0.0: bit-identical)."""
    names = list(steppers)
    times = {n: [] for n in names}
    diff = {n: 0.0 for n in names}
    for r in range(warmup + rounds):
        feed = windows[r % len(windows)]
        order = names[r % len(names):] + names[:r % len(names)]
        out = {}
        for name in order:
            dt, values = steppers[name].step(feed)
            out[name] = values["disparity"]
            if r >= warmup:
                times[name].append(dt)
        for name in names[1:]:
            a, b = out[names[0]], out[name]
            d = float(np.max(np.abs(a.astype(np.float64) - b))) if a.shape == b.shape else float("inf")
            if np.isnan(d) or not np.array_equal(np.isnan(a), np.isnan(b)):
                d = float("inf")
            diff[name] = max(diff[name], d)
    return times, diff


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python benchmarks/bench_graphs.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("graphs", nargs="+", metavar="[NAME=]MODEL.onnx", help="saved graphs of one model")
    parser.add_argument("--rounds", type=int_between(1, 100_000), default=300, help="timed rounds (default 300)")
    parser.add_argument("--warmup", type=int_between(0, 10_000), default=5, help="untimed rounds first (default 5)")
    parser.add_argument("--threads", type=int_between(1, 1024), default=1, help="intra-op threads (default 1)")
    parser.add_argument("--windows", type=int_between(1, 10_000), default=40,
                        help="windows of the built-in stream, cycled (default 40)")
    parser.add_argument("--ort-defaults", default="", metavar="NAME,...",
                        help="graphs that run with every ONNX Runtime optimiser on (exports of code before "
                             "issue 21's fifth round), not with the runtime's left out")
    args = parser.parse_args(argv)

    def body() -> int:
        import onnxruntime as ort

        graphs = parse_graphs(args.graphs)
        chosen = {n.strip() for n in args.ort_defaults.split(",") if n.strip()}
        steppers, encoding = open_graphs(graphs, args.threads, chosen)
        windows = stream_windows(encoding, args.windows)
        t0, load0 = time.perf_counter(), os.getloadavg()
        times, diff = step_in_turn(steppers, windows, args.rounds, args.warmup)
        print(f"onnxruntime {ort.__version__} CPU provider (level all), {args.threads} thread(s), {encoding.height}x"
              f"{encoding.width}, median of {args.rounds} steps after {args.warmup} (order rotating), load average "
              f"{load0[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end ({time.perf_counter() - t0:.0f} s)")
        print("| graph | settings | ms/step | steps/s | x the first | disparity against the first |")
        print("|---|---|---|---|---|---|")
        first = None
        for name, path in graphs.items():
            ms = median_ms(times[name])
            first = first or ms
            if name == next(iter(graphs)):
                same = "-"
            elif diff[name] == 0.0:
                same = "bit-identical"
            else:
                same = f"max diff {diff[name]:.3g} px"
            settings = "every optimiser" if name in chosen else "the runtime's"
            print(f"| {name} ({path.name}) | {settings} | {ms:.2f} | {1000 / ms:.1f} | {first / ms:.2f}x | {same} |")
        return 0

    return run_main(body, (RuntimeInputError,))


if __name__ == "__main__":
    sys.exit(main())
