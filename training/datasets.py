"""Where stereo training data comes from: ``stereo_data`` is the one entry for training and search.

``--data`` is ``synthetic`` (``training.data.synthetic_stereo``), a folder of MVSEC recordings
(``training.data.mvsec_stereo``, DDES's splits) or of DSEC sequences (``training.dsec_data``); which
one is decided by the data layer's ``runtime.data.sources.find_recordings``, as ``runtime.stream``
decides it.
"""

from __future__ import annotations

from pathlib import Path

from runtime.data.options import FLAGS, OptionError
from runtime.data.sources import DSEC_EVENTS, MVSEC_DATA, find_recordings
from runtime.data.synth.config import PHOTO_VARIATIONS

from .data import TRAIN_PHOTO_FRACTION, RealOptions, StereoData, SyntheticSpec, mvsec_stereo, synthetic_stereo
from .dsec_data import dsec_stereo
from .errors import TrainError

__all__ = ["stereo_data", "stereo_source_kind"]


def stereo_source_kind(source: str) -> str:
    if source == "synthetic":
        return "synthetic"
    root = Path(source)
    if not root.exists():
        raise TrainError(f"{source}: no such file or folder", "give --data synthetic or a dataset folder")
    found = find_recordings(root) if root.is_dir() else None
    if found is not None and found.mvsec:
        return "mvsec"
    if found is not None and found.dsec:
        return "dsec"
    raise TrainError(f"{source}: neither MVSEC ({MVSEC_DATA}) nor DSEC ({DSEC_EVENTS}) data under this path",
                     "give the folder that holds the recordings")


def stereo_data(source: str, g, *, length: int, stride: int, burn_in: int, synthetic: SyntheticSpec | None,
                split: int = 1, part: str = "val", real: RealOptions | None = None) -> StereoData:
    """Stereo data for genotype ``g``'s input from ``source``, for training and search alike.

    ``source`` is ``"synthetic"`` (generated as ``synthetic`` says; it may be None for the others), a
    folder holding MVSEC's indoor_flying recordings (DDES split ``split``, held-out ``part``) or DSEC
    sequence folders, read as ``real`` says (calibration, rectification, fB, ground-truth protocol).
    Samples are ``length`` consecutive windows every ``stride``; held-out windows before ``burn_in``
    are not scored.
    """
    inp = g.input
    common = dict(encoding=inp.encoding, bins=inp.bins, window_us=int(round(inp.window_ms * 1000)),
                  length=length, stride=stride, burn_in=burn_in)
    kind = stereo_source_kind(source)
    if real is not None:
        try:
            real.check()
        except OptionError as exc:
            raise TrainError(exc.render(FLAGS)) from None
    if kind == "synthetic":
        if real is not None and real != RealOptions():
            raise TrainError("--calib, --no-rectify, --fb, --gt, --dsec-split, --rectify-rounding and "
                             "--max-outside-rectify apply to MVSEC and DSEC data, not --data synthetic")
        return synthetic_stereo(synthetic, height=inp.height, width=inp.width, **common)
    if synthetic is not None and synthetic.photo_fraction != TRAIN_PHOTO_FRACTION:
        raise TrainError(f"--photo-fraction applies to --data synthetic, not to {source} ({kind.upper()} data)")
    if synthetic is not None and synthetic.photo_augment:
        raise TrainError(f"--photo-augment applies to --data synthetic, not to {source} ({kind.upper()} data)")
    if synthetic is not None and synthetic.photo_variations != PHOTO_VARIATIONS:
        raise TrainError(f"--photo-variations applies to --data synthetic, not to {source} ({kind.upper()} data)")
    if synthetic is not None and synthetic.train_textures != SyntheticSpec.train_textures:
        raise TrainError(f"--train-textures applies to --data synthetic, not to {source} ({kind.upper()} data)")
    if kind == "mvsec":
        if real is not None and real.dsec_split != RealOptions.dsec_split:
            raise TrainError(f"--dsec-split applies to DSEC data; {source} holds MVSEC, whose held-out set is "
                             "--split's (DDES)")
        return mvsec_stereo(Path(source), split, height=inp.height, width=inp.width, part=part, real=real, **common)
    return dsec_stereo(Path(source), real=real, **common)
