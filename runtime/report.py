"""Presenting a stream's results: the JSON report, the readable summary and saved disparity maps."""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from runtime.core.atomic import write_atomic, write_text_atomic
from runtime.core.errors import RuntimeInputError
from runtime.data.events import DROP_REASONS
from runtime.data.options import DEFAULT_MAX_OUTSIDE_RECTIFY, rectify_loss_problem

_BAD = set(DROP_REASONS)

REPORT_SCHEMA = 1
MAX_LAYERS_SHOWN = 10
# Refuse a run when more than this share of the event rows read were bad data (runtime.data.events.DROP_REASONS);
# --max-dropped overrides it (docs/reliability.md).
DEFAULT_MAX_DROPPED = 0.01


def _clean(value: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, NaN/inf to None (the report never holds NaN)."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_report(report: dict[str, Any], path: str | Path) -> None:
    """Write the report as indented JSON (strict: no NaN), atomically (``runtime.core.atomic``)."""
    try:
        write_text_atomic(path, json.dumps(_clean(report), indent=2, allow_nan=False) + "\n")
    except OSError as exc:
        raise RuntimeInputError(f"--report {path}", f"cannot write it ({exc.strerror or exc})") from None


def _causes(counts: dict[str, int]) -> str:
    return ", ".join(f"{n:,} {k}" for k, n in counts.items() if n) or "none"


def quality_problem(report: dict[str, Any], max_dropped: float = DEFAULT_MAX_DROPPED,
                    max_outside_rectify: float = DEFAULT_MAX_OUTSIDE_RECTIFY) -> str | None:
    """Why the report's numbers would be meaningless, or None: more than ``max_dropped`` of the event
    rows were bad data, the rectification maps moved more than ``max_outside_rectify`` of them out of the
    image, or no counted window had events, a finite output or (with ground truth) a pixel that could be
    scored."""
    dq = report["data_quality"]
    bad = {k: v for k, v in dq["rows_dropped"].items() if k in _BAD and v}
    frac = dq["bad_row_fraction"]
    if frac is not None and frac > max_dropped:
        return (f"{frac:.1%} of the {dq['rows_checked']:,} event rows read are bad data ({_causes(bad)}), more "
                f"than --max-dropped {max_dropped:g}: check the file's columns, units and sensor size "
                "(or accept the loss with a higher --max-dropped)")
    outside = rectify_loss_problem(dq["rows_dropped"], dq["rows_checked"], max_outside_rectify)
    if outside:
        return outside
    n = dq["windows"]
    if n == 0:
        return f"no window was counted (all {report['steps']['total']} steps were burn-in): lower --burn-in"
    if dq["windows_without_events"] == n:
        dropped = f"; {sum(bad.values()):,} event rows were dropped ({_causes(bad)})" if bad else ""
        return (f"none of the {n} counted windows holds an event{dropped}: the events lie outside the time "
                "the windows cover, or none is valid")
    if dq["all_non_finite_output_windows"] == n:
        return f"the model's output is NaN or inf in every one of the {n} counted windows"
    acc = report.get("accuracy")
    if acc is not None and dq["windows_with_ground_truth"] and not dq["windows_with_ground_truth_and_events"]:
        return (f"none of the {dq['windows_with_ground_truth']} counted windows with ground truth holds an event: "
                "the accuracy would measure nothing (the events lie outside the ground truth's time)")
    if acc is not None and dq["windows_scored"] == 0:
        why = (f"{acc['invalid_prediction_pixels']:,} valid pixels had a non-finite prediction"
               if acc["invalid_prediction_pixels"] else "no valid ground-truth pixel")
        return f"none of the {dq['windows_with_ground_truth']} windows with ground truth could be scored ({why})"
    return None


def _quality_line(dq: dict[str, Any]) -> str:
    """The data-quality line of the summary: rows checked and dropped by cause, windows without events,
    non-finite outputs and spike counts."""
    dropped = {k: v for k, v in dq["rows_dropped"].items() if v}
    parts = []
    if dq["rows_checked"] is not None:
        frac = dq["bad_row_fraction"]
        share = f" ({frac:.2%} bad)" if frac else ""
        parts.append(f"{dq['rows_checked']:,} event rows checked, {sum(dropped.values()):,} dropped{share}"
                     + (f": {_causes(dropped)}" if dropped else ""))
    elif dropped:
        parts.append(f"dropped {_causes(dropped)}")
    parts.append(f"{dq['windows_without_events']} of {dq['windows']} windows without events")
    if dq.get("ground_truth_maps") is not None:
        parts.append(f"{dq['windows_with_ground_truth']} with ground truth ({dq['ground_truth_maps']} maps)")
    if dq["non_finite_output_windows"]:
        parts.append(f"{dq['non_finite_output_windows']} windows with non-finite outputs "
                     f"({dq['non_finite_output_pixels']:,} pixels, not scored)")
    if dq["non_finite_spike_windows"]:
        parts.append(f"{dq['non_finite_spike_windows']} windows with non-finite spike counts (left out of "
                     "sparsity and energy)")
    return "data      " + "; ".join(parts)


def _f(value: float | None, fmt: str = ".3g", unit: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value:{fmt}}{unit}"


def _protocol_lines(source: dict[str, Any]) -> list[str]:
    """How the source was read (``runtime.data.protocol.describe``): rectification, fB, windows, ground truth."""
    if not source.get("windows"):
        return []
    win = source["windows"]
    fb = "fB unknown (no depth errors)" if source.get("fb") is None else (
        f"fB {source['fb']:.6g} px*m from {source.get('fb_source') or 'the source'}"
    )
    lengths = win["length_ms"] or [win["window_ms"]] * 2
    span = f"{lengths[0]:g} ms" if lengths[0] == lengths[1] else f"{lengths[0]:.4g}-{lengths[1]:.4g} ms"
    rounding = {"round": " (to the nearest pixel)", "floor": " (rounded down: floor)"}.get(
        source.get("rectify_rounding"), "")
    lines = [
        f"          rectification: {source['rectification']}{rounding}",
        f"          {fb}",
        f"          windows: {win['count']} x {span}, {win['policy']}; {win['with_gt']} with ground truth, "
        f"scored ({source['ground_truth']} protocol)",
    ]
    for check in (source.get("fb_check"), source.get("gt_overlap")):
        if check and check.get("warning"):
            lines.append(f"          warning: {check['warning']}")
    return lines


def format_summary(report: dict[str, Any]) -> str:
    """A short, readable summary of a report for people: one line per report section, in the order people
    read them."""
    m, rt, steps = report["model"], report["runtime"], report["steps"]
    sp, sparse, en, acc = report["speed"], report["sparsity"], report["energy"], report.get("accuracy")
    enc = m["encoding"]
    lat, e2e = sp["latency_ms"]["model"], sp["latency_ms"]["end_to_end"]
    lines = [
        f"model     {m['path']}  ({m['task']}, {enc['kind']} {enc['bins']}x{enc['height']}x{enc['width']}, "
        f"{enc['window_ms']:g} ms windows, {m['state_tensors']} state tensors)",
        f"graph     passes: {', '.join(m.get('passes') or []) or 'none'}"
        + (", int8 convolutions (snn.quantization)" if m.get("quantization") else ""),
        f"runtime   {rt['device']} via {', '.join(rt['providers'])}  (onnxruntime {rt['onnxruntime']}, "
        f"threads {rt['threads'] or 'default'}{', IOBinding' if rt['io_binding'] else ''})",
        f"source    {report['source']['kind']}  {report['source'].get('path') or '(built-in, in memory)'}",
        *_protocol_lines(report["source"]),
        f"steps     {steps['counted']} counted + {steps['burn_in']} burn-in"
        + (f", state reset every {steps['reset_every']}" if steps["reset_every"] else ""),
        "",
        f"speed     {_f(sp['fps_model'], '.1f')} steps/s model only, "
        f"{_f(sp['fps_end_to_end'], '.1f')} steps/s end to end",
        f"latency   model p50 {_f(lat['p50'], '.2f')} / p95 {_f(lat['p95'], '.2f')} / "
        f"p99 {_f(lat['p99'], '.2f')} ms; end to end p50 {_f(e2e['p50'], '.2f')} / "
        f"p99 {_f(e2e['p99'], '.2f')} ms",
        "per step  " + ", ".join(f"{k} {_f(v, '.2f')} ms" for k, v in sp["time_per_step_ms"].items()),
        "",
        f"sparsity  network {_f(sparse['network_sparsity'], '.4f')}, mean firing rate "
        f"{_f(sparse['mean_firing_rate'], '.4f')}, {_f(sparse['spikes_per_step'], '.4g')} spikes/step over "
        f"{sparse['neurons']} neurons",
    ]
    lines += _firing_rate_lines(sparse["firing_rate"])
    lines += [
        f"energy    {_f(en['energy_per_step_uj'], '.4g')} uJ/step = "
        f"{_f(en['synops_per_step'], '.4g')} SynOps x {en['pj_per_ac']} pJ + "
        f"{_f(en['dense_macs_per_step'], '.4g')} dense MACs x {en['pj_per_mac']} pJ",
    ]
    if "data_quality" in report:
        lines.append(_quality_line(report["data_quality"]))
    lines.append(_accuracy_line(acc))
    return "\n".join(lines)


def _firing_rate_lines(rates: dict[str, float | None]) -> list[str]:
    """The summary's firing rate per layer (the most active ones where there are many)."""
    out: list[str] = []
    shown = list(rates.items())
    if len(shown) > MAX_LAYERS_SHOWN:  # many layers: the most active ones; the report has them all
        shown = sorted(shown, key=lambda kv: -(kv[1] or 0.0))[:MAX_LAYERS_SHOWN]
    width = max((len(k) for k, _ in shown), default=0)
    for name, rate in shown:
        out.append(f"  {name:<{width}}  firing rate {_f(rate, '.4f')}")
    if len(rates) > len(shown):
        rest = [r for k, r in rates.items() if k not in dict(shown) and r is not None]
        out.append(
            f"  ... {len(rates) - len(shown)} more layers, firing rates {_f(min(rest, default=None), '.4f')}"
            f" to {_f(max(rest, default=None), '.4f')} (all of them in the --report JSON)"
        )
    return out


def _accuracy_line(acc: dict[str, Any] | None) -> str:
    """The summary's accuracy line, or why there is none."""
    if acc is None:
        return "accuracy  n/a (the source has no ground truth)"
    if acc["valid_pixels"] == 0:
        return f"accuracy  n/a: no valid ground-truth pixel in {acc['windows']} windows"
    n_empty = acc["windows_without_valid_pixels"]
    empty = f", {n_empty} without any" if n_empty else ""
    if acc.get("invalid_prediction_pixels"):
        empty += f"; {acc['invalid_prediction_pixels']:,} pixels with non-finite predictions not scored"
    return (
        f"accuracy  MDE {_f(acc['mean_depth_error_cm'], '.2f', ' cm')}, median depth error "
        f"{_f(acc['median_depth_error_cm'], '.2f', ' cm')}, mean disparity error "
        f"{_f(acc['mean_disparity_error_px'], '.3f', ' px')}, "
        f"1PA {_f(acc['one_pixel_accuracy_pct'], '.2f', ' %')} "
        f"({acc['valid_pixels']} valid pixels in {acc['windows']} windows{empty})"
    )


# --------------------------------------------------------------------------- images
# The 'magma' colour map (Nathaniel Smith and Stefan van der Walt, CC0) as matplotlib 3.11 tabulates it:
# float64 [256, RGB], read by index as a listed colour map is (so PNGs need no matplotlib).
MAGMA = Path(__file__).resolve().with_name("magma.npy")


@functools.cache
def _magma() -> np.ndarray:
    return np.load(MAGMA)


def _colour(values: np.ndarray, vmax: float) -> np.ndarray:
    scaled = np.clip(np.nan_to_num(values, nan=0.0) / max(vmax, 1e-6), 0.0, 1.0)
    lut = _magma()
    rgb = lut[np.minimum((scaled * len(lut)).astype(np.intp), len(lut) - 1)]
    rgb[~np.isfinite(values)] = 0.0
    return rgb


def events_image(encoded: np.ndarray) -> np.ndarray:
    """RGB picture of an encoded window [bins, H, W]: red for net positive polarity, blue for negative."""
    net = np.sign(np.asarray(encoded, dtype=np.float32).sum(axis=0))
    rgb = np.ones((*net.shape, 3), np.float32)
    rgb[net > 0] = (0.85, 0.1, 0.1)
    rgb[net < 0] = (0.1, 0.2, 0.85)
    return rgb


def save_step(
    directory: str | Path,
    index: int,
    disparity: np.ndarray,
    *,
    max_disparity: float,
    gt: np.ndarray | None = None,
    left: np.ndarray | None = None,
) -> list[Path]:
    """Write ``disparity_<index>.npy`` and a PNG: events | prediction | ground truth (same colour scale;
    8-bit RGBA, opaque)."""
    d = Path(directory)
    stem = f"disparity_{index:06d}"
    write_atomic(d / f"{stem}.npy", lambda f: np.save(f, disparity.astype(np.float32)))
    png = d / f"{stem}.png"
    picture = step_picture(disparity, max_disparity=max_disparity, gt=gt, left=left)
    rgba = Image.fromarray(np.dstack([picture, np.full(picture.shape[:2], 255, np.uint8)]), "RGBA")
    write_atomic(png, lambda f: rgba.save(f, format="png"))
    return [d / f"{stem}.npy", png]


def step_picture(disparity: np.ndarray, *, max_disparity: float, gt: np.ndarray | None = None,
                 left: np.ndarray | None = None) -> np.ndarray:
    """events | prediction | ground truth (those given), side by side on one colour scale: uint8 [H, W', 3]."""
    panels = []
    if left is not None:
        panels.append(events_image(left))
    panels.append(_colour(disparity, max_disparity))
    if gt is not None:
        panels.append(_colour(np.where(np.isfinite(gt) & (gt > 0), gt, np.nan), max_disparity))
    gap = np.ones((disparity.shape[0], 4, 3), np.float32)
    row = [panels[0]]
    for p in panels[1:]:
        row += [gap, p]
    return (np.clip(np.concatenate(row, axis=1), 0.0, 1.0) * 255).astype(np.uint8)
