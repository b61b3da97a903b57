"""``python benchmarks/bench_deploy.py [--sizes demo] [--paper] [--steps N] [--threads N] [--no-accuracy]
[--profile SIZE]``: what the compiler's passes buy, measured side by side in one run.

Speed: per size, the torch model's eager step (eval mode, BatchNorm as trained) and the exported
graphs in ONNX Runtime (CPU provider, graph optimisation level all, ``--threads`` intra-op threads,
default 1, the same count for torch): fp32 as exported before the
compiler's passes (BatchNorm folding only), fp32 with the graph rewrites (compiler.rewrite) but the
cost volume built (``--no-factorize``), fp32 factorised (compiler.factorize) and int8 factorised
(runtime.quantize, calibrated on windows of the built-in synthetic stream). Each round steps every variant once on the
same event window with its own carried state; the table gives the median ms/step, steps/s, the
speed-up over torch eager and the convolution MACs each variant executes per step (from the graph;
the torch row is the plan's dense count).

Roofline (``benchmarks/roofline.py``), per size, for the fp32 factorised and the int8 graph: steps/s,
the time of the graph's convolutions each cut out of ONNX Runtime's optimised graph with its real
input and run alone, their share of the step, and the profile's top op types.

Accuracy (the demo size, the trained ``models/stereo_small.pt``): the fp32 and int8 graphs on
held-out synthetic seeds 0-3 (2 s each, 2 burn-in windows per seed, state reset per seed): 1PA,
mean disparity error, mean firing rate and the largest per-layer firing-rate change.

``--profile SIZE`` instead prints ONNX Runtime's profile of the int8 graph's step by op type.

Sizes: ``full`` = genotypes/stereo.yaml (C = 24, 260x346), ``paper`` = the same at the paper's width
C = 12 (865,478 parameters; ``--paper`` adds it to ``--sizes``), ``mid`` = full at 130x173, ``demo`` =
genotypes/stereo_small.yaml with the shipped weights (the default: a short run). A benchmark, not a
test: it reports what it measured.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import sys
import time

from deploy_graphs import (
    ROOT,
    SIZES,
    OrtStepper,
    TorchStepper,
    dense_macs,
    event_windows,
    graphs,
    interleaved,
    load_model,
    median_ms,
    ort_session,
)
from roofline import profile_by_op, roofline

ACCURACY_SEEDS = (0, 1, 2, 3)


def _g(macs: float) -> str:
    return f"{macs / 1e9:.2f} G"


def speed_rows(size: str, steps: int, calib_windows: int, threads: int, log) -> tuple[list[tuple], str, list[str]]:
    """The speed table's rows for one size, a line of build timings and the roofline table's rows."""
    from compiler.onnxgraph import conv_macs

    genotype, overrides, weights = SIZES[size]
    timings: dict[str, float] = {}
    model = load_model(genotype, overrides, weights, timings=timings)
    built = graphs(model, calib_windows, plain=True)
    timings.update({f"{k.replace('ONNX ', '')} graph": v for k, v in built["seconds"].items()})
    steppers = {"torch eager": TorchStepper(model)}
    macs = {"torch eager": f"{_g(dense_macs(model))} float"}
    for name, proto in built["graphs"].items():
        steppers[name] = OrtStepper(ort_session(proto, threads=threads, spinning=False))
        m = conv_macs(proto)
        macs[name] = f"{_g(m['float'])} float" + (f" + {_g(m['int8'])} int8" if m["int8"] else "")
    feeds = event_windows(model, min(steps + 1, 6))
    times = interleaved(steppers, feeds, steps, progress=log)
    del steppers
    gc.collect()
    torch_ms = median_ms(times["torch eager"])
    inp = model.genotype.input
    label = f"{size}: {inp.height}x{inp.width}, {model.plan.params:,} params"
    rows = [(label, name, median_ms(t), 1000 / median_ms(t), torch_ms / median_ms(t), macs[name])
            for name, t in times.items()]
    build = ", ".join(f"{k} {v:.2f} s" for k, v in timings.items())
    lines = [roofline_row(label, name, built["graphs"][name], feeds, threads, steps, log)
             for name in ("ONNX fp32 factorised", "ONNX int8 factorised")]
    return rows, f"{size}: {build}", lines


def roofline_row(label: str, name: str, proto, feeds, threads: int, steps: int, log) -> str:
    """One row of the roofline table: steps/s, the convolutions alone, their share, the top op types."""
    r = roofline(proto, feeds, threads, steps)
    if log:
        log(f"roofline {label} {name}: step {r['step_s'] * 1000:.0f} ms, "
            f"convolutions alone {r['convs_s'] * 1000:.0f} ms")
    total = sum(r["ops"].values())
    top = ", ".join(f"{op} {ms:.1f} ({100 * ms / total:.0f} %)" for op, ms in list(r["ops"].items())[:5])
    kinds = " + ".join(f"{n} {op}" for op, n in sorted(r["conv_types"].items()))
    return (f"| {label} | {name} | {1 / r['step_s']:.3f} | {r['step_s'] * 1000:.1f} | {r['convs_s'] * 1000:.1f} "
            f"({kinds}) | {100 * r['convs_s'] / r['step_s']:.0f} % | {top} |")


def held_out(proto, seeds=ACCURACY_SEEDS, burn_in: int = 2, seconds: float = 2.0) -> dict:
    """1PA, mean disparity error, firing rates and ms/step of one graph on held-out synthetic seeds."""
    from runtime.data.sources import open_recording, windows
    from runtime.metrics import stereo_errors, summarize_errors

    meta = {p.key: p.value for p in proto.metadata_props}
    layers = json.loads(meta["snn.layers"])
    enc = json.loads(meta["snn.encoding"])
    errors, spikes, steps, times = [], dict.fromkeys(layers, 0.0), 0, []
    for seed in seeds:
        stepper = OrtStepper(ort_session(proto, threads=1))  # accuracy, not speed: one thread
        rec = open_recording(seed=seed, height=enc["height"], width=enc["width"], seconds=seconds)
        for k, w in enumerate(windows(rec, window_us=int(enc["window_ms"] * 1000), bins=enc["bins"])):
            dt, out = stepper.step({"left": w.left[None], "right": w.right[None]})
            if k < burn_in:
                continue
            times.append(dt)
            steps += 1
            errors.append(stereo_errors(out["disparity"][0], w.disparity, rec.fb))
            for layer in layers:
                spikes[layer] += float(out[f"spikes.{layer}"].sum())
    acc = summarize_errors(errors)
    rates = {layer: spikes[layer] / (layers[layer]["neurons"] * steps) for layer in layers}
    total = sum(spikes.values()) / (sum(v["neurons"] for v in layers.values()) * steps)
    return {"1pa": acc["one_pixel_accuracy_pct"], "mde_px": acc["mean_disparity_error_px"], "windows": steps,
            "pixels": acc["valid_pixels"], "rate": total, "rates": rates, "ms": median_ms(times)}


def accuracy_table(calib_windows: int) -> list[str]:
    genotype, overrides, weights = SIZES["demo"]
    model = load_model(genotype, overrides, weights)
    built = graphs(model, calib_windows)["graphs"]
    digest = hashlib.sha256((ROOT / weights).read_bytes()).hexdigest()[:12]
    res = {name: held_out(built[name]) for name in ("ONNX fp32 factorised", "ONNX int8 factorised")}
    base = res["ONNX fp32 factorised"]
    lines = [f"held-out synthetic seeds {', '.join(map(str, ACCURACY_SEEDS))} ({base['windows']} windows, "
             f"{base['pixels']:,} valid pixels), {genotype} with {weights} (sha256 {digest}...), "
             f"int8 calibrated on {calib_windows} windows of synthetic seed 100",
             "| graph | 1PA | mean disparity error | mean firing rate | max per-layer rate change | ms/step |",
             "|---|---|---|---|---|---|"]
    for name, r in res.items():
        change = max(abs(r["rates"][k] - base["rates"][k]) for k in r["rates"])
        lines.append(f"| {name} | {r['1pa']:.2f} % | {r['mde_px']:.3f} px | {r['rate']:.4f} | {change:.4f} | "
                     f"{r['ms']:.1f} |")
    lines.append(int8_verdict(res["ONNX int8 factorised"]["1pa"] - base["1pa"]))
    return lines


def int8_verdict(d: float) -> str:
    """The int8 graph's 1PA minus the fp32 graph's, judged against both targets: within 1 point (the int8
    graph's first target, README) and within 0.5 points (issue 21)."""
    shown = round(d, 2)  # judged as printed
    judged = ", ".join(f"within {t:g} point{'s' if t != 1 else ''}: {'met' if abs(shown) <= t else 'MISSED'}"
                       for t in (1.0, 0.5))
    return f"int8 - fp32: {shown:+.2f} points of 1PA ({judged})"


def profile_table(size: str, calib_windows: int, threads: int, steps: int = 3) -> list[str]:
    """Where the int8 factorised graph's step goes: ONNX Runtime's profile summed by op type."""
    genotype, overrides, weights = SIZES[size]
    model = load_model(genotype, overrides, weights)
    proto = graphs(model, calib_windows)["graphs"]["ONNX int8 factorised"]
    per_op, n = profile_by_op(proto, event_windows(model, steps + 1), threads)  # the first step: warm-up
    total = sum(per_op.values())
    lines = [f"{size}: int8 factorised graph, ONNX Runtime profile of {n} steps ({threads} threads), "
             f"{total / 1000 / n:.0f} ms/step in kernels",
             "| op type | ms/step | share |", "|---|---|---|"]
    for op, us in per_op.most_common(12):
        lines.append(f"| {op} | {us / 1000 / n:.1f} | {100 * us / total:.1f} % |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/bench_deploy.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="demo", help="comma-separated: " + ", ".join(SIZES) + " (default: demo)")
    parser.add_argument("--paper", action="store_true",
                        help="add the paper-width full-resolution size (paper) to --sizes")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant (after one warm-up)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of every variant (default 1)")
    parser.add_argument("--calib-windows", type=int, default=8, help="int8 calibration windows")
    parser.add_argument("--no-accuracy", action="store_true", help="skip the held-out int8 accuracy table")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument("--profile", choices=sorted(SIZES), help="only print where the int8 graph's step goes")
    args = parser.parse_args(argv)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    sizes += ["paper"] if args.paper and "paper" not in sizes else []
    unknown = [s for s in sizes if s not in SIZES]
    if unknown or args.steps < 1 or args.threads < 1:
        print(f"error: --sizes: unknown size {unknown[0]!r} (choose from {', '.join(SIZES)})" if unknown
              else f"error: --{'steps' if args.steps < 1 else 'threads'}: must be at least 1", file=sys.stderr)
        return 2
    import onnxruntime as ort
    import torch

    torch.set_num_threads(args.threads)
    if args.profile:
        print("\n".join(profile_table(args.profile, args.calib_windows, args.threads)))
        return 0
    log = None if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    t0, load0 = time.perf_counter(), os.getloadavg()
    rows, builds, roof = [], [], []
    for size in sizes:
        r, b, lines = speed_rows(size, args.steps, args.calib_windows, args.threads, log)
        rows += r
        builds.append(b)
        roof += lines
    load1 = os.getloadavg()
    print(f"torch {torch.__version__} eager, onnxruntime {ort.__version__} CPU provider (level all), "
          f"{args.threads} thread(s) each, {os.cpu_count()} CPUs shared with other jobs (load average "
          f"{' '.join(f'{x:.2f}' for x in load0)} at the start, {' '.join(f'{x:.2f}' for x in load1)} at the end); "
          f"median of {args.steps} interleaved steps after 1 warm-up")
    print("| size | variant | ms/step | steps/s | x torch eager | conv MACs executed per step |")
    print("|---|---|---|---|---|---|")
    for label, name, ms, sps, ratio, macs in rows:
        print(f"| {label} | {name} | {ms:.1f} | {sps:.3f} | {ratio:.2f}x | {macs} |")
    print("build times: " + "; ".join(builds))
    print()
    print(f"roofline ({args.threads} thread(s); median of {args.steps} steps after 1 warm-up; each convolution of "
          "ONNX Runtime's optimised graph run alone on its real input, median of 3; profile: kernel ms/step "
          "over up to 2 steps after 1 warm-up)")
    print("| size | variant | steps/s | ms/step | convolutions alone, ms | share of the step "
          "| top op types (profile) |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(roof))
    if not args.no_accuracy:
        print()
        print("\n".join(accuracy_table(args.calib_windows)))
    print(f"(total {time.perf_counter() - t0:.0f} s)")
    return 0

if __name__ == "__main__":
    sys.exit(main())
