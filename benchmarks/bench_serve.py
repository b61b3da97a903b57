"""Benchmark: N streams through one ONNX Runtime session (``runtime.multistream``, each stream a slot of
the batch) against N separate single-stream sessions, total steps per second, for N = 1, 2, 4, 8, 16.

    python benchmarks/bench_serve.py                      # genotypes/stereo_small.yaml + models/stereo_small.pt
    python benchmarks/bench_serve.py --onnx build/stereo_small.onnx --steps 10 --streams 1,2,4

Both sides get the same encoded windows (built-in synthetic stereo, seed = stream number), prepared
before timing, so the numbers are the model and state handling only (no event decoding or encoding).
Each side runs ``--warmup`` untimed steps first; the two sides alternate ``--repeats`` times and the
median time of each is reported, and the best (shortest) time, the least disturbed by other jobs on a
shared machine. Both use ``--threads`` intra-op threads (default 1).
The separate sessions are stepped one after the other in one thread (what N single-stream processes
sharing the cores would at best get, without the process overhead). The outputs of the two sides are
compared (largest disparity difference; the spikes must agree). Without ``--onnx`` the model is compiled
from the genotype and its weights first (needs the compiler and torch).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from runtime.multistream import MultiSession  # noqa: E402
from runtime.session import SNNSession  # noqa: E402
from runtime.stream import Stream  # noqa: E402


def _windows(model: str, n: int, steps: int) -> list[list[dict[str, np.ndarray]]]:
    """Per stream, ``steps`` encoded windows of the synthetic source with seed = stream number."""
    out = []
    for seed in range(n):
        with Stream(model, device="cpu", seed=seed, max_steps=steps) as stream:
            frames = list(islice(stream.windows(), steps))
        out.append([{"left": w.left, "right": w.right} for w in frames])
    return out


def _separate(sessions: list[SNNSession], frames, warmup: int):
    for session in sessions:
        session.reset()
    outs: list[list] = [[] for _ in frames]
    t0 = 0.0
    for k in range(len(frames[0])):
        if k == warmup:
            t0 = time.perf_counter()
        for i, session in enumerate(sessions):
            outs[i].append(session.step(frames[i][k]))
    return time.perf_counter() - t0, outs


def _batched(multi: MultiSession, frames, warmup: int):
    for key in multi.keys:
        multi.reset(key)
    outs: list[list] = [[] for _ in frames]
    t0 = 0.0
    for k in range(len(frames[0])):
        if k == warmup:
            t0 = time.perf_counter()
        step = multi.step({i: frames[i][k] for i in range(len(frames))})
        for i, out in step.items():
            outs[i].append(out)
    return time.perf_counter() - t0, outs


def _measure(model: str, frames, args) -> dict:
    """Both sides, alternated ``--repeats`` times; the median time of each."""
    n = len(frames)
    sessions = [SNNSession(model, device="cpu", threads=args.threads) for _ in range(n)]
    multi = MultiSession(model, device="cpu", threads=args.threads)
    for i in range(n):
        multi.open(i)
    sep_t, bat_t = [], []
    for _ in range(args.repeats):
        t, sep = _separate(sessions, frames, args.warmup)
        sep_t.append(t)
        t, bat = _batched(multi, frames, args.warmup)
        bat_t.append(t)
    pairs = [(a, b) for sa, sb in zip(sep, bat, strict=True) for a, b in zip(sa, sb, strict=True)]
    work = n * args.steps
    row = {"streams": n,
           "separate_steps_per_s": work / float(np.median(sep_t)),
           "batched_steps_per_s": work / float(np.median(bat_t)),
           "separate_best_steps_per_s": work / min(sep_t), "batched_best_steps_per_s": work / min(bat_t),
           "max_disparity_diff": max(float(np.abs(a.output - b.output).max()) for a, b in pairs),
           "same_spikes": all(a.spikes == b.spikes for a, b in pairs)}
    row["ratio"] = row["batched_steps_per_s"] / row["separate_steps_per_s"]
    row["ratio_best"] = row["batched_best_steps_per_s"] / row["separate_best_steps_per_s"]
    return row


def _compile(genotype: str, weights: str | None, out: Path) -> None:
    from compiler.build import build
    from compiler.genotype import load_genotype

    build(load_genotype(genotype), out, weights)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--onnx", help="a compiled stereo model (default: compile --genotype with --weights)")
    p.add_argument("--genotype", default=str(ROOT / "genotypes" / "stereo_small.yaml"))
    p.add_argument("--weights", default=str(ROOT / "models" / "stereo_small.pt"))
    p.add_argument("--streams", default="1,2,4,8,16", help="comma-separated N (default 1,2,4,8,16)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per stream (default 10)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads per session (default 1)")
    p.add_argument("--repeats", type=int, default=5, help="alternate both sides this often (default 5)")
    p.add_argument("--json", help="write the results to this file")
    args = p.parse_args(argv)
    counts = [int(n) for n in args.streams.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        model = args.onnx
        if model is None:
            model = str(Path(tmp) / "model.onnx")
            _compile(args.genotype, args.weights, Path(model))
        total = args.warmup + args.steps
        frames = _windows(model, max(counts), total)
        enc = SNNSession(model, device="cpu").spec.encoding
        print(f"model {args.onnx or args.genotype} ({enc.height}x{enc.width}), {args.steps} timed steps per stream "
              f"after {args.warmup} warm-up, median and best of {args.repeats}, {args.threads} thread(s) per session, "
              f"{os.cpu_count()} CPU cores")
        heads = ("N", "separate steps/s", "one session steps/s", "ratio", "best: separate", "one session", "ratio",
                 "max |d disparity|")
        widths = (3, 16, 19, 6, 14, 11, 6, 17)
        print("  ".join(h.rjust(w) for h, w in zip(heads, widths, strict=True)))
        rows = []
        for n in counts:
            row = _measure(model, frames[:n], args)
            rows.append(row)
            print(f"{n:>3}  {row['separate_steps_per_s']:>16.1f}  {row['batched_steps_per_s']:>19.1f}  "
                  f"{row['ratio']:>5.2f}x  {row['separate_best_steps_per_s']:>14.1f}  "
                  f"{row['batched_best_steps_per_s']:>11.1f}  {row['ratio_best']:>5.2f}x  "
                  f"{row['max_disparity_diff']:>17.2e}"
                  + ("" if row["same_spikes"] else "  SPIKES DIFFER"))
    if args.json:
        Path(args.json).write_text(json.dumps({"threads": args.threads, "steps": args.steps, "repeats": args.repeats,
                                               "rows": rows}, indent=2))
    return 0 if all(r["same_spikes"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
