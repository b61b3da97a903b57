"""The data-quality section of a stream's report: what was dropped, what could not be scored (docs/reliability.md).

Per counted step: windows whose input was all zero on both cameras (no event, or events that cancel in
every pixel), outputs with NaN or infinite pixels, spike counts that are not finite (such a step is left
out of the spike totals, so sparsity and energy average over the others). From the recording: rows
checked and dropped by cause, and the share of bad-data rows (``runtime.data.events.DROP_REASONS``; the
rectification's and the ground truth's losses are reported but are not bad rows).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

from runtime.data.events import DROP_REASONS
from runtime.metrics import StereoErrors

COUNTS = (
    "windows",
    "windows_without_events",
    "non_finite_output_windows",
    "non_finite_output_pixels",
    "all_non_finite_output_windows",
    "non_finite_spike_windows",
    "windows_with_ground_truth_and_events",
)


class Quality:
    """The counts of a stream's counted steps; ``spikes`` (layer -> total) gets the finite steps' spikes."""

    def __init__(self, spikes: MutableMapping[str, float]) -> None:
        self.counts = dict.fromkeys(COUNTS, 0)
        self.spikes = spikes
        self.spike_steps = 0  # counted steps whose spike counts were all finite

    def account(self, has_events: bool, non_finite_pixels: int, pixels: int, spikes: Mapping[str, float],
                has_gt: bool = False) -> None:
        """Add one counted step."""
        c = self.counts
        c["windows"] += 1
        c["windows_without_events"] += not has_events
        c["windows_with_ground_truth_and_events"] += has_gt and has_events
        c["non_finite_output_windows"] += non_finite_pixels > 0
        c["non_finite_output_pixels"] += non_finite_pixels
        c["all_non_finite_output_windows"] += non_finite_pixels == pixels
        if all(math.isfinite(n) for n in spikes.values()):
            self.spike_steps += 1
            for name, n in spikes.items():
                self.spikes[name] += n
        else:
            c["non_finite_spike_windows"] += 1

    def section(self, recording: Any, errors: Sequence[StereoErrors]) -> dict[str, Any]:
        """The report's ``data_quality`` (keys in docs/runtime.md)."""
        stats = {k: int(v) for k, v in (getattr(recording, "stats", None) or {}).items()}
        checked = getattr(recording, "rows_checked", None)
        bad = sum(stats.get(k, 0) for k in DROP_REASONS)
        gt = None if recording is None else getattr(recording, "gt_timestamps_us", None)
        return {
            "rows_checked": checked,
            "rows_dropped": stats,
            "bad_rows": bad,
            "bad_row_fraction": (bad / checked) if checked else (0.0 if not bad else None),
            **self.counts,
            "windows_with_ground_truth": len(errors),
            "windows_scored": sum(1 for e in errors if e.valid),
            "ground_truth_maps": None if gt is None else len(gt),
        }
