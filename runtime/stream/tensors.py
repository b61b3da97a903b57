"""A stream of tensors through a model of tensors (a classification genotype, an imported NIR graph):
``python -m runtime.stream --onnx model.onnx --tensors INPUTS.npy [--labels LABELS.npy]``.

``INPUTS.npy`` holds one input per time step, ``[T, *input shape]`` (the model's ``[C, H, W]`` or any shape
of as many values, e.g. ``[T, 784]`` for a graph whose input is a vector). The state is carried from step to
step (``runtime.session.SNNSession``). ``LABELS.npy`` (``[T]`` integers) scores each step's output: correct when
its largest entry is the label. The report has the same sections a stereo run's has where they apply
(model, device, steps, throughput, latency, firing rates), the steps whose output held a NaN or an infinite
value (``non_finite_output_steps``) and ``classification`` (accuracy, correct steps, per step).
``runtime.tensorserve`` serves several such streams with the same pieces (``load_inputs``, ``TensorTally``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from runtime.contract import ModelSpec
from runtime.core.errors import RuntimeInputError
from runtime.core.names import TASKS
from runtime.htmlreport import Series
from runtime.session import SNNSession, StepOutput


def _load(path: str, what: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise RuntimeInputError(f"{what} {path}", f"not a readable .npy array ({exc})") from None


def input_shape(spec: ModelSpec, where: str) -> tuple[int, ...]:
    """One step's input shape of a model of tensors; a model of event windows is a ``RuntimeInputError``."""
    if TASKS[spec.task].events:
        raise RuntimeInputError(where, f"the model is a {spec.task} model of event windows; "
                                "--tensors feeds models of tensors (classification, imported NIR graphs)")
    return tuple(int(d) for d in spec.data_input_shape[1:])


def load_inputs(path: str, shape: tuple[int, ...], max_steps: int | None = None) -> np.ndarray:
    """The inputs of ``path`` (``[T, *shape]`` or as many values per step), at most ``max_steps`` of them;
    an unreadable file, another size per step, no step or a non-finite value is a ``RuntimeInputError``."""
    data = _load(path, "--tensors")
    if data.ndim < 1 or data.shape[0] < 1 or int(np.prod(data.shape[1:])) != int(np.prod(shape)):
        raise RuntimeInputError(f"--tensors {path}", f"holds {data.shape}; the model takes [T, {shape}] "
                                f"({int(np.prod(shape))} values per step)")
    if not np.issubdtype(data.dtype, np.number) or not np.all(np.isfinite(data)):
        raise RuntimeInputError(f"--tensors {path}", "holds non-finite values" if np.issubdtype(
            data.dtype, np.number) else f"holds {data.dtype} values, not numbers")
    return data[:max_steps] if max_steps else data


def load_labels(path: str, steps: int) -> np.ndarray:
    """One integer label per step (at least ``steps`` of them) from ``path``; else ``RuntimeInputError``."""
    truth = _load(path, "--labels")
    if truth.ndim != 1 or truth.shape[0] < steps or not np.issubdtype(truth.dtype, np.integer):
        raise RuntimeInputError(f"--labels {path}", f"holds {truth.dtype} {truth.shape}; one integer label "
                                f"per step ({steps}) is needed")
    return truth


class TensorTally:
    """What the steps of one stream of tensors gave: latency, spikes per layer, sparsity and (with
    labels) whether each step's largest output was its label."""

    def __init__(self, spec: ModelSpec, truth: np.ndarray | None = None) -> None:
        self.spec, self.truth = spec, truth
        self.latency_ms: list[float] = []
        self.correct: list[bool] = []
        self.spikes = {layer.name: 0.0 for layer in spec.layers}
        self.sparsity: list[float] = []
        self.non_finite_output_steps = 0

    @property
    def steps(self) -> int:
        return len(self.latency_ms)

    def add(self, out: StepOutput) -> None:
        t = self.steps
        self.latency_ms.append(out.model_s * 1000)
        for layer, n in out.spikes.items():
            self.spikes[layer] += n
        self.sparsity.append(1 - sum(out.spikes.values()) / max(self.spec.total_neurons, 1))
        self.non_finite_output_steps += not bool(np.all(np.isfinite(out.output)))
        if self.truth is not None:
            self.correct.append(bool(int(np.argmax(out.output)) == int(self.truth[t])))

    def report(self, model: str | Path, device: str, source: dict[str, Any], wall_s: float) -> dict[str, Any]:
        """The stream's report (the module docstring); ``classification`` only with labels."""
        steps, lat = self.steps, np.asarray(self.latency_ms)
        report: dict[str, Any] = {
            "model": str(model), "task": self.spec.task, "device": device, "source": source,
            "steps": steps, "wall_s": wall_s, "steps_per_s": steps / wall_s if wall_s > 0 else None,
            "latency_ms": {"mean": float(lat.mean()), "p50": float(np.percentile(lat, 50)),
                           "p99": float(np.percentile(lat, 99)), "per_step": lat.tolist()} if steps else None,
            "firing_rate": {layer.name: self.spikes[layer.name] / (max(steps, 1) * layer.neurons)
                            for layer in self.spec.layers},
            "sparsity_per_step": list(self.sparsity),
            "non_finite_output_steps": self.non_finite_output_steps,
        }
        if self.truth is not None:
            report["classification"] = {"accuracy": float(np.mean(self.correct)) if steps else None,
                                        "correct": int(sum(self.correct)), "correct_per_step": list(self.correct)}
        return report


def stream_tensors(model: str | Path, tensors: str, labels: str | None = None, *, device: str = "cpu",
                   threads: int | None = None, max_steps: int | None = None) -> dict[str, Any]:
    """Step every input of ``tensors`` through ``model``; the report (a dict, see the module docstring)."""
    session = SNNSession(model, device=device, threads=threads)
    spec = session.spec
    shape = input_shape(spec, f"--tensors {tensors}")
    data = load_inputs(tensors, shape, max_steps)
    tally = TensorTally(spec, None if labels is None else load_labels(labels, len(data)))
    name = spec.data_inputs[0]
    t0 = time.perf_counter()
    for x in data:
        tally.add(session.step({name: np.asarray(x, np.float32).reshape(shape)}))
    return tally.report(model, session.device, {"tensors": str(tensors)}, time.perf_counter() - t0)


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
