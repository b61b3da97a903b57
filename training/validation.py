"""Held-out evaluation of a model: stereo streams each held-out segment from a zero state (1PA, mean
disparity error, depth errors, firing rate), classification averages logits over T steps (accuracy)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .data import StereoData, center_crop
from .images import ClassData


def evaluate_stereo(model, data: StereoData, cfg) -> dict[str, Any]:
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
    neurons = model.spiking_neurons()
    for length, segs in groups.items():
        for i in range(0, len(segs), cfg.eval_batch_size):
            chunk = segs[i:i + cfg.eval_batch_size]
            state = model.initial_state(len(chunk))
            for t in range(length):
                def grab(attr: str, t=t, chunk=chunk):
                    arrs = [getattr(data.val[s.seq], attr)[s.start + t] for s in chunk]
                    return np.stack([center_crop(a, h, w) for a in arrs]).astype(np.float32)
                out, state = model({"left": torch.from_numpy(grab("left")),
                                    "right": torch.from_numpy(grab("right"))}, state)
                pred = out["disparity"].numpy()
                gt = grab("disparity")
                for k, s in enumerate(chunk):
                    if s.start + t >= s.score_from and data.val[s.seq].has_gt[s.start + t]:
                        errors.append(stereo_errors(pred[k], gt[k], data.val[s.seq].fb))
                        if out["spikes"]:
                            spikes += float(sum(v[k] for v in out["spikes"].values()))
                        steps += 1
    summary = summarize_errors(errors)
    summary["firing_rate"] = spikes / (neurons * steps) if neurons and steps else None
    return summary


def evaluate_classification(model, data: ClassData, timesteps: int, batch_size: int = 256) -> dict[str, Any]:
    correct = 0
    loss = 0.0
    for i in range(0, len(data), batch_size):
        x, y = data.x[i:i + batch_size], data.y[i:i + batch_size]
        state = model.initial_state(len(x))
        logits = 0
        for _ in range(timesteps):
            out, state = model({"image": x}, state)
            logits = logits + out["logits"]
        logits = logits / timesteps
        correct += int((logits.argmax(1) == y).sum())
        loss += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
    return {"accuracy_pct": 100.0 * correct / max(1, len(data)), "loss": loss / max(1, len(data)),
            "samples": len(data)}
