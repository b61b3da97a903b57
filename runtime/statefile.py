"""State files: what ``--save-state`` writes and ``--load-state`` reads, checked before the first step.

A state file is the ``.npz`` of the carried state (``state_in`` name without the prefix -> array with the
batch axis), written atomically. Reading it refuses, in one line, anything else: a folder, an empty,
truncated or damaged file, a single ``.npy`` array, object arrays; ``check_state`` then compares the
arrays with the model's contract (names, dtypes, shapes, finite values). docs/reliability.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from runtime.contract import ModelSpec
from runtime.core.atomic import write_atomic
from runtime.core.errors import RuntimeInputError, first_line


def check_state(
    spec: ModelSpec, state: Mapping[str, Any], where: str = "state", batch: int = 1
) -> dict[str, np.ndarray]:
    """A state for ``spec`` (name -> array with batch axis), checked before the first step: exactly the
    model's state names, numeric arrays of the state's kind (floating point or integer), shape
    ``(batch, *shape)`` and finite values. Returns contiguous arrays of the state's dtype; raises
    ``RuntimeInputError`` naming the first problem."""
    names = [st.name for st in spec.states]
    missing = [n for n in names if n not in state]
    if missing:
        raise RuntimeInputError(where, f"state {missing[0]!r} missing (the model has {len(names)} state tensors)")
    extra = sorted(str(k) for k in state if k not in names)
    if extra:
        raise RuntimeInputError(where, f"unexpected array {extra[0]!r}: not a state of this model")
    out = {}
    for st in spec.states:
        arr = np.asarray(state[st.name])
        if arr.dtype.kind not in "fiub" or (arr.dtype.kind == "f") != (st.dtype.kind == "f"):
            raise RuntimeInputError(where, f"state {st.name!r} holds {arr.dtype} values, the model's are {st.dtype}")
        if arr.shape != (batch, *st.shape):
            raise RuntimeInputError(
                where, f"state {st.name!r} has shape {arr.shape}, the model's is {(batch, *st.shape)}"
            )
        if arr.dtype.kind == "f":
            with np.errstate(over="ignore"):
                converted = np.ascontiguousarray(arr, dtype=st.dtype)
            bad = int(converted.size - np.count_nonzero(np.isfinite(converted)))
            if bad:
                raise RuntimeInputError(where, f"state {st.name!r} holds {bad} non-finite values (NaN or inf)")
        else:
            converted = np.ascontiguousarray(arr, dtype=st.dtype)
        out[st.name] = converted
    return out


def load_state(path: str) -> dict[str, np.ndarray]:
    """The arrays of a ``--save-state`` file; anything else (a folder, an empty, truncated or non-zip file,
    a single ``.npy`` array, object arrays) is a one-line error. The arrays are checked against the model
    by ``Stream.set_state``."""
    where = f"--load-state {path}"
    p = Path(path)
    if not p.exists():
        raise RuntimeInputError(where, "no such file")
    if not p.is_file():
        raise RuntimeInputError(where, "not a file")
    if p.stat().st_size == 0:
        raise RuntimeInputError(where, "the file is empty")
    try:
        data = np.load(p, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - numpy raises many types (BadZipFile, EOFError, ...) on bad files
        raise RuntimeInputError(where, f"not a state file of --save-state ({first_line(exc)})") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise RuntimeInputError(where, "holds one array (.npy); --load-state takes the .npz that --save-state writes")
    try:
        with data:
            return {k: data[k] for k in data.files}
    except Exception as exc:  # noqa: BLE001 - a damaged member: zlib, zipfile, ValueError, EOFError
        raise RuntimeInputError(where, f"cannot read its arrays ({first_line(exc)})") from None


def save_state(path: str, state: dict[str, np.ndarray]) -> None:
    """Write the state atomically (``runtime.core.atomic``); as ``np.savez``, ``.npz`` is added to a name without it."""
    target = path if path.endswith(".npz") else path + ".npz"
    try:
        write_atomic(target, lambda f: np.savez(f, **state))
    except OSError as exc:
        raise RuntimeInputError(f"--save-state {path}", f"cannot write it ({exc.strerror or exc})") from None
