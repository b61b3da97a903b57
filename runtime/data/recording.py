"""The ``Recording`` interface shared by every event source, and windowed reading from disk.

A recording is a stereo pair of event streams with, optionally, ground-truth disparity at known
timestamps. Readers of files never load a whole recording: ``ColumnReader`` keeps a coarse index
(row -> time) and reads only the rows a time window needs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from runtime.core.errors import first_line
from runtime.data.events import EVENT_DTYPE, DataError, add_counts, assemble, empty_counts, time_slice, usable_time

SIDES = ("left", "right")
# how a rectified coordinate becomes a pixel (docs/data.md): the nearest one (DDES) or the one below (SE-CFF)
RECTIFY_ROUNDINGS = ("round", "floor")


class Recording:
    """A stereo event recording. Subclasses set the attributes and implement ``events``/``disparity``.

    Attributes: ``height``, ``width``; ``fb`` (focal length x baseline, px*m, or None),
    ``fb_source`` (where it came from) and ``fb_check`` (a calibration file's fB compared with it, or
    None); ``rectification`` (how the events were brought into the rectified view), ``rectified`` and
    ``rectify_rounding`` (``RECTIFY_ROUNDINGS``; None without maps); ``gt_timestamps_us`` (int64 [n]
    or None); ``t_start_us``, ``t_end_us`` (the recording spans ``[t_start_us, t_end_us)``);
    ``stats`` (what was dropped or repaired so far); ``name``.
    """

    height: int
    width: int
    fb: float | None = None
    fb_source: str | None = None
    rectification: str = "unknown"
    rectified: bool = False  # the events are in the rectified view (maps applied, or stored so)
    fb_check: dict | None = None  # fB of a calibration file beside, compared (MVSEC's camchain yaml)
    rectify_rounding: str | None = None  # RECTIFY_ROUNDINGS, when rectification maps are applied
    gt_timestamps_us: np.ndarray | None = None
    t_start_us: int = 0
    t_end_us: int = 0
    name: str = "recording"

    def __init__(self) -> None:
        self.stats: dict[str, int] = empty_counts()

    def events(self, side: str, t0_us: int, t1_us: int) -> np.ndarray:
        """The valid events of camera ``side`` with ``t0_us <= t < t1_us``: ``EVENT_DTYPE`` [N]."""
        raise NotImplementedError

    def disparity(self, i: int) -> np.ndarray:
        """Ground-truth disparity at ``gt_timestamps_us[i]``: float32 [H, W] in pixels, NaN invalid."""
        raise DataError(f"{self.name}: no ground truth")

    def event_span(self, side: str) -> tuple[int, int] | None:
        """Times (us) of the first and last stored event of camera ``side`` (first > last when it has
        none); None when the recording cannot tell."""
        return None

    def close(self) -> None:
        """Release open files."""

    def __enter__(self) -> Recording:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_side(self, side: str) -> None:
        if side not in SIDES:
            raise ValueError(f"side must be 'left' or 'right', got {side!r}")

    def _check_gt_index(self, i: int) -> int:
        n = 0 if self.gt_timestamps_us is None else len(self.gt_timestamps_us)
        if not -n <= i < n:
            raise IndexError(f"{self.name}: ground-truth index {i} out of range ({n} maps)")
        return i % n

    def __repr__(self) -> str:
        n_gt = None if self.gt_timestamps_us is None else len(self.gt_timestamps_us)
        return (
            f"{type(self).__name__}({self.name!r}, {self.width}x{self.height}, "
            f"{(self.t_end_us - self.t_start_us) / 1e6:.3f} s, gt={n_gt}, fb={self.fb})"
        )


class FileRecording(Recording):
    """A recording read from files: one ``ColumnReader`` per camera and the open files to close."""

    def __init__(self) -> None:
        super().__init__()
        self._files: list = []  # open h5py files
        self._readers: dict[str, ColumnReader] = {}
        self._spans: dict[str, tuple[int, int]] = {}  # side -> first and last event time, us

    def event_span(self, side: str) -> tuple[int, int] | None:
        self._check_side(side)
        return self._spans.get(side, (0, -1))  # a camera without events: an empty span

    def events(self, side: str, t0_us: int, t1_us: int) -> np.ndarray:
        self._check_side(side)
        return self._readers[side].events(t0_us, t1_us)

    @property
    def rows_checked(self) -> int:
        """Rows of both cameras read and checked so far (each once): what ``stats`` counts drops among."""
        return sum(reader.rows_checked for reader in self._readers.values())

    def close(self) -> None:
        for fh in self._files:
            try:
                fh.close()
            except Exception:  # closing twice or a broken file: nothing left to release
                pass
        self._files = []


@dataclass(frozen=True)
class RowIndex:
    """A coarse index of a time-ordered event table.

    ``rows`` int64 [K] ascending with ``rows[0] == 0``; ``before`` [K] non-decreasing, with
    ``before[k]`` >= the time (us) of every event in rows ``[0, rows[k])`` and ``before[0] = -inf``;
    ``after`` [K] (default ``before``): every event at rows >= ``rows[k]`` that is not going back
    in time has a time >= ``after[k]``. The events of ``[t0, t1)`` then lie in rows
    ``[rows[k0], rows[k1])``, ``k0`` the last ``k`` with ``before[k] < t0``, ``k1`` the first with
    ``after[k] >= t1`` (or the end of the table).
    """

    rows: np.ndarray
    before: np.ndarray
    n_rows: int
    t_min: float = np.nan  # earliest and latest finite time, us (NaN when unknown or none)
    t_max: float = np.nan
    after: np.ndarray | None = None

    def span(self, t0_us: float, t1_us: float) -> tuple[int, int, float]:
        """Row range ``[lo, hi)`` that holds every event of ``[t0_us, t1_us)``, and ``before`` at ``lo``."""
        after = self.before if self.after is None else self.after
        k0 = max(int(np.searchsorted(self.before, t0_us, side="left")) - 1, 0)
        # back to the first block with the same bound: rows in between hold no valid time (NaN),
        # and reading them keeps the counts of what was dropped complete
        k0 = int(np.searchsorted(self.before, self.before[k0], side="left"))
        k1 = int(np.searchsorted(after, t1_us, side="left"))
        hi = self.n_rows if k1 >= len(self.rows) else int(self.rows[k1])
        return int(self.rows[k0]), max(hi, int(self.rows[k0])), float(self.before[k0])


# read(lo, hi) -> (x, y, t_us, p) columns of rows [lo, hi)
ReadRows = Callable[[int, int], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
# transform(events) -> (events, counts): e.g. rectification
Transform = Callable[[np.ndarray], tuple[np.ndarray, dict[str, int]]]


class ColumnReader:
    """Reads time windows of one camera from an on-disk table through a ``RowIndex``.

    Each read checks the rows (``runtime.data.events.assemble``) and counts what it drops into
    ``stats``; a row is counted once, the first time a read reaches it, in whatever order windows
    are read.
    """

    def __init__(
        self,
        read: ReadRows,
        index: RowIndex,
        *,
        height: int,
        width: int,
        stats: dict[str, int],
        polarity: str = "auto",
        transform: Transform | None = None,
        seed_prev: Callable[[int], float] | None = None,
        index_name: str | None = None,
    ) -> None:
        self.read, self.index = read, index
        self.index_name = index_name  # an index read from the file (DSEC's ms_to_idx): checked at every read
        self.height, self.width = height, width
        self.stats, self.polarity, self.transform = stats, polarity, transform
        self.seed_prev = seed_prev
        self._counted: list[tuple[int, int]] = []  # sorted, disjoint row ranges already in stats
        self.rows_checked = 0  # rows in those ranges

    def _pieces(self, lo: int, hi: int) -> list[tuple[int, int, bool]]:
        """Split rows ``[lo, hi)`` into pieces, each flagged True when not counted yet; mark all counted."""
        pieces, pos = [], lo
        for a, b in self._counted:
            if b <= pos:
                continue
            if a >= hi:
                break
            if a > pos:
                pieces.append((pos, a, True))
            pos = min(b, hi)
            pieces.append((max(a, lo), pos, False))
            if pos >= hi:
                break
        if pos < hi:
            pieces.append((pos, hi, True))
        merged: list[tuple[int, int]] = []
        for a, b in sorted([*self._counted, (lo, hi)]):
            if merged and a <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], b))
            else:
                merged.append((a, b))
        self._counted = merged
        return pieces

    def events(self, t0_us: int, t1_us: int) -> np.ndarray:
        """Valid events with ``t0_us <= t < t1_us``: ``EVENT_DTYPE`` [N], sorted."""
        lo, hi, prev = self.index.span(t0_us, t1_us)
        if hi <= lo:
            return np.empty(0, dtype=EVENT_DTYPE)
        if self.seed_prev is not None and lo > 0:
            prev = self.seed_prev(lo)
        x, y, t, p = self.read(lo, hi)
        if self.index_name is not None:
            self._check_index(t, lo, hi)
        parts = []
        for a, b, counted in self._pieces(lo, hi):
            if b <= a:
                continue
            s = slice(a - lo, b - lo)
            ev, counts = assemble(
                x[s],
                y[s],
                t[s],
                p[s],
                height=None if self.transform else self.height,
                width=None if self.transform else self.width,
                prev_t_us=prev,
                polarity=self.polarity,
            )
            if self.transform is not None:
                ev, more = self.transform(ev)
                add_counts(counts, more)
            t_piece = np.asarray(t[s], dtype=np.float64)
            t_piece = t_piece[usable_time(t_piece)]
            if len(t_piece):  # the running maximum over every row with a time, as assemble keeps it
                prev = max(prev, float(np.rint(t_piece.max())))
            if counted:
                add_counts(self.stats, counts)
                self.rows_checked += b - a
            parts.append(ev)
        ev = np.concatenate(parts) if len(parts) > 1 else parts[0]
        return time_slice(ev, t0_us, t1_us)


    def _check_index(self, t: np.ndarray, lo: int, hi: int) -> None:
        """An index read from the file must hold for the rows read: none before row ``rows[k]`` is later
        than ``before[k]`` (else its events would fall between windows, lost and uncounted)."""
        rows = self.index.rows
        k1 = int(np.searchsorted(rows, hi, side="left"))
        if hi >= self.index.n_rows or k1 >= len(rows) or rows[k1] != hi or not len(t):
            return
        times = np.asarray(t, dtype=np.float64)
        late = np.flatnonzero(usable_time(times) & (np.rint(times) > self.index.before[k1]))
        if len(late):
            raise DataError(f"{self.index_name}[{k1}] = {hi} does not match the event times: row {lo + late[0]} "
                            f"before it is later ({times[late[0]]:.0f} us > {self.index.before[k1]:.0f} us); "
                            f"{len(late):,} events would be lost between windows")


def scan_index(
    n_rows: int, read_t: Callable[[int, int], np.ndarray], *, block: int = 4096, chunk: int = 1 << 20
) -> RowIndex:
    """Build a ``RowIndex`` by streaming the time column: every ``block`` rows, the running maximum.

    ``read_t(lo, hi)`` returns the times (us, any numeric dtype) of rows ``[lo, hi)``. Non-finite
    times, and times beyond ``runtime.data.events.MAX_TIME_US``, are ignored. Memory stays at one ``chunk`` of rows.
    """
    rows = np.arange(0, max(n_rows, 1), block, dtype=np.int64)
    before = np.full(len(rows), -np.inf)
    running, t_min = -np.inf, np.inf
    for lo in range(0, n_rows, chunk):
        hi = min(n_rows, lo + chunk)
        t = np.asarray(read_t(lo, hi), dtype=np.float64)
        t = np.where(usable_time(t), t, np.nan)  # times assemble drops count for nothing here either
        cm = np.fmax.accumulate(np.concatenate(([running], t)))  # cm[i] = max of rows < lo + i
        starts = np.arange(-(-lo // block) * block, hi, block)  # block starts in [lo, hi)
        before[starts // block] = cm[starts - lo]
        running = float(cm[-1])
        finite = t[np.isfinite(t)]
        if finite.size:
            t_min = min(t_min, float(finite.min()))
    before[0] = -np.inf
    if not np.isfinite(running):
        t_min = running = np.nan
    return RowIndex(rows, before, n_rows, t_min, running)


def open_h5(path: str):
    """Open an HDF5 file for reading (with the Blosc and other filters of hdf5plugin registered).

    A missing, truncated or non-HDF5 file raises a one-line ``DataError`` naming the file.
    """
    import h5py

    try:
        import hdf5plugin  # noqa: F401  (registers Blosc & co. with h5py)
    except ImportError:  # files without compression filters still read
        pass
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"{path}: not a readable HDF5 file ({first_line(exc)})") from None


def require(f, key: str, path: str, *, ndim: int | None = None, tail: tuple[int | None, ...] = ()):
    """The dataset ``key`` of the open file ``f``, checked: it exists, has ``ndim`` dimensions and its
    trailing dimensions equal ``tail`` (None matches anything). Errors name the file and the key."""
    import h5py

    if key not in f:
        raise DataError(f"{path}: missing dataset '{key}'")
    ds = f[key]
    if not isinstance(ds, h5py.Dataset):
        raise DataError(f"{path}: '{key}' is a group, expected a dataset")
    if ndim is not None and ds.ndim != ndim:
        raise DataError(f"{path}: dataset '{key}' has shape {ds.shape}, expected {ndim} dimensions")
    if tail:
        got = ds.shape[len(ds.shape) - len(tail) :]
        if any(want is not None and want != g for want, g in zip(tail, got, strict=True)):
            want_s = "(" + ", ".join("N" if w is None else str(w) for w in (None, *tail)[-ds.ndim :]) + ")"
            raise DataError(f"{path}: dataset '{key}' has shape {ds.shape}, expected {want_s}")
    return ds


def read_rows(ds, lo: int, hi: int, path: str, key: str, column: int | None = None) -> np.ndarray:
    """Rows ``[lo, hi)`` of a dataset (one column of a 2-D one); read errors become ``DataError``."""
    try:
        return ds[lo:hi] if column is None else ds[lo:hi, column]
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read '{key}' rows {lo}-{hi} ({first_line(exc)})") from None


def check_rounding(rounding: str) -> None:
    if rounding not in RECTIFY_ROUNDINGS:
        raise ValueError(f"unknown rectification rounding {rounding!r}; one of {', '.join(RECTIFY_ROUNDINGS)}")


def applied_rounding(rounding: str, maps_applied: bool, where: str, rectification: str) -> str | None:
    """A reader's ``rectify_rounding``: ``rounding`` where maps are applied, else None; a rounding other
    than the default asked for where no maps are applied is a ``DataError`` (it would change nothing)."""
    if not maps_applied and rounding != "round":
        raise DataError(f"{where}: --rectify-rounding {rounding} applies to rectification maps and none are "
                        f"applied here ({rectification})")
    return rounding if maps_applied else None


def rectifier(x_map: np.ndarray, y_map: np.ndarray, height: int, width: int, rounding: str = "round") -> Transform:
    """Move raw events to rectified pixels: ``x' = x_map[y, x]``, ``y' = y_map[y, x]``, rounded to the
    nearest pixel (``rounding="round"``, numpy's ``rint``: halves to even) or down (``"floor"``).

    Raw pixels outside the maps count as ``out_of_sensor``; rectified pixels outside the
    ``height x width`` image (after rounding) as ``outside_after_rectify``. With ``floor`` that is
    exactly the float test ``0 <= x' < width`` of SE-CFF.
    """
    check_rounding(rounding)
    snap = np.rint if rounding == "round" else np.floor
    map_h, map_w = x_map.shape

    def transform(ev: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
        x, y = ev["x"].astype(np.int64), ev["y"].astype(np.int64)
        inside = (x < map_w) & (y < map_h)
        xs, ys = np.where(inside, x, 0), np.where(inside, y, 0)
        xr, yr = snap(x_map[ys, xs]), snap(y_map[ys, xs])
        ok = np.isfinite(xr) & np.isfinite(yr)
        xr, yr = np.where(ok, xr, -1), np.where(ok, yr, -1)
        fits = inside & (xr >= 0) & (xr < width) & (yr >= 0) & (yr < height)
        out = ev[fits].copy()
        out["x"], out["y"] = xr[fits], yr[fits]
        counts = {"out_of_sensor": int((~inside).sum()), "outside_after_rectify": int((inside & ~fits).sum())}
        return out, counts

    return transform


def yaml_matrix(path: str, keys: tuple[str, str], shape: tuple[int, int]) -> np.ndarray:
    """The float64 array at ``doc[keys[0]][keys[1]]`` of a calibration YAML file (MVSEC's camchain, DSEC's
    cam_to_cam); an unreadable file or a missing key is a ``DataError``. Shape and values are the
    caller's to check (their messages say what each format needs)."""
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise DataError(f"{path}: not a readable YAML file ({first_line(exc)})") from None
    try:
        return np.asarray(doc[keys[0]][keys[1]], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{path}: no {shape[0]}x{shape[1]} matrix '{keys[0]}.{keys[1]}'") from None
