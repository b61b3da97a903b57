"""What ``bench_transfer.py`` shows: its tables, issue 22's targets with their distances, and its pictures.

Pictures: one PNG per scene type (and one of Motorcycle), four panels side
by side: the left camera's events, the ground truth, the SNN's prediction (the same colour scale,
0 to the model's largest disparity) and the absolute error (0 to 3 px; grey where there is no
ground truth). The window shown is the last of the first recording of the type."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TARGET_OVER_BEST = 25.0  # points of 1PA above the best constant, held-out synthetic pooled
TARGET_RELU_GAP_POOLED = 2.0  # points of 1PA behind the ReLU twin, pooled
TARGET_RELU_GAP_TYPE = 5.0  # points of 1PA behind the ReLU twin, on any scene type
TARGET_MEAN_ERROR_PX = 0.8  # mean disparity error, pooled
MIN_SEEDS_PER_TYPE = 6
ERROR_SCALE_PX = 3.0  # the error panel's white end
NO_GROUND_TRUTH = 0.5  # grey where the ground truth has no value
SCALE = 2  # nearest-neighbour enlargement of every panel


def panels(events: np.ndarray, gt: np.ndarray, pred: np.ndarray, max_disparity: float) -> np.ndarray:
    """uint8 RGB [H*SCALE, (4W+12)*SCALE, 3]: events | ground truth | prediction | |error|."""
    from runtime.report import _colour, events_image

    valid = np.isfinite(gt) & (gt > 0)
    truth = np.where(valid, gt, np.nan)
    error = np.where(valid, np.abs(pred - np.where(valid, gt, 0.0)), np.nan)
    parts = [events_image(events), _colour(truth, max_disparity), _colour(pred, max_disparity),
             _colour(error, ERROR_SCALE_PX)]
    for k in (1, 3):
        parts[k][~valid] = NO_GROUND_TRUTH
    gap = np.ones((gt.shape[0], 4, 3), np.float32)
    row = [parts[0]]
    for p in parts[1:]:
        row += [gap, p]
    picture = np.clip(np.concatenate(row, axis=1), 0.0, 1.0)
    picture = picture.repeat(SCALE, axis=0).repeat(SCALE, axis=1)
    return (picture * 255).astype(np.uint8)


def write_pictures(directory: str, shown: dict[str, tuple], max_disparity: float) -> list[Path]:
    """Write ``<name>.png`` for each ``name -> (events [C, H, W], gt [H, W], pred [H, W])``."""
    from PIL import Image

    from runtime.core.atomic import write_atomic

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (events, gt, pred) in shown.items():
        image = Image.fromarray(panels(events, gt, pred, max_disparity), "RGB")
        path = out / f"{name}.png"
        write_atomic(path, lambda f, image=image: image.save(f, format="png", optimize=True))
        written.append(path)
    return written


def _num(v) -> float:
    return float("nan") if v is None else float(v)


ROW_NAMES = {"snn": "SNN", "relu": "ReLU twin", "best_constant": "best const", "constant": "train med",
             "oracle": "set median"}


def print_block(title: str, block: dict) -> None:
    print(f"\n{title}")
    print(f"{'':>11} {'1PA %':>8} {'mean disp err px':>17} {'MDE cm':>8} {'windows':>8} {'pixels':>10}")
    for name, label in ROW_NAMES.items():
        if name not in block:
            continue
        r = block[name]
        print(f"{label:>11} {_num(r['one_pixel_accuracy_pct']):8.2f} {_num(r['mean_disparity_error_px']):17.3f} "
              f"{_num(r['mean_depth_error_cm']):8.1f} {r['windows']:8d} {r['valid_pixels']:10,d}")
    for m, refs in block["distance"].items():
        best, const = refs["best_constant"], refs["constant"]
        print(f"{ROW_NAMES[m]:>11} - best constant: {_num(best['one_pixel_accuracy_points']):+.2f} points 1PA, "
              f"{_num(best['mean_disparity_error_px']):+.3f} px; - training median: "
              f"{_num(const['one_pixel_accuracy_points']):+.2f} points, "
              f"{_num(const['mean_disparity_error_px']):+.3f} px")


def print_recordings(recs: list[dict]) -> None:
    print("\nper recording (1PA %; best constant = the recording's median ground truth)")
    print(f"{'recording':>18} {'type':>9} {'SNN':>7} {'ReLU':>7} {'best px':>8} {'best':>7} {'SNN-best':>9}")
    for r in recs:
        pa = r["one_pixel_accuracy_pct"]
        print(f"{r['name']:>18} {r['kind'] or '-':>9} {_num(pa.get('snn')):7.2f} "
              f"{_num(pa.get('relu')):7.2f} {r['best_constant_px']:8.3f} {_num(pa['best_constant']):7.2f} "
              f"{_num(pa.get('snn')) - _num(pa['best_constant']):+9.2f}")


def _row(target: str, measured: str, over: float, unit: str = "points", judged: bool = True) -> dict:
    """A target row: ``over`` is the margin (>= 0 met); ``distance`` how far it is missed (0 when met)."""
    return {"target": target, "measured": measured, "judged": judged, "met": judged and over >= 0,
            "distance": min(0.0, over) if judged else None, "unit": unit}


def print_targets(rows: list[dict]) -> None:
    print("\ntargets (issue 22)")
    for row in rows:
        status = ("not judged" if not row["judged"] else "met" if row["met"]
                  else f"MISSED by {-row['distance']:.2f} {row['unit']}")
        print(f"  {row['target']}: {row['measured']} -> {status}")


def targets(held: dict, by_type: dict, counts: dict, moto: dict) -> list[dict]:
    """Issue 22's targets, each with its measured distance."""
    def over_best(block: dict) -> float:
        return block["distance"]["snn"]["best_constant"]["one_pixel_accuracy_points"]

    rows = []
    for kind, block in by_type.items():
        over, n = over_best(block), counts[kind]
        enough = n >= MIN_SEEDS_PER_TYPE
        rows.append(_row(f"{kind}: SNN 1PA above the best constant ({MIN_SEEDS_PER_TYPE}+ seeds)",
                         f"{over:+.2f} points, {n} seeds" + ("" if enough else " (too few: not judged)"),
                         over - 1e-9, judged=enough))
    m_over = over_best(moto)
    rows.append(_row("Motorcycle: SNN 1PA above the best constant", f"{m_over:+.2f} points", m_over - 1e-9))
    p_over = over_best(held)
    rows.append(_row(f"pooled: SNN 1PA >= best constant + {TARGET_OVER_BEST:g} points", f"{p_over:+.2f} points",
                     p_over - TARGET_OVER_BEST))
    if "relu" in held:
        gap = held["relu"]["one_pixel_accuracy_pct"] - held["snn"]["one_pixel_accuracy_pct"]
        rows.append(_row(f"pooled: SNN within {TARGET_RELU_GAP_POOLED:g} points of the ReLU twin",
                         f"ReLU - SNN = {gap:+.2f} points", TARGET_RELU_GAP_POOLED - gap))
        gaps = {k: b["relu"]["one_pixel_accuracy_pct"] - b["snn"]["one_pixel_accuracy_pct"] for k, b in by_type.items()}
        worst = max(gaps, key=gaps.get)
        rows.append(_row(f"every scene type: SNN at most {TARGET_RELU_GAP_TYPE:g} points behind the ReLU twin",
                         f"worst {worst}: ReLU - SNN = {gaps[worst]:+.2f} points", TARGET_RELU_GAP_TYPE - gaps[worst]))
    err = held["snn"]["mean_disparity_error_px"]
    rows.append(_row(f"pooled: SNN mean disparity error <= {TARGET_MEAN_ERROR_PX:g} px", f"{err:.3f} px",
                     TARGET_MEAN_ERROR_PX - err, unit="px"))
    return rows


def finish(result: dict, json_path: str | None) -> int:
    """The benchmark's last lines: its wall time, and the result as JSON (written atomically) if asked."""
    import json

    from runtime.core.atomic import write_text_atomic

    print(f"\n({result['seconds']:.0f} s)")
    if json_path:
        write_text_atomic(json_path, json.dumps(result, indent=2, default=float))
    return 0
