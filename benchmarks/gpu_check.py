"""``python3 benchmarks/gpu_check.py --device cuda|cpu [--size full|small]``: the prepared GPU check (run by
``benchmarks/gpu_check.sh`` on a lent CUDA machine; ``--device cpu --size small`` is its dry run in the tests).

1. train: a few optimiser steps of the stereo genotype (at a reduced training size) on the device, on
   one fixed batch of synthetic event windows with the project's loss and optimiser; the loss must fall.
2. agree: the same weights and windows stepped on the device and on the CPU, state carried; weights on
   a dyadic grid (tests/helpers.make_exact) make every conv sum exact in float32 whatever the order, so
   with TF32 off and deterministic cuDNN the spike counts may differ by at most 1e-4 of the neurons (a
   non-exact conv algorithm can still flip a potential sitting exactly at the threshold) and the
   disparity by more than 1e-3 px on at most 1 % of the pixels that are not near ties of the arg-min.
3. speed: full-size steps/s of the torch model on the device: eager, CUDA graphs (one captured step
   that also copies the new state into the captured state buffers) and ``torch.compile``.
4. onnx: the exported graph (``compiler.export``, factorised) in this project's runtime
   (``runtime.session.SNNSession``) on the CUDA and TensorRT execution providers (``--device cpu``: the
   CPU provider), at the paper's width (C = 12) and full width (C = 24), full resolution: steps/s, and
   the spike counts of 3 steps against the CPU provider's (a difference is reported, never failing:
   float sums in another order can flip a potential at the threshold). Needs ``onnx`` and
   ``onnxruntime-gpu`` in the image; without them the row says so.

Prints one table (check, result, detail) row by row, then PASS/FAIL; exit status 1 if a check failed.
Only torch, numpy, networkx, yaml (and h5py-free parts of the runtime) are needed for checks 1-3:
nothing to install.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

SMALL = ["input.height=24", "input.width=32", "head.cost_volume.disparities=5",
         "networks.feature.node_channels=[4,8,16,32]", "networks.matching.node_channels=[4,8,16,32]",
         "networks.feature.layers[0].channels=4", "networks.feature.layers[1].channels=8",
         "networks.feature.layers[4].channels=8", "networks.matching.layers[0].channels=8",
         "networks.matching.layers[1].channels=8"]
TRAIN_SIZE = ["input.height=130", "input.width=173"]  # the training check's input (half of 260x346)


def _model(overrides, device, seed=0, exact=False):
    import torch

    from compiler import build_model, load_genotype

    torch.manual_seed(seed)
    model = build_model(load_genotype(ROOT / "genotypes/stereo.yaml", overrides=list(overrides)))
    if exact:
        from helpers import make_exact

        make_exact(model, seed=seed)
    return model.to(device)


def _windows(model, count, seed):
    """(left, right, disparity) stacks of ``count`` consecutive synthetic windows: (T, 1, C, H, W) ..."""
    import torch

    from runtime.data.sources import open_recording, windows

    inp = model.genotype.input
    rec = open_recording(seed=seed, height=inp.height, width=inp.width, seconds=(count + 1) * 0.05 + 0.05)
    ws = list(windows(rec, window_us=int(inp.window_ms * 1000), bins=inp.bins, max_windows=count))
    stack = lambda k: torch.from_numpy(np.stack([getattr(w, k)[None] for w in ws]))  # noqa: E731
    return stack("left"), stack("right"), stack("disparity")


def check_training(device, overrides, steps, row):
    """Optimiser steps on one fixed batch (2 sequences of 3 windows, 1 of burn-in); the loss must fall."""
    import torch

    from training.config import TrainConfig, task_defaults
    from training.loop import make_optimizer
    from training.losses import subpixel_cross_entropy

    model = _model(overrides, device).train()
    head = model.genotype.head
    batch = [_windows(model, 3, seed) for seed in (11, 12)]
    left, right, disp = (torch.cat([b[i] for b in batch], dim=1).to(device) for i in range(3))
    cfg = task_defaults(TrainConfig(genotype="genotypes/stereo.yaml", out=""), model.genotype)  # stereo defaults
    opt, _ = make_optimizer(cfg, model.parameters())
    losses = []
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        state = model.initial_state(left.shape[1], device=device)
        with torch.no_grad():
            _, state = model({"left": left[0], "right": right[0]}, state)
        total = count = 0
        for t in range(1, len(left)):
            out, state = model({"left": left[t], "right": right[t]}, state)
            s, n = subpixel_cross_entropy(out["cost"], disp[t], head.disparity_step)
            total, count = total + s, count + n
        loss = total / count.clamp(min=1)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    ok = bool(np.isfinite(losses).all() and np.mean(losses[-2:]) < losses[0])
    inp = model.genotype.input
    row("train", ok, f"{steps} steps at {inp.height}x{inp.width}, batch 2 x 3 windows: loss "
        + " ".join(f"{v:.4f}" for v in losses) + f" ({time.perf_counter() - t0:.1f} s)")
    return ok


def check_agreement(device, overrides, steps, row):
    """The same step on ``device`` and on the CPU with exact (dyadic) weights and TF32 off."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    cpu = _model(overrides, "cpu", seed=3, exact=True).eval()
    dev = _model(overrides, device, seed=3, exact=True).eval()
    left, right, _ = _windows(cpu, steps, seed=5)
    s_cpu, s_dev = cpu.initial_state(1), dev.initial_state(1, device=device)
    neurons = cpu.spiking_neurons()
    ok, details = True, []
    with torch.inference_mode():
        for t in range(steps):
            o1, s_cpu = cpu({"left": left[t], "right": right[t]}, s_cpu)
            o2, s_dev = dev({"left": left[t].to(device), "right": right[t].to(device)}, s_dev)
            flips = sum(float((o1["spikes"][k] - o2["spikes"][k].cpu()).abs().sum()) for k in o1["spikes"])
            two = torch.topk(o1["cost"], 2, dim=1, largest=False).values
            tie = (two[:, 1] - two[:, 0]) < 1e-3
            diff = (o1["disparity"] - o2["disparity"].cpu()).abs()[~tie]
            off = float((diff > 1e-3).float().mean()) if diff.numel() else 0.0
            state = max(float((s_cpu[k] - s_dev[k].cpu()).abs().max()) for k in s_cpu)
            ok &= flips <= 1e-4 * neurons and off <= 0.01
            details.append(f"step {t}: spike count diff {flips:g} of {neurons:,} neurons, disparity > 1e-3 px "
                           f"off on {100 * off:.2f} % of pixels, state max diff {state:.1e}")
    row("agree", ok, f"{device} vs cpu, {steps} carried steps; " + "; ".join(details))
    return ok


def _time(step, sync, n):
    for _ in range(2):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    sync()
    return (time.perf_counter() - t0) / n


def check_speed(device, overrides, n, compile_model, row):
    """Steps/s at the check's size: eager, CUDA graphs, torch.compile (each reported, never failing)."""
    import torch

    model = _model(overrides, device).eval()
    left, right, _ = _windows(model, 1, seed=9)
    x = {"left": left[0].to(device), "right": right[0].to(device)}
    state = model.initial_state(1, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    inp = model.genotype.input
    label = f"{inp.height}x{inp.width}, {model.plan.params:,} params, batch 1"

    def eager():
        nonlocal state
        with torch.inference_mode():
            _, state = model(x, state)

    dt = _time(eager, sync, n)
    row("speed eager", True, f"{label}: {1 / dt:.2f} steps/s ({dt * 1000:.1f} ms/step)")
    if device == "cuda":
        try:
            static = model.initial_state(1, device=device)
            graph = torch.cuda.CUDAGraph()
            with torch.inference_mode():
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    model(x, static)  # warm-up on a side stream, as CUDA graph capture requires
                torch.cuda.current_stream().wait_stream(side)
                with torch.cuda.graph(graph):
                    _, new = model(x, static)
                    for k in static:
                        static[k].copy_(new[k])  # the carried state: next replay reads what this one wrote
            dt = _time(graph.replay, sync, n)
            row("speed CUDA graph", True, f"{label}: {1 / dt:.2f} steps/s ({dt * 1000:.1f} ms/step)")
        except Exception as exc:  # noqa: BLE001 - report whatever stops the capture
            row("speed CUDA graph", True, f"not available: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
    if compile_model:
        try:
            t0 = time.perf_counter()
            compiled = torch.compile(model)

            def step_compiled():
                nonlocal state
                with torch.inference_mode():
                    _, state = compiled(x, state)

            step_compiled()
            sync()
            warm = time.perf_counter() - t0
            dt = _time(step_compiled, sync, n)
            row("speed torch.compile", True, f"{label}: {1 / dt:.2f} steps/s ({dt * 1000:.1f} ms/step; "
                f"compiling took {warm:.0f} s)")
        except Exception as exc:  # noqa: BLE001
            row("speed torch.compile", True, f"not available: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")


PAPER_WIDTH = ["networks.feature.node_channels=[8,16,32,64]", "networks.matching.node_channels=[8,16,32,64]",
               "networks.feature.layers[0].channels=12", "networks.feature.layers[1].channels=24",
               "networks.feature.layers[4].channels=24", "networks.matching.layers[0].channels=24",
               "networks.matching.layers[1].channels=24"]  # = benchmarks/deploy_graphs.PAPER_WIDTH (tested)


def _onnx_steps(path, device, feeds):
    """(seconds per step after 2 warm-ups, spike counts per step) of the graph at ``path`` on ``device``."""
    from runtime.session import SNNSession

    session = SNNSession(path, device=device)
    counts, times = [], []
    for k, feed in enumerate(feeds):
        out = session.step(feed)
        counts.append(out.spikes)
        if k >= 2:
            times.append(out.model_s)
    return float(np.median(times)), counts[:3]


def check_onnx(device, sizes, n, row):
    """The exported graph on the ONNX Runtime providers of ``device`` (reported, never failing)."""
    import importlib.util
    import tempfile

    missing = [m for m in ("onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        row("onnx", True, f"not available: this python3 lacks {', '.join(missing)}")
        return
    from compiler.export import export_onnx

    providers = ["cpu"] if device == "cpu" else ["cuda", "tensorrt"]
    for label, overrides in sizes:
        model = _model(overrides, "cpu").eval()
        left, right, _ = _windows(model, 1, seed=9)
        feeds = [{"left": left[0].numpy()[0], "right": right[0].numpy()[0]}] * (n + 2)
        with tempfile.TemporaryDirectory() as tmp:
            path = f"{tmp}/model.onnx"
            export_onnx(model, path)
            _, want = _onnx_steps(path, "cpu", feeds[:3])
            for provider in providers:
                try:
                    dt, got = _onnx_steps(path, provider, feeds)
                except Exception as exc:  # noqa: BLE001 - report whatever stops the provider
                    row(f"onnx {provider}", True, f"{label}: not available: {type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:160]}")
                    continue
                diff = max(abs(a[k] - b[k]) for a, b in zip(got, want, strict=True) for k in a)
                row(f"onnx {provider}", True, f"{label}: {1 / dt:.2f} steps/s ({dt * 1000:.1f} ms/step); spike counts "
                    f"vs CPU provider, 3 steps: largest difference {diff:g}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 benchmarks/gpu_check.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--size", choices=["full", "small"], default="full",
                        help="small: every check at the tests' reduced stereo genotype (the CPU dry run)")
    parser.add_argument("--train-steps", type=int, default=8)
    parser.add_argument("--agree-steps", type=int, default=3)
    parser.add_argument("--speed-steps", type=int, default=20)
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    args = parser.parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: torch.cuda.is_available() is False on this host", file=sys.stderr)
        return 2
    if args.device == "cpu":
        torch.set_num_threads(1)
    small = args.size == "small"
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    print(f"gpu_check: torch {torch.__version__} on {name}, size {args.size}")
    print(f"| {'check':<20} | result | detail |")
    results = []

    def row(check: str, ok: bool, detail: str) -> None:
        results.append(ok)
        print(f"| {check:<20} | {'PASS' if ok else 'FAIL':<6} | {detail} |", flush=True)

    t0 = time.perf_counter()
    check_training(args.device, SMALL if small else TRAIN_SIZE, args.train_steps, row)
    check_agreement(args.device, SMALL if small else [], args.agree_steps, row)
    check_speed(args.device, SMALL if small else [], args.speed_steps, not args.no_compile, row)
    check_onnx(args.device, [("small", SMALL)] if small else [("paper width", PAPER_WIDTH), ("full width", [])],
               args.speed_steps, row)
    print(f"{'PASS' if all(results) else 'FAIL'} ({time.perf_counter() - t0:.0f} s)")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
