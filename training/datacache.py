"""A cache of encoded synthetic recordings, so that runs on the same seeds do not generate them again.

Generating and encoding the synthetic training set is the slowest part of starting a stereo run (449 s
for the 64 training recordings of 2 s and 4 held-out ones of the shipped models' runs, beside another
job; 1.2 s read back from the cache); the SNN and its ReLU twin, a resumed run or a second experiment use
the same recordings. Each encoded recording is kept
as one ``.npz`` file (no pickled objects: a shared cache folder cannot run code) named by a hash of
everything it is made from: the seed, its role (training or held-out), the generator's settings, the
size, the encoding, and the bytes of the generator's own code and textures (``runtime/data`` and this
package's ``data.py``), so a change to any of them makes new entries instead of reading stale ones.

Where: ``$SNN_DATA_CACHE`` (a folder; ``off`` turns the cache off), else ``$XDG_CACHE_HOME`` or
``~/.cache``, then ``snn-toolchain/synthetic``. A file that cannot be read (cut short, another
format) is generated again and replaced; a cache that cannot be written (read-only, full disk) is
skipped with one warning: the run never fails for its cache. Files are written atomically.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from runtime.core.atomic import write_atomic
from runtime.core.errors import first_line

log = logging.getLogger(__name__)

ENV = "SNN_DATA_CACHE"
FORMAT = 1
_ROOT = Path(__file__).resolve().parents[1]
_SOURCES = (_ROOT / "runtime" / "data", _ROOT / "training" / "data.py")
FIELDS = ("left", "right", "disparity", "has_gt", "gt_index")


def cache_dir() -> Path | None:
    """The cache folder, or None where ``$SNN_DATA_CACHE`` is ``off``."""
    env = (os.environ.get(ENV) or "").strip()  # unset and empty alike: the default folder
    if env.lower() in ("off", "0", "no", "false"):
        return None
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "snn-toolchain" / "synthetic"


@functools.lru_cache(maxsize=1)
def source_digest() -> str:
    """sha256 of the generator's code and textures (every file under ``runtime/data``, ``training/data.py``)."""
    h = hashlib.sha256()
    for root in _SOURCES:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*")
                                                     if p.is_file() and "__pycache__" not in p.parts)
        for p in files:
            h.update(str(p.relative_to(_ROOT)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def entry_name(key: dict) -> str:
    text = json.dumps({"format": FORMAT, "source": source_digest(), **key}, sort_keys=True, default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:40] + ".npz"


def _load(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in (*FIELDS, "fb")}
    T = len(arrays["left"])
    if arrays["left"].ndim != 4 or arrays["right"].shape != arrays["left"].shape \
            or arrays["disparity"].shape != (T, *arrays["left"].shape[2:]) \
            or arrays["has_gt"].shape != (T,) or arrays["gt_index"].shape != (T,) or arrays["fb"].shape != ():
        raise ValueError("inconsistent shapes")
    if arrays["left"].dtype not in (np.int8, np.int16) or arrays["right"].dtype != arrays["left"].dtype \
            or arrays["disparity"].dtype != np.float32 or arrays["has_gt"].dtype != np.bool_ \
            or arrays["gt_index"].dtype != np.int64:
        raise ValueError("unexpected types")
    fb = float(arrays.pop("fb"))
    return {**arrays, "fb": None if np.isnan(fb) else fb}


def _save(path: Path, arrays: dict) -> None:
    fb = np.float64(np.nan if arrays["fb"] is None else arrays["fb"])
    write_atomic(path, lambda f: np.savez(f, **{k: arrays[k] for k in FIELDS}, fb=fb))


class Cache:
    """Reads and fills the cache for one data set; counts what it served (``hits``) and made.

    An entry is a dict of ``FIELDS`` (numpy arrays) and ``fb`` (float or None)."""

    def __init__(self, folder: Path | None = None, *, enabled: bool = True):
        self.folder = (folder or cache_dir()) if enabled else None
        self.hits = self.made = 0
        self._write_failed = False

    def get(self, key: dict, make: Callable[[], dict]) -> dict:
        """The entry of ``key``: from the cache, else ``make()`` (then stored)."""
        if self.folder is None:
            self.made += 1
            return make()
        path = self.folder / entry_name(key)
        if path.is_file():
            try:
                arrays = _load(path)
                self.hits += 1
                return arrays
            except Exception as exc:  # cut short, foreign or damaged: made again and replaced
                log.warning("data cache: %s cannot be read (%s); generating it again", path,
                            first_line(exc))
        arrays = make()
        self.made += 1
        if not self._write_failed:
            try:
                _save(path, arrays)
            except OSError as exc:
                self._write_failed = True
                log.warning("data cache: cannot write to %s (%s); this run goes on without storing recordings "
                            "(set %s to another folder, or to off)", self.folder, exc.strerror or exc, ENV)
        return arrays

    def summary(self) -> str:
        if self.folder is None:
            return f"data cache off (${ENV})"
        return f"{self.hits} of {self.hits + self.made} recordings from the cache in {self.folder}"


__all__ = ["Cache", "cache_dir", "entry_name", "source_digest", "ENV", "FIELDS"]
