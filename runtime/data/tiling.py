"""Which windows tile a recording: their end times, the ground truth they end at, and a centre crop.

``window_ends`` alone decides the windows' timing; ``window_plan`` picks which of them a run uses
(``runtime.data.sources.windows`` reads and encodes them); ``center_box`` is the centre crop.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from runtime.data.recording import Recording

__all__ = ["center_box", "window_ends", "window_plan"]


def window_ends(
    recording: Recording, *, window_us: int = 50_000, start_us: int | None = None,
    anchors_us: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The windows that tile a recording back to back: their end times, and the ground truth they end at.

    Returns ``ends`` (int64 [n], increasing) and ``gt`` (int64 [n]: the index of the ground-truth map
    window k ends at, -1 for none), or ``gt = None`` when the recording has no ground truth. Window
    k spans ``[ends[k - 1], ends[k])``, the first ``[ends[0] - window_us, ends[0])``: every event
    from the first window's start to the last end lies in exactly one window.

    Without ground truth, windows of ``window_us`` tile from ``start`` (default ``t_start_us``)
    while they fit in the recording. With ground truth, windows end at the maps with
    ``g - window_us >= start`` and ``g <= t_end_us``, skipping a map less than 3/4 of a window
    after the previous one used (maps denser than windows: every other one, ...); windows of
    ``window_us`` step back from the first map as far as ``start`` allows and forward from the
    last as far as ``t_end_us`` allows, and the span between two consecutive maps ``a < b`` is cut
    into ``round((b - a) / window_us)`` equal windows (at least one), the last ending at ``b``:
    DSEC's 10 Hz ground truth with 50 ms windows gives two windows per map, the second with ground
    truth; MVSEC's 20 Hz gives one. Windows between maps that are not a whole number of windows
    apart are longer or shorter than ``window_us`` (3/4 to 3/2 of it).

    ``anchors_us`` (int64 [m], increasing): times the windows end at in place of the ground truth's
    (DSEC's benchmark timestamps, ``runtime.stream.submission``); ``gt`` then indexes them.
    """
    if window_us <= 0:
        raise ValueError(f"window_us must be positive, got {window_us}")
    begin = recording.t_start_us if start_us is None else int(start_us)
    end = int(recording.t_end_us)
    gt = recording.gt_timestamps_us if anchors_us is None else anchors_us
    if gt is None or not len(gt):
        n = max(0, (end - begin) // window_us)
        return begin + window_us * np.arange(1, n + 1, dtype=np.int64), None
    gt = np.asarray(gt, dtype=np.int64)
    use = np.flatnonzero((gt - window_us >= begin) & (gt <= end))
    if not len(use):
        n = max(0, (end - begin) // window_us)
        tiles = begin + window_us * np.arange(1, n + 1, dtype=np.int64)
        return tiles, np.full(n, -1, np.int64)
    kept, prev = [], None
    for i in use.tolist():  # a map needs 3/4 of a window after the previous one used
        if prev is None or 4 * (int(gt[i]) - prev) >= 3 * window_us:
            kept.append(i)
            prev = int(gt[i])
    use = np.asarray(kept, dtype=np.int64)
    g = gt[use]
    first, last = int(g[0]), int(g[-1])
    before = first - window_us * np.arange((first - begin) // window_us - 1, 0, -1, dtype=np.int64)
    gaps = np.diff(g)
    parts = np.maximum(1, np.floor(gaps / window_us + 0.5).astype(np.int64))
    a = np.repeat(g[:-1], parts)
    j = np.arange(len(a), dtype=np.int64) - np.repeat(np.cumsum(parts) - parts, parts) + 1
    between = a + (j * np.repeat(gaps, parts)) // np.repeat(parts, parts)  # the last of each gap is b
    after = last + window_us * np.arange(1, (end - last) // window_us + 1, dtype=np.int64)
    ends = np.concatenate([before, [first], between, after]).astype(np.int64)
    idx = np.full(len(ends), -1, np.int64)
    at_map = len(before) + np.concatenate([[0], np.cumsum(parts)])
    idx[at_map] = use
    return ends, idx


def center_box(height: int, width: int, crop: tuple[int, int] | None) -> tuple[slice, slice] | None:
    """Rows and columns of the centre ``crop`` = (h, w) of a ``height`` x ``width`` frame (None: all of it)."""
    if crop is None or tuple(crop) == (height, width):
        return None
    h, w = crop
    if height < h or width < w:
        raise ValueError(f"cannot take a {w}x{h} centre crop of a {width}x{height} recording")
    top, left = (height - h) // 2, (width - w) // 2
    return slice(top, top + h), slice(left, left + w)


def window_plan(
    recording: Recording,
    *,
    window_us: int = 50_000,
    start_us: int | None = None,
    max_windows: int | None = None,
    gt_indices: Sequence[int] | None = None,
    numbers: Sequence[int] | None = None,
    anchors_us: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Which windows ``windows`` yields: window numbers, start and end times, ground-truth indices.

    The windows of ``window_ends`` (from the recording's start) that start at or after ``start_us``;
    given ``numbers``, only those window numbers
    (in that order); given ``gt_indices``, only those ending at these ground-truth maps (in that
    order; an index without a window is skipped); then at most ``max_windows`` of them. Each array
    is int64 [n]; the ground-truth indices are -1 for a window without ground truth, or None when
    the recording has none (with ``anchors_us``: indices into the anchors, see ``window_ends``).
    """
    ends, gt_idx = window_ends(recording, window_us=window_us, anchors_us=anchors_us)
    starts = np.concatenate([ends[:1] - window_us, ends[:-1]]).astype(np.int64)
    number = np.arange(len(ends), dtype=np.int64)
    if start_us is not None:  # the same windows and numbers whatever the start: chunks equal one run
        number = number[starts >= int(start_us)]
    if numbers is not None:
        allowed = set(number.tolist())
        number = np.array([int(k) for k in numbers if int(k) in allowed], dtype=np.int64)
    if gt_indices is not None:
        pos = {} if gt_idx is None else {int(g): k for k, g in enumerate(gt_idx) if g >= 0}
        allowed = set(number.tolist())
        number = np.array([pos[int(g)] for g in gt_indices if pos.get(int(g), -1) in allowed], dtype=np.int64)
    if max_windows is not None:
        number = number[:max_windows]
    return number, starts[number], ends[number], None if gt_idx is None else gt_idx[number]
