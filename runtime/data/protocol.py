"""How a recording is scored: the ground-truth protocols, and what a run says about its data.

Ground-truth protocols (``GT_PROTOCOLS``), applied to each window's disparity map by
``runtime.data.sources.windows``:

- ``full`` (default): every valid ground-truth pixel, disparity exactly ``fB / depth`` (MVSEC) or as
  stored (DSEC).
- ``ddes-full``: as DDES's ``--use_full_ground_truth``: disparity rounded to 1/7 px and pixels
  with ``round(7 d) >= 255`` (d >= 36.36 px) invalid, as DDES's conversion stores it
  (tlkvstepan/event_stereo_ICCV2019, ``tools/convert_mvsec.py`` ``_depth2disparity``;
  ``dataset_constants.py``: ``DISPARITY_MULTIPLIER = 7``, ``INVALID_DISPARITY = 255``).
- ``ddes``: DDES's default: ``ddes-full`` and only the pixels that received at least one of the
  last 15,000 left events before the map (``transformers.py`` ``KeepRecentEventsGoundtruth``,
  added by ``trainer.py`` unless ``--use_full_ground_truth``).

``describe`` is the data part of a run's report: rectification, fB and where it came from, the
window policy, the ground-truth protocol and whether ground truth and events overlap.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from runtime.data.recording import SIDES
from runtime.data.tiling import window_plan

GT_PROTOCOLS = ("full", "ddes-full", "ddes")
DDES_DISPARITY_MULTIPLIER = 7.0  # DDES stores round(7 d) in uint8 PNGs
DDES_INVALID = 255  # ... and 255 means invalid, so d >= 254.5 / 7 = 36.36 px is dropped
DDES_RECENT_EVENTS = 15_000  # NUMBER_OF_EVENTS_IN_SPARSE_GROUND_TRUTH


def check_gt_protocol(name: str) -> None:
    if name not in GT_PROTOCOLS:
        raise ValueError(f"unknown ground-truth protocol {name!r}; one of {', '.join(GT_PROTOCOLS)}")


def ddes_quantise(disparity: np.ndarray) -> np.ndarray:
    """Disparity as DDES stores it: rounded to 1/7 px, NaN where ``round(7 d) >= 255`` or not finite."""
    d = np.asarray(disparity, dtype=np.float32)
    q = np.round(np.float32(DDES_DISPARITY_MULTIPLIER) * d)
    bad = ~np.isfinite(q) | (q >= DDES_INVALID)
    out = (q / np.float32(DDES_DISPARITY_MULTIPLIER)).astype(np.float32)
    out[bad] = np.nan
    return out


def recent_event_mask(recording: Any, t1_us: int, n: int = DDES_RECENT_EVENTS) -> np.ndarray:
    """Pixels hit by at least one of the last ``n`` left events before ``t1_us``: bool [H, W].

    Reads back from ``t1_us`` in growing steps until ``n`` events are found or the first event is
    reached (fewer events: all of them count, as in DDES).
    """
    span = recording.event_span("left") if hasattr(recording, "event_span") else None
    floor = span[0] if span is not None and span[0] <= span[1] else int(recording.t_start_us)
    back = 50_000
    while True:
        t0 = max(floor, int(t1_us) - back)
        ev = recording.events("left", t0, int(t1_us))
        if len(ev) >= n or t0 <= floor:
            break
        back *= 4
    ev = ev[-n:]
    mask = np.zeros((int(recording.height), int(recording.width)), dtype=bool)
    mask[ev["y"].astype(np.intp), ev["x"].astype(np.intp)] = True
    return mask


def apply_gt_protocol(recording: Any, disparity: np.ndarray, t1_us: int, protocol: str) -> np.ndarray:
    """A window's ground-truth disparity under ``protocol`` (see the module docstring)."""
    if protocol == "full":
        return disparity
    out = ddes_quantise(disparity)
    if protocol == "ddes":
        out[~recent_event_mask(recording, t1_us)] = np.nan
    return out


def gt_overlap(recording: Any, starts: np.ndarray, ends: np.ndarray, gt_idx: np.ndarray | None) -> dict | None:
    """Whether the windows with ground truth hold events: None without ground truth, else
    ``{"gt_maps", "gt_windows", "gt_windows_in_events", "warning"}``.

    ``gt_windows`` counts the windows that end at a map; ``gt_windows_in_events`` those that lie
    (at least partly) within the span of the stored events of both cameras (None when a reader
    cannot tell). ``warning`` is a sentence when some or all of them do not, else None.
    """
    gt = getattr(recording, "gt_timestamps_us", None)
    if gt is None or not len(gt):
        return None
    has = np.zeros(len(ends), bool) if gt_idx is None else gt_idx >= 0
    n = int(has.sum())
    spans = [recording.event_span(s) if hasattr(recording, "event_span") else None for s in SIDES]
    inside = None
    if all(s is not None for s in spans):
        lo, hi = max(s[0] for s in spans), min(s[1] for s in spans)
        inside = int((has & (starts <= hi) & (ends > lo)).sum())
    t0 = int(recording.t_start_us)

    def sec(t: float) -> str:
        return f"{(t - t0) / 1e6:.3f} s"

    warning = None
    events = "" if inside is None or lo > hi else f" (events of both cameras {sec(lo)} to {sec(hi)})"
    if not len(ends):
        pass  # no window at all: the caller says so
    elif n == 0:
        warning = (
            f"none of the {len(gt)} ground-truth maps ({sec(gt[0])} to {sec(gt[-1])} after the start) "
            f"ends a window inside the recording{events}: no accuracy can be measured"
        )
    elif inside is not None and inside < n:
        warning = (
            f"{n - inside} of {n} windows with ground truth hold no events of both cameras{events}: "
            "their scores measure nothing"
        )
    return {"gt_maps": int(len(gt)), "gt_windows": n, "gt_windows_in_events": inside, "warning": warning}


def describe(
    recording: Any, *, window_us: int, start_us: int | None = None, gt_protocol: str = "full",
    anchors_us: np.ndarray | None = None,
) -> dict[str, Any]:
    """What a run on ``recording`` uses: rectification, fB (its source, and a calibration file's fB
    compared with it), windows, ground truth. ``anchors_us``: the windows end at these times (DSEC
    benchmark timestamps) and the ground truth is not read."""
    _, starts, ends, gt_idx = window_plan(recording, window_us=window_us, start_us=start_us, anchors_us=anchors_us)
    lengths = (ends - starts) / 1000.0
    if anchors_us is not None:  # the windows end at the benchmark timestamps; no ground truth is read
        policy, with_gt, overlap = "back to back, ending at the DSEC benchmark timestamps (--dsec-timestamps)", 0, None
    else:
        policy = "back to back" if gt_idx is None else "back to back, ending at the ground-truth maps"
        with_gt = 0 if gt_idx is None else int((gt_idx >= 0).sum())
        overlap = gt_overlap(recording, starts, ends, gt_idx)
    return {
        "rectification": getattr(recording, "rectification", "unknown"),
        "rectify_rounding": getattr(recording, "rectify_rounding", None),
        "fb_source": getattr(recording, "fb_source", None),
        "fb_check": getattr(recording, "fb_check", None),
        "windows": {
            "policy": policy,
            "window_ms": window_us / 1000.0,
            "count": int(len(ends)),
            "with_gt": with_gt,
            "length_ms": [float(lengths.min()), float(lengths.max())] if len(ends) else None,
        },
        "ground_truth": gt_protocol,
        "gt_overlap": overlap,
    }
