"""``python benchmarks/bench_batchnorm.py [--rounds 20] [--threads 1] [--precision fp32|bf16]``: the BatchNorm
calls of one multi-step stereo training step, forward and backward, three ways side by side.

Multi-step training stacks T steps in the batch, and BatchNorm must normalise each step with that step's
own batch statistics (``compiler.ops.ConvBN``): one ``batch_norm`` call per step, then a concatenation.
The shapes are recorded from one real multi-step training step of ``genotypes/stereo_small.yaml`` (the
configuration of ``benchmarks/bench_train.py``: 48x64 crops, 2 + 4 windows, batch 4); then each distinct
(shape, steps) is timed, weighted by how often the step makes it, for:

- ``per step``: what the project does (one call per step's chunk, ``torch.cat``);
- ``one call``: the steps as extra channels, (T, B, C, ...) -> (B, T*C, ...) (a transposing copy each way)
  and one ``batch_norm`` with the affine weights repeated;
- ``by formula``: the per-(step, channel) statistics and normalisation written as tensor ops over all steps
  at once (autograd's backward).

Each way's output and input gradient are compared with the first's (max abs difference). A benchmark:
it reports what it measured and asserts nothing.
"""

from __future__ import annotations

import collections
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from runtime.core.errors import ArgumentParser, int_between  # noqa: E402


def per_step(x, w, b, steps: int):
    import torch
    import torch.nn.functional as F

    return torch.cat([F.batch_norm(c, None, None, w, b, True, 0.0, 1e-5) for c in x.chunk(steps)])


def one_call(x, w, b, steps: int):
    import torch.nn.functional as F

    n, c = x.shape[:2]
    v = x.reshape(steps, n // steps, c, -1).transpose(0, 1).reshape(n // steps, steps * c, -1)
    y = F.batch_norm(v, None, None, w.repeat(steps), b.repeat(steps), True, 0.0, 1e-5)
    return y.reshape(n // steps, steps, c, -1).transpose(0, 1).reshape(x.shape)


def by_formula(x, w, b, steps: int):
    import torch

    n, c = x.shape[:2]
    v = x.reshape(steps, n // steps, c, -1)
    var, mean = torch.var_mean(v, dim=(1, 3), unbiased=False, keepdim=True)
    scale = torch.rsqrt(var + 1e-5) * w.view(1, 1, c, 1)
    return ((v - mean) * scale + b.view(1, 1, c, 1)).reshape(x.shape)


WAYS = {"per step": per_step, "one call": one_call, "by formula": by_formula}


def recorded_shapes(precision: str) -> tuple[collections.Counter, int]:
    """(shape, dtype) -> calls per training step, from one multi-step step of bench_train's stereo setup; T."""
    import tempfile

    import bench_train
    import torch
    import torch.nn.functional as F

    from training.distributed import setup
    from training.loop import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        bench_train.stereo_data(Path(tmp) / "data.pt")
        kw = {"exec": "multistep", "precision": precision, "threads": torch.get_num_threads(), "seed": 0,
              "layout": "nchw"}
        g, cfg, model, train, test = bench_train._stereo_setup(kw, str(Path(tmp) / "data.pt"))
    trainer = Trainer(cfg, g, model, train, test, setup(), log=lambda s: None)
    idx, gen, rng = trainer.batches(0)
    batch = trainer.make_batch(idx[0], gen, rng)
    seen: collections.Counter = collections.Counter()
    original = F.batch_norm

    def record(x, *args, **kwargs):
        seen[(tuple(x.shape), x.dtype)] += 1
        return original(x, *args, **kwargs)

    F.batch_norm = record
    try:
        trainer.train_step(batch)
    finally:
        F.batch_norm = original
    return seen, cfg.windows + cfg.burn_in


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python benchmarks/bench_batchnorm.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int_between(1, 10_000), default=20)
    parser.add_argument("--threads", type=int_between(1, 1024), default=1)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="the training step's precision (the dtype BatchNorm sees)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    seen, steps = recorded_shapes(args.precision)
    # a chunk of one step is (B, C, ...): the stacked tensor the ways take is T chunks of it
    groups = collections.Counter()
    for (shape, dtype), calls in seen.items():
        groups[((steps * shape[0],) + shape[1:], dtype)] += calls // steps
    totals = dict.fromkeys(WAYS, 0.0)
    worst = dict.fromkeys(WAYS, 0.0)
    for (shape, dtype), count in sorted(groups.items(), key=lambda kv: -kv[1]):
        gen = torch.Generator().manual_seed(0)
        x0 = torch.randn(shape, generator=gen).to(dtype)
        w = torch.randn(shape[1], generator=gen).requires_grad_()
        b = torch.randn(shape[1], generator=gen).requires_grad_()
        grad = torch.randn(shape, generator=gen).to(dtype)
        times = {k: [] for k in WAYS}
        results = {}
        for _ in range(args.rounds):
            for name, way in WAYS.items():  # in turn, so a drift in the machine's load hits all alike
                x = x0.clone().requires_grad_()
                t0 = time.perf_counter()
                y = way(x, w, b, steps)
                y.backward(grad)
                times[name].append(time.perf_counter() - t0)
                results[name] = (y.detach().float(), x.grad.float())
        ref = results["per step"]
        for name in WAYS:
            totals[name] += count * sorted(times[name])[len(times[name]) // 2]
            diff = max(float((results[name][0] - ref[0]).abs().max()), float((results[name][1] - ref[1]).abs().max()))
            worst[name] = max(worst[name], diff)
    calls = sum(seen.values())
    print(f"one multi-step stereo training step ({args.precision}, {args.threads} thread(s)): {calls} batch_norm "
          f"calls over {len(groups)} distinct stacked shapes, T = {steps}; forward + backward, median of "
          f"{args.rounds} rounds per shape; load average {os.getloadavg()[0]:.2f}")
    print("| way | ms per training step | x per step | max abs difference from per step |")
    print("|---|---|---|---|")
    for name in WAYS:
        print(f"| {name} | {totals[name] * 1e3:.2f} | {totals['per step'] / totals[name]:.2f}x | {worst[name]:.1e} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
