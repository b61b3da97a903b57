"""``python benchmarks/bench_passes.py [--size demo] [--rounds 40] [--threads 1]``: what each exact
deployment pass of issue 21's third round buys, each graph stepped side by side with the graph before it.

Graphs (the same model and weights; int8 calibrated once, on the graph with every pass):
- fp32 before: ``to_onnx(model, resample=False)``: the nearest resampling as one Gather per axis;
- fp32: ``to_onnx(model)``: the resampling as strided Slice / 4-D Resize / Gather (compiler.resample);
- int8 before: the first, quantised with the 3-D convs as 3-D QLinearConvs (``stack_3d=False``);
- int8 + resampling: the second, quantised the same way;
- int8: the second with the 3-D convs as 2-D over their stacked taps (runtime.conv2d);
- int8 + padded channels: that, with the convs of fewer than 16 output channels computed with 16
  (runtime.convpad; the graph ``runtime.calibrate`` writes). The int8 graphs before it leave them out.

Each round steps every graph once on the same event window with its own carried state, in an order
that rotates from round to round (a busy shared machine slows every graph alike); the first 2 rounds
are warm-up. Every graph's outputs (data, state, spike counts) are compared bit for bit with those of
the graph before its pass at every step. The table gives the median ms/step, steps/s, the speed-up
over the graph before the pass and over the first graph of its precision, and the load average.
A benchmark, not a test: it reports what it measured.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from deploy_graphs import SIZES, OrtStepper, event_windows, load_model, median_ms, ort_session

# name -> the graph its pass is measured against (None: the first of its precision)
BEFORE = {"fp32 before": None, "fp32": "fp32 before", "int8 before": None,
          "int8 + resampling": "int8 before", "int8": "int8 + resampling", "int8 + padded channels": "int8"}


def build(size: str, calib_windows: int, threads: int) -> dict:
    """The six graphs of the module docstring, by name."""
    from compiler.export import to_onnx
    from runtime.calibrate import calibration_windows, output_ranges
    from runtime.quantize import int8_conv_outputs, quantize_int8

    genotype, overrides, weights = SIZES[size]
    model = load_model(genotype, overrides, weights)
    before, after = to_onnx(model, resample=False), to_onnx(model)
    ranges = output_ranges(after, int8_conv_outputs(after), calibration_windows(after, None, calib_windows), threads)
    graphs = {"fp32 before": before, "fp32": after,
              "int8 before": quantize_int8(before, ranges, stack_3d=False, pad_channels=False),
              "int8 + resampling": quantize_int8(after, ranges, stack_3d=False, pad_channels=False),
              "int8": quantize_int8(after, ranges, pad_channels=False),
              "int8 + padded channels": quantize_int8(after, ranges)}
    return {"model": model, "graphs": graphs}


def run(graphs: dict, feeds: list, rounds: int, threads: int, warmup: int = 2) -> tuple[dict, dict]:
    """Seconds per timed step of every graph, and per graph whether its outputs equalled those of the
    graph before its pass at every step."""
    steppers = {name: OrtStepper(ort_session(proto, threads=threads, spinning=False)) for name, proto in graphs.items()}
    names = list(steppers)
    times = {name: [] for name in names}
    same = {name: True for name in names}
    for r in range(warmup + rounds):
        feed = feeds[r % len(feeds)]
        outs = {}
        for name in names[r % len(names):] + names[:r % len(names)]:
            dt, outs[name] = steppers[name].step(feed)
            if r >= warmup:
                times[name].append(dt)
        for name, ref in BEFORE.items():
            if ref is not None:
                same[name] &= all(outs[name][k].tobytes() == v.tobytes() for k, v in outs[ref].items())
    return times, same


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/bench_passes.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="demo", help="model size: " + ", ".join(SIZES) + " (default demo)")
    parser.add_argument("--rounds", type=int, default=40, help="timed rounds after 2 warm-up rounds")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of every graph (default 1)")
    parser.add_argument("--calib-windows", type=int, default=8, help="int8 calibration windows")
    args = parser.parse_args(argv)
    if args.size not in SIZES:
        print(f"error: --size: unknown size {args.size!r} (choose from {', '.join(SIZES)})", file=sys.stderr)
        return 2
    if args.rounds < 1 or args.threads < 1 or args.calib_windows < 1:
        print("error: --rounds, --threads and --calib-windows must be at least 1", file=sys.stderr)
        return 2
    import onnxruntime as ort
    import torch

    torch.set_num_threads(args.threads)
    built = build(args.size, args.calib_windows, args.threads)
    feeds = event_windows(built["model"], 8)
    t0, load0 = time.perf_counter(), os.getloadavg()
    times, same = run(built["graphs"], feeds, args.rounds, args.threads)
    load1 = os.getloadavg()
    inp = built["model"].genotype.input
    print(f"{args.size} ({inp.height}x{inp.width}), onnxruntime {ort.__version__} CPU provider (level all), "
          f"{args.threads} thread(s), {os.cpu_count()} CPUs shared with other jobs (load average "
          f"{' '.join(f'{x:.2f}' for x in load0)} at the start, {' '.join(f'{x:.2f}' for x in load1)} at the end); "
          f"median of {args.rounds} rotating rounds after 2 warm-up rounds ({time.perf_counter() - t0:.0f} s)")
    print("| graph | ms/step | steps/s | x the graph before the pass | x the first graph | outputs as before |")
    print("|---|---|---|---|---|---|")
    first = {}
    for name, ref in BEFORE.items():
        ms = median_ms(times[name])
        first.setdefault(name.split()[0], ms)
        vs = f"{median_ms(times[ref]) / ms:.2f}x" if ref else "-"
        print(f"| {name} | {ms:.2f} | {1000 / ms:.1f} | {vs} | {first[name.split()[0]] / ms:.2f}x | "
              f"{('bit-identical' if same[name] else 'DIFFERENT') if ref else '-'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
