"""Metrics of a stream: speed, sparsity, energy and stereo accuracy.

Conventions (docs/runtime.md repeats them):
- firing rate of a layer = spikes / (neurons x steps), spikes per neuron per step;
- network sparsity = 1 - all spikes / (all neurons x steps), the fraction of silent neuron-steps;
- SynOps per step = sum over layers of spikes x fan_out, averaged over steps;
- energy per step = SynOps x pJ/AC + dense MACs x pJ/MAC (defaults 0.9 and 4.6 pJ, 45 nm CMOS);
- accuracy over valid ground-truth pixels only (finite and > 0), pooled over all counted steps; a
  non-finite prediction (NaN, inf) at such a pixel is counted as invalid
  (``invalid_prediction_pixels``) and never scored as a number;
  disparity error |d_pred - d_gt| in px, one-pixel accuracy = share with error <= 1 px (in %),
  depth = fB / disparity, with the predicted disparity clamped to at least ``min_disparity`` px
  (default 1 px) so that a prediction <= 0 gives a finite, far depth instead of NaN or infinity.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.contract import LayerSpec
from runtime.core.errors import RuntimeInputError

DEFAULT_PJ_PER_AC = 0.9
DEFAULT_PJ_PER_MAC = 4.6
DEFAULT_MIN_DISPARITY = 1.0


@dataclass(frozen=True)
class EnergyTable:
    """Cost of one accumulate (a synaptic operation) and of one multiply-accumulate, in pJ."""

    pj_per_ac: float = DEFAULT_PJ_PER_AC
    pj_per_mac: float = DEFAULT_PJ_PER_MAC


def load_energy_table(path: str | Path) -> EnergyTable:
    """Read ``{"pj_per_ac": 0.9, "pj_per_mac": 4.6}`` (either key may be left out) from a JSON file."""
    where = f"--energy-table {path}"
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise RuntimeInputError(where, "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RuntimeInputError(where, f"cannot read it ({exc})") from None
    except json.JSONDecodeError as exc:
        raise RuntimeInputError(where, f"not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(raw, dict):
        raise RuntimeInputError(where, 'expected a JSON object like {"pj_per_ac": 0.9, "pj_per_mac": 4.6}')
    unknown = sorted(set(raw) - {"pj_per_ac", "pj_per_mac"})
    if unknown:
        raise RuntimeInputError(where, f"unknown key {unknown[0]!r} (keys are pj_per_ac, pj_per_mac)")
    values = {}
    for key, default in (("pj_per_ac", DEFAULT_PJ_PER_AC), ("pj_per_mac", DEFAULT_PJ_PER_MAC)):
        v = raw.get(key, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise RuntimeInputError(where, f"{key} must be a non-negative number of pJ, got {v!r}")
        values[key] = float(v)
    return EnergyTable(**values)


# --------------------------------------------------------------------------- speed
def percentiles_ms(seconds: Sequence[float]) -> dict[str, float | None]:
    """Mean, p50, p95 and p99 of durations given in seconds, in milliseconds (None when empty)."""
    if len(seconds) == 0:
        return {"mean": None, "p50": None, "p95": None, "p99": None}
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {"mean": float(ms.mean()), "p50": float(p50), "p95": float(p95), "p99": float(p99)}


def fps(seconds: Sequence[float]) -> float | None:
    """Steps per second: number of steps over their total duration."""
    total = float(np.sum(seconds)) if len(seconds) else 0.0
    return len(seconds) / total if total > 0 else None


# --------------------------------------------------------------------------- sparsity and energy
def sparsity_metrics(spikes: Mapping[str, float], steps: int, layers: Sequence[LayerSpec]) -> dict[str, Any]:
    """Firing rate per layer, network sparsity and spikes per step from total spike counts over ``steps``."""
    if steps <= 0:
        return {
            "firing_rate": {lay.name: None for lay in layers},
            "mean_firing_rate": None,
            "network_sparsity": None,
            "spikes_per_step": None,
            "neurons": sum(lay.neurons for lay in layers),
        }
    rates = {lay.name: (spikes[lay.name] / (lay.neurons * steps) if lay.neurons else 0.0) for lay in layers}
    neurons = sum(lay.neurons for lay in layers)
    total = sum(spikes[lay.name] for lay in layers)
    mean_rate = total / (neurons * steps) if neurons else 0.0
    return {
        "firing_rate": rates,
        "mean_firing_rate": mean_rate,
        "network_sparsity": 1.0 - mean_rate,
        "spikes_per_step": total / steps,
        "neurons": neurons,
    }


def energy_metrics(
    spikes: Mapping[str, float],
    steps: int,
    layers: Sequence[LayerSpec],
    dense_macs: float,
    table: EnergyTable,
) -> dict[str, Any]:
    """SynOps and dense MACs per step and the energy they cost, per step, in pJ and uJ."""
    synops = sum(spikes[lay.name] * lay.fan_out for lay in layers) / steps if steps > 0 else None
    if synops is None:
        return {
            "synops_per_step": None,
            "dense_macs_per_step": dense_macs,
            "pj_per_ac": table.pj_per_ac,
            "pj_per_mac": table.pj_per_mac,
            "energy_synops_uj": None,
            "energy_dense_uj": None,
            "energy_per_step_uj": None,
        }
    e_ac = synops * table.pj_per_ac
    e_mac = dense_macs * table.pj_per_mac
    return {
        "synops_per_step": synops,
        "dense_macs_per_step": dense_macs,
        "pj_per_ac": table.pj_per_ac,
        "pj_per_mac": table.pj_per_mac,
        "energy_synops_uj": e_ac * 1e-6,
        "energy_dense_uj": e_mac * 1e-6,
        "energy_per_step_uj": (e_ac + e_mac) * 1e-6,
    }


# --------------------------------------------------------------------------- accuracy
def valid_mask(gt: np.ndarray) -> np.ndarray:
    """Valid ground-truth pixels: finite and strictly positive disparity."""
    return np.isfinite(gt) & (gt > 0)


def depth_from_disparity(
    disparity: np.ndarray, fb: float, min_disparity: float = DEFAULT_MIN_DISPARITY
) -> np.ndarray:
    """Depth in metres = fB / max(disparity, min_disparity); finite for any finite disparity."""
    return fb / np.maximum(disparity, min_disparity)


@dataclass
class StereoErrors:
    """Per-pixel errors of one window over its valid pixels with a finite prediction; ``invalid``
    counts the valid pixels whose prediction was not finite (not scored)."""

    disparity_px: np.ndarray
    depth_m: np.ndarray | None
    invalid: int = 0

    @property
    def valid(self) -> int:
        return int(self.disparity_px.size)


def stereo_errors(
    pred: np.ndarray, gt: np.ndarray, fb: float | None, min_disparity: float = DEFAULT_MIN_DISPARITY
) -> StereoErrors:
    """Absolute disparity (and, with fB, depth) errors over the valid pixels of one window; valid
    pixels with a non-finite prediction are counted (``invalid``), not scored."""
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    mask = valid_mask(gt)
    finite = np.isfinite(pred)
    use = mask & finite
    p = pred[use].astype(np.float64)
    g = gt[use].astype(np.float64)
    depth = None
    if fb is not None:
        depth = np.abs(depth_from_disparity(p, fb, min_disparity) - fb / g).astype(np.float32)
    return StereoErrors(np.abs(p - g).astype(np.float32), depth, int(np.count_nonzero(mask & ~finite)))


def summarize_errors(errors: Sequence[StereoErrors]) -> dict[str, Any]:
    """Pool per-window errors: mean/median depth error (cm), mean disparity error (px), 1PA (%).

    Metrics are None when no valid pixel was seen; the counts say why (``invalid_prediction_pixels``:
    valid ground-truth pixels whose prediction was not finite, left out of every metric).
    """
    windows = len(errors)
    empty = sum(1 for e in errors if e.valid == 0)
    disp = [e.disparity_px for e in errors if e.valid]
    n = int(sum(a.size for a in disp))
    out: dict[str, Any] = {
        "windows": windows,
        "windows_without_valid_pixels": empty,
        "valid_pixels": n,
        "invalid_prediction_pixels": int(sum(e.invalid for e in errors)),
        "mean_depth_error_cm": None,
        "median_depth_error_cm": None,
        "mean_disparity_error_px": None,
        "one_pixel_accuracy_pct": None,
    }
    if n == 0:
        return out
    d = np.concatenate(disp).astype(np.float64)
    out["mean_disparity_error_px"] = float(d.mean())
    out["one_pixel_accuracy_pct"] = float(np.mean(d <= 1.0) * 100.0)
    depths = [e.depth_m for e in errors if e.valid and e.depth_m is not None]
    if depths and len(depths) == len(disp):
        z = np.concatenate(depths).astype(np.float64)
        out["mean_depth_error_cm"] = float(z.mean() * 100.0)
        out["median_depth_error_cm"] = float(np.median(z) * 100.0)
    return out
