"""The JSON report of a ``Stream`` (its keys are documented in docs/runtime.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from runtime.contract import ModelSpec
from runtime.data.recording import Recording
from runtime.metrics import (
    EnergyTable,
    StereoErrors,
    energy_metrics,
    fps,
    percentiles_ms,
    sparsity_metrics,
    summarize_errors,
)
from runtime.session import StepSession

from .quality import Quality
from .result import StepResult

# the report's protocol keys (runtime.data.protocol.describe) when no source was streamed (feed/feed_arrays only)
_NO_PROTOCOL = {"rectification": None, "rectify_rounding": None, "fb_source": None, "fb_check": None,
                "windows": None, "ground_truth": None, "gt_overlap": None}


@dataclass
class Tally:
    """The steps a stream ran and what its report is made of: counted steps, spikes, stereo errors."""

    spikes: dict[str, float]  # layer -> spikes summed over the counted steps with finite counts
    quality: Quality
    steps: int = 0
    counted: list[StepResult] = field(default_factory=list)
    errors: list[StereoErrors] = field(default_factory=list)
    had_gt: bool = False

    @classmethod
    def of(cls, spec: ModelSpec) -> Tally:
        spikes = {layer.name: 0.0 for layer in spec.layers}
        return cls(spikes, Quality(spikes))


def source_section(rec: Recording | None, events: str | Path | None, spec: ModelSpec, *, fb: float | None,
                   crop: str, seed: int, synth: dict[str, Any], protocol: dict[str, Any] | None) -> dict[str, Any]:
    """The report's ``source``: what was streamed, its size, fB, crop and protocol."""
    return {
        "kind": _source_kind(rec, events),
        "path": None if events is None else str(events),
        "height": int(rec.height) if rec is not None else spec.encoding.height,
        "width": int(rec.width) if rec is not None else spec.encoding.width,
        "fb": fb,
        "crop": crop,
        # the built-in synthetic source: its seed and the SynthConfig fields given (textures, scene types)
        "synthetic": {"seed": seed, **synth} if events is None else None,
        **(protocol or _NO_PROTOCOL),
    }


def _speed(counted: list[StepResult]) -> dict[str, Any]:
    n = len(counted)
    t = {k: [r.timings_s[k] for r in counted] for k in ("decode", "encode", "model", "metrics", "total")}
    per_step = {k: (float(np.mean(v)) * 1000.0 if v else None) for k, v in t.items() if k != "total"}
    total_mean = float(np.mean(t["total"])) * 1000.0 if n else None
    per_step["other"] = (total_mean - sum(v for v in per_step.values() if v is not None)) if n else None
    per_step["total"] = total_mean
    return {
        "fps_model": fps(t["model"]),
        "fps_end_to_end": fps(t["total"]),
        "latency_ms": {"model": percentiles_ms(t["model"]), "end_to_end": percentiles_ms(t["total"])},
        "time_per_step_ms": per_step,
    }


def stream_report(tally: Tally, *, model_path: str, spec: ModelSpec, session: StepSession, source: dict[str, Any],
                  burn_in: int, reset_every: int | None, energy: EnergyTable, min_disparity: float,
                  fb: float | None, data_quality: dict[str, Any]) -> dict[str, Any]:
    """Every number of the run so far: model, runtime, source (with its protocol), steps, speed,
    sparsity, energy, accuracy and data quality."""
    accuracy = None
    if tally.had_gt:
        accuracy = summarize_errors(tally.errors)
        accuracy["min_disparity_px"] = min_disparity
        if fb is None:
            accuracy["note"] = "no focal length x baseline for this source: depth errors not computed"
    return {
        "schema": 1,
        "model": {
            "path": model_path,
            "task": spec.task,
            "encoding": spec.encoding.to_dict(),
            "max_disparity": spec.max_disparity,
            "layers": [lay.name for lay in spec.layers],
            "state_tensors": len(spec.states),
            "passes": list(spec.passes),
            "quantization": None if spec.quantization is None else dict(spec.quantization),
        },
        "runtime": {
            "device": session.device,
            "requested_device": session.requested_device,
            "providers": session.providers,
            "threads": session.threads,
            "io_binding": session.io_binding,
            "onnxruntime": ort.__version__,
        },
        "source": source,
        "steps": {"total": tally.steps, "burn_in": min(burn_in, tally.steps), "counted": len(tally.counted),
                  "reset_every": reset_every},
        "speed": _speed(tally.counted),
        "sparsity": sparsity_metrics(tally.spikes, tally.quality.spike_steps, spec.layers),
        "energy": energy_metrics(tally.spikes, tally.quality.spike_steps, spec.layers, spec.dense_macs_per_step,
                                 energy),
        "accuracy": accuracy,
        "data_quality": data_quality,
    }


def _source_kind(rec: Recording | None, events: str | Path | None) -> str:
    kind = getattr(rec, "kind", None)
    if kind:
        return str(kind)
    if rec is not None:
        name = type(rec).__name__.removesuffix("Recording").lower()
        if name:
            return name
    return "synthetic" if events is None else "file"
