"""MVSEC recordings (and ``runtime.synth``'s files, which use the same layout).

``NAME_data.hdf5``: ``davis/{left,right}/events`` float64 [N, 4] with columns x, y, t (seconds),
p (-1/+1); ``davis/{left,right}/image_raw`` uint8 [n, 260, 346] and ``image_raw_ts`` float64 [n].
``NAME_gt.hdf5`` beside it: ``davis/left/depth_image_rect`` float32 [m, 260, 346] (metres, NaN
invalid) and ``depth_image_rect_ts`` float64 [m] (seconds). MVSEC's events are not rectified; the
calibration folder's ``*_{left,right}_{x,y}_map.txt`` give the rectified pixel of each raw one.
"""

from __future__ import annotations

import glob
import os

import numpy as np

from runtime.errors import first_line
from runtime.events import DataError
from runtime.recording import (
    SIDES,
    ColumnReader,
    FileRecording,
    open_h5,
    read_rows,
    rectifier,
    require,
    scan_index,
)

# MVSEC indoor_flying calibration (left camera fx and the stereo baseline)
INDOOR_FLYING_FX = 199.6530123165822
INDOOR_FLYING_BASELINE_M = 0.0998823
INDOOR_FLYING_FB = 19.941772  # px*m; disparity = fb / depth
MVSEC_HEIGHT, MVSEC_WIDTH = 260, 346


def events_key(side: str) -> str:
    return f"davis/{side}/events"


DEPTH_KEY = "davis/left/depth_image_rect"
DEPTH_TS_KEY = "davis/left/depth_image_rect_ts"


def gt_path_for(data_path: str) -> str:
    """``NAME_data.hdf5`` -> ``NAME_gt.hdf5`` (same folder)."""
    base = (
        data_path[: -len("_data.hdf5")]
        if data_path.endswith("_data.hdf5")
        else os.path.splitext(data_path)[0]
    )
    return base + "_gt.hdf5"


def load_rectify_maps(folder: str, height: int, width: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read MVSEC's ``*_left_x_map.txt``, ``*_left_y_map.txt`` (and right) from a calibration folder.

    Returns ``{side: (x_map, y_map)}``, float32 [H, W] each.
    """
    maps = {}
    for side in SIDES:
        pair = []
        for axis in ("x", "y"):
            found = sorted(glob.glob(os.path.join(folder, f"*{side}_{axis}_map.txt")))
            if not found:
                raise DataError(f"{folder}: no *{side}_{axis}_map.txt rectification map")
            try:
                m = np.loadtxt(found[0], dtype=np.float32, ndmin=2)
            except ValueError as exc:
                raise DataError(f"{found[0]}: not a text map of numbers ({first_line(exc)})") from None
            if m.shape != (height, width):
                raise DataError(f"{found[0]}: map has shape {m.shape}, expected ({height}, {width})")
            pair.append(m)
        maps[side] = (pair[0], pair[1])
    return maps


class MvsecRecording(FileRecording):
    """An MVSEC-layout recording, read window by window from disk.

    ``fb``: focal length x baseline; default: the file's ``fb`` attribute (our synthetic files),
    else MVSEC's indoor_flying value when the file name contains ``indoor_flying``, else None.
    ``rectify_maps``: a calibration folder or ``{side: (x_map, y_map)}``; without, events are
    used as stored (rectified already for our synthetic files).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        fb: float | None = None,
        rectify_maps: str | os.PathLike | dict | None = None,
        gt_path: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        self.path = os.fspath(path)
        self.name = os.path.basename(self.path)
        self._data = open_h5(self.path)
        self._files.append(self._data)
        try:
            self._open(fb, rectify_maps, gt_path)
        except BaseException:
            self.close()
            raise

    def _open(self, fb, rectify_maps, gt_path) -> None:
        """Open and check every dataset of the recording in one pass (events of both cameras, gray images,
        ground truth, calibration); long because it is a flat sequence of checks, each with its own
        one-line error."""
        f, path = self._data, self.path
        dsets = {side: require(f, events_key(side), path, ndim=2, tail=(4,)) for side in SIDES}
        for side, ds in dsets.items():
            if ds.dtype.kind not in "fiu":
                raise DataError(
                    f"{path}: dataset '{events_key(side)}' has dtype {ds.dtype}, expected numbers"
                )
        self.height, self.width = self._size(f)

        # ground truth
        self.gt_path = os.fspath(gt_path) if gt_path is not None else gt_path_for(path)
        self._depth = None
        if os.path.exists(self.gt_path):
            g = open_h5(self.gt_path)
            self._files.append(g)
            self._depth = require(g, DEPTH_KEY, self.gt_path, ndim=3, tail=(self.height, self.width))
            ts = require(g, DEPTH_TS_KEY, self.gt_path, ndim=1)[:]
            if len(ts) != self._depth.shape[0]:
                raise DataError(
                    f"{self.gt_path}: '{DEPTH_TS_KEY}' has {len(ts)} timestamps for "
                    f"{self._depth.shape[0]} depth maps in '{DEPTH_KEY}'"
                )
            ts_us = ts * 1e6
            finite = np.isfinite(ts_us)  # keep maps with finite timestamps that move forward in time
            prev_max = np.maximum.accumulate(np.concatenate(([-np.inf], np.where(finite, ts_us, -np.inf))))[
                :-1
            ]
            usable = finite & (ts_us > prev_max)
            self.stats["gt_dropped"] = int((~usable).sum())
            self._gt_rows = np.flatnonzero(usable)
            self.gt_timestamps_us = np.rint(ts_us[usable]).astype(np.int64)

        # focal length x baseline
        if fb is not None:
            self.fb = float(fb)
        elif "fb" in f.attrs:
            self.fb = float(f.attrs["fb"])
        elif "indoor_flying" in self.name:
            self.fb = INDOOR_FLYING_FB
        else:
            self.fb = None

        # rectification
        maps = rectify_maps
        if maps is not None and not isinstance(maps, dict):
            maps = load_rectify_maps(os.fspath(maps), self.height, self.width)
        self.rectified = maps is not None

        # per-camera readers with a coarse time index
        t_lo, t_hi = [], []
        for side, ds in dsets.items():
            key = events_key(side)

            def read(lo, hi, ds=ds, key=key):
                rows = read_rows(ds, lo, hi, path, key)
                return rows[:, 0], rows[:, 1], rows[:, 2] * 1e6, rows[:, 3]

            index = scan_index(
                ds.shape[0], lambda lo, hi, ds=ds, key=key: read_rows(ds, lo, hi, path, key, 2) * 1e6
            )
            transform = None
            if maps is not None:
                x_map, y_map = (np.asarray(m, dtype=np.float32) for m in maps[side])
                transform = rectifier(x_map, y_map, self.height, self.width)
            self._readers[side] = ColumnReader(
                read,
                index,
                height=self.height,
                width=self.width,
                stats=self.stats,
                polarity="auto",
                transform=transform,
            )
            if np.isfinite(index.t_min):
                t_lo.append(index.t_min)
                t_hi.append(index.t_max)
        if not t_lo:
            raise DataError(
                f"{path}: no events with a finite timestamp in '{events_key('left')}' or "
                f"'{events_key('right')}'"
            )
        for side in SIDES:  # the recording spans its events and its gray images
            key = f"davis/{side}/image_raw_ts"
            if key in f and f[key].ndim == 1 and f[key].shape[0]:
                n = f[key].shape[0]
                ts = np.array([f[key][0], f[key][n - 1]], dtype=np.float64) * 1e6
                ts = ts[np.isfinite(ts)]
                t_lo.extend(ts.tolist())
                t_hi.extend((ts - 1).tolist())
        self.t_start_us = int(np.floor(min(t_lo)))
        self.t_end_us = int(np.floor(max(t_hi))) + 1

    def _size(self, f) -> tuple[int, int]:
        """Sensor size from the gray images, else the file's attributes, else MVSEC's 260 x 346."""
        for side in SIDES:
            key = f"davis/{side}/image_raw"
            if key in f:
                ds = require(f, key, self.path, ndim=3)
                return int(ds.shape[1]), int(ds.shape[2])
        if "height" in f.attrs and "width" in f.attrs:
            return int(f.attrs["height"]), int(f.attrs["width"])
        return MVSEC_HEIGHT, MVSEC_WIDTH

    def depth(self, i: int) -> np.ndarray:
        """Ground-truth depth in metres: float32 [H, W], NaN where invalid (non-finite or <= 0)."""
        if self._depth is None:
            raise DataError(f"{self.path}: no ground truth ({self.gt_path} not found)")
        row = int(self._gt_rows[self._check_gt_index(i)])
        d = read_rows(self._depth, row, row + 1, self.gt_path, DEPTH_KEY)[0].astype(np.float32)
        d[~(d > 0) | ~np.isfinite(d)] = np.nan
        return d

    def disparity(self, i: int) -> np.ndarray:
        """``fb / depth``: float32 [H, W] pixels, NaN where the depth is invalid."""
        depth = self.depth(i)
        if self.fb is None:
            raise DataError(
                f"{self.path}: focal length x baseline unknown (not an indoor_flying file); "
                "pass fb= to open_recording"
            )
        return (np.float32(self.fb) / depth).astype(np.float32)

    def image(self, side: str, i: int) -> tuple[int, np.ndarray]:
        """Gray image ``i`` of camera ``side``: (timestamp us, uint8 [H, W])."""
        self._check_side(side)
        img = require(self._data, f"davis/{side}/image_raw", self.path, ndim=3)
        ts = require(self._data, f"davis/{side}/image_raw_ts", self.path, ndim=1)
        return int(np.rint(ts[i] * 1e6)), img[i]
