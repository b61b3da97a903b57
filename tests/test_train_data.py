"""Dataset readers of training: CIFAR pickles, IDX, image folders, MVSEC split, DSEC, synthetic; and
the one-line errors for bad paths and malformed files."""

from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from tests.helpers import GENOTYPES
from training.data import SyntheticSpec, stereo_source_kind, synthetic_stereo
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
    from runtime.sources import open_recording, windows
    from training.data import HELDOUT_SCENE_TYPES

    w = next(iter(windows(open_recording(seed=0, seconds=0.5, height=24, width=32, textures="heldout",
                                         scene_types=HELDOUT_SCENE_TYPES))))
    assert np.array_equal(w.left, data.val[0].left[0])


def test_mvsec_split_convention(tmp_path, monkeypatch):
    import training.data as d
    from runtime.synth import SynthConfig, write_mvsec

    for n in (1, 2, 3):
        write_mvsec(SynthConfig(seed=n, seconds=0.6, height=24, width=32), tmp_path / "mvsec", f"indoor_flying{n}")
    monkeypatch.setattr(d, "MVSEC_FRAMES", {1: (4, 11), 2: (2, 10), 3: (3, 9)})
    monkeypatch.setattr(d, "MVSEC_VAL_SIZE", 3)
    assert stereo_source_kind(str(tmp_path)) == "mvsec"
    data = d.mvsec_stereo(tmp_path, 1, height=24, width=32, encoding="sbt", bins=5, window_us=50_000, length=3,
                          stride=1, burn_in=2)
    assert [s.name for s in data.train] == ["indoor_flying2", "indoor_flying3"]
    assert len(data.train[0]) == 8 and len(data.train[1]) == 6
    assert len(data.val_segments) == 3 and all(s.end - s.start == 3 for s in data.val_segments)
    test = d.mvsec_stereo(tmp_path, 1, height=24, width=32, encoding="sbt", bins=5, window_us=50_000, length=3,
                          stride=1, burn_in=2, part="test")
    frames = {s.score_from for s in data.val_segments} | {s.score_from for s in test.val_segments}
    assert len(frames) == 7  # frames 4..10 split into disjoint validation and test parts
    with pytest.raises(TrainError, match="indoor_flying2"):
        (tmp_path / "mvsec" / "indoor_flying2_data.hdf5").unlink()
        d.mvsec_stereo(tmp_path, 1, height=24, width=32, encoding="sbt", bins=5, window_us=50_000, length=3,
                       stride=1, burn_in=2)


def test_dsec_folders(tmp_path):
    from runtime.sources import open_recording
    from tests.test_data_dsec import T_OFFSET, identity_map, write_sequence
    from training.data import dsec_stereo

    for i, seed in enumerate((5, 6)):
        mem = open_recording(seed=seed, seconds=0.4, height=24, width=32)
        disp = [mem.disparity(k) for k in range(len(mem.gt_timestamps_us))]
        write_sequence(str(tmp_path / f"seq_{i}"), mem.data.events, 24, 32, maps=identity_map(24, 32),
                       disparities=disp, disp_ts=mem.gt_timestamps_us + T_OFFSET)
    assert stereo_source_kind(str(tmp_path)) == "dsec"
    data = dsec_stereo(tmp_path, encoding="sbt", bins=5, window_us=50_000, length=2, stride=1, burn_in=1)
    assert [s.name for s in data.train] == ["seq_0"] and [s.name for s in data.val] == ["seq_1"]
    assert np.isfinite(data.train[0].disparity).any()
