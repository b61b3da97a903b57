"""DSEC sequences, read window by window.

A sequence folder holds ``events/{left,right}/events.h5`` with ``events/{x,y,t,p}`` (x, y
uint16; t uint32 microseconds relative to the scalar ``t_offset``; p uint8 0/1), ``ms_to_idx``
(uint64: the first event index at or after each millisecond) and Blosc compression (read through
``hdf5plugin``); ``events/{left,right}/rectify_map.h5`` with ``rectify_map`` float32 [H, W, 2]
(rectified x, y of each raw pixel); and, for training sequences, ``disparity/timestamps.txt`` (one
microsecond timestamp per line) with ``disparity/event/*.png``: uint16, disparity = value / 256,
0 = invalid, in the rectified left event camera (10 Hz: PNGs 000000, 000002, ...; uzh-rpg/DSEC
issue #50). Sensor 640 x 480. ``calibration/cam_to_cam.yaml`` holds the stereo calibration; its
``disparity_to_depth.cams_03`` is OpenCV's Q matrix of the event cameras (cam0 left, cam3 right).
Facts from uzh-rpg/DSEC ``scripts/dataset/sequence.py`` and ``scripts/utils/eventslicer.py``, and
https://dsec.ifi.uzh.ch/data-format/.
"""

from __future__ import annotations

import glob
import os

import numpy as np

from runtime.core.errors import first_line
from runtime.data.calibration import check_map
from runtime.data.events import DataError
from runtime.data.recording import (
    SIDES,
    ColumnReader,
    FileRecording,
    RowIndex,
    applied_rounding,
    check_rounding,
    open_h5,
    read_rows,
    rectifier,
    require,
    yaml_matrix,
)

DSEC_HEIGHT, DSEC_WIDTH = 480, 640
COLUMNS = ("x", "y", "t", "p")


def fb_from_cam_to_cam(path: str) -> float:
    """Focal length x baseline (px*m) from DSEC's ``cam_to_cam.yaml``: ``Q[2][3] / Q[3][2]`` of
    ``disparity_to_depth.cams_03`` (OpenCV's Q: depth = Q[2][3] / (d Q[3][2] + Q[3][3]), Q[3][3] = 0)."""
    q = yaml_matrix(path, ("disparity_to_depth", "cams_03"), (4, 4))
    if q.shape != (4, 4) or not np.isfinite(q).all() or q[3, 2] == 0:
        raise DataError(f"{path}: 'disparity_to_depth.cams_03' is not a 4x4 Q matrix with Q[3][2] != 0")
    if abs(q[3, 3] / q[3, 2]) > 1e-3:  # a disparity offset fB / depth cannot express
        raise DataError(f"{path}: 'disparity_to_depth.cams_03' has Q[3][3] = {q[3, 3]:g}; expected 0")
    fb = float(q[2, 3] / q[3, 2])
    if not fb > 0:
        raise DataError(f"{path}: 'disparity_to_depth.cams_03' gives focal length x baseline {fb:g} <= 0")
    return fb


def _first(paths: list[str]) -> str | None:
    return next((p for p in paths if os.path.isfile(p)), None)


def read_disparity_png(path: str, height: int, width: int) -> np.ndarray:
    """A DSEC disparity PNG as float32 [H, W] pixels, NaN where the stored value is 0."""
    from PIL import Image  # pillow: only needed for DSEC ground truth

    try:
        with Image.open(path) as img:
            raw = np.asarray(img)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable PNG ({first_line(exc)})") from None
    if raw.shape != (height, width) or raw.dtype.kind not in "iu":
        raise DataError(
            f"{path}: disparity PNG is {raw.dtype} {raw.shape}, expected 16-bit ({height}, {width})"
        )
    disp = raw.astype(np.float32) / 256.0
    disp[raw == 0] = np.nan
    return disp


class DsecRecording(FileRecording):
    """A DSEC sequence folder.

    ``calib``: a folder with the rectification maps (``events/{left,right}/rectify_map.h5`` or
    ``{left,right}/rectify_map.h5``) and ``cam_to_cam.yaml`` (or ``calibration/cam_to_cam.yaml``);
    the sequence folder itself is looked in after it. Events are raw: without maps they are refused
    unless ``rectify=False``; ``rectify_rounding`` says how a rectified coordinate becomes a pixel
    (``runtime.data.recording.rectifier``). ``fb``: focal length x baseline (default: from ``cam_to_cam.yaml``,
    else None). The recording spans the time both cameras have events: from the later ``t_offset``
    (as SE-CFF, yonseivnl/se-cff ``src/components/datasets/dsec/sequence.py``) to the earlier end.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        *,
        fb: float | None = None,
        calib: str | os.PathLike | None = None,
        rectify: bool = True,
        rectify_rounding: str = "round",
        disparity_dir: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        check_rounding(rectify_rounding)
        self.folder = os.fspath(folder)
        self.name = os.path.basename(os.path.normpath(self.folder))
        self.calib = None if calib is None else os.fspath(calib)
        try:
            self._open(rectify, rectify_rounding, disparity_dir)
            self._set_fb(fb)
        except BaseException:
            self.close()
            raise

    def _candidates(self, *tails: str) -> list[str]:
        bases = ([self.calib] if self.calib else []) + [self.folder]
        return [os.path.join(b, t) for b in bases for t in tails]

    def _set_fb(self, fb: float | None) -> None:
        path = _first(self._candidates("cam_to_cam.yaml", os.path.join("calibration", "cam_to_cam.yaml")))
        if fb is not None:
            self.fb, self.fb_source = float(fb), "given (--fb)"
        elif path is not None:
            self.fb, self.fb_source = fb_from_cam_to_cam(path), f"{path} (disparity_to_depth.cams_03)"
        else:
            self.fb, self.fb_source = None, None

    def _rectify_maps(self, rectify: bool) -> dict[str, np.ndarray]:
        """Each camera's ``rectify_map`` (float32 [H, W, 2]); sets the size and ``rectification``."""
        if not rectify:
            self.rectification = "none: events used as stored (rectify=False, --no-rectify)"
            return {}
        maps, used = {}, []
        for side in SIDES:
            mp = _first(self._candidates(os.path.join("events", side, "rectify_map.h5"),
                                         os.path.join(side, "rectify_map.h5")))
            if mp is None:
                where = f"{self.calib} or {self.folder}" if self.calib else self.folder
                raise DataError(
                    f"{self.folder}: raw DSEC events need rectification and there is no "
                    f"events/{side}/rectify_map.h5 in {where}; pass the folder that holds it "
                    "(--calib DIR), or --no-rectify to use the events as stored"
                )
            with open_h5(mp) as f:
                maps[side] = require(f, "rectify_map", mp, ndim=3, tail=(None, None, 2))[:].astype(np.float32)
            used.append(mp)
        shapes = {m.shape[:2] for m in maps.values()}
        if len(shapes) > 1:
            raise DataError(f"{self.folder}: left and right rectify maps differ in size {sorted(shapes)}")
        self.height, self.width = shapes.pop()
        for mp, m in zip(used, maps.values(), strict=True):
            check_map(m, mp, "rectify_map", (self.width, self.height))
        self.rectification = "rectify_map.h5 " + ", ".join(used)
        self.rectified = True
        return maps

    def _open(self, rectify: bool, rounding: str, disparity_dir) -> None:
        """Open and check every file of the sequence in one pass (events of both cameras, ``ms_to_idx``,
        rectification maps, disparity); long because it is a flat sequence of checks, each with its own
        one-line error."""
        paths = {side: os.path.join(self.folder, "events", side, "events.h5") for side in SIDES}
        if not any(os.path.isfile(p) for p in paths.values()):
            raise DataError(f"{self.folder}: not a DSEC sequence folder (no events/left/events.h5)")
        self.height, self.width = DSEC_HEIGHT, DSEC_WIDTH
        t_lo, t_hi = [], []
        for side in SIDES:
            path = paths[side]
            f = open_h5(path)
            self._files.append(f)
            cols = {c: require(f, f"events/{c}", path, ndim=1) for c in COLUMNS}
            n = cols["t"].shape[0]
            for c, ds in cols.items():
                if ds.shape[0] != n:
                    raise DataError(
                        f"{path}: dataset 'events/{c}' has {ds.shape[0]} rows, 'events/t' has {n}"
                    )
            t_offset = int(require(f, "t_offset", path)[()]) if "t_offset" in f else 0
            ms_to_idx = require(f, "ms_to_idx", path, ndim=1)[:].astype(np.int64)
            index = self._index(ms_to_idx, n, t_offset, cols["t"], path)

            def read(lo, hi, cols=cols, path=path, t_offset=t_offset):
                x, y, t, p = (read_rows(cols[c], lo, hi, path, f"events/{c}") for c in COLUMNS)
                return x, y, t.astype(np.int64) + t_offset, p

            def seed_prev(lo, cols=cols, path=path, t_offset=t_offset) -> float:
                return float(read_rows(cols["t"], lo - 1, lo, path, "events/t")[0]) + t_offset

            self._readers[side] = ColumnReader(
                read, index, height=self.height, width=self.width, stats=self.stats, polarity="binary",
                seed_prev=seed_prev, index_name=f"{path}: 'ms_to_idx'",
            )
            if n:  # the camera starts at t_offset and lasts as long as its ms_to_idx or its events
                first = int(read_rows(cols["t"], 0, 1, path, "events/t")[0])
                last = int(read_rows(cols["t"], n - 1, n, path, "events/t")[0])
                self._spans[side] = (t_offset + first, t_offset + last)
                t_lo.append(t_offset)
                t_hi.append(t_offset + max(last + 1, 1000 * (len(ms_to_idx) - 1)))
        if not t_lo:
            raise DataError(f"{self.folder}: no events in either camera")
        maps = self._rectify_maps(rectify)  # after the checks of the event files themselves
        self.rectify_rounding = applied_rounding(rounding, bool(maps), self.folder, self.rectification)
        for side, m in maps.items():
            reader = self._readers[side]
            reader.height, reader.width = self.height, self.width
            reader.transform = rectifier(m[..., 0], m[..., 1], self.height, self.width, rounding)
        # both cameras: from the later start (SE-CFF's minimum_timestamp) to the earlier end
        self.t_start_us, self.t_end_us = max(t_lo), min(t_hi)
        if self.t_end_us <= self.t_start_us:
            self.t_end_us = self.t_start_us
        self._load_disparity_index(disparity_dir)

    @staticmethod
    def _index(ms_to_idx: np.ndarray, n: int, t_offset: int, t_ds, path: str) -> RowIndex:
        """A ``RowIndex`` from ``ms_to_idx``, after checking it against the data."""
        if len(ms_to_idx) == 0 or ms_to_idx[0] != 0:
            raise DataError(f"{path}: 'ms_to_idx' must start at 0")
        if np.any(np.diff(ms_to_idx) < 0) or ms_to_idx[-1] > n:
            raise DataError(f"{path}: 'ms_to_idx' is not a non-decreasing index into {n} events")
        # spot checks: the first event at or after ms k is at ms_to_idx[k]
        probe = np.unique(np.linspace(0, len(ms_to_idx) - 1, 9).astype(np.int64))
        for k in probe:
            i = int(ms_to_idx[k])
            after = read_rows(t_ds, i, min(i + 1, n), path, "events/t")
            before = read_rows(t_ds, max(i - 1, 0), i, path, "events/t")
            if (len(after) and after[0] < 1000 * k) or (len(before) and before[0] >= 1000 * k):
                raise DataError(f"{path}: 'ms_to_idx'[{k}] = {i} does not match 'events/t'")
        after = t_offset + 1000.0 * np.arange(len(ms_to_idx))  # events from row ms_to_idx[k] on: >= k ms
        before = after - 1.0  # events before it: < k ms
        before[0] = -np.inf
        return RowIndex(ms_to_idx, before, n, after=after)

    def _load_disparity_index(self, disparity_dir) -> None:
        folder = (
            os.fspath(disparity_dir) if disparity_dir is not None else os.path.join(self.folder, "disparity")
        )
        ts_path = os.path.join(folder, "timestamps.txt")
        self._disparity_pngs: list[str] = []
        if not os.path.isfile(ts_path):
            return
        try:
            ts = np.loadtxt(ts_path, dtype=np.int64, comments="#", ndmin=1)
        except ValueError as exc:
            raise DataError(f"{ts_path}: not one integer timestamp per line ({first_line(exc)})") from None
        pngs = sorted(glob.glob(os.path.join(folder, "event", "*.png")))
        if len(pngs) != len(ts):
            raise DataError(
                f"{ts_path}: {len(ts)} timestamps but {len(pngs)} PNGs in {os.path.join(folder, 'event')}"
            )
        if np.any(np.diff(ts) <= 0):
            raise DataError(f"{ts_path}: timestamps must increase")
        self.gt_timestamps_us = ts
        self._disparity_pngs = pngs

    def disparity(self, i: int) -> np.ndarray:
        """Disparity PNG ``i``: float32 [H, W] pixels, NaN where invalid."""
        return read_disparity_png(self._disparity_pngs[self._check_gt_index(i)], self.height, self.width)
