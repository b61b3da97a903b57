"""The run folder: its lock, its guard against mixing two runs, and the files that grow epoch by epoch
(``metrics.jsonl`` / ``metrics.csv``, the searchers' ``*.jsonl``, TensorBoard when installed).

Guarantees (docs/reliability.md): a folder that holds a run is refused without ``--resume`` or
``--overwrite``; while a run is alive its folder is locked (``fcntl.flock`` on ``.run.lock``: the kernel
releases it when the process dies, so a lock left by a killed run is recognised as stale and taken
over); a metrics row is one ``write`` of a whole line, fsynced, and on resume every ``*.jsonl`` log is cut
back to the epochs of the checkpoint, which also removes a torn last line.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import math
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import checkpoint as ckpt_io
from .errors import TrainError

LOCK = ".run.lock"
# Files a run writes into its folder (the searchers' logs, the architecture search's too).
RUN_FILES = ("last.pt", "best.pt", "metrics.jsonl", "metrics.csv", "config.yaml", "genotype.yaml", "searched.yaml",
             "dgs.jsonl", "tps.jsonl", "hns.jsonl", "arch.jsonl", "architecture.png", "snasnet.jsonl", "tensorboard")
RESTATED = ("config.yaml", "genotype.yaml")  # written first, from the command line alone
LOGS = ("metrics.jsonl", "dgs.jsonl", "tps.jsonl", "hns.jsonl", "arch.jsonl")


def append_line(path: Path, text: str) -> None:
    """Append one line with a single ``write`` and fsync it (a crash leaves at most a torn last line,
    which ``trim_log`` removes). The one place a log row is written (tests patch it)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(text + "\n")
        f.flush()
        os.fsync(f.fileno())


def append_row(path: Path, row: dict) -> None:
    """One JSON row appended to a ``*.jsonl`` log (``append_line``); a failure (a full disk) is a
    ``TrainError`` that says the checkpoints are intact."""
    try:
        append_line(path, json.dumps(row))
    except OSError as exc:
        raise TrainError(f"{path}: cannot write it ({exc.strerror or exc}); the checkpoints are intact",
                         "free disk space, then --resume") from None


def read_rows(path: Path) -> list[dict]:
    """The rows of a ``*.jsonl`` log that parse as JSON objects (a torn or damaged line is skipped)."""
    rows = []
    if path.exists():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                row = json.loads(line)
                if isinstance(row, dict):
                    rows.append(row)
    return rows


def trim_log(path: Path, epochs: int) -> None:
    """Keep the rows of epochs ``<= epochs`` (those the checkpoint holds), drop torn lines; atomic."""
    if not path.exists():
        return
    rows = [r for r in read_rows(path) if not isinstance(r.get("epoch"), int) or r["epoch"] <= epochs]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if text != path.read_text(encoding="utf-8", errors="replace"):
        ckpt_io.write_text_atomic(text, path)


class MetricsLog:
    """One row per epoch to ``metrics.jsonl`` and ``metrics.csv`` (and TensorBoard when installed)."""

    def __init__(self, out: Path, tensorboard: bool = True):
        self.out = out
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(str(out / "tensorboard"))
            except Exception:  # noqa: BLE001 - tensorboard is optional
                self.writer = None

    @staticmethod
    def flat(row: dict, prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in row.items():
            if isinstance(v, dict):
                out.update(MetricsLog.flat(v, f"{prefix}{k}."))
            elif isinstance(v, (int, float, str)) or v is None:
                out[f"{prefix}{k}"] = v
        return out

    def write(self, row: dict) -> None:
        append_row(self.out / "metrics.jsonl", row)
        self.write_csv()
        if self.writer is not None:
            for k, v in self.flat(row).items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    self.writer.add_scalar(k, v, row.get("epoch", 0))
            self.writer.flush()

    def write_csv(self) -> None:
        """``metrics.csv`` from the rows of ``metrics.jsonl``."""
        rows = [self.flat(r) for r in read_rows(self.out / "metrics.jsonl")]
        keys: list[str] = []
        for r in rows:
            keys += [k for k in r if k not in keys]
        lines = [",".join(keys)] + [",".join("" if r.get(k) is None else str(r[k]) for k in keys) for r in rows]
        ckpt_io.write_text_atomic("\n".join(lines) + "\n", self.out / "metrics.csv")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def repair(out: Path, epochs: int, pending: bool = False) -> None:
    """On resume from a checkpoint of ``epochs`` epochs: cut every log back to them (rows of an epoch the
    checkpoint does not hold, and a torn last line, go) and rewrite ``metrics.csv`` to match. ``pending``: the
    checkpoint holds the last epoch's training but not its validation (``Trainer.fit``), so its metrics row,
    which the resumed run writes after validating, goes too; the searchers' rows of its training stay."""
    for name in LOGS:
        trim_log(out / name, epochs - 1 if pending and name == "metrics.jsonl" else epochs)
    if (out / "metrics.jsonl").exists():
        MetricsLog(out, tensorboard=False).write_csv()


def prepare(out: Path, *, resume: bool, overwrite: bool, resumable: bool = True) -> list[str]:
    """Check the run folder before a run writes into it (the lock is held): refuse a folder that holds a
    run unless ``resume`` or ``overwrite``; with ``overwrite`` delete the run's files. Temporary files
    a killed run left are removed. ``resumable``: whether the command has ``--resume`` at all (the
    refusal's hint). Returns what was done, for the log."""
    if resume and overwrite:
        raise TrainError("--resume and --overwrite exclude each other", "give one of them")
    done = []
    for tmp in out.glob(".*.tmp"):
        if any(tmp.name.startswith(f".{name}.") for name in RUN_FILES):
            tmp.unlink(missing_ok=True)
            done.append(f"removed {tmp.name}, left by an interrupted write")
    present = [name for name in RUN_FILES if (out / name).exists()]
    if resume:
        if not (out / "last.pt").exists():
            hint = "start over with --overwrite" if present else "start the run without --resume first"
            raise TrainError(f"{out}: no last.pt to resume from (the run never finished an epoch)", hint)
        return done
    if not overwrite and not [name for name in present if name not in RESTATED]:
        foreign = not_ours(out, present)
        if foreign:  # a user's own file of that name: never overwritten in silence
            raise TrainError(f"{out}: holds {' and '.join(foreign)} that no run wrote (a run restates both at its "
                             "start)", "choose another --out, or --overwrite to replace them")
        return done  # only what a start writes again from its command line: nothing to lose
    if present and not overwrite:
        raise TrainError(f"{out}: holds a run ({', '.join(present)})",
                         ("continue it with --resume, or start over" if resumable else "start over")
                         + " with --overwrite (deletes those files), or choose another --out")
    for name in present:
        target = out / name
        shutil.rmtree(target) if target.is_dir() and not target.is_symlink() else target.unlink()
    if present:
        done.append(f"--overwrite: deleted {', '.join(present)}")
    return done


CONFIG_KEYS = ({"config", "data", "world_size"}, {"search", "train"})  # config.yaml of training.train, search


def not_ours(out: Path, present: list[str]) -> list[str]:
    """Which of the restated files in ``out`` a run did not write: a config.yaml that is not a run's
    (its top-level keys), a genotype.yaml without a run's config.yaml beside it."""
    import yaml

    config = out / "config.yaml"
    ours = False
    if "config.yaml" in present:
        try:
            doc = yaml.safe_load(config.read_text(encoding="utf-8")) if config.is_file() else None
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            doc = None
        ours = isinstance(doc, dict) and set(doc) in CONFIG_KEYS
    return [name for name in RESTATED if name in present and not ours]


@contextlib.contextmanager
def claim(out: Path, *, resume: bool, overwrite: bool, log=print, resumable: bool = True) -> Iterator[None]:
    """The run folder for the life of a run, the way every command that writes one takes it
    (``training.train``, both methods of ``training.search``): on the main process (``RANK`` 0, or no
    ``torchrun``) hold its ``RunLock`` and check it with ``prepare``; the lock is released when the run
    ends, however it ends. Notes (a stale lock taken over, files deleted by ``overwrite``) go to ``log``."""
    lock = RunLock(out) if int(os.environ.get("RANK", "0")) == 0 else None
    if lock is not None:
        note = lock.acquire()
        if note:
            log(f"{out}: {note}")
    try:
        if lock is not None:
            for done in prepare(out, resume=resume, overwrite=overwrite, resumable=resumable):
                log(f"{out}: {done}")
        yield
    except TrainError:  # refused (bad input, nothing to resume): a folder this start made and left
        if lock is not None:  # empty goes again; after a crash the folder stays as it is
            lock.release(remove_if_created=True)
        raise
    finally:
        if lock is not None:
            lock.release()


class RunLock:
    """An exclusive lock on a run folder for the life of a run (``.run.lock`` holds who has it).

    ``fcntl.flock`` is released by the kernel when its process dies, so a lock file whose lock can be
    taken is stale (its run was killed) and is taken over; one whose lock cannot be taken belongs to a
    live run, and the folder is refused. The lock works between processes of one host."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.path = self.out / LOCK
        self.fd: int | None = None
        self.created = False  # whether acquire made the folder (removed again if a refused start left it empty)

    def acquire(self) -> str | None:
        """Take the lock; returns a note when it took over a stale one. Raises ``TrainError`` when a
        live run holds it."""
        try:
            self.created = not self.out.exists()
            if self.out.exists() and not self.out.is_dir():
                raise TrainError(f"--out {self.out}: is a file, not a folder", "choose a folder for the run")
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrainError(f"--out {self.out}: cannot create the run folder ({exc.strerror or exc})",
                             "choose a folder you can write") from None
        for _ in range(10):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise TrainError(f"{self.path}: cannot open the run's lock file ({exc.strerror or exc})",
                                 "remove what is at that path, or choose another --out") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read(fd)
                os.close(fd)
                raise TrainError(f"{self.out}: another run is writing to this folder ({holder or 'unknown'})",
                                 "wait for it to end, or choose another --out") from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the holder ended and removed the file between our open and flock: try again
                os.close(fd)
                continue
            stale = _read(fd)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, since "
                      f"{datetime.datetime.now().isoformat(timespec='seconds')}\n".encode(), 0)
            self.fd = fd
            return f"took over a stale lock ({stale}): that run ended without releasing it" if stale else None
        raise TrainError(f"{self.path}: cannot take the lock (it keeps changing)")

    def release(self, remove_if_created: bool = False) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self.fd)
        self.fd = None
        if remove_if_created and self.created:
            with contextlib.suppress(OSError):
                self.out.rmdir()  # only succeeds while the folder is empty


def _read(fd: int) -> str:
    try:
        return os.pread(fd, 400, 0).decode("utf-8", "replace").strip()
    except OSError:
        return ""
