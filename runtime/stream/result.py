"""``StepResult``: what one step of a stream produced (``runtime.stream.Stream``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class StepResult:
    """What one step of the stream produced."""

    step: int  # position in this Stream, from 0
    index: int  # the window's ground-truth index when it has one, else its window number (``window``)
    t0_us: int
    t1_us: int
    disparity: np.ndarray  # float32 [H, W] (the model's data output, batch removed)
    gt: np.ndarray | None
    spikes: dict[str, float]
    counted: bool  # False during burn-in
    timings_s: dict[str, float] = field(default_factory=dict)  # decode, encode, model, metrics, total
    valid_pixels: int = 0
    mean_disparity_error_px: float | None = None
    left: np.ndarray | None = None
    window: int = 0  # the window's number in its recording (runtime.data.sources.window_ends)
    has_events: bool = True  # False when both inputs are all zero (no event, or events that cancel)
    non_finite_pixels: int = 0  # pixels of the output that are NaN or inf (never scored)
