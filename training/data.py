"""Stereo training data: event-stereo sequences, synthetic and MVSEC (``training.dsec_data``: DSEC).

``training.datasets.stereo_data`` is the entry.

Stereo data is held as encoded windows per sequence (int8 SBT frames, float32 disparity with NaN
invalid), made by ``runtime.data.sources.windows`` as the runtime makes them: back to back, every event
used, ending at the ground-truth maps; windows between maps (DSEC's 10 Hz ground truth: every other
one) have no ground truth (``has_gt`` False, disparity NaN) and carry no loss and no score. A
training sample is ``burn_in + K`` consecutive windows, randomly cropped to the model's input size.
Nothing downloads: every dataset is read from a path the user gives (or generated). Labelled images
are in ``training.images``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from runtime.core.errors import first_line
from runtime.core.spans import spans
from runtime.data.options import RecordingOptions
from runtime.data.sources import find_recordings, open_recording
from runtime.data.synth.config import PHOTO_VARIATIONS, SynthConfig

from .datacache import FIELDS, Cache
from .errors import TrainError


@dataclass
class StereoSequence:
    """Encoded windows of one recording: ``left``/``right`` (T, C, H, W), ``disparity`` (T, H, W);
    ``has_gt`` bool [T] (default: all True) and ``gt_index`` int64 [T] (the recording's ground-truth
    index of each window, -1 for none)."""

    name: str
    left: np.ndarray
    right: np.ndarray
    disparity: np.ndarray
    fb: float | None = None
    has_gt: np.ndarray | None = None
    gt_index: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.has_gt is None:
            self.has_gt = np.ones(len(self.left), dtype=bool)
        if self.gt_index is None:
            self.gt_index = np.where(self.has_gt, np.arange(len(self.left)), -1).astype(np.int64)

    def __len__(self) -> int:
        return len(self.left)


RealOptions = RecordingOptions  # how MVSEC and DSEC recordings are read (runtime.data.options)


@dataclass(frozen=True)
class Segment:
    """Windows ``[start, end)`` of a sequence streamed from a zero state; windows >= ``score_from`` count."""

    seq: int
    start: int
    end: int
    score_from: int


@dataclass
class StereoData:
    """Training samples and held-out segments over lists of sequences."""

    train: list[StereoSequence]
    val: list[StereoSequence]
    length: int  # burn_in + K windows per training sample
    stride: int
    val_segments: list[Segment] = field(default_factory=list)
    description: str = ""
    burn_in: int = 0  # windows of a sample without loss: a sample needs ground truth after them
    crop_prob: float = 1.0  # chance a sample is cropped at a random place; else at the centre (no draw at 1)

    def __post_init__(self) -> None:
        self.samples = [(i, s) for i, seq in enumerate(self.train)
                        for s in range(0, len(seq) - self.length + 1, self.stride)
                        if seq.has_gt[s + self.burn_in:s + self.length].any()]
        if not self.samples:
            raise TrainError(f"no training sample of {self.length} consecutive windows in the training data",
                             "use longer recordings or fewer windows per sample (--windows, --burn-in)")

    def __len__(self) -> int:
        return len(self.samples)

    def batch(self, indices: list[int], size: tuple[int, int], rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """Samples -> left/right (L, B, C, h, w) and disparity (L, B, h, w), each randomly cropped to ``size``.

        One crop offset is drawn per sample (before any sharding, so it depends only on ``rng``).
        """
        h, w = size
        lefts, rights, disps = [], [], []
        for k in indices:
            i, s = self.samples[k]
            seq = self.train[i]
            H, W = seq.left.shape[2:]
            if H < h or W < w:
                raise TrainError(f"training sequence {seq.name} is {W}x{H}, smaller than the model input {w}x{h}")
            if self.crop_prob < 1.0 and rng.random() >= self.crop_prob:  # the paper's crops "with 50% probability"
                y0, x0 = (H - h) // 2, (W - w) // 2
            else:
                y0 = int(rng.integers(0, H - h + 1))
                x0 = int(rng.integers(0, W - w + 1))
            sl = (slice(s, s + self.length), slice(None), slice(y0, y0 + h), slice(x0, x0 + w))
            lefts.append(seq.left[sl])
            rights.append(seq.right[sl])
            disps.append(seq.disparity[s:s + self.length, y0:y0 + h, x0:x0 + w])
        return {"left": torch.from_numpy(np.stack(lefts, 1).astype(np.float32)),
                "right": torch.from_numpy(np.stack(rights, 1).astype(np.float32)),
                "disparity": torch.from_numpy(np.stack(disps, 1).astype(np.float32))}


def center_crop(a: np.ndarray, h: int, w: int) -> np.ndarray:
    H, W = a.shape[-2:]
    if H < h or W < w:
        raise TrainError(f"held-out data is {W}x{H}, smaller than the model input {w}x{h}")
    y0, x0 = (H - h) // 2, (W - w) // 2
    return a[..., y0:y0 + h, x0:x0 + w]


def encode_recording(rec, *, encoding: str, bins: int, window_us: int, gt_indices=None,
                     name: str | None = None, context: int = 0, gt_protocol: str = "full") -> StereoSequence:
    """Encode the windows of a recording that run over its ground truth (or over that of ``gt_indices``).

    The windows are ``runtime.data.sources.windows``, back to back: from ``context`` windows before the
    first window with (wanted) ground truth to the last one; windows without it, or with a map not
    in ``gt_indices``, get NaN disparity and ``has_gt`` False. Frames are stored as int8 (SBT) or
    int16 (counts).
    """
    from runtime.data.encoding import channels
    from runtime.data.sources import windows
    from runtime.data.tiling import window_plan

    number, _, _, gt_idx = window_plan(rec, window_us=window_us)
    if gt_idx is None or not (gt_idx >= 0).any():
        raise TrainError(f"{rec.name}: no ground-truth disparity, so it cannot be used for training")
    wanted = gt_idx >= 0
    if gt_indices is not None:
        wanted &= np.isin(gt_idx, np.asarray(list(gt_indices), dtype=np.int64))
        if not wanted.any():
            raise TrainError(f"{rec.name}: none of the requested ground-truth maps ends a window")
    pos = np.flatnonzero(wanted)
    lo, hi = max(0, int(pos[0]) - context), int(pos[-1]) + 1
    dtype = np.int8 if encoding == "sbt" else np.int16
    low, high = np.iinfo(dtype).min, np.iinfo(dtype).max
    T = hi - lo
    left = np.zeros((T, channels(encoding, bins), rec.height, rec.width), dtype)
    right = np.zeros_like(left)
    disp = np.full((T, rec.height, rec.width), np.nan, np.float32)
    has = wanted[lo:hi].copy()
    index = np.where(has, gt_idx[lo:hi], -1).astype(np.int64)
    for k, w in enumerate(windows(rec, window_us=window_us, bins=bins, encoding=encoding, numbers=number[lo:hi],
                                  gt_protocol=gt_protocol)):
        left[k] = np.clip(w.left, low, high)
        right[k] = np.clip(w.right, low, high)
        if has[k]:
            disp[k] = w.disparity
    return StereoSequence(name or rec.name, left, right, disp, rec.fb, has, index)


TRAIN_SCENE_TYPES = ("room", "street", "clutter")  # training never sees a corridor
# The generator's default share of photograph-textured surfaces (the others procedural, 1/f); held-out
# recordings texture every surface with a photograph of their own set (runtime.data.synth.textures).
TRAIN_PHOTO_FRACTION = SynthConfig.photo_fraction
HELDOUT_SCENE_TYPES = ("room", "street", "clutter", "corridor")


@dataclass(frozen=True)
class SyntheticSpec:
    """Synthetic training and held-out recordings: different seeds, hence different scenes, and a
    hold-out of textures and of a scene type.

    Training scenes use the procedural textures and the ``train`` half of the photographs
    (``runtime.data.synth.textures.TRAIN_PHOTOS``; ``train_textures="train_more"`` adds
    ``MORE_TRAIN_PHOTOS``, ``"train_most"`` those and ``MOST_TRAIN_PHOTOS``, in no held-out set) in the
    scene types ``train_scene_types``; held-out scenes are textured with the other photographs only
    (``HELDOUT_PHOTOS``, never seen in training) and include the ``corridor`` type that training never
    sees. With ``randomize_sensor`` each
    training recording draws its own sensor (contrast threshold, mismatch, background activity, hot
    pixels, refractory period) around the generator's defaults; held-out recordings use the defaults.
    ``photo_fraction``: the share of a training scene's surfaces textured with a photograph (the others
    procedural); held-out surfaces are all photographs, never varied; ``photo_augment``: the share of a
    training scene's photographs varied (turned, negative, less fine detail: ``textures.vary_photo``), of
    which only ``photo_variations`` are applied.
    """

    train_seeds: tuple[int, ...] = tuple(range(100, 116))
    val_seeds: tuple[int, ...] = (0, 1, 2, 3)
    seconds: float = 4.0
    val_seconds: float = 4.0
    margin: int = 16  # training recordings are this many pixels larger (both axes) for random crops
    train_textures: str = "train"
    val_textures: str = "heldout"
    train_scene_types: tuple[str, ...] = TRAIN_SCENE_TYPES
    val_scene_types: tuple[str, ...] = HELDOUT_SCENE_TYPES
    randomize_sensor: bool = True
    photo_fraction: float = TRAIN_PHOTO_FRACTION  # training surfaces textured with a photograph (held-out: all)
    photo_augment: float = 0.0  # share of the training photographs varied (runtime.data.synth.textures.vary_photo)
    photo_variations: tuple[str, ...] = PHOTO_VARIATIONS  # what a varied photograph may draw


def random_sensor(seed: int) -> dict:
    """Sensor knobs of one training recording, drawn from its seed (``SynthConfig`` fields)."""
    rng = np.random.default_rng([seed, 77])
    return {"contrast_threshold": float(rng.uniform(0.15, 0.3)), "threshold_sigma": float(rng.uniform(0.01, 0.06)),
            "noise_hz": float(rng.uniform(0.02, 0.3)), "hot_pixel_fraction": float(rng.uniform(0.0, 5e-4)),
            "refractory_us": int(rng.integers(0, 1001))}


def synthetic_recording(seed: int, *, held_out: bool, spec: SyntheticSpec, height: int, width: int,
                        seconds: float, fb: float | None = None, focal: float | None = None):
    """One synthetic training (``held_out=False``) or held-out recording of ``spec``."""
    if held_out:
        options = {"textures": spec.val_textures, "scene_types": tuple(spec.val_scene_types)}
    else:
        options = {"textures": spec.train_textures, "scene_types": tuple(spec.train_scene_types),
                   "photo_fraction": spec.photo_fraction, "photo_augment": spec.photo_augment,
                   "photo_variations": tuple(spec.photo_variations)}
        if spec.randomize_sensor:
            options.update(random_sensor(seed))
    return open_recording(seed=seed, seconds=seconds, height=height, width=width, fb=fb, focal_px=focal, **options)


def synthetic_stereo(spec: SyntheticSpec, *, height: int, width: int, encoding: str, bins: int,
                     window_us: int, length: int, stride: int, burn_in: int, cache=None) -> StereoData:
    """Generate, encode and split the synthetic stereo data for a model input of ``height`` x ``width``.

    Held-out recordings are generated as ``runtime.stream`` generates its built-in stream for a model
    of this size (``--seed`` = the held-out seed) except for their textures and scene types (see
    ``SyntheticSpec``); training recordings are ``margin`` pixels larger with the same focal length x
    baseline, so a random crop has the held-out geometry. Each encoded recording comes from ``cache``
    (``training.datacache.Cache``; default: the user's cache folder, ``$SNN_DATA_CACHE``) where an
    earlier run made it.
    """
    from runtime.data.synth import SynthConfig

    cache = Cache() if cache is None else cache
    fb = SynthConfig(height=height, width=width).focal_baseline
    focal = SynthConfig(height=height, width=width).focal
    coding = {"encoding": encoding, "bins": bins, "window_us": window_us}

    def recording(seed: int, held_out: bool) -> StereoSequence:
        if held_out:
            size = {"height": height, "width": width, "seconds": spec.val_seconds}
            geometry = {}
            kind = {"textures": spec.val_textures, "scene_types": list(spec.val_scene_types)}
        else:
            size = {"height": height + spec.margin, "width": width + spec.margin, "seconds": spec.seconds}
            geometry = {"fb": fb, "focal": focal}
            kind = {"textures": spec.train_textures, "scene_types": list(spec.train_scene_types),
                    "randomize_sensor": spec.randomize_sensor, "photo_fraction": spec.photo_fraction,
                    "photo_augment": spec.photo_augment, "photo_variations": list(spec.photo_variations)}
        name = f"synthetic seed {seed}"

        def make() -> dict:
            rec = synthetic_recording(seed, held_out=held_out, spec=spec, **size, **geometry)
            seq = encode_recording(rec, **coding, name=name)
            return {**{k: getattr(seq, k) for k in FIELDS}, "fb": seq.fb}
        key = {"seed": seed, "held_out": held_out, **size, **geometry, **kind, **coding}
        return StereoSequence(name, **cache.get(key, make))

    train = [recording(s, False) for s in spec.train_seeds]
    val = [recording(s, True) for s in spec.val_seeds]
    segments = [Segment(i, 0, len(v), burn_in) for i, v in enumerate(val)]
    photos = "" if spec.photo_fraction == TRAIN_PHOTO_FRACTION else f", photo fraction {spec.photo_fraction:g}"
    varied = "" if spec.photo_variations == PHOTO_VARIATIONS else f" ({', '.join(spec.photo_variations)})"
    photos += f", {spec.photo_augment:g} of the photographs varied{varied}" if spec.photo_augment else ""
    return StereoData(train, val, length, stride, segments,
                      f"synthetic: train seeds {spans(spec.train_seeds)} ({spec.train_textures} textures{photos}"
                      f", scene types "
                      f"{list(spec.train_scene_types)}), held-out seeds {spans(spec.val_seeds)} ({spec.val_textures} "
                      f"textures, scene types {list(spec.val_scene_types)}); {cache.summary()}")


# MVSEC indoor_flying in DDES's protocol (tlkvstepan/event_stereo_ICCV2019,
# src/dense_deep_event_stereo/dataset.py: FRAMES_FILTER_FOR_TEST, FRAMES_FILTER_FOR_TRAINING as
# Python ranges [lo, hi), IndoorFlying.split, dataset.shuffle / split_into_two). A frame is a row of
# the ground-truth file's davis/left/depth_image_rect. Split N tests on indoor_flying N (test
# frames) and trains on the other two (training frames); DDES's command line offers splits 1 and 3.
DDES_TEST_FRAMES = {1: (140, 1201), 2: (120, 1421), 3: (73, 1616)}
DDES_TRAIN_FRAMES = {1: (80, 1260), 2: (160, 1580), 3: (125, 1815)}
MVSEC_SPLITS = {1: {"train": (2, 3), "test": 1}, 2: {"train": (1, 3), "test": 2}, 3: {"train": (1, 2), "test": 3}}
MVSEC_VAL_SIZE = 200


def ddes_held_out(frames, val_size: int | None = None) -> tuple[list[int], list[int]]:
    """DDES's held-out split of the test sequence's frames (in ascending order): Python's
    ``random.seed(0); random.shuffle(frames)``, the first ``val_size`` validation, the rest test.
    (``random.Random(0)`` draws exactly what the seeded module functions draw.)"""
    val_size = MVSEC_VAL_SIZE if val_size is None else val_size
    order = [int(f) for f in frames]
    random.Random(0).shuffle(order)
    return order[:val_size], order[val_size:]


def find_mvsec(root: Path, n: int) -> Path:
    hits = [p for p in find_recordings(root).mvsec if p.name == f"indoor_flying{n}_data.hdf5"]
    if not hits:
        raise TrainError(f"{root}: no indoor_flying{n}_data.hdf5 under this folder",
                         "give the folder holding MVSEC's indoor_flying*_data.hdf5 and *_gt.hdf5 files")
    return hits[0]


def open_real(path: Path, real: RealOptions, calib: str | None = None, notes: list | None = None):
    """Open a real recording as ``real`` says; its warnings (fB of a calibration file) go to ``notes``."""
    try:
        rec = open_recording(str(path), calib=calib, rectify=real.rectify, fb=real.fb,
                             rectify_rounding=real.rectify_rounding)
    except Exception as exc:  # noqa: BLE001 - the data layer's errors are one line already
        raise TrainError(f"{path}: {first_line(exc)}") from None
    if notes is not None and (rec.fb_check or {}).get("warning") and rec.fb_check["warning"] not in notes:
        notes.append(rec.fb_check["warning"])
    return rec


def encode_real(rec, path: Path, real: RealOptions, **kwargs) -> StereoSequence:
    """``encode_recording`` of a real recording, refused (``TrainError``) when its rectification maps moved
    more than ``real.max_outside_rectify`` of the event rows read out of the image (as ``runtime.stream``)."""
    seq = encode_recording(rec, **kwargs)
    problem = real.rectify_loss(getattr(rec, "stats", None) or {}, getattr(rec, "rows_checked", None))
    if problem:
        raise TrainError(f"{path}: {problem}")
    return seq


def _frames(rec, lo: int, hi: int) -> tuple[list[int], list[int]]:
    """DDES's frames ``[lo, hi)`` that the ground-truth file has (rows), and their ground-truth indices
    (rows with an unusable timestamp have none)."""
    rows = np.asarray(getattr(rec, "gt_rows", np.arange(len(rec.gt_timestamps_us))), dtype=np.int64)
    n_rows = int(getattr(rec, "depth_rows", len(rows)))
    frames = list(range(lo, min(hi, n_rows)))
    pos = {int(r): i for i, r in enumerate(rows)}
    return frames, [pos[f] for f in frames if f in pos]


def mvsec_stereo(root: Path, split: int, *, height: int, width: int, encoding: str, bins: int, window_us: int,
                 length: int, stride: int, burn_in: int, part: str = "val",
                 real: RealOptions | None = None) -> StereoData:
    """MVSEC indoor_flying in DDES's split protocol (``DDES_TEST_FRAMES``, ``DDES_TRAIN_FRAMES``).

    Training: the windows over the training frames of the split's two training sequences (loss on
    those frames). Held-out: the test sequence's test frames, shuffled as DDES does
    (``ddes_held_out``): the first 200 are validation, the rest test (``part``). A held-out frame is
    scored after streaming the ``length - 1`` windows before it from a zero state.
    """
    real = real or RealOptions()
    if split not in MVSEC_SPLITS:
        raise TrainError(f"unknown MVSEC split {split}", "use --split 1, 2 or 3")
    calib = real.calib
    if calib is None and real.rectify:  # the indoor_flying maps anywhere under the data folder
        hit = next(iter(sorted(root.rglob("indoor_flying_left_x_map.txt"))), None)
        calib = str(hit.parent) if hit is not None else None
    common = dict(encoding=encoding, bins=bins, window_us=window_us, gt_protocol=real.gt_protocol)
    notes: list[str] = []  # warnings of the recordings, said in the description
    train = []
    for n in MVSEC_SPLITS[split]["train"]:
        path = find_mvsec(root, n)
        with open_real(path, real, calib, notes) as rec:
            _, gt = _frames(rec, *DDES_TRAIN_FRAMES[n])
            train.append(encode_real(rec, path, real, gt_indices=gt, context=burn_in, name=f"indoor_flying{n}",
                                     **common))
    t = MVSEC_SPLITS[split]["test"]
    path = find_mvsec(root, t)
    with open_real(path, real, calib, notes) as rec:
        frames, gt = _frames(rec, *DDES_TEST_FRAMES[t])
        val, test = ddes_held_out(frames)
        chosen = val if part == "val" else test
        rows = np.asarray(getattr(rec, "gt_rows", np.arange(len(rec.gt_timestamps_us))))
        held = encode_real(rec, path, real, gt_indices=gt, context=length - 1, name=f"indoor_flying{t}", **common)
    at = {int(rows[g]): k for k, g in enumerate(held.gt_index) if g >= 0}  # frame (row) -> window
    ks = sorted(at[f] for f in chosen if f in at and at[f] - length + 1 >= 0)
    segments = [Segment(0, k - length + 1, k + 1, k) for k in ks]
    missing = f" ({len(chosen) - len(ks)} of its frames have no window)" if len(ks) < len(chosen) else ""
    a, b = DDES_TEST_FRAMES[t]
    return StereoData(train, [held], length, stride, segments,
                      f"MVSEC split {split} (DDES): train indoor_flying{MVSEC_SPLITS[split]['train']} training "
                      f"frames, {part} {len(segments)} frames of indoor_flying{t} frames {a}-{b - 1}{missing}; "
                      f"{real.describe()}{''.join(f'; warning: {n}' for n in notes)}", burn_in)


__all__ = ["StereoSequence", "StereoData", "Segment", "SyntheticSpec", "RealOptions", "synthetic_stereo",
           "mvsec_stereo", "encode_recording", "encode_real", "center_crop", "ddes_held_out", "open_real",
           "synthetic_recording", "random_sensor"]
