"""``python benchmarks/bench_compile.py [GENOTYPE] [--steps N] [--set KEY=VALUE ...]``: compile/export time and
per-step latency of the exported graph in ONNX Runtime against the torch step, side by side.

Both sides run the same weights (BN folded for ONNX, the torch model in eval mode with BN, as
trained) on the same sparse event inputs with carried state, one after the other within one run, on
this machine's CPU (CUDA when torch and onnxruntime both have it and ``--device cuda``). A
benchmark, not a test: it reports what it measured.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _median_ms(times: list[float]) -> float:
    return 1000 * statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    """The benchmark read top to bottom (set-up, both sides timed, one table); long because the measured
    sequence is kept in one place on purpose."""
    parser = argparse.ArgumentParser(prog="python benchmarks/bench_compile.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("genotype", nargs="?", default="genotypes/stereo.yaml")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per side (after one warm-up step)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--threads", type=int, default=0, help="threads for both sides (0: library default)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = parser.parse_args(argv)

    import onnxruntime as ort
    import torch

    from compiler import GenotypeError, load_genotype
    from compiler.export import export_onnx
    from compiler.model import build_model
    from compiler.planner import plan
    from runtime.names import state_input, state_output

    try:
        t0 = time.perf_counter()
        g = load_genotype(args.genotype, overrides=args.overrides)
        p = plan(g)
        t_validate = time.perf_counter() - t0
    except GenotypeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    t0 = time.perf_counter()
    model = build_model(g).to(device).eval()
    t_build = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        t0 = time.perf_counter()
        export_onnx(model, path)
        t_export = time.perf_counter() - t0
        options = ort.SessionOptions()
        if args.threads:
            options.intra_op_num_threads = args.threads
        providers = ["CUDAExecutionProvider"] if args.device == "cuda" else ["CPUExecutionProvider"]
        t0 = time.perf_counter()
        session = ort.InferenceSession(str(path), options, providers=providers)
        t_session = time.perf_counter() - t0

    rng = np.random.default_rng(0)
    inp = g.input
    shape = (1, inp.in_channels, inp.height, inp.width)

    def frames() -> dict[str, np.ndarray]:
        if inp.encoding == "image":
            return {n: rng.standard_normal(shape).astype(np.float32) for n in model.input_names}
        return {n: (np.sign(rng.standard_normal(shape)) * (rng.random(shape) < 0.05)).astype(np.float32)
                for n in model.input_names}

    inputs = [frames() for _ in range(args.steps + 1)]
    names = [n for n, _ in model.state_shapes()]
    out_names = [o.name for o in session.get_outputs()]

    ort_times = []
    feeds_state = {state_input(n): np.zeros((1, *s), np.float32) for n, s in model.state_shapes()}
    for i, x in enumerate(inputs):
        t0 = time.perf_counter()
        res = dict(zip(out_names, session.run(None, {**x, **feeds_state}), strict=True))
        dt = time.perf_counter() - t0
        feeds_state = {state_input(n): res[state_output(n)] for n in names}
        if i:
            ort_times.append(dt)

    torch_times = []
    state = model.initial_state(1, device=device)
    with torch.inference_mode():
        for i, x in enumerate(inputs):
            tx = {k: torch.from_numpy(v).to(device) for k, v in x.items()}
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            _, state = model(tx, state)
            if device.type == "cuda":
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            if i:
                torch_times.append(dt)

    ort_ms, torch_ms = _median_ms(ort_times), _median_ms(torch_times)
    print(f"{g.name}: {inp.height}x{inp.width}, {p.params:,} parameters, device {args.device}, "
          f"threads {args.threads or 'default'}, {args.steps} timed steps per side (median)")
    print(f"validate + plan {t_validate * 1000:8.1f} ms")
    print(f"build (torch)   {t_build * 1000:8.1f} ms")
    print(f"export (ONNX)   {t_export * 1000:8.1f} ms")
    print(f"ORT session     {t_session * 1000:8.1f} ms")
    print()
    print(f"{'runtime':<28}{'ms/step':>10}{'steps/s':>10}")
    print(f"{'ONNX Runtime (BN folded)':<28}{ort_ms:>10.1f}{1000 / ort_ms:>10.3f}")
    print(f"{'torch eager (BN in eval)':<28}{torch_ms:>10.1f}{1000 / torch_ms:>10.3f}")
    print(f"ratio torch / ONNX Runtime time: {torch_ms / ort_ms:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
