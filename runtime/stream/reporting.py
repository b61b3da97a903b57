"""The JSON report of a ``Stream`` (its keys are documented in docs/runtime.md)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort

from runtime.metrics import energy_metrics, fps, percentiles_ms, sparsity_metrics, summarize_errors

if TYPE_CHECKING:
    from .core import Stream

# the report's protocol keys (runtime.data.protocol.describe) when no source was streamed (feed/feed_arrays only)
_NO_PROTOCOL = {"rectification": None, "rectify_rounding": None, "fb_source": None, "fb_check": None,
                "windows": None, "ground_truth": None, "gt_overlap": None}


def stream_report(stream: Stream) -> dict[str, Any]:
    """Every number of the run so far: model, runtime, source (with its protocol), steps, speed,
    sparsity, energy, accuracy and data quality."""
    spec, counted = stream.spec, stream._counted
    n = len(counted)
    t = {k: [r.timings_s[k] for r in counted] for k in ("decode", "encode", "model", "metrics", "total")}
    per_step = {k: (float(np.mean(v)) * 1000.0 if v else None) for k, v in t.items() if k != "total"}
    total_mean = float(np.mean(t["total"])) * 1000.0 if n else None
    per_step["other"] = (total_mean - sum(v for v in per_step.values() if v is not None)) if n else None
    per_step["total"] = total_mean
    rec = stream._recording
    source = {
        "kind": _source_kind(rec, stream.events),
        "path": None if stream.events is None else str(stream.events),
        "height": int(rec.height) if rec is not None else spec.encoding.height,
        "width": int(rec.width) if rec is not None else spec.encoding.width,
        "fb": stream.fb,
        "crop": stream.crop,
        # the built-in synthetic source: its seed and the SynthConfig fields given (textures, scene types)
        "synthetic": {"seed": stream.seed, **stream.synth} if stream.events is None else None,
        **(stream._protocol or _NO_PROTOCOL),
    }
    accuracy = None
    if stream._had_gt:
        accuracy = summarize_errors(stream._errors)
        accuracy["min_disparity_px"] = stream.min_disparity
        if stream.fb is None:
            accuracy["note"] = "no focal length x baseline for this source: depth errors not computed"
    return {
        "schema": 1,
        "model": {
            "path": stream.model_path,
            "task": spec.task,
            "encoding": spec.encoding.to_dict(),
            "max_disparity": spec.max_disparity,
            "layers": [lay.name for lay in spec.layers],
            "state_tensors": len(spec.states),
            "passes": list(spec.passes),
            "quantization": None if spec.quantization is None else dict(spec.quantization),
        },
        "runtime": {
            "device": stream.session.device,
            "requested_device": stream.session.requested_device,
            "providers": stream.session.providers,
            "threads": stream.session.threads,
            "io_binding": stream.session.io_binding,
            "onnxruntime": ort.__version__,
        },
        "source": source,
        "steps": {
            "total": stream._steps,
            "burn_in": min(stream.burn_in, stream._steps),
            "counted": n,
            "reset_every": stream.reset_every,
        },
        "speed": {
            "fps_model": fps(t["model"]),
            "fps_end_to_end": fps(t["total"]),
            "latency_ms": {"model": percentiles_ms(t["model"]), "end_to_end": percentiles_ms(t["total"])},
            "time_per_step_ms": per_step,
        },
        "sparsity": sparsity_metrics(stream._spikes, stream._quality.spike_steps, spec.layers),
        "energy": energy_metrics(
            stream._spikes, stream._quality.spike_steps, spec.layers, spec.dense_macs_per_step, stream.energy
        ),
        "accuracy": accuracy,
        "data_quality": stream.data_quality(),
    }


def _source_kind(rec: Any, events: str | Path | None) -> str:
    kind = getattr(rec, "kind", None)
    if kind:
        return str(kind)
    if rec is not None:
        name = type(rec).__name__.removesuffix("Recording").lower()
        if name:
            return name
    return "synthetic" if events is None else "file"
