"""A stream of tensors through a model of tensors (a classification genotype, an imported NIR graph):
``python -m runtime.stream --onnx model.onnx --tensors INPUTS.npy [--labels LABELS.npy]``.

``INPUTS.npy`` holds one input per time step, ``[T, *input shape]`` (the model's ``[C, H, W]`` or any shape
of as many values, e.g. ``[T, 784]`` for a graph whose input is a vector). The state is carried from step to
step (``runtime.session.SNNSession``). ``LABELS.npy`` (``[T]`` integers) scores each step's output: correct when
its largest entry is the label. The report has the same sections a stereo run's has where they apply
(model, device, steps, throughput, latency, firing rates) and ``classification`` (accuracy, per step)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from runtime.core.errors import RuntimeInputError
from runtime.core.names import TASKS
from runtime.htmlreport import Series
from runtime.session import SNNSession


def _load(path: str, what: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise RuntimeInputError(f"{what} {path}", f"not a readable .npy array ({exc})") from None


def stream_tensors(model: str | Path, tensors: str, labels: str | None = None, *, device: str = "cpu",
                   threads: int | None = None, max_steps: int | None = None) -> dict[str, Any]:
    """Step every input of ``tensors`` through ``model``; the report (a dict, see the module docstring)."""
    session = SNNSession(model, device=device, threads=threads)
    spec = session.spec
    if TASKS[spec.task].events:
        raise RuntimeInputError(f"--tensors {tensors}", f"the model is a {spec.task} model of event windows; "
                                "--tensors feeds models of tensors (classification, imported NIR graphs)")
    shape = tuple(int(d) for d in spec.data_input_shape[1:])
    data = _load(tensors, "--tensors")
    if data.ndim < 1 or data.shape[0] < 1 or int(np.prod(data.shape[1:])) != int(np.prod(shape)):
        raise RuntimeInputError(f"--tensors {tensors}", f"holds {data.shape}; the model takes [T, {shape}] "
                                f"({int(np.prod(shape))} values per step)")
    if not np.all(np.isfinite(data)):
        raise RuntimeInputError(f"--tensors {tensors}", "holds non-finite values")
    data = data[:max_steps] if max_steps else data
    truth = None
    if labels is not None:
        truth = _load(labels, "--labels")
        if truth.ndim != 1 or truth.shape[0] < len(data) or not np.issubdtype(truth.dtype, np.integer):
            raise RuntimeInputError(f"--labels {labels}", f"holds {truth.dtype} {truth.shape}; one integer label "
                                    f"per step ({len(data)}) is needed")
    name = spec.data_inputs[0]
    latency, correct, spikes = [], [], {layer.name: 0.0 for layer in spec.layers}
    spikes_per_step = []
    t0 = time.perf_counter()
    for t, x in enumerate(data):
        out = session.step({name: np.asarray(x, np.float32).reshape(shape)})
        latency.append(out.model_s * 1000)
        for layer, n in out.spikes.items():
            spikes[layer] += n
        spikes_per_step.append(sum(out.spikes.values()) / max(spec.total_neurons, 1))
        if truth is not None:
            correct.append(bool(int(np.argmax(out.output)) == int(truth[t])))
    wall = time.perf_counter() - t0
    steps = len(data)
    lat = np.asarray(latency)
    report: dict[str, Any] = {
        "model": str(model), "task": spec.task, "device": session.device, "source": {"tensors": str(tensors)},
        "steps": steps, "wall_s": wall, "steps_per_s": steps / wall if wall > 0 else None,
        "latency_ms": {"mean": float(lat.mean()), "p50": float(np.percentile(lat, 50)),
                       "p99": float(np.percentile(lat, 99)), "per_step": lat.tolist()},
        "firing_rate": {layer.name: spikes[layer.name] / (steps * layer.neurons) for layer in spec.layers},
        "sparsity_per_step": [1 - r for r in spikes_per_step],
    }
    if truth is not None:
        report["classification"] = {"accuracy": float(np.mean(correct)), "correct_per_step": correct}
    return report


def tensor_series(report: dict[str, Any]) -> Series:
    """The HTML report's series of a tensor stream: latency, running accuracy (with labels), sparsity."""
    steps = list(range(report["steps"]))
    correct = (report.get("classification") or {}).get("correct_per_step")
    running = ([float(np.mean(correct[:t + 1])) for t in steps] if correct else [None] * len(steps))
    return Series(steps, report["latency_ms"]["per_step"], running, report["sparsity_per_step"],
                  quality=("running accuracy (share of steps whose largest output is the label)", "accuracy"))


def html_view(report: dict[str, Any]) -> dict[str, Any]:
    """The tensor report under the keys the HTML page reads (``runtime.htmlreport.SUMMARY``)."""
    lat = report["latency_ms"]
    return {"model": {"path": report["model"], "task": report["task"]}, "runtime": {"device": report["device"]},
            "source": {"kind": f"tensors {report['source']['tensors']}"}, "steps": {"total": report["steps"]},
            "speed": {"fps_model": report["steps_per_s"],
                      "latency_ms": {"model": {"p50": lat["p50"], "p99": lat["p99"]}}},
            "sparsity": {"firing_rate": report["firing_rate"]}}
