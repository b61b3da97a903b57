"""Dataset readers of training: CIFAR pickles, IDX, image folders, MVSEC split, DSEC, synthetic; and
the one-line errors for bad paths and malformed files."""

from __future__ import annotations

import gzip
import pickle
import re
import struct

import numpy as np
import pytest
import torch

from tests.helpers import GENOTYPES, SMALL
from training.data import SyntheticSpec, synthetic_stereo
from training.datasets import stereo_source_kind
from training.errors import TrainError
from training.images import check_image_shape, classification_data, read_idx

torch.set_num_threads(1)


def _pickle(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def write_cifar10(root, n=4):
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        _pickle(root / f"data_batch_{i}", {"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8),
                                           "labels": list(rng.integers(0, 10, n))})
    _pickle(root / "test_batch", {"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8),
                                  "labels": list(rng.integers(0, 10, n))})


def write_idx(path, array, gz=False):
    code = {np.uint8: 0x08}[array.dtype.type]
    raw = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    (gzip.open if gz else open)(path, "wb").write(raw)


def test_cifar10_and_cifar100_layouts(tmp_path):
    c10 = tmp_path / "cifar-10-batches-py"
    c10.mkdir()
    write_cifar10(c10)
    train, test = classification_data(str(tmp_path))
    assert train.x.shape == (20, 3, 32, 32) and test.x.shape == (4, 3, 32, 32) and train.classes == 10
    assert abs(float(train.x.mean())) < 1e-4  # standardised with the training statistics
    c100 = tmp_path / "c100"
    c100.mkdir()
    rng = np.random.default_rng(1)
    for part in ("train", "test"):
        _pickle(c100 / part, {"data": rng.integers(0, 255, (3, 3072), dtype=np.uint8), "fine_labels": [0, 5, 99]})
    train, test = classification_data(str(c100))
    assert train.classes == 100 and train.y.tolist() == [0, 5, 99]


def test_malformed_cifar_is_a_clear_error(tmp_path):
    write_cifar10(tmp_path)
    _pickle(tmp_path / "data_batch_3", {"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]})
    with pytest.raises(TrainError, match="data_batch|malformed CIFAR batch"):
        classification_data(str(tmp_path))
    (tmp_path / "data_batch_3").write_bytes(b"not a pickle at all")
    with pytest.raises(TrainError, match="not a CIFAR python pickle"):
        classification_data(str(tmp_path))


def test_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 6), ("t10k", 3)):
        images = rng.integers(0, 255, (n, 5, 7), dtype=np.uint8)
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images, gz=True)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n, dtype=np.uint8))
    train, test = classification_data(str(tmp_path))
    assert train.x.shape == (6, 1, 5, 7) and test.x.shape == (3, 1, 5, 7)
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x08\x08\x08\x01" + b"\0" * 8)
    with pytest.raises(TrainError, match="bad magic"):
        read_idx(bad)
    bad.write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"\0" * 3)
    with pytest.raises(TrainError, match="header says"):
        read_idx(bad)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", rng.integers(0, 10, 2, dtype=np.uint8))
    with pytest.raises(TrainError, match="do not match"):
        classification_data(str(tmp_path))


def test_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for part in ("train", "test"):
        for cls in ("cat", "dog"):
            (tmp_path / part / cls).mkdir(parents=True)
            for i in range(2):
                pixels = rng.integers(0, 255, (6, 5, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / part / cls / f"{i}.png")
    train, test = classification_data(str(tmp_path))
    assert train.x.shape == (4, 3, 6, 5) and train.classes == 2 and test.y.tolist() == [0, 0, 1, 1]
    with pytest.raises(TrainError, match="--set input.channels=3 --set input.height=6 --set input.width=5"):
        check_image_shape(train, 3, 32, 32)
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(tmp_path / "test" / "dog" / "z.png")
    with pytest.raises(TrainError, match="image is 9x9"):
        classification_data(str(tmp_path))
    (tmp_path / "test" / "dog" / "z.png").write_bytes(b"garbage")
    with pytest.raises(TrainError, match="not a readable image"):
        classification_data(str(tmp_path))


def test_bad_paths(tmp_path):
    with pytest.raises(TrainError, match="no such file or folder"):
        classification_data(str(tmp_path / "missing"))
    with pytest.raises(TrainError, match="no known dataset layout"):
        classification_data(str(tmp_path))
    with pytest.raises(TrainError, match="neither MVSEC"):
        stereo_source_kind(str(tmp_path))
    with pytest.raises(TrainError, match="no such file"):
        stereo_source_kind(str(tmp_path / "missing"))


@pytest.mark.parametrize("args, words", [
    (["--data", "/no/such/dataset"], "no such file or folder"),
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--set", "input.heigth=8"], "did you mean"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, args, words):
    from training.train import main

    rc = main([str(GENOTYPES / "cifar10.yaml"), "--out", str(tmp_path / "r"), *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and "\n" not in err and words in err, err


def test_cli_reports_a_shape_mismatch_with_the_fix(tmp_path, capsys):
    from training.train import main

    rc = main([str(GENOTYPES / "cifar10.yaml"), "--out", str(tmp_path / "r"), "--data", "digits"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "--set input.channels=1 --set input.height=8 --set input.width=8" in err


def test_synthetic_train_and_held_out_differ_and_crop():
    data = synthetic_stereo(SyntheticSpec(train_seeds=(100, 101), val_seeds=(0,), seconds=0.5, val_seconds=0.5,
                                          margin=8), height=24, width=32, encoding="sbt", bins=5,
                            window_us=50_000, length=3, stride=2, burn_in=1)
    assert data.train[0].left.shape[2:] == (32, 40) and data.val[0].left.shape[2:] == (24, 32)
    assert data.train[0].left.dtype == np.int8 and set(np.unique(data.train[0].left)) <= {-1, 0, 1}
    assert not np.array_equal(data.train[0].disparity[:3, :24, :32], data.train[1].disparity[:3, :24, :32])
    b = data.batch([0, 1, 2], (24, 32), np.random.default_rng(0))
    assert b["left"].shape == (3, 3, 5, 24, 32) and b["disparity"].shape == (3, 3, 24, 32)
    # the held-out recording is the runtime's built-in stream at the model size, seed for seed, with
    # the held-out textures and scene types (issue 11: training never sees them)
    from runtime.data.sources import open_recording, windows
    from training.data import HELDOUT_SCENE_TYPES

    w = next(iter(windows(open_recording(seed=0, seconds=0.5, height=24, width=32, textures="heldout",
                                         scene_types=HELDOUT_SCENE_TYPES))))
    assert np.array_equal(w.left, data.val[0].left[0])


def test_photo_fraction_reaches_the_training_recordings_and_their_cache_key(tmp_path, monkeypatch):
    """--photo-fraction F: training scenes draw a photograph for a share F of their surfaces (held-out ones
    are all photographs already); F is part of a training recording's cache key, not of a held-out one's."""
    import training.data as td
    from training.datacache import Cache

    calls, keys = [], []
    real_open, real_get = td.open_recording, Cache.get

    def spy_open(**kw):
        calls.append(kw)
        return real_open(**kw)

    def spy_get(self, key, make):
        keys.append(dict(key))
        return real_get(self, key, make)

    monkeypatch.setattr(td, "open_recording", spy_open)
    monkeypatch.setattr(Cache, "get", spy_get)
    made = {}
    for frac in (td.TRAIN_PHOTO_FRACTION, 1.0):
        calls.clear()
        keys.clear()
        made[frac] = synthetic_stereo(SyntheticSpec(train_seeds=(100,), val_seeds=(0,), seconds=0.3, val_seconds=0.3,
                                                    margin=8, photo_fraction=frac), height=24, width=32,
                                      encoding="sbt", bins=5, window_us=50_000, length=3, stride=2, burn_in=1,
                                      cache=Cache(tmp_path / "cache"))
        # the first pass makes both recordings; the second only the training one (the held-out one is a hit)
        train_call, *val_calls = calls
        assert train_call["photo_fraction"] == frac and len(val_calls) == (frac == td.TRAIN_PHOTO_FRACTION)
        assert all("photo_fraction" not in c for c in val_calls)
        train_key, val_key = keys
        assert train_key["photo_fraction"] == frac and "photo_fraction" not in val_key
    default = made[td.TRAIN_PHOTO_FRACTION]
    assert "photo fraction 1" in made[1.0].description and "photo fraction" not in default.description
    # another texture draw: other events for the same seed; the held-out recording is the same
    assert not np.array_equal(made[1.0].train[0].left, default.train[0].left)
    assert np.array_equal(made[1.0].val[0].left, default.val[0].left)


def test_photo_augment_reaches_the_training_recordings_only_and_their_cache_key(tmp_path, monkeypatch):
    """--photo-augment F: training scenes vary a share F of their photographs; held-out scenes never; F is
    part of a training recording's cache key and of the data's description."""
    import training.data as td
    from training.datacache import Cache

    calls, keys = [], []
    real_open, real_get = td.open_recording, Cache.get
    monkeypatch.setattr(td, "open_recording", lambda **kw: calls.append(kw) or real_open(**kw))
    monkeypatch.setattr(Cache, "get", lambda self, key, make: keys.append(dict(key)) or real_get(self, key, make))
    made = {}
    for frac in (0.0, 1.0):
        calls.clear()
        keys.clear()
        made[frac] = synthetic_stereo(SyntheticSpec(train_seeds=(100,), val_seeds=(0,), seconds=0.3, val_seconds=0.3,
                                                    margin=8, photo_fraction=1.0, photo_augment=frac),
                                      height=24, width=32, encoding="sbt", bins=5, window_us=50_000, length=3,
                                      stride=2, burn_in=1, cache=Cache(tmp_path / "cache"))
        train_call, *val_calls = calls
        assert train_call["photo_augment"] == frac and all("photo_augment" not in c for c in val_calls)
        train_key, val_key = keys
        assert train_key["photo_augment"] == frac and "photo_augment" not in val_key
    assert "1 of the photographs varied" in made[1.0].description and "varied" not in made[0.0].description
    assert not np.array_equal(made[1.0].train[0].left, made[0.0].train[0].left)
    assert np.array_equal(made[1.0].val[0].left, made[0.0].val[0].left)


def test_photo_variations_reach_the_training_recordings_and_their_cache_key(tmp_path, monkeypatch, capsys):
    """--photo-variations LIST: what --photo-augment varies; part of a training recording's cache key and of
    the description where it is not all three; refused without --photo-augment and when it is not a list of
    the three names, each once."""
    import training.data as td
    from training.datacache import Cache
    from training.train import main

    calls, keys = [], []
    real_open, real_get = td.open_recording, Cache.get
    monkeypatch.setattr(td, "open_recording", lambda **kw: calls.append(kw) or real_open(**kw))
    monkeypatch.setattr(Cache, "get", lambda self, key, make: keys.append(dict(key)) or real_get(self, key, make))
    made = {}
    for variations in (("turn", "negative", "coarser"), ("coarser",)):
        calls.clear()
        keys.clear()
        made[variations] = synthetic_stereo(
            SyntheticSpec(train_seeds=(100,), val_seeds=(0,), seconds=0.3, val_seconds=0.3, margin=8,
                          photo_fraction=1.0, photo_augment=1.0, photo_variations=variations),
            height=24, width=32, encoding="sbt", bins=5, window_us=50_000, length=3, stride=2, burn_in=1,
            cache=Cache(tmp_path / "cache"))
        train_call, *val_calls = calls
        assert train_call["photo_variations"] == variations and all("photo_variations" not in c for c in val_calls)
        train_key, val_key = keys
        assert train_key["photo_variations"] == list(variations) and "photo_variations" not in val_key
    assert "varied (coarser)" in made[("coarser",)].description
    assert "varied," in made[("turn", "negative", "coarser")].description
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 3  # two training recordings, one held-out
    small = [a for k, v in SMALL["stereo_small"].items() for a in ("--set", f"{k}={v}")]
    base = [str(GENOTYPES / "stereo_small.yaml"), *small, "--out", str(tmp_path / "r"), "--epochs", "1"]
    from training.train import parser

    args = parser().parse_args([*base, "--photo-variations", " coarser , turn,"])
    assert args.photo_variations == "coarser,turn"
    for bad in ("blur", "coarser,coarser", ",", "turn,blur", "Coarser", ""):
        with pytest.raises(SystemExit) as exc:
            main([*base, "--photo-augment", "1", "--photo-variations", bad])
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert exc.value.code == 2 and "argument --photo-variations: expected some of turn,negative,coarser" in err
    rc = main([*base, "--photo-variations", "coarser"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "give --photo-augment above 0" in err, err
    assert not (tmp_path / "r").exists()


def test_train_textures_reach_the_training_recordings_and_their_cache_key(tmp_path, monkeypatch, capsys):
    """--train-textures train_more: the training scenes draw from the eight training photographs and two
    more, never a held-out one; part of a training recording's cache key (the ``train`` recordings stay as
    they were) and of the description; held-out recordings unchanged; anything else refused by argparse."""
    import training.data as td
    from runtime.data.synth.textures import (
        HELDOUT_PHOTOS,
        MORE_TRAIN_PHOTOS,
        MOST_TRAIN_PHOTOS,
        TRAIN_PHOTOS,
        photo_names,
    )
    from training.datacache import Cache
    from training.train import main, parser

    assert photo_names("train_more") == TRAIN_PHOTOS + MORE_TRAIN_PHOTOS
    assert photo_names("train_most") == TRAIN_PHOTOS + MORE_TRAIN_PHOTOS + MOST_TRAIN_PHOTOS
    for textures in ("train_more", "train_most"):
        assert not set(photo_names(textures)) & set(HELDOUT_PHOTOS)
    # the runtime's default world is unchanged
    assert not set(MORE_TRAIN_PHOTOS + MOST_TRAIN_PHOTOS) & set(photo_names("all"))
    calls, keys = [], []
    real_open, real_get = td.open_recording, Cache.get
    monkeypatch.setattr(td, "open_recording", lambda **kw: calls.append(kw) or real_open(**kw))
    monkeypatch.setattr(Cache, "get", lambda self, key, make: keys.append(dict(key)) or real_get(self, key, make))
    made = {}
    for textures in ("train", "train_more", "train_most"):
        calls.clear()
        keys.clear()
        made[textures] = synthetic_stereo(
            SyntheticSpec(train_seeds=(100,), val_seeds=(0,), seconds=0.3, val_seconds=0.3, margin=8,
                          photo_fraction=1.0, train_textures=textures),
            height=24, width=32, encoding="sbt", bins=5, window_us=50_000, length=3, stride=2, burn_in=1,
            cache=Cache(tmp_path / "cache"))
        train_call, *val_calls = calls
        assert train_call["textures"] == textures and all(c["textures"] == "heldout" for c in val_calls)
        assert keys[0]["textures"] == textures and keys[1]["textures"] == "heldout"
        assert f"({textures} textures" in made[textures].description
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 4  # three training recordings, one held-out
    assert np.array_equal(made["train"].val[0].left, made["train_more"].val[0].left)
    assert np.array_equal(made["train"].val[0].left, made["train_most"].val[0].left)
    assert not np.array_equal(made["train_more"].train[0].left, made["train_most"].train[0].left)
    small = [a for k, v in SMALL["stereo_small"].items() for a in ("--set", f"{k}={v}")]
    base = [str(GENOTYPES / "stereo_small.yaml"), *small, "--out", str(tmp_path / "r"), "--epochs", "1"]
    for textures in ("train_more", "train_most"):
        assert parser().parse_args([*base, "--train-textures", textures]).train_textures == textures
    for bad in ("heldout", "all", "Train", ""):
        with pytest.raises(SystemExit) as exc:
            main([*base, "--train-textures", bad])
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert exc.value.code == 2 and "argument --train-textures: invalid choice" in err, err
    for bad in ("nan", "FUSED", "", "1e9", str(tmp_path)):  # --optimizer-impl likewise
        with pytest.raises(SystemExit) as exc:
            main([*base, "--optimizer-impl", bad])
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert exc.value.code == 2 and "argument --optimizer-impl: invalid choice" in err, err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(("field", "value", "message"), [
    ("train_textures", "heldout", "--train-textures 'heldout' is not a set training may draw"),
    ("train_textures", "all", "use one of train, train_more, train_most"),
    ("optimizer_impl", "fast", "unknown --optimizer-impl 'fast'"),
])
def test_the_python_api_refuses_what_the_command_line_cannot_choose(tmp_path, field, value, message):
    """A TrainConfig can hold any string: a training run never draws the held-out photographs, whichever way
    it was started; refused before any data are made or any file is written."""
    from training.config import TrainConfig
    from training.errors import TrainError
    from training.train import run

    small = [f"{k}={v}" for k, v in SMALL["stereo_small"].items()]
    cfg = TrainConfig(genotype=str(GENOTYPES / "stereo_small.yaml"), out=str(tmp_path / "r"), overrides=small,
                      epochs=1, quiet=True, tensorboard=False, **{field: value})
    with pytest.raises(TrainError, match=re.escape(message)):
        run(cfg, log=lambda s: None)
    assert not (tmp_path / "r").exists()


def test_ddes_shuffle_pins_the_first_validation_frames():
    # DDES (tlkvstepan/event_stereo_ICCV2019, dataset.py): random.seed(0); random.shuffle over the
    # ordered test frames; the first 200 are validation. Values computed with that code's algorithm.
    from training.data import DDES_TEST_FRAMES, DDES_TRAIN_FRAMES, ddes_held_out

    val, test = ddes_held_out(range(*DDES_TEST_FRAMES[1]))
    assert val[:10] == [194, 1061, 877, 165, 419, 539, 588, 308, 401, 283]
    assert test[:5] == [903, 248, 570, 549, 279] and (len(val), len(test)) == (200, 861)
    val, test = ddes_held_out(range(*DDES_TEST_FRAMES[3]))
    assert val[:10] == [492, 843, 87, 227, 1507, 1020, 1030, 910, 110, 1230]
    assert (len(val), len(test)) == (200, 1343) and sorted(val + test) == list(range(73, 1616))
    val, _ = ddes_held_out(range(*DDES_TEST_FRAMES[2]))
    assert val[:10] == [1110, 1202, 219, 599, 665, 1069, 278, 143, 1409, 379]
    assert DDES_TEST_FRAMES == {1: (140, 1201), 2: (120, 1421), 3: (73, 1616)}
    assert DDES_TRAIN_FRAMES == {1: (80, 1260), 2: (160, 1580), 3: (125, 1815)}


def test_mvsec_split_convention(tmp_path, monkeypatch):
    # deliberately changed: one frame range per sequence and numpy's shuffle became DDES's separate
    # training / test ranges and Python's seeded shuffle
    import training.data as d
    from runtime.data.synth import SynthConfig, write_mvsec

    for n in (1, 2, 3):
        write_mvsec(SynthConfig(seed=n, seconds=0.6, height=24, width=32), tmp_path / "mvsec", f"indoor_flying{n}")
    monkeypatch.setattr(d, "DDES_TEST_FRAMES", {1: (4, 11), 2: (2, 9), 3: (5, 12)})
    monkeypatch.setattr(d, "DDES_TRAIN_FRAMES", {1: (1, 5), 2: (2, 10), 3: (3, 9)})
    monkeypatch.setattr(d, "MVSEC_VAL_SIZE", 3)
    assert stereo_source_kind(str(tmp_path)) == "mvsec"
    opts = dict(height=24, width=32, encoding="sbt", bins=5, window_us=50_000, length=3, stride=1, burn_in=1)
    data = d.mvsec_stereo(tmp_path, 1, **opts)
    assert [s.name for s in data.train] == ["indoor_flying2", "indoor_flying3"]
    # the training frames with ground truth (rows 2..9 and 3..8), one burn-in window before the first
    assert data.train[0].gt_index.tolist() == [-1, *range(2, 10)]
    assert data.train[1].gt_index.tolist() == [-1, *range(3, 9)]
    assert not data.train[0].has_gt[0] and np.isnan(data.train[0].disparity[0]).all()
    val_frames, test_frames = d.ddes_held_out(range(4, 11), 3)
    held = data.val[0]
    assert sorted(int(held.gt_index[s.score_from]) for s in data.val_segments) == sorted(val_frames)
    assert all(s.end - s.start == 3 and s.score_from == s.end - 1 for s in data.val_segments)
    test = d.mvsec_stereo(tmp_path, 1, part="test", **opts)
    assert sorted(int(test.val[0].gt_index[s.score_from]) for s in test.val_segments) == sorted(test_frames)
    split3 = d.mvsec_stereo(tmp_path, 3, **opts)  # trains on 1 with its training frames, tests on 3's test frames
    assert [s.name for s in split3.train] == ["indoor_flying1", "indoor_flying2"]
    assert split3.train[0].gt_index[split3.train[0].has_gt].tolist() == [1, 2, 3, 4]
    val3, _ = d.ddes_held_out(range(5, 12), 3)
    assert sorted(int(split3.val[0].gt_index[s.score_from]) for s in split3.val_segments) == sorted(val3)
    with pytest.raises(TrainError, match="indoor_flying2"):
        (tmp_path / "mvsec" / "indoor_flying2_data.hdf5").unlink()
        d.mvsec_stereo(tmp_path, 1, **opts)


def test_mvsec_raw_files_need_their_maps(tmp_path, monkeypatch):
    import training.data as d
    from tests.test_data_mvsec import write_maps, write_mvsec_like

    (tmp_path / "data").mkdir()
    for n in (1, 2, 3):
        write_mvsec_like(tmp_path / "data", name=f"indoor_flying{n}")
    monkeypatch.setattr(d, "DDES_TEST_FRAMES", {1: (1, 4)})
    monkeypatch.setattr(d, "DDES_TRAIN_FRAMES", {2: (0, 4), 3: (0, 4)})
    monkeypatch.setattr(d, "MVSEC_VAL_SIZE", 2)
    opts = dict(height=12, width=16, encoding="sbt", bins=5, window_us=50_000, length=2, stride=1, burn_in=1)
    with pytest.raises(TrainError, match=r"raw MVSEC events need rectification.*--calib DIR.*--no-rectify"):
        d.mvsec_stereo(tmp_path, 1, **opts)
    assert len(d.mvsec_stereo(tmp_path, 1, real=d.RealOptions(rectify=False), **opts).val_segments) == 2
    write_maps(tmp_path / "calib" / "indoor_flying_calib", dx=0.4)
    data = d.mvsec_stereo(tmp_path, 1, **opts)  # maps found under the data root
    assert len(data.train) == 2 and "rectification as found" in data.description
    data = d.mvsec_stereo(tmp_path, 1, real=d.RealOptions(calib=str(tmp_path / "calib" / "indoor_flying_calib"),
                                                         fb=10.0, gt_protocol="ddes-full"), **opts)
    d_gt = data.train[0].disparity[data.train[0].has_gt]
    np.testing.assert_allclose(d_gt[:, 1:], np.round(7 * 10.0 / 2.0) / 7, rtol=1e-6)  # fB 10, depth 2 m, 1/7 px


def test_dsec_folders(tmp_path):
    from runtime.data.sources import open_recording
    from tests.test_data_dsec import T_OFFSET, identity_map, write_sequence
    from training.dsec_data import dsec_stereo

    for i, seed in enumerate((5, 6)):
        mem = open_recording(seed=seed, seconds=0.4, height=24, width=32)
        disp = [mem.disparity(k) for k in range(len(mem.gt_timestamps_us))]
        write_sequence(str(tmp_path / f"seq_{i}"), mem.data.events, 24, 32, maps=identity_map(24, 32),
                       disparities=disp, disp_ts=mem.gt_timestamps_us + T_OFFSET)
    assert stereo_source_kind(str(tmp_path)) == "dsec"
    data = dsec_stereo(tmp_path, encoding="sbt", bins=5, window_us=50_000, length=2, stride=1, burn_in=1)
    assert [s.name for s in data.train] == ["seq_0"] and [s.name for s in data.val] == ["seq_1"]
    assert np.isfinite(data.train[0].disparity).any()


def test_dsec_10hz_ground_truth_tiles_and_scores_only_its_windows(tmp_path):
    from runtime.data.sources import open_recording
    from runtime.metrics import stereo_errors
    from tests.test_data_dsec import T_OFFSET, identity_map, write_sequence
    from training.data import Segment, StereoData
    from training.dsec_data import dsec_stereo

    for i, seed in enumerate((5, 6)):
        mem = open_recording(seed=seed, seconds=0.6, height=24, width=32)
        keep = np.arange(1, len(mem.gt_timestamps_us), 2)  # 10 Hz: every other 50 ms map
        write_sequence(str(tmp_path / f"seq_{i}"), mem.data.events, 24, 32, maps=identity_map(24, 32),
                       disparities=[mem.disparity(k) for k in keep], disp_ts=mem.gt_timestamps_us[keep] + T_OFFSET)
    data = dsec_stereo(tmp_path, encoding="sbt", bins=5, window_us=50_000, length=2, stride=1, burn_in=1)
    seq = data.train[0]
    assert len(seq) == 12 and seq.has_gt.tolist() == [False, True] * 6  # every window, every other with gt
    assert np.isnan(seq.disparity[~seq.has_gt]).all() and np.isfinite(seq.disparity[seq.has_gt]).any()
    assert [s for _, s in data.samples] == [0, 2, 4, 6, 8, 10]  # the loss window (after burn-in) has gt
    # held-out scoring counts only the windows with ground truth
    from training.evaluate import constant_baseline

    out = constant_baseline(StereoData(data.train, data.val, 2, 1, [Segment(0, 0, 12, 0)], burn_in=1), 3.0)
    want = [stereo_errors(np.full((24, 32), 3.0, np.float32), d, seq.fb) for d in data.val[0].disparity[1::2]]
    assert out["windows"] == 6 and out["valid_pixels"] == sum(e.valid for e in want)
    # and so does streaming a model over it (training.validation)
    from types import SimpleNamespace

    from training.validation import evaluate_stereo

    class Constant:
        genotype = SimpleNamespace(input=SimpleNamespace(height=24, width=32))

        def spiking_neurons(self):
            return 0

        def initial_state(self, n):
            return {}

        def __call__(self, inputs, state):
            return {"disparity": torch.full((len(inputs["left"]), 24, 32), 3.0), "spikes": {}}, state

    got = evaluate_stereo(Constant(), StereoData(data.train, data.val, 2, 1, [Segment(0, 0, 12, 0)], burn_in=1),
                          SimpleNamespace(eval_batch_size=4))
    assert got["windows"] == 6 and got["one_pixel_accuracy_pct"] == pytest.approx(out["one_pixel_accuracy_pct"])


def test_cli_real_data_options(tmp_path, capsys):
    from tests.test_data_mvsec import write_mvsec_like
    from training.train import main

    small = [a for k, v in SMALL["stereo_small"].items() for a in ("--set", f"{k}={v}")]
    base = [str(GENOTYPES / "stereo_small.yaml"), *small, "--out", str(tmp_path / "r"), "--epochs", "1"]
    for n in (1, 2, 3):
        write_mvsec_like(tmp_path, name=f"indoor_flying{n}")
    rc = main([*base, "--data", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and "\n" not in err and "raw MVSEC events need rectification" in err
    rc = main([*base, "--data", "synthetic", "--fb", "3"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "apply to MVSEC and DSEC data" in err
    rc = main([*base, "--data", str(tmp_path), "--photo-fraction", "1"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "--photo-fraction applies to --data synthetic" in err, err
    rc = main([*base, "--data", str(tmp_path), "--photo-augment", "1"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "--photo-augment applies to --data synthetic" in err, err
    rc = main([*base, "--data", str(tmp_path), "--photo-variations", "turn"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "--photo-variations" in err, err
    for textures in ("train_more", "train_most"):
        rc = main([*base, "--data", str(tmp_path), "--train-textures", textures])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and "\n" not in err and "--train-textures applies to --data synthetic" in err, err


def test_search_takes_the_real_data_options(tmp_path, capsys):
    from tests.test_data_mvsec import write_mvsec_like
    from training.data import RealOptions
    from training.search.bilevel import SearchConfig
    from training.search.cli import main, parser
    from training.search.snasnet import _real

    args = parser().parse_args(["snasnet", "g.yaml", "--cell", "c", "--out", "o", "--no-rectify", "--gt", "ddes",
                                "--fb", "2"])
    assert _real(args) == RealOptions(rectify=False, fb=2.0, gt_protocol="ddes")
    args = parser().parse_args(["spikedhs", "s.yaml", "--out", "o", "--calib", "C"])
    fields = SearchConfig.__dataclass_fields__
    sc = SearchConfig(**{k: v for k, v in vars(args).items() if k in fields and v is not None})
    assert (sc.calib, sc.rectify, sc.fb, sc.gt) == ("C", True, None, "full")
    for n in (1, 2, 3):
        write_mvsec_like(tmp_path, name=f"indoor_flying{n}")
    rc = main(["snasnet", str(GENOTYPES / "stereo_small.yaml"), "--cell", "feature", "--input-op", "conv1x1",
               "--out", str(tmp_path / "o"), "--candidates", "1", "--batch", "2", "--steps", "2", "--quiet",
               "--set", "input.height=12", "--set", "input.width=16", "--data", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "raw MVSEC events need rectification" in err and "\n" not in err
