"""Held-out evaluation of a model: stereo streams each held-out segment from a zero state (1PA, mean
disparity error, depth errors, firing rate), classification averages logits over T steps (accuracy).

``mode`` is the execution mode of training.execution: ``eager`` and ``step`` step the model (without
gradients every neuron runs its plain step: the fused update only pays for a backward), ``multistep`` runs
spans of steps at once (``SNNModel.forward_steps``: each convolution once over the span; stereo spans hold
at most ``MULTISTEP_SAMPLES`` samples, span x segments). All give the same outputs up to float rounding
(tests/test_execution.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .data import StereoData, center_crop
from .execution import class_logits
from .images import ClassData

MULTISTEP_SAMPLES = 64  # steps x segments run at once by a multistep evaluation (memory, not speed, bounds it)


def _steps(model, mode: str, inputs: list[dict], state: dict) -> tuple[list[dict], dict]:
    """``inputs``: one dict per step; the outputs of each step and the state after the last, stepping
    (``eager``, ``step``) or in one ``forward_steps`` call (``multistep``)."""
    if mode != "multistep" or not hasattr(model, "forward_steps"):
        outs = []
        for x in inputs:
            out, state = model(x, state)
            outs.append(out)
        return outs, state
    stacked = {k: torch.stack([x[k] for x in inputs]) for k in inputs[0]}
    out, state = model.forward_steps(stacked, state)
    spikes = out.pop("spikes")
    return [{**{k: v[t] for k, v in out.items()}, "spikes": {k: v[t] for k, v in spikes.items()}}
            for t in range(len(inputs))], state


def evaluate_stereo(model, data: StereoData, cfg, mode: str = "eager") -> dict[str, Any]:
    """Stream each held-out segment from a zero state; score its windows with ground truth from
    ``score_from`` on.

    Returns runtime.metrics' summary (1PA %, mean disparity error px, mean/median depth error cm)
    and the mean firing rate of the spiking layers.
    """
    from runtime.metrics import stereo_errors, summarize_errors

    g = model.genotype
    h, w = g.input.height, g.input.width
    errors = []
    spikes = 0.0
    steps = 0
    groups: dict[int, list] = {}
    for seg in data.val_segments:
        groups.setdefault(seg.end - seg.start, []).append(seg)
    n_neurons = model.spiking_neurons()
    for length, segs in groups.items():
        for i in range(0, len(segs), cfg.eval_batch_size):
            chunk = segs[i:i + cfg.eval_batch_size]
            span = max(1, MULTISTEP_SAMPLES // len(chunk)) if mode == "multistep" else 1
            state = model.initial_state(len(chunk))

            def grab(attr: str, t: int, chunk=chunk):
                arrs = [getattr(data.val[s.seq], attr)[s.start + t] for s in chunk]
                return np.stack([center_crop(a, h, w) for a in arrs]).astype(np.float32)
            for t0 in range(0, length, span):
                ts = range(t0, min(length, t0 + span))
                outs, state = _steps(model, mode, [{"left": torch.from_numpy(grab("left", t)),
                                                    "right": torch.from_numpy(grab("right", t))} for t in ts], state)
                for t, out in zip(ts, outs, strict=True):
                    pred = out["disparity"].numpy()
                    gt = grab("disparity", t)
                    for k, s in enumerate(chunk):
                        if s.start + t >= s.score_from and data.val[s.seq].has_gt[s.start + t]:
                            errors.append(stereo_errors(pred[k], gt[k], data.val[s.seq].fb))
                            if out["spikes"]:
                                spikes += float(sum(v[k] for v in out["spikes"].values()))
                            steps += 1
    summary = summarize_errors(errors)
    summary["firing_rate"] = spikes / (n_neurons * steps) if n_neurons and steps else None
    return summary


CLASS_METRICS = ("accuracy_pct", "loss", "samples")  # evaluate_classification's, in its order


def held_out_metrics(stereo: bool) -> tuple[str, ...]:
    """The names of the metrics a validation returns (``--best-metric`` chooses one): those of
    ``evaluate_stereo`` or ``evaluate_classification``."""
    from runtime.metrics import summarize_errors

    return (*summarize_errors([]), "firing_rate") if stereo else CLASS_METRICS


def evaluate_classification(model, data: ClassData, timesteps: int, batch_size: int = 256,
                            mode: str = "eager") -> dict[str, Any]:
    correct = 0
    loss = 0.0
    for i in range(0, len(data), batch_size):
        x, y = data.x[i:i + batch_size], data.y[i:i + batch_size]
        logits, _ = class_logits(model, x, timesteps, mode)  # summed over the steps, step after step
        logits = logits / timesteps
        correct += int((logits.argmax(1) == y).sum())
        loss += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
    return dict(zip(CLASS_METRICS, (100.0 * correct / max(1, len(data)), loss / max(1, len(data)), len(data)),
                    strict=True))
