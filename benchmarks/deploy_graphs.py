"""What the deployment benchmarks share: one genotype's model, its deployable graphs (fp32 with and
without the cost-volume factorisation, int8), event windows, and steppers that carry the state and
time one step each, run interleaved so that a busy shared machine slows every variant alike.

Used by ``bench_deploy.py`` (the speed and accuracy tables) and ``bench_ort_settings.py`` (ONNX
Runtime's session options). Not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The paper's search width C = 12 (865,478 parameters, the published 0.87M; README "Parameter counts")
PAPER_WIDTH = ["networks.feature.node_channels=[8,16,32,64]", "networks.matching.node_channels=[8,16,32,64]",
               "networks.feature.layers[0].channels=12", "networks.feature.layers[1].channels=24",
               "networks.feature.layers[4].channels=24", "networks.matching.layers[0].channels=24",
               "networks.matching.layers[1].channels=24"]
# name -> (genotype, overrides, weights)
SIZES = {
    "full": ("genotypes/stereo.yaml", [], None),
    "paper": ("genotypes/stereo.yaml", PAPER_WIDTH, None),
    "mid": ("genotypes/stereo.yaml", ["input.height=130", "input.width=173"], None),  # half size, C = 24
    "demo": ("genotypes/stereo_small.yaml", [], "models/stereo_small.pt"),
}


def load_model(genotype: str, overrides: Sequence[str] = (), weights: str | None = None, seed: int = 0,
               timings: dict | None = None):
    """The torch model in eval mode (weights from ``weights``, else seeded initial weights); the
    seconds of validation + planning and of building go into ``timings``."""
    import torch

    from compiler import build_model, load_genotype
    from compiler.build import load_weights

    torch.manual_seed(seed)
    t0 = time.perf_counter()
    g = load_genotype(ROOT / genotype, overrides=list(overrides))
    t1 = time.perf_counter()
    model = build_model(g)
    if timings is not None:
        timings.update({"validate + plan": t1 - t0, "torch model": time.perf_counter() - t1})
    if weights:
        load_weights(model, str(ROOT / weights))
    return model.eval()


def dense_macs(model) -> int:
    """MACs per step of the torch model run densely: every layer, the feature network on both views."""
    p = model.plan
    total = sum(lp.macs for np_ in p.nets.values() for lp in np_.layers)
    feature = getattr(model.genotype.head, "feature", None)
    return total + (sum(lp.macs for lp in p.nets[feature].layers) if feature else 0)


def graphs(model, calib_windows: int, threads: int = 1, int8: bool = True, plain: bool = False) -> dict[str, object]:
    """The deployable graphs of ``model``: fp32 unfactorised (``--no-factorize``), fp32 factorised and
    int8 (factorised, calibrated on ``calib_windows`` windows of the built-in synthetic stream), and
    with ``plain`` first the graph as exported before the compiler's passes (BatchNorm folding only);
    with the seconds each took to build."""
    from compiler.export import to_onnx
    from runtime.calibrate import to_int8

    out, seconds = {}, {}
    if plain:
        t0 = time.perf_counter()
        out["ONNX fp32, BN folding only"] = to_onnx(model, factorize=False, rewrite=False)
        seconds["ONNX fp32, BN folding only"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    out["ONNX fp32 unfactorised"] = to_onnx(model, factorize=False)
    t1 = time.perf_counter()
    out["ONNX fp32 factorised"] = to_onnx(model)
    t2 = time.perf_counter()
    seconds.update({"ONNX fp32 unfactorised": t1 - t0, "ONNX fp32 factorised": t2 - t1})
    if int8:
        out["ONNX int8 factorised"] = to_int8(out["ONNX fp32 factorised"], windows=calib_windows, threads=threads)
        seconds["ONNX int8 factorised"] = time.perf_counter() - t2
    return {"graphs": out, "seconds": seconds}


def event_windows(model, count: int, seed: int = 7) -> list[dict[str, np.ndarray]]:
    """``count`` consecutive windows of the built-in synthetic stream at the model's size (batch 1)."""
    return stream_windows(model.genotype.input, count, seed)


def stream_windows(inp, count: int, seed: int = 7) -> list[dict[str, np.ndarray]]:
    """``count`` consecutive windows of the built-in synthetic stream for an input of ``inp.height`` x
    ``inp.width``, ``inp.bins`` bins of ``inp.window_ms`` (a genotype's input or a graph's encoding; batch 1)."""
    from runtime.data.sources import open_recording, windows

    seconds = (count + 1) * inp.window_ms / 1000 + 0.05
    rec = open_recording(seed=seed, height=inp.height, width=inp.width, seconds=seconds)
    return [{"left": w.left[None], "right": w.right[None]}
            for w in windows(rec, window_us=int(inp.window_ms * 1000), bins=inp.bins, max_windows=count)]


def ort_session(proto, threads: int = 1, level: str = "all", parallel: bool = False, spinning: bool = True,
                disabled: Sequence[str] | None = None):
    """A CPU session of ``proto``; ``disabled``: ONNX Runtime optimisers left out (default: the runtime's,
    ``runtime.session.DISABLED_OPTIMIZERS``)."""
    import onnxruntime as ort

    from runtime.session import DISABLED_OPTIMIZERS

    disabled = DISABLED_OPTIMIZERS if disabled is None else disabled

    opt = ort.GraphOptimizationLevel
    levels = {"disable": opt.ORT_DISABLE_ALL, "basic": opt.ORT_ENABLE_BASIC,
              "extended": opt.ORT_ENABLE_EXTENDED, "all": opt.ORT_ENABLE_ALL}
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = levels[level]
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 2 if parallel else 1
    opts.execution_mode = ort.ExecutionMode.ORT_PARALLEL if parallel else ort.ExecutionMode.ORT_SEQUENTIAL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"],
                                disabled_optimizers=list(disabled))


class OrtStepper:
    """An ONNX Runtime session with its state carried; ``step(feed)`` returns (seconds, outputs)."""

    def __init__(self, session):
        self.session = session
        self.names = [o.name for o in session.get_outputs()]
        self.state = {i.name: np.zeros([1, *i.shape[1:]], np.float32)
                      for i in session.get_inputs() if i.name.startswith("state_in.")}

    def step(self, feed: Mapping[str, np.ndarray]) -> tuple[float, dict]:
        t0 = time.perf_counter()
        values = dict(zip(self.names, self.session.run(self.names, {**feed, **self.state}), strict=True))
        dt = time.perf_counter() - t0
        self.state = {"state_in." + k[len("state_out."):]: v for k, v in values.items() if k.startswith("state_out.")}
        return dt, values


class TorchStepper:
    """The torch model's step (eval mode, BatchNorm as trained) with its state carried."""

    def __init__(self, model):
        self.model = model
        self.state = model.initial_state(1)

    def step(self, feed: Mapping[str, np.ndarray]) -> tuple[float, dict]:
        import torch

        x = {k: torch.from_numpy(v) for k, v in feed.items()}
        with torch.inference_mode():
            t0 = time.perf_counter()
            out, self.state = self.model(x, self.state)
            dt = time.perf_counter() - t0
        return dt, out


def interleaved(steppers: Mapping[str, object], feeds: Sequence[Mapping[str, np.ndarray]], rounds: int,
                warmup: int = 1, progress: Callable[[str], None] | None = None) -> dict[str, list[float]]:
    """Per stepper the seconds of ``rounds`` timed steps after ``warmup`` untimed ones; each round steps
    every stepper once, in turn, on the same window (windows cycle), so load drifts hit all alike."""
    times: dict[str, list[float]] = {name: [] for name in steppers}
    for r in range(warmup + rounds):
        feed = feeds[r % len(feeds)]
        for name, stepper in steppers.items():
            dt, _ = stepper.step(feed)
            if r >= warmup:
                times[name].append(dt)
            if progress:
                progress(f"round {r + 1}/{warmup + rounds} {name}: {dt * 1000:.0f} ms")
    return times


def median_ms(seconds: Sequence[float]) -> float:
    return 1000.0 * statistics.median(seconds)
