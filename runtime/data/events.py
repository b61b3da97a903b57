"""The common event representation and conversions to and from other layouts.

Events are a numpy structured array of dtype ``EVENT_DTYPE`` with named fields

- ``x``, ``y``: pixel column and row (uint16, ``0 <= x < width``, ``0 <= y < height``),
- ``t``: time in microseconds (int64), sorted non-decreasing,
- ``p``: polarity, +1 (brighter) or -1 (darker) (int8),

with the sensor size carried beside it (``EventStream``). Conversions go by field name, never by
column position. Anything that cannot become a valid event (outside the sensor, non-finite, a
polarity that is neither ON nor OFF, time going backwards) is dropped and counted, never cast to
garbage; the counts come back as a dict (reason -> number) so that callers can report them.
"""

from __future__ import annotations

import bisect
import warnings
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass

import numpy as np

EVENT_DTYPE = np.dtype([("x", np.uint16), ("y", np.uint16), ("t", np.int64), ("p", np.int8)])

# The reasons an event is dropped, in the order they are checked.
DROP_REASONS = ("non_finite", "time_out_of_range", "out_of_sensor", "bad_polarity", "time_reversed")
# A time (us) further from 0 than this cannot be an event's (2**62 us is 146,000 years; beyond it int64
# arithmetic on times would overflow): such rows are dropped as time_out_of_range, not cast to garbage.
MAX_TIME_US = float(2**62)


def usable_time(t_us: np.ndarray) -> np.ndarray:
    """Which times (us, any numeric dtype) are finite and within ``MAX_TIME_US`` of 0: bool [N]."""
    t = np.asarray(t_us)
    if t.dtype.kind in "iu":
        return np.abs(t.astype(np.float64)) <= MAX_TIME_US
    with np.errstate(invalid="ignore"):
        return np.isfinite(t) & (np.abs(t) <= MAX_TIME_US)


class DataError(ValueError):
    """Bad event data or a bad file; the message is one line and names the file and key."""


def empty_counts() -> dict[str, int]:
    """A zero count for every drop reason."""
    return {reason: 0 for reason in DROP_REASONS}


def add_counts(total: MutableMapping[str, int], counts: Mapping[str, int]) -> None:
    """Add ``counts`` into ``total`` in place."""
    for key, value in counts.items():
        total[key] = total.get(key, 0) + int(value)


@dataclass(frozen=True)
class EventStream:
    """Events of one camera with the sensor size: ``events`` is ``EVENT_DTYPE`` [N], sorted by ``t``."""

    events: np.ndarray
    height: int
    width: int

    def __post_init__(self) -> None:
        if self.events.dtype != EVENT_DTYPE:
            raise DataError(f"EventStream needs dtype EVENT_DTYPE, got {self.events.dtype}")

    def __len__(self) -> int:
        return len(self.events)

    def slice(self, t0_us: int, t1_us: int) -> np.ndarray:
        """The events with ``t0_us <= t < t1_us`` (a view, no copy)."""
        return time_slice(self.events, t0_us, t1_us)


def time_slice(events: np.ndarray, t0_us: int, t1_us: int) -> np.ndarray:
    """The events of a time-sorted array with ``t0_us <= t < t1_us`` (a view)."""
    t = events["t"]  # a strided view: np.searchsorted would copy the whole column, bisect does not
    i0 = bisect.bisect_left(t, t0_us)
    i1 = bisect.bisect_left(t, t1_us, lo=i0)
    return events[i0:i1]


def make_events(x: np.ndarray, y: np.ndarray, t: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Pack already valid columns (integers, p in {-1, +1}) into an ``EVENT_DTYPE`` array [N]."""
    out = np.empty(len(t), dtype=EVENT_DTYPE)
    out["x"] = x
    out["y"] = y
    out["t"] = t
    out["p"] = p
    return out


def assemble(
    x: np.ndarray,
    y: np.ndarray,
    t_us: np.ndarray,
    p: np.ndarray,
    *,
    height: int | None = None,
    width: int | None = None,
    prev_t_us: float = -np.inf,
    polarity: str = "auto",
) -> tuple[np.ndarray, dict[str, int]]:
    """Check raw columns and pack the valid events; return ``(events, counts)``.

    ``x``, ``y``, ``t_us`` (microseconds, any numeric dtype) and ``p`` are 1-D columns of equal
    length. Coordinates and times are rounded to the nearest integer; polarities must match
    exactly. A row is dropped, and counted under the first reason that applies, when:
    a value is not finite (``non_finite``); its time is further than ``MAX_TIME_US`` from 0
    (``time_out_of_range``); the pixel lies outside ``[0, width) x [0, height)``,
    or outside uint16 when no size is given (``out_of_sensor``); the polarity is not ON/OFF
    (``bad_polarity``); or its time is earlier than that of an earlier row (any row with a finite
    usable time) or than ``prev_t_us`` (``time_reversed``). ``polarity``: ``"signed"`` accepts -1/+1,
    ``"binary"`` accepts 0/1 (0 = OFF), ``"auto"`` accepts both (0 and -1 mean OFF, 1 means ON).
    """
    n = len(t_us)
    if not (len(x) == len(y) == len(p) == n):
        raise DataError(f"event columns differ in length: x {len(x)}, y {len(y)}, t {n}, p {len(p)}")
    counts = empty_counts()
    keep = np.ones(n, dtype=bool)

    def drop(reason: str, bad: np.ndarray) -> None:
        bad = bad & keep
        counts[reason] += int(np.count_nonzero(bad))
        keep[bad] = False

    cols = {"x": np.asarray(x), "y": np.asarray(y), "t": np.asarray(t_us), "p": np.asarray(p)}
    for name, col in cols.items():
        if col.dtype.kind not in "fiub":
            raise DataError(f"event column {name} holds {col.dtype} values, expected numbers")
        if col.dtype.kind == "f":
            drop("non_finite", ~np.isfinite(col))
    tcol = cols["t"]
    t_ok = usable_time(tcol)
    drop("time_out_of_range", ~t_ok)
    # coordinates beyond any sensor (uint16) are off the sensor before they are rounded to integers
    for name in ("x", "y"):
        with np.errstate(invalid="ignore"):
            drop("out_of_sensor", np.abs(cols[name].astype(np.float64)) > 65536)
    xi = _round_int(cols["x"], keep)
    yi = _round_int(cols["y"], keep)
    x_max = width if width is not None else 65536
    y_max = height if height is not None else 65536
    drop("out_of_sensor", (xi < 0) | (xi >= x_max) | (yi < 0) | (yi >= y_max))
    pi = np.where(keep, cols["p"], 1)  # compared exactly: 0.5 is not a polarity
    drop("bad_polarity", ~_polarity_ok(pi, polarity))
    ti = _round_int(tcol, t_ok)
    drop("time_reversed", _time_reversed(ti, t_ok, prev_t_us))
    events = make_events(xi[keep], yi[keep], ti[keep], np.where(pi[keep] == 1, 1, -1))
    return events, counts


def _polarity_ok(pi: np.ndarray, polarity: str) -> np.ndarray:
    """Which polarity values ``polarity`` (``signed``, ``binary``, ``auto``) accepts, compared exactly."""
    if polarity == "signed":
        return (pi == 1) | (pi == -1)
    if polarity == "binary":
        return (pi == 1) | (pi == 0)
    if polarity == "auto":
        return (pi == 1) | (pi == 0) | (pi == -1)
    raise ValueError(f"polarity must be 'signed', 'binary' or 'auto', got {polarity!r}")


def _time_reversed(ti: np.ndarray, t_ok: np.ndarray, prev_t_us: float) -> np.ndarray:
    """Rows earlier than an earlier row with a usable time (kept or not: a reader that starts mid-file
    knows only the times before it, not why rows were dropped) or than ``prev_t_us``."""
    tk = np.where(t_ok, ti, np.iinfo(np.int64).min)
    prev = np.int64(np.rint(prev_t_us)) if usable_time(np.float64(prev_t_us)) else np.iinfo(np.int64).min
    running = np.maximum.accumulate(np.concatenate(([prev], tk)))[:-1]
    return ti < running


def _round_int(col: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Round a column to int64; rows not kept (non-finite, out of range) become 0 so they cast safely."""
    if col.dtype.kind == "f":
        safe = np.where(keep, col, 0.0)
        return np.rint(safe).astype(np.int64)
    return col.astype(np.int64, copy=False)


def clean(
    events: np.ndarray, height: int, width: int, *, prev_t_us: float = -np.inf
) -> tuple[np.ndarray, dict[str, int]]:
    """Drop events outside the sensor, with a bad polarity or going back in time; return counts.

    ``events`` is an ``EVENT_DTYPE`` array [N]; the result is a new, valid, time-sorted array.
    """
    return assemble(
        events["x"],
        events["y"],
        events["t"],
        events["p"],
        height=height,
        width=width,
        prev_t_us=prev_t_us,
        polarity="signed",
    )


def validate(events: np.ndarray, height: int, width: int) -> dict[str, int]:
    """Count what ``clean`` would drop, without copying anything out; all zero means valid."""
    if events.dtype != EVENT_DTYPE:
        raise DataError(f"events must have dtype EVENT_DTYPE, got {events.dtype}")
    return clean(events, height, width)[1]


def _report(counts: Mapping[str, int], stats: MutableMapping[str, int] | None, what: str) -> None:
    if stats is not None:
        add_counts(stats, counts)
    elif any(counts.values()):
        dropped = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
        warnings.warn(f"{what}: dropped {dropped}", stacklevel=3)


def from_mvsec(
    array: np.ndarray,
    *,
    height: int | None = None,
    width: int | None = None,
    stats: MutableMapping[str, int] | None = None,
) -> np.ndarray:
    """MVSEC events, float64 [N, 4] with columns x, y, t (seconds), p (-1/+1), to ``EVENT_DTYPE``.

    Bad rows are dropped and counted into ``stats`` (or a warning when ``stats`` is None).
    """
    array = np.asarray(array)
    if array.ndim != 2 or array.shape[1] != 4:
        raise DataError(f"MVSEC events must have shape (N, 4) (x, y, t, p), got {array.shape}")
    events, counts = assemble(
        array[:, 0], array[:, 1], array[:, 2] * 1e6, array[:, 3], height=height, width=width
    )
    _report(counts, stats, "from_mvsec")
    return events


def to_mvsec(events: np.ndarray) -> np.ndarray:
    """``EVENT_DTYPE`` events to the MVSEC layout: float64 [N, 4] with x, y, t (seconds), p (-1/+1)."""
    out = np.empty((len(events), 4), dtype=np.float64)
    out[:, 0] = events["x"]
    out[:, 1] = events["y"]
    out[:, 2] = events["t"] / 1e6
    out[:, 3] = events["p"]
    return out


def from_dsec(
    x: np.ndarray,
    y: np.ndarray,
    t: np.ndarray,
    p: np.ndarray,
    t_offset: int = 0,
    *,
    height: int | None = None,
    width: int | None = None,
    stats: MutableMapping[str, int] | None = None,
) -> np.ndarray:
    """DSEC columns (``t`` in microseconds relative to ``t_offset``, ``p`` 0/1) to ``EVENT_DTYPE``."""
    t_abs = np.asarray(t).astype(np.int64) + np.int64(t_offset)
    events, counts = assemble(x, y, t_abs, p, height=height, width=width, polarity="binary")
    _report(counts, stats, "from_dsec")
    return events


def to_dsec(events: np.ndarray, t_offset: int | None = None) -> dict[str, np.ndarray | int]:
    """``EVENT_DTYPE`` events to DSEC columns: x, y uint16, t uint32 relative to t_offset, p uint8 0/1."""
    if t_offset is None:
        t_offset = int(events["t"][0]) if len(events) else 0
    rel = events["t"] - t_offset
    if len(rel) and (rel.min() < 0 or rel.max() > np.iinfo(np.uint32).max):
        raise DataError("DSEC times relative to t_offset must fit uint32 microseconds")
    return {
        "x": events["x"].astype(np.uint16),
        "y": events["y"].astype(np.uint16),
        "t": rel.astype(np.uint32),
        "p": (events["p"] > 0).astype(np.uint8),
        "t_offset": int(t_offset),
    }


def from_tonic(
    structured: np.ndarray,
    *,
    height: int | None = None,
    width: int | None = None,
    stats: MutableMapping[str, int] | None = None,
) -> np.ndarray:
    """A tonic structured array (fields ``x``, ``y``, ``t`` in us, ``p`` 0/1 or bool) to ``EVENT_DTYPE``."""
    names = structured.dtype.names or ()
    missing = [f for f in ("x", "y", "t", "p") if f not in names]
    if missing:
        raise DataError(f"tonic events need fields x, y, t, p; missing {missing} (have {list(names)})")
    p = structured["p"].astype(np.int64)
    events, counts = assemble(
        structured["x"], structured["y"], structured["t"], p, height=height, width=width, polarity="auto"
    )
    _report(counts, stats, "from_tonic")
    return events


def to_tonic(events: np.ndarray) -> np.ndarray:
    """``EVENT_DTYPE`` events to tonic's default layout: int64 fields x, y, t (us), p with 0/1."""
    dtype = np.dtype([("x", np.int64), ("y", np.int64), ("t", np.int64), ("p", np.int64)])
    out = np.empty(len(events), dtype=dtype)
    out["x"] = events["x"]
    out["y"] = events["y"]
    out["t"] = events["t"]
    out["p"] = events["p"] > 0
    return out
