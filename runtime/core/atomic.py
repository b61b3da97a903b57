"""Atomic file writing: the one way the project replaces a file (docs/reliability.md).

A file is written to a temporary file in the same folder, flushed and fsynced, then renamed over
its final name (``os.replace``, atomic on POSIX), and the folder is fsynced so the rename survives
a power cut. A reader therefore sees the old file or the new one, never a partial one; a failed
write (a full disk, a crash, Ctrl-C) leaves the old file as it was and removes the temporary one.
Numpy only (the runtime never imports torch); training and the compiler use it too.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # a folder that cannot be opened for reading: the rename still happened
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on folders
        pass
    finally:
        os.close(fd)


def commit(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Make a fully written temporary file the file ``path``: fsync it, rename it, fsync the folder.

    The one place a rename over a final name happens (tests patch it to simulate crashes)."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(Path(path).parent)


def _umask() -> int:
    """The process's umask, read without changing it where Linux shows it (``/proc/self/status``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: the classic read-by-setting, restored at once
    os.umask(mask)
    return mask


def _final_mode(path: Path) -> int:
    """The permissions the finished file gets: those of the file it replaces, else what ``open`` would
    give a new file (0666 less the umask). ``mkstemp``'s 0600 would otherwise make every file the
    project writes unreadable to other users (a model server running as another user, a group)."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[str]:
    """Yield a temporary path in ``path``'s folder to write; on success it replaces ``path``.

    For writers that want a file name (h5py). An existing folder at ``path`` is an
    ``IsADirectoryError`` before anything is written; on any failure the temporary file is removed
    and ``path`` is untouched."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(21, "Is a directory", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    try:
        os.fchmod(fd, _final_mode(path))
    finally:
        os.close(fd)
    try:
        yield tmp
        commit(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_atomic(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(f)`` on a binary file object, then put the result at ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)
        f.flush()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    write_atomic(path, lambda f: f.write(data))


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))
