"""Benchmark: one streaming step of a compiled SNN in ONNX Runtime against the torch model's step.

    python benchmarks/bench_stream.py                  # build genotypes/stereo.yaml, time both sides
    python benchmarks/bench_stream.py --onnx build/stereo.onnx --steps 5
    python benchmarks/bench_stream.py --set input.height=132 --set input.width=174   # a smaller input

Without ``--onnx`` the torch model is built from the genotype and exported, so both sides run the very
same weights on the same encoded windows. The ONNX Runtime side is the runtime's ``Stream``: its time
per step is split into decode (reading events), encode (SBT), model and metrics. The torch side needs
the compiler (and torch); if either is missing, only ONNX Runtime numbers are printed, with a note.
This file lives outside ``runtime/`` so that the runtime itself never imports torch.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from runtime.core.errors import RuntimeInputError  # noqa: E402
from runtime.data.sources import Window  # noqa: E402
from runtime.stream import Stream  # noqa: E402


def _frames(stream: Stream, n: int, seed: int) -> tuple[list[Window], str]:
    """n encoded windows from the runtime's synthetic source, or random SBT if the data layer is absent."""
    try:
        from itertools import islice

        frames = list(islice(stream.windows(), n))
        if len(frames) == n:
            return frames, "synthetic (runtime.data.sources)"
    except ImportError:
        pass
    enc = stream.spec.encoding
    rng = np.random.default_rng(seed)
    shape = (enc.bins, enc.height, enc.width)
    out = []
    for i in range(n):
        lr = [((rng.random(shape) < 0.05) * rng.choice([-1.0, 1.0], size=shape)).astype(np.float32)
              for _ in range(2)]
        out.append(Window(i, i * enc.window_us, (i + 1) * enc.window_us, lr[0], lr[1]))
    return out, "random SBT (runtime.data.sources not available: decode/encode not measured)"


def _build(genotype: str, overrides: list[str], out: Path) -> Any:
    from compiler import build_model, export_onnx, load_genotype

    g = load_genotype(genotype, overrides=overrides or None)
    model = build_model(g).eval()
    export_onnx(model, out)
    return model


def _torch_steps(model: Any, frames: list[Window], warmup: int, threads: int | None) -> list[float]:
    import torch

    if threads:
        torch.set_num_threads(threads)
    model = model.eval()
    state = model.initial_state(batch_size=1)
    times = []
    with torch.inference_mode():
        for k, f in enumerate(frames):
            inputs = {"left": torch.from_numpy(f.left)[None], "right": torch.from_numpy(f.right)[None]}
            t0 = time.perf_counter()
            _, state = model(inputs, state)
            dt = time.perf_counter() - t0
            if k >= warmup:
                times.append(dt)
    return times


def main(argv: list[str] | None = None) -> int:
    """The benchmark read top to bottom (set-up, both sides timed, one table); long because the measured
    sequence is kept in one place on purpose."""
    first_line = (__doc__ or "").split("\n\n")[0]
    p = argparse.ArgumentParser(prog="python benchmarks/bench_stream.py", description=first_line)
    p.add_argument("--onnx", help="a compiled model; default: build --genotype now (same weights both sides)")
    p.add_argument("--genotype", default=str(ROOT / "genotypes" / "stereo.yaml"))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="genotype override")
    p.add_argument("--steps", type=int, default=5, help="timed steps per side (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    p.add_argument("--threads", type=int, help="threads for both sides (default: each library's choice)")
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda", "tensorrt"))
    p.add_argument("--json", help="write the numbers here")
    args = p.parse_args(argv)

    notes: list[str] = []
    torch_model = None
    tmp = tempfile.TemporaryDirectory()
    onnx_path = args.onnx
    if onnx_path is None:
        try:
            onnx_path = str(Path(tmp.name) / "model.onnx")
            torch_model = _build(args.genotype, args.set, Path(onnx_path))
        except ImportError as exc:
            print(f"error: --onnx is needed: the compiler cannot build a model here ({exc})", file=sys.stderr)
            return 2
    else:
        try:
            from compiler import build_model, loads_genotype

            stream_meta = Stream(onnx_path, device="cpu").spec
            torch_model = build_model(loads_genotype(stream_meta.genotype))
            notes.append("torch side: genotype from the model's metadata, fresh weights (speed only)")
        except ImportError as exc:
            notes.append(f"torch side skipped: {exc}")
        except Exception as exc:  # noqa: BLE001 - any compiler failure just disables the comparison
            notes.append(f"torch side skipped: cannot rebuild the genotype ({str(exc).splitlines()[0]})")
    try:
        stream = Stream(onnx_path, device=args.device, threads=args.threads, burn_in=args.warmup)
    except RuntimeInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    n = args.warmup + args.steps
    frames, source = _frames(stream, n, seed=0)
    for _ in stream.run(frames):
        pass
    report = stream.report()
    ort_split = report["speed"]["time_per_step_ms"]
    result: dict[str, Any] = {
        "model": onnx_path if args.onnx else f"{args.genotype} {' '.join(args.set)}".strip(),
        "input": stream.spec.encoding.to_dict(),
        "source": source,
        "device": report["runtime"]["device"],
        "threads": args.threads,
        "steps": args.steps,
        "onnxruntime": {"steps_per_s_model": report["speed"]["fps_model"],
                        "steps_per_s_end_to_end": report["speed"]["fps_end_to_end"],
                        "ms_per_step": ort_split, "latency_ms": report["speed"]["latency_ms"]["model"]},
        "sparsity": report["sparsity"]["network_sparsity"],
        "notes": notes,
    }
    if torch_model is not None:
        t = _torch_steps(torch_model, frames, args.warmup, args.threads)
        torch_sps = len(t) / sum(t)
        result["torch"] = {"steps_per_s_model": torch_sps, "ms_per_step": 1000.0 * float(np.mean(t))}
        result["ratio_ort_over_torch"] = report["speed"]["fps_model"] / torch_sps
    else:
        notes.append("torch side not measured")
    print(f"model      {result['model']}  input {result['input']}")
    print(f"source     {source}; {args.warmup} warm-up + {args.steps} timed steps; device {result['device']}")
    print(f"{'':10} {'steps/s':>10} {'ms/step':>10}")
    print(f"{'ORT':10} {report['speed']['fps_model']:10.3f} {ort_split['model']:10.1f}   (model only)")
    print(f"{'ORT e2e':10} {report['speed']['fps_end_to_end']:10.3f} {ort_split['total']:10.1f}   "
          + ", ".join(f"{k} {v:.1f}" for k, v in ort_split.items() if k != "total"))
    if "torch" in result:
        tr = result["torch"]
        print(f"{'torch':10} {tr['steps_per_s_model']:10.3f} {tr['ms_per_step']:10.1f}")
        print(f"ratio      ORT / torch = {result['ratio_ort_over_torch']:.2f}x")
    for note in notes:
        print(f"note       {note}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
