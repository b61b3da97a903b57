"""Event sources behind one call, and the windows that turn them into network input.

```python
from runtime.sources import open_recording, windows
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

import numpy as np

from runtime.encoding import encode
from runtime.events import DataError, time_slice
from runtime.recording import SIDES, Recording
from runtime.synth import SynthConfig, SynthData, generate

__all__ = [
    "Encoder",
    "Recording",
    "SyntheticRecording",
    "Window",
    "center_box",
    "open_recording",
    "window_ends",
    "window_plan",
    "windows",
]


class SyntheticRecording(Recording):
    """A synthetic stereo recording held in memory (``runtime.synth``); exact ground truth."""

    def __init__(self, data: SynthData) -> None:
        super().__init__()
        c = data.config
        self.data = data
        self.config = c
        self.name = f"synthetic(seed={c.seed})"
        self.height, self.width = c.height, c.width
        self.fb = c.focal_baseline
        self.gt_timestamps_us = data.gt_ts_us
        self.t_start_us, self.t_end_us = 0, data.duration_us

    def events(self, side: str, t0_us: int, t1_us: int) -> np.ndarray:
        self._check_side(side)
        return time_slice(self.data.events[side], t0_us, t1_us)

    def depth(self, i: int) -> np.ndarray:
        """Ground-truth depth in metres at ``gt_timestamps_us[i]``: float32 [H, W], NaN invalid."""
        return self.data.depth[self._check_gt_index(i)]

    def disparity(self, i: int) -> np.ndarray:
        return (np.float32(self.fb) / self.depth(i)).astype(np.float32)


def open_recording(
    path: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    seconds: float = 2.0,
    height: int = 260,
    width: int = 346,
    fb: float | None = None,
    rectify_maps: str | os.PathLike | dict | None = None,
    **synth_options: object,
) -> Recording:
    """Open an event recording.

    - ``path=None``: the built-in synthetic stereo recording, generated in memory from ``seed``,
      ``seconds``, ``height``, ``width`` and any other ``SynthConfig`` field in ``synth_options``
      (``fb`` too). No files.
    - a ``*_data.hdf5`` file: MVSEC layout (MVSEC's own or ``runtime.synth``'s); ground truth is
      ``*_gt.hdf5`` beside it when present. ``fb`` overrides focal length x baseline;
      ``rectify_maps`` is a folder with MVSEC's ``*_{left,right}_{x,y}_map.txt`` or a dict
      ``{side: (x_map, y_map)}`` of float arrays [H, W].
    - a DSEC sequence folder (``events/left/events.h5`` ...): DSEC.
    """
    if path is None:
        fields = {f.name for f in dataclasses.fields(SynthConfig)}
        for name in sorted(set(synth_options) - fields):
            close = difflib.get_close_matches(name, sorted(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else "; see runtime.synth.SynthConfig"
            raise TypeError(f"unknown synthetic option {name!r}{hint}")
        config = SynthConfig(seed=seed, seconds=seconds, height=height, width=width, fb=fb, **synth_options)
        return SyntheticRecording(generate(config, images=False))
    if synth_options:
        raise TypeError(f"options {sorted(synth_options)} apply only to the synthetic source (path=None)")
    path = os.fspath(path)
    if os.path.isdir(path):
        from runtime.dsec import DsecRecording

        return DsecRecording(path, fb=fb)
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file or folder")
    if path.endswith("_gt.hdf5"):
        raise DataError(f"{path}: open the matching *_data.hdf5 file; the ground truth is found beside it")
    from runtime.mvsec import MvsecRecording

    return MvsecRecording(path, fb=fb, rectify_maps=rectify_maps)


Encoder = Callable[[np.ndarray, int, int, int, int, int], np.ndarray]
"""f(events, t0_us, t1_us, bins, height, width) -> float32 [C, H, W]; the default is ``runtime.encoding.encode``."""


@dataclass(frozen=True)
class Window:
    """One time step of network input.

    ``index`` counts windows from 0; ``gt_index`` is the ground-truth map this window ends at (or
    None); ``left``/``right`` are float32 [C, H, W] (C = ``runtime.encoding.channels(kind, bins)``);
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


def window_ends(
    recording: Recording, *, window_us: int = 50_000, start_us: int | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """End times (int64 [n]) of the windows of a recording, and their ground-truth indices (or None).

    With ground truth, each window ends at a ground-truth timestamp ``g`` with
    ``g - window_us >= start`` and ``g <= t_end_us``; without, windows tile from ``start``
    (default ``t_start_us``) while they fit in the recording.
    """
    if window_us <= 0:
        raise ValueError(f"window_us must be positive, got {window_us}")
    begin = recording.t_start_us if start_us is None else int(start_us)
    gt = recording.gt_timestamps_us
    if gt is not None and len(gt):
        keep = np.flatnonzero((gt - window_us >= begin) & (gt <= recording.t_end_us))
        return gt[keep].astype(np.int64), keep
    n = max(0, (recording.t_end_us - begin) // window_us)
    return begin + window_us * np.arange(1, n + 1, dtype=np.int64), None


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
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Which windows ``windows`` yields: window numbers, end times and ground-truth indices (or None).

    The windows of ``window_ends`` from ``start_us``; given ``gt_indices``, only those ending at
    these ground-truth maps, in that order (an index without a window is skipped); then at most
    ``max_windows`` of them. Each array is int64 [n].
    """
    ends, gt_idx = window_ends(recording, window_us=window_us, start_us=start_us)
    number = np.arange(len(ends), dtype=np.int64)
    if gt_indices is not None:
        pos = {} if gt_idx is None else {int(g): k for k, g in enumerate(gt_idx)}
        number = np.array([pos[int(g)] for g in gt_indices if int(g) in pos], dtype=np.int64)
    if max_windows is not None:
        number = number[:max_windows]
    return number, ends[number], None if gt_idx is None else gt_idx[number]


def windows(
    recording: Recording,
    *,
    window_us: int = 50_000,
    bins: int = 5,
    encoding: str = "sbt",
    start_us: int | None = None,
    max_windows: int | None = None,
    gt_indices: Sequence[int] | None = None,
    crop: tuple[int, int] | None = None,
    encoder: Encoder | None = None,
) -> Iterator[Window]:
    """Read, encode and time consecutive windows of both cameras: the one window pipeline.

    Windows are those of ``window_plan`` (``window_ends`` from ``start_us``, maybe only those of
    ``gt_indices``, at most ``max_windows``); ``encoding`` is ``"sbt"`` or ``"count"`` (``encoder``
    replaces it); ``crop`` = (h, w) takes the centre of the encoded frames and of the ground truth.
    """
    number, ends, gt_idx = window_plan(
        recording, window_us=window_us, start_us=start_us, max_windows=max_windows, gt_indices=gt_indices
    )
    H, W = int(recording.height), int(recording.width)
    box = center_box(H, W, crop)
    if encoder is None:
        encoder = functools.partial(encode, encoding)
    for k, t1_value in enumerate(ends):
        n, t1 = int(number[k]), int(t1_value)
        t0 = t1 - window_us
        gi = None if gt_idx is None else int(gt_idx[k])
        a = time.perf_counter()
        events = [recording.events(side, t0, t1) for side in SIDES]
        disparity = None if gi is None else recording.disparity(gi)
        b = time.perf_counter()
        left, right = (encoder(ev, t0, t1, bins, H, W) for ev in events)
        if box is not None:
            left, right = left[:, box[0], box[1]], right[:, box[0], box[1]]
            disparity = None if disparity is None else disparity[box]
        left, right = np.ascontiguousarray(left, np.float32), np.ascontiguousarray(right, np.float32)
        c = time.perf_counter()
        disparity = None if disparity is None else np.asarray(disparity, np.float32)
        yield Window(n, t0, t1, left, right, disparity, gi, b - a, c - b)
