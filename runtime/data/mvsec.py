"""MVSEC recordings (and ``runtime.synth``'s files, which use the same layout).

``NAME_data.hdf5``: ``davis/{left,right}/events`` float64 [N, 4] with columns x, y, t (seconds),
p (-1/+1); ``davis/{left,right}/image_raw`` uint8 [n, 260, 346] and ``image_raw_ts`` float64 [n].
``NAME_gt.hdf5`` beside it: ``davis/left/depth_image_rect`` float32 [m, 260, 346] (metres, NaN
invalid) and ``depth_image_rect_ts`` float64 [m] (seconds). MVSEC's events are not rectified; the
calibration folder of each scene family (``<family>_calib.zip``) has
``<family>_{left,right}_{x,y}_map.txt``: the rectified pixel of each raw one, ``x_rect =
x_map[y, x]`` (daniilidis-group/mvsec ``tools/gt_flow/calibration.py``; MVSEC's calibration page).
"""

from __future__ import annotations

import glob
import os

import numpy as np

from runtime.core.errors import first_line
from runtime.data.calibration import attribute_fb, check_map
from runtime.data.events import DataError
from runtime.data.recording import (
    SIDES,
    ColumnReader,
    FileRecording,
    applied_rounding,
    check_rounding,
    open_h5,
    read_rows,
    rectifier,
    require,
    scan_index,
    yaml_matrix,
)

# MVSEC indoor_flying calibration (left camera fx and the stereo baseline)
INDOOR_FLYING_FX = 199.6530123165822
INDOOR_FLYING_BASELINE_M = 0.0998823
INDOOR_FLYING_FB = 19.941772  # px*m; disparity = fb / depth
# focal length x baseline (px*m) of each scene family, as DDES uses them
# (tlkvstepan/event_stereo_ICCV2019, src/dense_deep_event_stereo/dataset_constants.py,
# FOCAL_LENGTH_X_BASELINE: |P_right[0][3]| of the family's camchain yaml)
MVSEC_FB = {"indoor_flying": INDOOR_FLYING_FB, "outdoor_day": 19.635287, "outdoor_night": 19.651191}
MVSEC_FAMILIES = ("indoor_flying", "outdoor_day", "outdoor_night", "motorcycle")
MVSEC_HEIGHT, MVSEC_WIDTH = 260, 346
FB_TOLERANCE = 0.005  # the calibration file's fB and the one in use may differ this much without a warning


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


def family_of(name: str) -> str | None:
    """The MVSEC scene family in a file name (``indoor_flying1_data.hdf5`` -> ``indoor_flying``), or None."""
    return next((f for f in MVSEC_FAMILIES if f in os.path.basename(name)), None)


def _map_name(family: str, side: str, axis: str) -> str:
    return f"{family}_{side}_{axis}_map.txt"


def calib_family(folder: str, family: str | None) -> str:
    """Which family's maps a calibration folder holds: ``family`` when its maps are there, else the
    one family whose ``<family>_left_x_map.txt`` is there; refused when none or several are."""
    if family is not None and os.path.isfile(os.path.join(folder, _map_name(family, "left", "x"))):
        return family
    found = sorted(
        os.path.basename(p)[: -len("_left_x_map.txt")]
        for p in glob.glob(os.path.join(folder, "*_left_x_map.txt"))
    )
    if family is not None and found:
        raise DataError(
            f"{folder}: no {_map_name(family, 'left', 'x')} for this {family} recording (maps for {found})"
        )
    if len(found) != 1:
        what = "no *_left_x_map.txt rectification map" if not found else f"maps of several families {found}"
        raise DataError(f"{folder}: {what}; give the folder of one family's maps")
    return found[0]


def find_calib(data_path: str) -> str | None:
    """A folder near a recording that holds its family's maps: the recording's folder, its
    ``<family>_calib`` subfolder, or the same two under the parent folder; None when none does."""
    family = family_of(data_path)
    if family is None:
        return None
    here = os.path.dirname(os.path.abspath(data_path))
    for base in (here, os.path.dirname(here)):
        for folder in (base, os.path.join(base, f"{family}_calib")):
            if os.path.isfile(os.path.join(folder, _map_name(family, "left", "x"))):
                return folder
    return None


def _check_same_run(data, gt, data_path: str, gt_path: str) -> None:
    """Files that ``runtime.synth`` wrote carry their generator settings (``synth_config``); a data file
    and a ground truth from different runs (a crash between the two renames, or files copied in from
    elsewhere) would score events against another scene's depth, so they are refused."""
    a, b = data.attrs.get("synth_config"), gt.attrs.get("synth_config")
    if a is not None and b is not None and a != b:
        raise DataError(f"{data_path} and {gt_path} come from different runtime.synth runs (their "
                        "'synth_config' attributes differ): write them again together")


def fb_from_camchain(path: str) -> float:
    """Focal length x baseline (px*m) from MVSEC's ``camchain-imucam-<family>.yaml``: ``|P[0][3]|`` of
    the right DAVIS camera's rectified ``cam1.projection_matrix`` (3 x 4, ``P[0][3] = -f_x B``), as DDES
    computes it (tlkvstepan/event_stereo_ICCV2019 ``tools/convert_mvsec.py``: ``intrinsic_extrinsic
    ['cam1']['projection_matrix'][0][3]``, used through ``np.abs``; the file is read as MVSEC's
    ``tools/gt_flow/calibration.py`` reads it from the calibration zip)."""
    p = yaml_matrix(path, ("cam1", "projection_matrix"), (3, 4))
    if p.shape != (3, 4) or not np.isfinite(p).all() or p[0, 3] == 0:
        raise DataError(f"{path}: 'cam1.projection_matrix' is not a 3x4 matrix with P[0][3] != 0")
    return float(abs(p[0, 3]))


def load_rectify_maps(
    folder: str, height: int, width: int, family: str | None = None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read MVSEC's ``<family>_{left,right}_{x,y}_map.txt`` from a calibration folder.

    ``family`` picks the maps when the folder holds several families' (see ``calib_family``).
    Returns ``{side: (x_map, y_map)}``, float32 [H, W] each (text indexed ``[y, x]``).
    """
    family = calib_family(folder, family)
    maps = {}
    for side in SIDES:
        pair = []
        for axis in ("x", "y"):
            path = os.path.join(folder, _map_name(family, side, axis))
            if not os.path.isfile(path):
                raise DataError(f"{folder}: no {_map_name(family, side, axis)} rectification map")
            try:
                m = np.loadtxt(path, dtype=np.float32, ndmin=2)
            except ValueError as exc:
                raise DataError(f"{path}: not a text map of numbers ({first_line(exc)})") from None
            if m.shape != (height, width):
                raise DataError(f"{path}: map has shape {m.shape}, expected ({height}, {width})")
            check_map(m, path, "the map", (width if axis == "x" else height,))
            pair.append(m)
        maps[side] = (pair[0], pair[1])
    return maps


class MvsecRecording(FileRecording):
    """An MVSEC-layout recording, read window by window from disk.

    ``fb``: focal length x baseline; default: the file's ``fb`` attribute (our synthetic files),
    else ``MVSEC_FB`` of the family in the file name, else None. ``calib``: a folder with the
    family's rectification maps, or ``{side: (x_map, y_map)}``; default: found near the file
    (``find_calib``). Files marked rectified already (our synthetic ones: attribute ``source`` =
    ``runtime.synth``, or a true ``rectified`` attribute) are read as stored; others hold raw
    events and are refused without maps unless ``rectify=False``. ``rectify_rounding``: how a
    rectified coordinate becomes a pixel (``runtime.data.recording.rectifier``). When the calibration folder also
    holds ``camchain-imucam-<family>.yaml``, its fB is compared with the one in use (``fb_check``);
    the one in use stays.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        fb: float | None = None,
        calib: str | os.PathLike | dict | None = None,
        rectify: bool = True,
        rectify_rounding: str = "round",
        gt_path: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        check_rounding(rectify_rounding)
        self.path = os.fspath(path)
        self.name = os.path.basename(self.path)
        self._data = open_h5(self.path)
        self._files.append(self._data)
        try:
            self._open(fb, calib, rectify, rectify_rounding, gt_path)
        except BaseException:
            self.close()
            raise

    @property
    def gt_rows(self) -> np.ndarray:
        """The row of ``depth_image_rect`` behind each ground-truth index (rows with a bad timestamp
        are skipped, so index i is row i only while none was): int64 [n]."""
        return self._gt_rows

    @property
    def depth_rows(self) -> int:
        """Rows of ``depth_image_rect`` (every map, usable or not: DDES numbers its frames so)."""
        return 0 if self._depth is None else int(self._depth.shape[0])

    def _set_fb(self, fb: float | None) -> None:
        attrs = self._data.attrs
        family = family_of(self.name)
        if fb is not None:
            self.fb, self.fb_source = float(fb), "given (--fb)"
        elif "fb" in attrs:
            self.fb, self.fb_source = attribute_fb(attrs["fb"], self.path), f"the file's 'fb' attribute ({self.name})"
        elif family in MVSEC_FB:
            self.fb, self.fb_source = MVSEC_FB[family], f"MVSEC {family} (DDES dataset_constants.py)"
        else:
            self.fb, self.fb_source = None, None

    def _rectify_maps(self, calib, rectify: bool) -> dict | None:
        """The maps to apply (None: events as stored), and ``self.rectification`` saying why."""
        attrs = self._data.attrs
        source = attrs.get("source", "")
        source = source.decode() if isinstance(source, bytes) else str(source)
        marked = source == "runtime.synth" or bool(attrs.get("rectified", False))
        given = calib is not None and not isinstance(calib, dict)
        self._calib = (os.fspath(calib), family_of(self.name)) if given else None  # for fb_check
        if not rectify:
            self.rectification = "none: events used as stored (rectify=False, --no-rectify)"
            self.rectified = marked
            return None
        self.rectified = True
        if isinstance(calib, dict):
            self.rectification = "maps given as arrays"
            return calib
        if calib is None and marked:
            self.rectification = f"rectified already (the file says so: {self.name})"
            return None
        folder = os.fspath(calib) if calib is not None else find_calib(self.path)
        if folder is None:
            family = family_of(self.name) or "<family>"
            raise DataError(
                f"{self.path}: raw MVSEC events need rectification and no "
                f"{family}_{{left,right}}_{{x,y}}_map.txt was found beside it; pass the folder of "
                f"{family}_calib.zip (--calib DIR), or --no-rectify to use the events as stored"
            )
        family = calib_family(folder, family_of(self.name))
        self.rectification = f"maps {os.path.join(folder, family)}_{{left,right}}_{{x,y}}_map.txt"
        self._calib = (folder, family)
        return load_rectify_maps(folder, self.height, self.width, family)

    def _check_fb(self) -> None:
        """Compare the fB in use with the calibration folder's ``camchain-imucam-<family>.yaml``
        (``fb_from_camchain``), when there is one: ``fb_check`` and a note in ``fb_source``; a warning
        sentence when they differ by more than ``FB_TOLERANCE`` and the fB was not given (--fb). A
        recording without any other fB takes the file's."""
        self.fb_check = None
        folder, family = self._calib or (None, None)
        path = None if folder is None or family is None else os.path.join(folder, f"camchain-imucam-{family}.yaml")
        if path is None or not os.path.isfile(path):
            return
        try:
            file_fb = fb_from_camchain(path)
        except DataError as exc:
            self.fb_check = {"file": path, "fb": None, "difference_pct": None,
                             "warning": f"{first_line(exc)}: fB not compared"}
            return
        if self.fb is None:  # no constant for this recording: the calibration file's
            self.fb, self.fb_source = file_fb, f"{path} (cam1.projection_matrix)"
        diff = 100.0 * (self.fb - file_fb) / file_fb
        warning = None
        if abs(diff) > 100 * FB_TOLERANCE and self.fb_source != "given (--fb)":
            warning = (f"{path} gives fB {file_fb:.6g} px*m, {diff:+.2f} % from the {self.fb:.6g} in use "
                       f"({self.fb_source}); pass --fb {file_fb:.6g} to use the file's")
        self.fb_check = {"file": path, "fb": file_fb, "difference_pct": diff, "warning": warning}
        if not self.fb_source.startswith(path):
            self.fb_source += f"; {os.path.basename(path)} gives {file_fb:.6g} ({diff:+.2f} %)"

    def _open(self, fb, calib, rectify, rounding, gt_path) -> None:
        """Open and check every dataset of the recording in one pass (events of both cameras, gray images,
        ground truth, calibration), each check with its own one-line error."""
        f, path = self._data, self.path
        dsets = {side: require(f, events_key(side), path, ndim=2, tail=(4,)) for side in SIDES}
        for side, ds in dsets.items():
            if ds.dtype.kind not in "fiu":
                raise DataError(
                    f"{path}: dataset '{events_key(side)}' has dtype {ds.dtype}, expected numbers"
                )
        self.height, self.width = self._size(f)
        self._open_ground_truth(gt_path)
        self._set_fb(fb)
        t_lo, t_hi = self._open_readers(dsets)
        maps = self._rectify_maps(calib, rectify)  # after the checks of the file itself
        self._check_fb()
        self.rectify_rounding = applied_rounding(rounding, maps is not None, path, self.rectification)
        if maps is not None:
            for side in SIDES:
                x_map, y_map = (np.asarray(m, dtype=np.float32) for m in maps[side])
                self._readers[side].transform = rectifier(x_map, y_map, self.height, self.width, rounding)
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

    def _open_ground_truth(self, gt_path) -> None:
        """The depth maps beside the data file (if any) and which of them are usable: finite timestamps
        that move forward in time."""
        f, path = self._data, self.path
        self.gt_path = os.fspath(gt_path) if gt_path is not None else gt_path_for(path)
        self._depth = None
        self._gt_rows = np.zeros(0, np.int64)
        if not os.path.exists(self.gt_path):
            return
        g = open_h5(self.gt_path)
        self._files.append(g)
        _check_same_run(f, g, path, self.gt_path)
        self._depth = require(g, DEPTH_KEY, self.gt_path, ndim=3, tail=(self.height, self.width))
        ts = require(g, DEPTH_TS_KEY, self.gt_path, ndim=1)[:]
        if len(ts) != self._depth.shape[0]:
            raise DataError(
                f"{self.gt_path}: '{DEPTH_TS_KEY}' has {len(ts)} timestamps for "
                f"{self._depth.shape[0]} depth maps in '{DEPTH_KEY}'"
            )
        ts_us = ts * 1e6
        finite = np.isfinite(ts_us)  # keep maps with finite timestamps that move forward in time
        prev_max = np.maximum.accumulate(np.concatenate(([-np.inf], np.where(finite, ts_us, -np.inf))))[:-1]
        usable = finite & (ts_us > prev_max)
        self.stats["gt_dropped"] = int((~usable).sum())
        self._gt_rows = np.flatnonzero(usable)
        self.gt_timestamps_us = np.rint(ts_us[usable]).astype(np.int64)

    def _open_readers(self, dsets) -> tuple[list[float], list[float]]:
        """Per-camera readers with a coarse time index; the first and last event times found."""
        path = self.path
        t_lo, t_hi = [], []
        for side, ds in dsets.items():
            key = events_key(side)

            def read(lo, hi, ds=ds, key=key):
                rows = read_rows(ds, lo, hi, path, key)
                return rows[:, 0], rows[:, 1], rows[:, 2] * 1e6, rows[:, 3]

            index = scan_index(
                ds.shape[0], lambda lo, hi, ds=ds, key=key: read_rows(ds, lo, hi, path, key, 2) * 1e6
            )
            self._readers[side] = ColumnReader(
                read, index, height=self.height, width=self.width, stats=self.stats, polarity="auto"
            )
            if np.isfinite(index.t_min):
                t_lo.append(index.t_min)
                t_hi.append(index.t_max)
                self._spans[side] = (int(np.rint(index.t_min)), int(np.rint(index.t_max)))
        if not t_lo:
            raise DataError(
                f"{path}: no events with a finite timestamp in '{events_key('left')}' or "
                f"'{events_key('right')}'"
            )
        return t_lo, t_hi

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
                f"{self.path}: focal length x baseline unknown (the name names no MVSEC family "
                f"{', '.join(MVSEC_FB)}); pass fb= (--fb PX_M)"
            )
        return (np.float32(self.fb) / depth).astype(np.float32)

    def image(self, side: str, i: int) -> tuple[int, np.ndarray]:
        """Gray image ``i`` of camera ``side``: (timestamp us, uint8 [H, W])."""
        self._check_side(side)
        img = require(self._data, f"davis/{side}/image_raw", self.path, ndim=3)
        ts = require(self._data, f"davis/{side}/image_raw_ts", self.path, ndim=1)
        return int(np.rint(ts[i] * 1e6)), img[i]
