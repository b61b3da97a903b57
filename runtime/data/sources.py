"""Event sources behind one call, and the windows that turn them into network input.

```python
from runtime.data.sources import open_recording, windows
with open_recording() as rec:                      # built-in synthetic stereo, in memory
    for w in windows(rec, max_windows=10):
        w.left, w.right                            # float32 [5, 260, 346], SBT of 50 ms
        w.disparity                                # float32 [260, 346], NaN where invalid
```
``open_recording("data/synth_seed0_data.hdf5")`` reads MVSEC-layout files (ours or MVSEC's),
``open_recording("dsec/zurich_city_00_a")`` a DSEC sequence folder.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.data.encoding import encode
from runtime.data.events import DataError, time_slice
from runtime.data.protocol import apply_gt_protocol, check_gt_protocol
from runtime.data.recording import SIDES, Recording
from runtime.data.synth import SynthConfig, SynthData, generate
from runtime.data.tiling import center_box, window_plan

__all__ = [
    "DSEC_EVENTS",
    "Encoder",
    "Found",
    "MVSEC_DATA",
    "Recording",
    "SyntheticRecording",
    "Window",
    "find_recordings",
    "open_recording",
    "recording_kind",
    "windows",
]


class SyntheticRecording(Recording):
    """A synthetic stereo recording held in memory (``runtime.data.synth``); exact ground truth."""

    def __init__(self, data: SynthData) -> None:
        super().__init__()
        c = data.config
        self.data = data
        self.config = c
        self.name = f"synthetic(seed={c.seed})"
        self.height, self.width = c.height, c.width
        self.fb = c.focal_baseline
        self.fb_source = "the generator's configuration"
        self.rectification = "rectified already (synthetic, in memory)"
        self.rectified = True
        self.gt_timestamps_us = data.gt_ts_us
        self.t_start_us, self.t_end_us = 0, data.duration_us

    def events(self, side: str, t0_us: int, t1_us: int) -> np.ndarray:
        self._check_side(side)
        return time_slice(self.data.events[side], t0_us, t1_us)

    def event_span(self, side: str) -> tuple[int, int] | None:
        t = self.data.events[side]["t"]
        return (int(t[0]), int(t[-1])) if len(t) else (0, -1)

    def depth(self, i: int) -> np.ndarray:
        """Ground-truth depth in metres at ``gt_timestamps_us[i]``: float32 [H, W], NaN invalid."""
        return self.data.depth[self._check_gt_index(i)]

    def disparity(self, i: int) -> np.ndarray:
        return (np.float32(self.fb) / self.depth(i)).astype(np.float32)


MVSEC_DATA = "*_data.hdf5"  # an MVSEC-layout recording's events (its ground truth: *_gt.hdf5 beside it)
DSEC_EVENTS = "events/left/events.h5"  # a DSEC sequence folder holds this


def recording_kind(path: str | os.PathLike) -> str:
    """How ``open_recording`` reads ``path``: ``"dsec"`` (a sequence folder) or ``"mvsec"`` (a file in
    MVSEC's layout, ``*_data.hdf5``; MVSEC's own or ``runtime.synth``'s)."""
    return "dsec" if os.path.isdir(path) else "mvsec"


@dataclass(frozen=True)
class Found:
    """The recordings under a folder, sorted: ``mvsec`` data files (``MVSEC_DATA``), ``dsec`` sequence folders."""

    mvsec: list[Path]
    dsec: list[Path]


def find_recordings(root: str | os.PathLike) -> Found:
    """Every recording under the folder ``root`` that ``open_recording`` reads (see ``recording_kind``)."""
    root = Path(root)
    return Found(sorted(root.rglob(MVSEC_DATA)), sorted(p.parents[2] for p in root.rglob(DSEC_EVENTS)))


def open_recording(
    path: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    seconds: float = 2.0,
    height: int = 260,
    width: int = 346,
    fb: float | None = None,
    calib: str | os.PathLike | dict | None = None,
    rectify: bool = True,
    rectify_rounding: str = "round",
    **synth_options: object,
) -> Recording:
    """Open an event recording.

    - ``path=None``: the built-in synthetic stereo recording, generated in memory from ``seed``,
      ``seconds``, ``height``, ``width`` and any other ``SynthConfig`` field in ``synth_options``
      (``fb`` too). No files.
    - a ``*_data.hdf5`` file: MVSEC layout (MVSEC's own or ``runtime.synth``'s); ground truth is
      ``*_gt.hdf5`` beside it when present.
    - a DSEC sequence folder (``events/left/events.h5`` ...): DSEC.

    Real recordings hold raw events: they are rectified with the calibration (``calib``: MVSEC's
    folder of ``<family>_{left,right}_{x,y}_map.txt``, or a dict ``{side: (x_map, y_map)}``; DSEC's
    ``rectify_map.h5`` files, found in the sequence folder unless ``calib`` names another; both
    looked for beside the recording when ``calib`` is None), and refused with a ``DataError`` when
    there is none, unless ``rectify=False`` (events used as stored). Files that say they are
    rectified already (our synthetic ones) need nothing. ``fb`` overrides focal length x baseline
    (px*m); the recording's ``rectification`` and ``fb_source`` say what was used.
    ``rectify_rounding`` (``runtime.data.recording.RECTIFY_ROUNDINGS``): rectified coordinates go to the
    nearest pixel (``"round"``, as DDES) or the one below (``"floor"``, as SE-CFF); only where maps
    are applied.
    """
    if path is None:
        if calib is not None or rectify_rounding != "round":
            raise TypeError("calib and rectify_rounding apply to recordings read from files (path=...)")
        fields = {f.name for f in dataclasses.fields(SynthConfig)}
        for name in sorted(set(synth_options) - fields):
            close = difflib.get_close_matches(name, sorted(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else "; see runtime.data.synth.SynthConfig"
            raise TypeError(f"unknown synthetic option {name!r}{hint}")
        config = SynthConfig(seed=seed, seconds=seconds, height=height, width=width, fb=fb, **synth_options)
        return SyntheticRecording(generate(config, images=False))
    if synth_options:
        raise TypeError(f"options {sorted(synth_options)} apply only to the synthetic source (path=None)")
    path = os.fspath(path)
    if recording_kind(path) == "dsec":
        from runtime.data.dsec import DsecRecording

        if isinstance(calib, dict):
            raise TypeError("a DSEC sequence takes calib as a folder (rectify_map.h5, cam_to_cam.yaml)")
        return DsecRecording(path, fb=fb, calib=calib, rectify=rectify, rectify_rounding=rectify_rounding)
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file or folder")
    if path.endswith("_gt.hdf5"):
        raise DataError(f"{path}: open the matching *_data.hdf5 file; the ground truth is found beside it")
    from runtime.data.mvsec import MvsecRecording

    return MvsecRecording(path, fb=fb, calib=calib, rectify=rectify, rectify_rounding=rectify_rounding)


Encoder = Callable[[np.ndarray, int, int, int, int, int], np.ndarray]
"""f(events, t0_us, t1_us, bins, height, width) -> float32 [C, H, W]; by default ``runtime.data.encoding.encode``."""


@dataclass(frozen=True)
class Window:
    """One time step of network input.

    ``index`` counts the windows of ``window_ends`` from 0; ``gt_index`` is the ground-truth map this
    window ends at, or None (``has_gt``); ``left``/``right`` are float32 [C, H, W]
    (C = ``runtime.data.encoding.channels(kind, bins)``);
    ``disparity`` float32 [H, W] in pixels, NaN-invalid, or None without ground truth.
    ``decode_s``/``encode_s``: seconds spent reading the window's events (and ground truth) and
    encoding (and cropping) them.
    """

    index: int
    t0_us: int
    t1_us: int
    left: np.ndarray
    right: np.ndarray
    disparity: np.ndarray | None = None
    gt_index: int | None = None
    decode_s: float = 0.0
    encode_s: float = 0.0

    @property
    def has_gt(self) -> bool:
        """Whether the window ends at a ground-truth map (only such windows are scored)."""
        return self.gt_index is not None or self.disparity is not None


def windows(
    recording: Recording,
    *,
    window_us: int = 50_000,
    bins: int = 5,
    encoding: str = "sbt",
    start_us: int | None = None,
    max_windows: int | None = None,
    gt_indices: Sequence[int] | None = None,
    numbers: Sequence[int] | None = None,
    crop: tuple[int, int] | None = None,
    encoder: Encoder | None = None,
    gt_protocol: str = "full",
    anchors_us: np.ndarray | None = None,
) -> Iterator[Window]:
    """Read, encode and time consecutive windows of both cameras: the one window pipeline.

    Windows are those of ``runtime.data.tiling.window_plan`` (``window_ends`` from ``start_us``: back to back, ending
    at the ground-truth maps; maybe only ``numbers`` or those of ``gt_indices``, at most
    ``max_windows``); ``encoding`` is ``"sbt"`` or ``"count"`` (``encoder`` replaces it); ``crop``
    = (h, w) takes the centre of the encoded frames and of the ground truth; ``gt_protocol``
    (``runtime.data.protocol.GT_PROTOCOLS``) may quantise, cap or mask the ground truth as DDES does.
    ``anchors_us``: the windows end at these times instead of at the ground truth's (``window_ends``),
    and no ground truth is read (each window's ``t1_us`` is its anchor).
    """
    check_gt_protocol(gt_protocol)
    number, starts, ends, gt_idx = window_plan(
        recording,
        window_us=window_us,
        start_us=start_us,
        max_windows=max_windows,
        gt_indices=gt_indices,
        numbers=numbers,
        anchors_us=anchors_us,
    )
    if anchors_us is not None:
        gt_idx = None
    H, W = int(recording.height), int(recording.width)
    box = center_box(H, W, crop)
    if encoder is None:
        encoder = functools.partial(encode, encoding)
    for k, t1_value in enumerate(ends):
        n, t0, t1 = int(number[k]), int(starts[k]), int(t1_value)
        gi = None if gt_idx is None or gt_idx[k] < 0 else int(gt_idx[k])
        a = time.perf_counter()
        events = [recording.events(side, t0, t1) for side in SIDES]
        disparity = None
        if gi is not None:
            disparity = apply_gt_protocol(recording, recording.disparity(gi), t1, gt_protocol)
        b = time.perf_counter()
        left, right = (encoder(ev, t0, t1, bins, H, W) for ev in events)
        if box is not None:
            left, right = left[:, box[0], box[1]], right[:, box[0], box[1]]
            disparity = None if disparity is None else disparity[box]
        left, right = np.ascontiguousarray(left, np.float32), np.ascontiguousarray(right, np.float32)
        c = time.perf_counter()
        disparity = None if disparity is None else np.asarray(disparity, np.float32)
        yield Window(n, t0, t1, left, right, disparity, gi, b - a, c - b)
