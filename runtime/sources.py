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
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from runtime.encoding import encode
from runtime.events import DataError, time_slice
from runtime.recording import SIDES, Recording
from runtime.synth import SynthConfig, SynthData, generate

__all__ = ["Recording", "SyntheticRecording", "Window", "open_recording", "windows"]


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


@dataclass(frozen=True)
class Window:
    """One time step of network input.

    ``index`` counts windows from 0; ``gt_index`` is the ground-truth map this window ends at (or
    None); ``left``/``right`` are float32 [C, H, W] (C = bins for SBT, 2 * bins for counts);
    ``disparity`` float32 [H, W] NaN-invalid, or None without ground truth.
    """

    index: int
    t0_us: int
    t1_us: int
    left: np.ndarray
    right: np.ndarray
    disparity: np.ndarray | None
    gt_index: int | None = None


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


def windows(
    recording: Recording,
    *,
    window_us: int = 50_000,
    bins: int = 5,
    encoding: str = "sbt",
    start_us: int | None = None,
    max_windows: int | None = None,
) -> Iterator[Window]:
    """Encode consecutive windows of both cameras (``encoding`` = ``"sbt"`` or ``"count"``)."""
    ends, gt_idx = window_ends(recording, window_us=window_us, start_us=start_us)
    if max_windows is not None:
        ends = ends[:max_windows]
    for k, t1 in enumerate(ends):
        t1 = int(t1)
        t0 = t1 - window_us
        left, right = (
            encode(encoding, recording.events(side, t0, t1), t0, t1, bins, recording.height, recording.width)
            for side in SIDES
        )
        gi = None if gt_idx is None else int(gt_idx[k])
        disparity = None if gi is None else recording.disparity(gi)
        yield Window(k, t0, t1, left, right, disparity, gi)
