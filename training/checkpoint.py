"""Checkpoints: written atomically, loadable with ``torch.load(weights_only=True)``.

A checkpoint is a dict::

    model      the model's state_dict (what ``python -m compiler.build --weights`` exports)
    optimizer  the optimiser's state_dict;  scheduler: the schedule's state_dict
    epoch      epochs completed;  best: {"metric", "value", "epoch"} of the best validation so far
    rng        {"torch": ByteTensor, "numpy": {...}, "python": {...}}: the global RNG states
    genotype   the resolved genotype as YAML text (with any search results written back)
    config     the resolved training configuration (plain data)
    search     per method (dgs, tps, hns) its state: architecture weights, optimisers, history
    history    one dict of metrics per epoch
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compiler.errors import unreadable_checkpoint
from runtime.core import atomic
from runtime.core.atomic import write_atomic
from runtime.core.errors import ArgumentParser, run_main

from .errors import TrainError


def _unwritable(path: Path, exc: OSError) -> TrainError:
    return TrainError(f"{path}: cannot write it ({exc.strerror or exc}); the file as it was before is intact",
                      "free disk space or fix the folder's permissions, then --resume")


# what torch.save's zip writer (caffe2's PyTorchStreamWriter) says when a write fails (a full disk): a
# RuntimeError, not an OSError
ZIP_WRITER_FAILURES = ("inline_container", "PytorchStreamWriter", "PyTorchStreamWriter", "file write failed",
                       "unexpected pos")


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename it over ``path``
    (``runtime.core.atomic``). A failure (a full disk, also when torch's zip writer says so with a
    ``RuntimeError``) is a ``TrainError`` and leaves ``path`` as it was, with no temporary file."""
    path = Path(path)
    try:
        write_atomic(path, lambda f: torch.save(obj, f))
    except OSError as exc:
        raise _unwritable(path, exc) from None
    except RuntimeError as exc:
        if not any(marker in str(exc) for marker in ZIP_WRITER_FAILURES):
            raise
        raise _unwritable(path, OSError(f"torch's zip writer failed, the disk may be full: "
                                        f"{' '.join(str(exc).split())[:160]}")) from None


def write_text_atomic(text: str, path: str | Path) -> None:
    """Write text atomically (``runtime.core.atomic``); a failure is a ``TrainError``, ``path`` is left as it was."""
    write_bytes_atomic(text.encode("utf-8"), path)


def write_bytes_atomic(data: bytes, path: str | Path) -> None:
    """Write bytes atomically (``runtime.core.atomic``); a failure is a ``TrainError``, ``path`` is left as it was."""
    path = Path(path)
    try:
        atomic.write_bytes_atomic(path, data)
    except OSError as exc:
        raise _unwritable(path, exc) from None


def load(path: str | Path) -> dict:
    """Read a training checkpoint (weights only: no code runs). Raises TrainError."""
    path = Path(path)
    if not path.exists():
        raise TrainError(f"{path}: no such checkpoint", "train first, or give the run folder's last.pt")
    if path.is_dir():
        raise TrainError(f"{path}: is a folder, not a checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for unreadable files
        raise TrainError(f"{path}: {unreadable_checkpoint(str(path), exc)}") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise TrainError(f"{path}: not a training checkpoint (no 'model' entry)")
    return ckpt


def rng_state() -> dict:
    """torch, numpy and python global RNG states, as tensors, lists and numbers only."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached": float(cached)},
            "python": {"version": version, "internal": list(internal), "gauss": gauss}}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))


# What ``--resume`` needs of a checkpoint (``strip`` drops most of it).
RESUME_KEYS = ("model", "optimizer", "scheduler", "epoch", "best", "rng", "config", "genotype", "genotype_start")


def check_resumable(ck: dict, path: str | Path, fields: set[str]) -> None:
    """Refuse a checkpoint ``--resume`` cannot continue exactly: a stripped one, one whose entries have
    the wrong types, whose configuration has options this version does not know (``fields``: the
    options it does), or whose weights are not finite. Raises ``TrainError``."""
    missing = [k for k in RESUME_KEYS if k not in ck]
    if missing:
        stripped = " (a stripped checkpoint: it exports and evaluates, but cannot be resumed)" \
            if "optimizer" in missing else ""
        raise TrainError(f"{path}: lacks {', '.join(missing)}{stripped}",
                         "resume from the run folder's last.pt, or start over with --overwrite")
    types = {"model": dict, "optimizer": dict, "scheduler": dict, "best": dict, "rng": dict, "config": dict,
             "genotype": str, "genotype_start": str}
    for key, kind in types.items():
        if not isinstance(ck[key], kind):
            raise TrainError(f"{path}: entry {key!r} is a {type(ck[key]).__name__}, expected a {kind.__name__}")
    if not isinstance(ck["epoch"], int) or ck["epoch"] < 0:
        raise TrainError(f"{path}: entry 'epoch' is {ck['epoch']!r}, expected a count of epochs")
    unknown = sorted(str(k) for k in ck["config"] if k not in fields)
    if unknown:
        raise TrainError(f"{path}: its configuration has an unknown option {unknown[0]!r}",
                         "resume with the version of the code that wrote it")
    check_weights(ck["model"], path)


def check_weights(state: Any, path: str | Path) -> None:
    """A state_dict of tensors with finite floating-point values; raises ``TrainError`` naming the first
    entry that is not."""
    if not isinstance(state, dict):
        raise TrainError(f"{path}: 'model' is a {type(state).__name__}, expected a state_dict")
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise TrainError(f"{path}: model entry {key!r} is a {type(value).__name__}, not a tensor")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise TrainError(f"{path}: model tensor {key!r} holds {bad} non-finite values (NaN or inf)",
                             "resume from an earlier checkpoint (best.pt or a copy) with a lower --lr")


def strip(src: str | Path, dst: str | Path) -> dict:
    """Keep what deployment and evaluation need (model, genotype, config, epoch, best, history);
    drop optimiser, schedule, RNG and search state. The result still loads with ``compiler.build --weights``."""
    dst = Path(dst)
    if dst.is_dir():
        raise TrainError(f"{dst}: is a folder", f"give a file name, e.g. {dst / Path(src).name}")
    ck = load(src)
    keep = {k: ck[k] for k in ("model", "genotype", "config", "epoch", "best", "history") if k in ck}
    save_atomic(keep, dst)
    return keep


def average(srcs: list[str | Path], dst: str | Path) -> dict:
    """The mean of several checkpoints' weights (stochastic weight averaging, Izmailov et al. 2018: the
    epochs of one run, or of runs that continue each other, average to a point nearer the middle of the
    basin they share). Every floating-point tensor is averaged in float64 and stored in its own type
    (BatchNorm's running averages included); integer buffers (BatchNorm's batch count) are the last
    source's. The sources must hold one genotype and the same tensors. Written stripped, as ``strip``
    writes, from the last source, with ``averaged_from`` naming the sources and their epochs."""
    dst = Path(dst)
    if dst.is_dir():
        raise TrainError(f"{dst}: is a folder", "give a file name, e.g. averaged.pt")
    if len(srcs) < 2:
        raise TrainError("average needs at least two checkpoints", "give the checkpoints to average, then DST")
    if any(Path(src).resolve() == dst.resolve() for src in srcs):
        raise TrainError(f"{dst}: is one of the checkpoints averaged (it would be replaced)",
                         "write the average to a new file")
    cks = []
    for src in srcs:
        ck = load(src)
        check_weights(ck["model"], src)
        cks.append(ck)
    first, last = cks[0], cks[-1]
    for src, ck in zip(srcs[1:], cks[1:], strict=True):
        if ck.get("genotype") != first.get("genotype"):
            raise TrainError(f"{src}: its genotype differs from {srcs[0]}'s",
                             "average checkpoints of one genotype (the epochs of a run, or runs that continue it)")
        if ck["model"].keys() != first["model"].keys():
            extra = sorted(set(ck["model"]) ^ set(first["model"]))[0]
            raise TrainError(f"{src}: its weights do not match {srcs[0]}'s (entry {extra!r} is in one only)")
        for key, value in ck["model"].items():
            ref = first["model"][key]
            if value.shape != ref.shape or value.dtype != ref.dtype:
                raise TrainError(f"{src}: model tensor {key!r} is {value.dtype} {tuple(value.shape)}, "
                                 f"{srcs[0]} has {ref.dtype} {tuple(ref.shape)}")
    model = {}
    for key, value in last["model"].items():
        if value.is_floating_point():
            total = sum(ck["model"][key].to(torch.float64) for ck in cks)
            model[key] = (total / len(cks)).to(value.dtype)
        else:
            model[key] = value
    keep = {k: last[k] for k in ("genotype", "config", "epoch", "history") if k in last}
    keep["model"] = model
    keep["averaged_from"] = [{"path": str(src), "epoch": ck.get("epoch")} for src, ck in zip(srcs, cks, strict=True)]
    save_atomic(keep, dst)
    return keep


def main(argv: list[str] | None = None) -> int:
    """``python -m training.checkpoint strip SRC DST``: a deployable copy of a training checkpoint;
    ``python -m training.checkpoint average SRC SRC [SRC ...] DST``: the mean of their weights (``average``)."""

    p = ArgumentParser(prog="python -m training.checkpoint")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("strip", help="copy a checkpoint without optimiser, schedule and RNG state")
    s.add_argument("src")
    s.add_argument("dst")
    a = sub.add_parser("average", help="the mean of several checkpoints' weights, written stripped")
    a.add_argument("paths", nargs="+", metavar="SRC ... DST", help="two or more checkpoints, then the output file")
    w = sub.add_parser("widen", help="the weights of a trained model in a wider genotype of the same graph, "
                                     "computing what they computed (training.widen)")
    w.add_argument("src")
    w.add_argument("genotype", help="the wide genotype: the trained one with more channels")
    w.add_argument("dst")
    w.add_argument("--seed", type=int, default=0, help="seed of the new channels' initial weights (default 0)")
    w.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value of the wide genotype, as training.train's --set (e.g. neuron.kind=relu "
                        "for a ReLU twin); repeatable")
    args = p.parse_args(argv)

    def body() -> int:
        if args.command == "widen":
            return _widen(args)
        if args.command == "average":
            *srcs, dst = args.paths
            average(srcs, dst)
            print(f"wrote {dst}: the mean of {len(srcs)} checkpoints' weights")
            return 0
        strip(args.src, args.dst)
        print(f"wrote {args.dst} ({Path(args.dst).stat().st_size / 1e6:.2f} MB)")
        return 0

    return run_main(body, (TrainError,))


def _widen(args) -> int:
    from .options import OPTION_RANGES
    from .widen import widen_checkpoint

    low, high, _ = OPTION_RANGES["seed"]  # training.train's range (torch's own error for a huge seed is a traceback)
    if not low <= args.seed <= high:
        raise TrainError(f"--seed must be from {low} to {high}, got {args.seed}")
    if Path(args.dst).resolve() == Path(args.src).resolve():
        raise TrainError(f"{args.dst}: is the checkpoint widened (it would be replaced)", "write to a new file")
    if Path(args.dst).is_dir():
        raise TrainError(f"{args.dst}: is a folder", "give a file name, e.g. wide.pt")
    ck = load(args.src)
    check_weights(ck["model"], args.src)
    out = widen_checkpoint(ck, args.src, args.genotype, args.seed, args.set)
    save_atomic(out["checkpoint"], args.dst)
    before, after = out["params"]
    print(f"wrote {args.dst}: {before:,} -> {after:,} parameters; the two models' outputs differ by at most "
          f"{out['max_difference']:.3g} over 4 steps of random input")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
