"""Turning events into network input: SBT (stacking based on time) and event-count frames.

The window ``[t0_us, t1_us)`` is split into ``bins`` equal bins; an event at time ``t`` falls in bin
``floor((t - t0) * bins / (t1 - t0))`` (integer arithmetic, so bin edges are exact microseconds
when the window divides evenly). Events outside the window are ignored. The same functions serve
training and the runtime.
"""

from __future__ import annotations

import numpy as np

from runtime.core.names import encoding_channels
from runtime.data.events import EVENT_DTYPE, DataError, time_slice

ENCODINGS = ("sbt", "count")


def channels(kind: str, bins: int) -> int:
    """The number of channels ``encode(kind, ...)`` returns (``runtime.core.names.encoding_channels``)."""
    return encoding_channels(kind, bins)


def _binned(
    events: np.ndarray, t0_us: int, t1_us: int, bins: int, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Flat pixel-and-bin index [M] and polarity [M] of the events inside the window."""
    if events.dtype != EVENT_DTYPE:
        raise DataError(f"events must have dtype EVENT_DTYPE, got {events.dtype}")
    if t1_us <= t0_us:
        raise ValueError(f"empty window: t1_us ({t1_us}) must be greater than t0_us ({t0_us})")
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    ev = time_slice(events, t0_us, t1_us)
    x = ev["x"].astype(np.int64)
    y = ev["y"].astype(np.int64)
    if len(ev) and (x.max() >= width or y.max() >= height):
        raise DataError(
            f"event at x={int(x.max())} or y={int(y.max())} lies outside the {width} x {height} sensor; "
            "clean the events first (runtime.data.events.clean)"
        )
    b = ((ev["t"] - np.int64(t0_us)) * bins) // (np.int64(t1_us) - np.int64(t0_us))  # [M]
    flat = (b * height + y) * width + x  # [M]
    return flat, ev["p"]


def sbt(events: np.ndarray, t0_us: int, t1_us: int, bins: int, height: int, width: int) -> np.ndarray:
    """Stacking based on time: float32 [bins, H, W] with values -1, 0, +1.

    Pixel (y, x) of bin i is the sign of the sum of the polarities of its events in bin i.
    ``events`` is a time-sorted ``EVENT_DTYPE`` array; only events in ``[t0_us, t1_us)`` count.
    """
    flat, p = _binned(events, t0_us, t1_us, bins, height, width)
    size = bins * height * width
    total = np.bincount(flat, weights=p, minlength=size)  # float64 [bins*H*W]
    out = np.zeros(size, dtype=np.float32)
    out[flat] = np.sign(total[flat])  # only the touched pixels: cost follows the event count
    return out.reshape(bins, height, width)


def event_count(events: np.ndarray, t0_us: int, t1_us: int, bins: int, height: int, width: int) -> np.ndarray:
    """Event counts per bin and polarity: float32 [2 * bins, H, W].

    Channel ``2 * i`` counts the ON (+1) events of bin i, channel ``2 * i + 1`` the OFF (-1)
    events. Reshaped to ``[bins, 2, H, W]`` it is tonic's ``ToFrame`` layout with the polarity
    axis reversed (tonic puts p = 0, OFF, first).
    """
    flat, p = _binned(events, t0_us, t1_us, bins, height, width)
    b, pix = np.divmod(flat, height * width)
    index = (2 * b + (p < 0)) * (height * width) + pix  # [M]: channel 2b (ON) or 2b + 1 (OFF)
    size = 2 * bins * height * width
    counts = np.bincount(index, minlength=size)  # int64 [2*bins*H*W]
    out = np.zeros(size, dtype=np.float32)
    out[index] = counts[index]  # only the touched pixels: cost follows the event count
    return out.reshape(2 * bins, height, width)


def encode(
    kind: str, events: np.ndarray, t0_us: int, t1_us: int, bins: int, height: int, width: int
) -> np.ndarray:
    """Encode events with ``kind`` = ``"sbt"`` ([bins, H, W]) or ``"count"`` ([2 * bins, H, W])."""
    if kind == "sbt":
        return sbt(events, t0_us, t1_us, bins, height, width)
    if kind == "count":
        return event_count(events, t0_us, t1_us, bins, height, width)
    raise ValueError(f"unknown encoding {kind!r}; choose one of {', '.join(ENCODINGS)}")
