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

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from runtime.errors import first_line

from .errors import TrainError


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text_atomic(text: str, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


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
        first = first_line(exc)
        raise TrainError(f"{path}: not a readable checkpoint ({first})") from None
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


def strip(src: str | Path, dst: str | Path) -> dict:
    """Keep what deployment and evaluation need (model, genotype, config, epoch, best, history);
    drop optimiser, schedule, RNG and search state. The result still loads with ``compiler.build --weights``."""
    ck = load(src)
    keep = {k: ck[k] for k in ("model", "genotype", "config", "epoch", "best", "history") if k in ck}
    save_atomic(keep, dst)
    return keep


def main(argv: list[str] | None = None) -> int:
    """``python -m training.checkpoint strip SRC DST``: a deployable copy of a training checkpoint."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m training.checkpoint")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("strip", help="copy a checkpoint without optimiser, schedule and RNG state")
    s.add_argument("src")
    s.add_argument("dst")
    args = p.parse_args(argv)
    try:
        strip(args.src, args.dst)
    except TrainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.dst} ({Path(args.dst).stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
