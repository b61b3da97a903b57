"""The fused neuron kernel alone (``compiler.fused_kernel``), side by side in one run: its forward and
backward over T steps of one layer, built for this CPU (``-march=native``, what training uses) and for the
baseline x86-64 target and with GCC's default trapping math (the build before ``-fno-trapping-math``, whose
selects stay scalar on an AVX2 CPU), against the memory-bound floor of one element-wise torch addition over the same
tensor (read twice, write once).

    python benchmarks/bench_neuron_kernel.py                    # T=4, 64 x 48 x 16 x 16 (a training layer)
    python benchmarks/bench_neuron_kernel.py --shape 4,786432 --threads 1

Prints milliseconds per call (median of ``--repeats``) and the effective bandwidth of each.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return 1e3 * times[len(times) // 2]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="4,786432", help="T,N: time steps and elements per step")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args(argv)
    import torch
    from torch.utils.cpp_extension import load_inline

    from compiler import fused_kernel

    torch.set_num_threads(args.threads)
    steps, n = (int(x) for x in args.shape.split(","))
    current, v, empty = torch.randn(steps, n), torch.zeros(n), torch.empty(0)
    grad_y = torch.randn(steps, n)
    builds = {"native (used)": fused_kernel.load()}
    # the same build with GCC's default -ftrapping-math: on an AVX2 CPU its selects stay scalar branches
    trapping = [f for f in fused_kernel.CFLAGS if f != "-fno-trapping-math"]
    builds["native, trapping math"] = load_inline(f"snn_fused_threshold_bench_trapping_{fused_kernel.cpu_key()}",
                                                  cpp_sources=[fused_kernel._SOURCE], functions=["fwd", "bwd"],
                                                  extra_cflags=trapping, extra_ldflags=["-fopenmp"])
    builds["baseline x86-64"] = load_inline("snn_fused_threshold_bench_baseline", cpp_sources=[fused_kernel._SOURCE],
                                            functions=["fwd", "bwd"],
                                            extra_cflags=["-O3", "-ffp-contract=off", "-fno-trapping-math"])
    mb = steps * n * 4 / 1e6
    floor = median_ms(lambda: current + current, args.repeats)
    print(f"T={steps}, N={n}, {args.threads} thread(s); one (T, N) float32 tensor = {mb:.1f} MB")
    print(f"| what | ms | GB/s moved |\n|---|---|---|\n| torch add (read 2, write 1) | {floor:.2f} | "
          f"{3 * mb / floor:.1f} |")
    for name, k in builds.items():
        if k is None:
            print(f"| {name} | not built: {fused_kernel.reason()} | |")
            continue
        keep = k.fwd(current, v, empty, 0.2, 0.5, 0.0, 0.0, True, False, True)[3]
        fwd = median_ms(lambda k=k: k.fwd(current, v, empty, 0.2, 0.5, 0.0, 0.0, True, False, True), args.repeats)
        bwd = median_ms(lambda k=k, keep=keep: k.bwd(grad_y, empty, empty, empty, empty, empty, keep, empty, 0.2, 0.5,
                                                     0.0, 0.0, True, False, 0, 3.0), args.repeats)
        fwd_r = median_ms(lambda k=k: k.fwd(current, v, empty, 0.2, 0.5, 0.0, 0.0, True, False, False), args.repeats)
        bwd_r = median_ms(lambda k=k: k.bwd(grad_y, empty, empty, current, v, empty, empty, empty, 0.2, 0.5, 0.0, 0.0,
                                            True, False, 0, 3.0), args.repeats)
        print(f"| {name}: forward, u kept (read 1, write 2) | {fwd:.2f} | {3 * mb / fwd:.1f} |")
        print(f"| {name}: backward, Dspike, from u (read 2, write 1) | {bwd:.2f} | {3 * mb / bwd:.1f} |")
        print(f"| {name}: forward, u replayed later (read 1, write 1) | {fwd_r:.2f} | {2 * mb / fwd_r:.1f} |")
        print(f"| {name}: backward, Dspike, u replayed (read 2, write 1) | {bwd_r:.2f} | {3 * mb / bwd_r:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
