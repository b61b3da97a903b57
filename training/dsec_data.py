"""DSEC stereo training data: sequence folders under one root, and which of them are held out.

Two held-out sets (``--dsec-split``, ``DSEC_SPLITS``):

- ``last20`` (default): the last 20 % of the sequence folders found, sorted by name (at least one);
- ``se-cff``: SE-CFF's fixed validation list (``SECFF_VALIDATION``), trained on SE-CFF's training
  list (``SECFF_TRAIN``). Every listed validation sequence must be there: a missing one is an error
  naming it, never a quiet fallback; folders in neither list are not used (the description names them).

Windows tile each sequence; only every other one has ground truth (10 Hz).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from runtime.data.options import DSEC_SPLITS
from runtime.data.sources import find_recordings

from .data import RealOptions, Segment, StereoData, encode_real, open_real
from .errors import TrainError

# SE-CFF's split of DSEC's 41 training sequences (yonseivnl/se-cff,
# src/components/datasets/dsec/constant.py, DATA_SPLIT['train'] and DATA_SPLIT['validation'], as in
# commit f06e70ebc0156d3a8006a2d4f17a67b8c1082b57; a later commit comments the lists out for a
# one-sequence debug split). The names are DSEC's sequence folders under train/.
SECFF_TRAIN = (
    "interlaken_00_c", "interlaken_00_d", "interlaken_00_e", "zurich_city_00_a", "zurich_city_00_b",
    "zurich_city_01_a", "zurich_city_01_b", "zurich_city_01_c", "zurich_city_01_d", "zurich_city_01_e",
    "zurich_city_01_f", "zurich_city_02_a", "zurich_city_02_b", "zurich_city_02_c", "zurich_city_02_d",
    "zurich_city_02_e", "zurich_city_03_a", "zurich_city_04_a", "zurich_city_04_b", "zurich_city_04_c",
    "zurich_city_04_d", "zurich_city_04_e", "zurich_city_04_f", "zurich_city_09_a", "zurich_city_09_b",
    "zurich_city_09_c", "zurich_city_09_e", "zurich_city_10_a", "zurich_city_11_a", "zurich_city_11_b",
    "zurich_city_11_c",
)
SECFF_VALIDATION = (
    "interlaken_00_f", "interlaken_00_g", "thun_00_a", "zurich_city_05_a", "zurich_city_05_b",
    "zurich_city_06_a", "zurich_city_07_a", "zurich_city_08_a", "zurich_city_09_d", "zurich_city_10_b",
)


def dsec_split(names: list[str], split: str = "last20", val_fraction: float = 0.2,
               where: str = "") -> tuple[list[int], list[int], list[int]]:
    """Which sequences train and which are held out: (train, held-out, unused) positions in ``names``.

    ``names`` are the sequence folders' names, sorted. ``last20``: the last ``val_fraction`` (at least
    one; a single sequence is both). ``se-cff``: ``SECFF_TRAIN`` and ``SECFF_VALIDATION``, in their
    order; raises ``TrainError`` when a validation sequence is missing, a name appears twice, or no
    training sequence is there.
    """
    if split not in DSEC_SPLITS:
        raise TrainError(f"unknown DSEC split {split!r}", f"use --dsec-split {' or '.join(DSEC_SPLITS)}")
    n = len(names)
    if split == "last20":
        n_val = max(1, round(n * val_fraction)) if n > 1 else 0
        every = list(range(n))
        return (every[:-n_val], every[-n_val:], []) if n_val else (every, every, [])
    twice = sorted(k for k, c in Counter(names).items() if c > 1 and k in SECFF_TRAIN + SECFF_VALIDATION)
    if twice:
        raise TrainError(f"{where}: DSEC sequence folders {', '.join(twice)} appear more than once; "
                         "--dsec-split se-cff picks sequences by name", "keep one copy of each")
    pos = {name: i for i, name in enumerate(names)}
    missing = [s for s in SECFF_VALIDATION if s not in pos]
    if missing:
        raise TrainError(f"{where}: --dsec-split se-cff holds out {len(SECFF_VALIDATION)} sequences and "
                         f"{len(missing)} are missing: {', '.join(missing)}",
                         "give the folder of DSEC's train/ sequences, or --dsec-split last20")
    train = [pos[s] for s in SECFF_TRAIN if s in pos]
    if not train:
        raise TrainError(f"{where}: --dsec-split se-cff trains on SE-CFF's training sequences and none is there "
                         f"(e.g. {SECFF_TRAIN[0]})", "give the folder of DSEC's train/ sequences")
    used = set(train) | {pos[s] for s in SECFF_VALIDATION}
    return train, [pos[s] for s in SECFF_VALIDATION], [i for i in range(n) if i not in used]


def dsec_stereo(root: Path, *, encoding: str, bins: int, window_us: int, length: int, stride: int,
                burn_in: int, val_fraction: float = 0.2, real: RealOptions | None = None) -> StereoData:
    """DSEC sequence folders under ``root`` (each with events/ and disparity/), split by
    ``real.dsec_split`` (``dsec_split``); held-out sequences are streamed whole, their first
    ``burn_in`` windows not scored."""
    real = real or RealOptions()
    if real.calib is not None:
        raise TrainError("--calib applies to MVSEC: each DSEC sequence folder holds its own "
                         "events/{left,right}/rectify_map.h5 and calibration/cam_to_cam.yaml")
    folders = find_recordings(root).dsec
    if not folders:
        raise TrainError(f"{root}: no DSEC sequence (events/left/events.h5) under this folder")
    train_at, val_at, unused = dsec_split([f.name for f in folders], real.dsec_split, val_fraction, str(root))
    seqs = {}
    for i in sorted(set(train_at) | set(val_at)):
        with open_real(folders[i], real) as rec:
            seqs[i] = encode_real(rec, folders[i], real, encoding=encoding, bins=bins, window_us=window_us,
                                  name=folders[i].name, context=burn_in, gt_protocol=real.gt_protocol)
    train, val = [seqs[i] for i in train_at], [seqs[i] for i in val_at]
    segments = [Segment(i, 0, len(v), burn_in) for i, v in enumerate(val)]
    split = "SE-CFF's validation list" if real.dsec_split == "se-cff" else "the last 20 % by name"
    skipped = f", not used (in neither SE-CFF list) {[folders[i].name for i in unused]}" if unused else ""
    return StereoData(train, val, length, stride, segments,
                      f"DSEC: train {[s.name for s in train]}, held-out ({split}) {[s.name for s in val]}{skipped}; "
                      f"{real.describe()}", burn_in)


__all__ = ["DSEC_SPLITS", "SECFF_TRAIN", "SECFF_VALIDATION", "dsec_split", "dsec_stereo"]
