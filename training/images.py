"""Classification training data: labelled images (digits, CIFAR, IDX files, image folders).

A dataset is a float32 tensor of images (N, C, H, W), normalised with the training set's statistics,
and int64 labels. Nothing downloads: every dataset is read from a path the user gives (or, for the
``digits`` set, bundled with scikit-learn).
"""

from __future__ import annotations

import gzip
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import TrainError


@dataclass
class ClassData:
    """Labelled images: ``x`` float32 (N, C, H, W) normalised, ``y`` int64 (N,)."""

    x: torch.Tensor
    y: torch.Tensor
    classes: int
    name: str

    def __len__(self) -> int:
        return len(self.y)


def _normalise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel standardisation with the training set's mean and std. Inputs (N, C, H, W)."""
    mean = train.mean(axis=(0, 2, 3), keepdims=True)
    std = train.std(axis=(0, 2, 3), keepdims=True) + 1e-6
    return ((train - mean) / std).astype(np.float32), ((test - mean) / std).astype(np.float32)


def _pair(name: str, xtr, ytr, xte, yte, classes: int | None = None) -> tuple[ClassData, ClassData]:
    xtr, xte = _normalise(np.asarray(xtr, np.float32), np.asarray(xte, np.float32))
    ytr, yte = np.asarray(ytr, np.int64), np.asarray(yte, np.int64)
    k = int(classes if classes is not None else max(ytr.max(), yte.max()) + 1)
    return (ClassData(torch.from_numpy(xtr), torch.from_numpy(ytr), k, f"{name} train"),
            ClassData(torch.from_numpy(xte), torch.from_numpy(yte), k, f"{name} test"))


def digits(test_fraction: float = 0.25, seed: int = 0) -> tuple[ClassData, ClassData]:
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes), a fixed stratified split."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise TrainError("the digits set needs scikit-learn", "pip install scikit-learn==1.9.1") from None
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]  # (N, 1, 8, 8)
    y = d.target
    rng = np.random.RandomState(seed)
    test = np.zeros(len(y), bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        test[rng.choice(idx, int(round(len(idx) * test_fraction)), replace=False)] = True
    return _pair("digits", x[~test], y[~test], x[test], y[test], 10)


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except FileNotFoundError:
        raise TrainError(f"{path}: missing file of the CIFAR python layout") from None
    except Exception as exc:  # noqa: BLE001
        raise TrainError(f"{path}: not a CIFAR python pickle ({type(exc).__name__})") from None


def _cifar_images(d: dict, path: Path) -> np.ndarray:
    data = d.get("data")
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072:
        raise TrainError(f"{path}: malformed CIFAR batch: 'data' must be an (N, 3072) uint8 array")
    return data.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0


def cifar(root: Path) -> tuple[ClassData, ClassData]:
    """CIFAR-10 (``data_batch_1..5``, ``test_batch``) or CIFAR-100 (``train``, ``test``), python layout."""
    for sub in (root, root / "cifar-10-batches-py", root / "cifar-100-python"):
        if (sub / "data_batch_1").exists():
            parts = [_unpickle(sub / f"data_batch_{i}") for i in range(1, 6)]
            test = _unpickle(sub / "test_batch")
            xs = [_cifar_images(p, sub) for p in parts]
            ys = []
            for p in parts + [test]:
                if "labels" not in p:
                    raise TrainError(f"{sub}: malformed CIFAR-10 batch: no 'labels'")
            ys = [np.asarray(p["labels"]) for p in parts]
            return _pair("CIFAR-10", np.concatenate(xs), np.concatenate(ys), _cifar_images(test, sub),
                         np.asarray(test["labels"]), 10)
        if (sub / "train").exists() and (sub / "test").exists():
            tr, te = _unpickle(sub / "train"), _unpickle(sub / "test")
            for p in (tr, te):
                if "fine_labels" not in p:
                    raise TrainError(f"{sub}: malformed CIFAR-100 file: no 'fine_labels'")
            return _pair("CIFAR-100", _cifar_images(tr, sub), tr["fine_labels"], _cifar_images(te, sub),
                         te["fine_labels"], 100)
    raise TrainError(f"{root}: not a CIFAR folder", "expected data_batch_1..5 and test_batch (CIFAR-10) "
                     "or train and test (CIFAR-100), as in the python version of the archives")


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST layout, optionally gzipped) as a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise TrainError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise TrainError(f"{path}: not an IDX file (bad magic number)")
    types = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if raw[2] not in types:
        raise TrainError(f"{path}: IDX data type 0x{raw[2]:02x} is unknown")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise TrainError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    dtype = np.dtype(types[raw[2]])
    need = int(np.prod(shape)) * dtype.itemsize
    body = raw[4 + 4 * ndim:]
    if len(body) != need:
        raise TrainError(f"{path}: IDX header says shape {shape} ({need} bytes) but the file has {len(body)}")
    return np.frombuffer(body, dtype).reshape(shape)


def idx(root: Path) -> tuple[ClassData, ClassData]:
    """MNIST-style IDX files: ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-...`` (.gz too)."""
    def find(prefix: str) -> Path:
        for name in (prefix, prefix + ".gz"):
            hits = sorted(root.rglob(name))
            if hits:
                return hits[0]
        raise TrainError(f"{root}: no {prefix}[.gz]", "expected MNIST-style IDX files "
                         "(train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
                         "t10k-labels-idx1-ubyte)")
    arrays = {k: read_idx(find(f"{k}")) for k in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                                  "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
    xtr, ytr = arrays["train-images-idx3-ubyte"], arrays["train-labels-idx1-ubyte"]
    xte, yte = arrays["t10k-images-idx3-ubyte"], arrays["t10k-labels-idx1-ubyte"]
    for x, y, part in ((xtr, ytr, "train"), (xte, yte, "t10k")):
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise TrainError(f"{root}: {part} images {x.shape} and labels {y.shape} do not match",
                             "images must be (N, H, W) and labels (N,)")
    scale = 255.0 if xtr.dtype == np.uint8 else 1.0
    return _pair("IDX", xtr[:, None] / scale, ytr, xte[:, None] / scale, yte)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm")


def image_folder(root: Path) -> tuple[ClassData, ClassData]:
    """``root/train/CLASS/*.png`` and ``root/test/CLASS/*`` (or ``val``); classes sorted by name."""
    try:
        from PIL import Image
    except ImportError:
        raise TrainError("image folders need Pillow", "pip install pillow") from None
    test_dir = next((root / d for d in ("test", "val") if (root / d).is_dir()), None)
    if not (root / "train").is_dir() or test_dir is None:
        raise TrainError(f"{root}: not an image folder dataset", "expected train/CLASS/*.png and test/CLASS/*.png "
                         "(or val/)")
    classes = sorted(d.name for d in (root / "train").iterdir() if d.is_dir())
    if not classes:
        raise TrainError(f"{root / 'train'}: no class folders")

    def load(part: Path) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for c, name in enumerate(classes):
            folder = part / name
            for f in sorted(folder.iterdir()) if folder.is_dir() else []:
                if f.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                try:
                    with Image.open(f) as im:
                        a = np.asarray(im.convert("RGB"), np.float32) / 255.0
                except Exception as exc:  # noqa: BLE001
                    raise TrainError(f"{f}: not a readable image ({type(exc).__name__})") from None
                if xs and a.shape != xs[0].shape:
                    raise TrainError(f"{f}: image is {a.shape[1]}x{a.shape[0]}, others are "
                                     f"{xs[0].shape[1]}x{xs[0].shape[0]}", "resize the images to one size")
                xs.append(a)
                ys.append(c)
        if not xs:
            raise TrainError(f"{part}: no images in the class folders")
        return np.stack(xs).transpose(0, 3, 1, 2), np.asarray(ys)

    xtr, ytr = load(root / "train")
    xte, yte = load(test_dir)
    if xtr.shape[1:] != xte.shape[1:]:
        raise TrainError(f"{root}: train and test images differ in size")
    return _pair(f"images {root.name}", xtr, ytr, xte, yte, len(classes))


def classification_data(source: str) -> tuple[ClassData, ClassData]:
    """``digits``, or a path to CIFAR (python pickles), MNIST-style IDX files or an image folder."""
    if source == "digits":
        return digits()
    root = Path(source)
    if not root.exists():
        raise TrainError(f"{root}: no such file or folder", "give --data digits or a dataset folder")
    if not root.is_dir():
        raise TrainError(f"{root}: expected a dataset folder, not a file")
    if any((root / s).exists() for s in ("data_batch_1", "train", "cifar-10-batches-py", "cifar-100-python")) \
            and not (root / "train").is_dir():
        return cifar(root)
    if (root / "train").is_dir():
        return image_folder(root)
    if any(root.rglob("*idx3-ubyte*")):
        return idx(root)
    raise TrainError(f"{root}: no known dataset layout here", "expected CIFAR python pickles, MNIST-style IDX "
                     "files or an image folder (train/CLASS/*, test/CLASS/*)")


def check_image_shape(data: ClassData, channels: int, height: int, width: int) -> None:
    c, h, w = data.x.shape[1:]
    if (c, h, w) != (channels, height, width):
        raise TrainError(f"{data.name} images are {c}x{h}x{w} (CxHxW) but the genotype takes "
                         f"{channels}x{height}x{width}",
                         f"--set input.channels={c} --set input.height={h} --set input.width={w}")


def augment(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random horizontal flip and random crop after zero padding by ``pad`` (standard CIFAR augmentation)."""
    b, c, h, w = x.shape
    flip = torch.rand(b, generator=gen) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])


__all__ = ["ClassData", "classification_data", "digits", "cifar", "idx", "image_folder", "read_idx",
           "check_image_shape", "augment"]
