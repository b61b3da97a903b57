"""A DSEC disparity benchmark submission written while streaming (``--dsec-submission DIR``).

The public format, from the official checker and from a published submitter:

- The evaluation timestamps come as one CSV per test sequence, ``<sequence>.csv``, in the unzipped
  ``test_disparity_timestamps.zip`` (uzh-rpg/DSEC ``README.md``, "Disparity Evaluation"), read there
  with ``np.loadtxt(..., delimiter=', ', comments='#')`` into two integer columns (uzh-rpg/DSEC
  ``scripts/check_submission.py``, ``files_per_sequence``): the timestamp in microseconds and the
  file index (yonseivnl/se-cff ``src/components/datasets/dsec/sequence.py``, ``read_csv``: column 0
  is the timestamp, column 1 the index), under a ``# timestamp_us, file_index`` header line. SE-CFF
  keeps each test sequence's CSV in its folder, ``test/<sequence>/<sequence>.csv`` (yonseivnl/se-cff
  ``README.md``, "Data structure"): that is where ``--dsec-timestamps`` defaults to.
- The submission holds one folder per sequence, named as the sequence, with one PNG per listed
  timestamp named by its file index in six digits, ``%06d.png`` (yonseivnl/se-cff
  ``src/components/methods/base.py``, ``test``: ``str(file_index).zfill(6) + '.png'``); the checker
  counts the files of each folder against the CSV's rows and evaluates them sorted by name
  (uzh-rpg/DSEC ``scripts/check_submission.py``).
- Each PNG is 480 x 640 (the checker's ``expected_disparity_shape``), 16-bit, disparity = value / 256
  and never negative (uzh-rpg/DSEC ``scripts/check_submission.py``, ``load_disparity``; the ground
  truth's encoding in uzh-rpg/DSEC ``README.md``, where 0 marks an invalid pixel).
- The prediction for a timestamp uses the events before it (SE-CFF slices its events ending at the
  timestamp: yonseivnl/se-cff ``src/components/datasets/dsec/event/sbn/dataset.py``).

The PNGs are written to a hidden folder beside it, ``DIR/.<sequence>.partial.XXXX``, and moved into
``DIR/<sequence>`` only when the run is accepted (``Submission.commit``): a refused, failed or interrupted
run leaves no PNG there (``discard``), so what is there is a finished submission.

Here the windows tile the sequence back to back and end at each listed timestamp
(``runtime.data.sources.window_ends`` with ``anchors_us``), the state carried through; the window ending at
a timestamp gives its PNG: uint16 round(disparity * 256), clipped to 0..65535, NaN written as 0.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.core.atomic import write_bytes_atomic
from runtime.data.dsec import DsecRecording
from runtime.data.options import OptionError

from .core import Stream

PNG_NAME = "{:06d}.png"  # SE-CFF's str(file_index).zfill(6) + '.png'
SCALE = 256.0  # disparity = value / 256 (DSEC's encoding, KITTI's convention)


def _bad_csv(path: str | os.PathLike, what: str) -> OptionError:
    return OptionError("dsec_timestamps", what, value=path)


def read_timestamps_csv(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """A DSEC evaluation-timestamp CSV: (timestamps int64 [n], file indices int64 [n]).

    Lines starting with ``#`` (the header) and blank lines are skipped; every other line is two
    non-negative integers separated by a comma. Timestamps must increase and file indices must
    differ; anything else is a ``OptionError`` naming the file and line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _bad_csv(path, f"cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    ts, idx = [], []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 2 or not all(p.isascii() and p.isdigit() for p in parts):  # not '²' (isdigit says yes)
            raise _bad_csv(
                path, f"line {number}: expected 'timestamp_us, file_index' (two non-negative integers), got {line!r}"
            )
        if any(len(p.lstrip("0")) > 18 for p in parts):  # int64 holds 18 digits; a time of 10^18 us is 31,000 years
            raise _bad_csv(path, f"line {number}: a number of more than 18 digits ({line!r}); timestamps are "
                                 "microseconds")
        ts.append(int(parts[0]))
        idx.append(int(parts[1]))
    if not ts:
        raise _bad_csv(path, "no timestamp in it (expected lines 'timestamp_us, file_index')")
    t, i = np.asarray(ts, np.int64), np.asarray(idx, np.int64)
    bad = np.flatnonzero(np.diff(t) <= 0)
    if len(bad):
        raise _bad_csv(path, f"timestamps must increase: row {bad[0] + 2} ({t[bad[0] + 1]}) "
                                       f"is not after row {bad[0] + 1} ({t[bad[0]]})")
    if len(np.unique(i)) != len(i):
        raise _bad_csv(path, "file indices repeat (each PNG would be written twice)")
    return t, i


def timestamps_path(sequence_folder: str, given: str | None) -> str:
    """The CSV to use: ``given`` (a file, or a folder holding ``<sequence>.csv``), else SE-CFF's
    ``<sequence folder>/<sequence>.csv``."""
    name = os.path.basename(os.path.normpath(sequence_folder))
    if given is None:
        path = os.path.join(sequence_folder, f"{name}.csv")
        if not os.path.isfile(path):
            raise OptionError(
                "dsec_submission",
                f"no {path}; pass {{dsec_timestamps}} CSV (or the unzipped test_disparity_timestamps folder)",
                refs=("dsec_timestamps",),
            )
        return path
    path = os.path.join(given, f"{name}.csv") if os.path.isdir(given) else given
    if not os.path.isfile(path):
        raise OptionError("dsec_timestamps", f"no such file ({path})", value=given)
    return path


def encode_png(disparity: np.ndarray) -> bytes:
    """A disparity map as DSEC's 16-bit PNG: round(disparity * 256) clipped to 0..65535, NaN as 0."""
    from PIL import Image  # pillow: pinned, also reads DSEC's ground truth (runtime.data.dsec)

    d = np.nan_to_num(np.asarray(disparity, np.float64), nan=0.0, posinf=np.inf, neginf=0.0)
    raw = np.clip(np.rint(d * SCALE), 0, np.iinfo(np.uint16).max).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(raw).save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class Submission:
    """Where and what to write: one PNG per listed timestamp of one sequence."""

    folder: Path  # DIR/<sequence>
    stage: Path  # DIR/.<sequence>.partial.XXXX: the PNGs until the run is accepted
    csv: str
    timestamps_us: np.ndarray
    file_index: np.ndarray
    height: int
    width: int
    written: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._index = {int(t): int(i) for t, i in zip(self.timestamps_us, self.file_index, strict=True)}

    def write(self, t1_us: int, disparity: np.ndarray) -> Path | None:
        """Write the prediction of the window ending at ``t1_us`` if it is a listed timestamp."""
        i = self._index.get(int(t1_us))
        if i is None:
            return None
        if disparity.shape != (self.height, self.width):
            raise OptionError("dsec_submission", f"the model's output is {disparity.shape[1]}x"
                                    f"{disparity.shape[0]}, the benchmark needs {self.width}x{self.height}")
        path = self.folder / PNG_NAME.format(i)
        try:
            write_bytes_atomic(self.stage / path.name, encode_png(disparity))
        except OSError as exc:  # the file keeps its old content (or stays absent): never a partial PNG
            raise OptionError("dsec_submission", f"cannot write it ({exc.strerror or exc})", value=path) from None
        self.written.append(path.name)
        return path

    def commit(self) -> None:
        """Move the PNGs into ``folder`` (the whole folder at once when it is new); the stage is removed."""
        try:
            if not self.folder.exists():
                os.replace(self.stage, self.folder)
            else:
                for name in self.written:
                    os.replace(self.stage / name, self.folder / name)
        except OSError as exc:
            self.discard()
            raise OptionError("dsec_submission", f"cannot move the predictions into it ({exc.strerror or exc})",
                              value=self.folder) from None
        self.discard()

    def discard(self) -> None:
        """Remove the stage and what it holds (a run refused, failed or interrupted)."""
        shutil.rmtree(self.stage, ignore_errors=True)

    def section(self) -> dict[str, Any]:
        """The report's ``dsec_submission``."""
        return {"folder": str(self.folder), "timestamps": self.csv, "expected": int(len(self.timestamps_us)),
                "written": len(self.written), "complete": len(self.written) == len(self.timestamps_us)}


def prepare(stream: Stream, out_dir: str, timestamps: str | None) -> Submission:
    """Check a stream's source and the timestamps for a submission, then set its windows to end at them.

    Refused (``OptionError``): a source that is not a DSEC sequence folder, a model whose size is
    not the sensor's (or a crop), a malformed CSV, a timestamp without a whole window of events before
    it or after the events' end, timestamps less than 3/4 of a window apart (``window_ends`` would skip
    one), and PNGs in ``DIR/<sequence>`` that are not in the list (the checker counts files)."""
    rec, enc = stream.recording, stream.spec.encoding
    if not isinstance(rec, DsecRecording):
        raise OptionError("dsec_submission", "needs a DSEC sequence folder ({events} DIR with events/left/events.h5)",
                          refs=("events",))
    if (enc.height, enc.width) != (int(rec.height), int(rec.width)) or stream.crop != "none":
        raise OptionError("dsec_submission", f"the model's output is {enc.width}x{enc.height} but the "
                                f"sequence is {rec.width}x{rec.height}: predictions must be at the sensor's size")
    csv = timestamps_path(rec.folder, timestamps)
    ts, idx = read_timestamps_csv(csv)
    w = int(enc.window_us)
    lo, hi = int(rec.t_start_us) + w, int(rec.t_end_us)
    outside = np.flatnonzero((ts < lo) | (ts > hi))
    if len(outside):
        k = int(outside[0])
        raise OptionError("dsec_timestamps", value=csv, what=f"timestamp {ts[k]} (row {k + 1}) is outside the events: "
                          f"a prediction needs a {w / 1000:g} ms window of events before it, from {lo} to {hi}")
    close = np.flatnonzero(4 * np.diff(ts) < 3 * w)
    if len(close):
        k = int(close[0])
        raise OptionError("dsec_timestamps", value=csv, what=f"timestamps {ts[k]} and {ts[k + 1]} are less than 3/4 of "
                          f"a {w / 1000:g} ms window apart")
    folder = Path(out_dir) / rec.name
    names = {PNG_NAME.format(int(i)) for i in idx}
    stale = sorted(p.name for p in folder.glob("*.png") if p.name not in names) if folder.is_dir() else []
    if stale:
        raise OptionError("dsec_submission", value=out_dir, what=f"{folder} holds {len(stale)} PNGs not in {csv} "
                                f"(e.g. {stale[0]}); the benchmark counts every file: remove them")
    if folder.exists() and not folder.is_dir():
        raise OptionError("dsec_submission", value=out_dir, what=f"{folder} is a file, not a folder")
    try:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{rec.name}.partial.", dir=out_dir))
    except OSError as exc:
        raise OptionError("dsec_submission", f"cannot create {folder} ({exc.strerror or exc})",
                          value=out_dir) from None
    stream.window_anchors_us = ts
    return Submission(folder, stage, csv, ts, idx, int(rec.height), int(rec.width))
