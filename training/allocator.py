"""Freed memory kept by the process for its next allocation, instead of given back to the system.

glibc's malloc serves large blocks with ``mmap`` and unmaps them on ``free`` (above a threshold it moves as
blocks are freed), and gives the top of its heap back once more than a threshold is free. A training or
evaluation step allocates and frees the same tensors every step, so every step the kernel maps fresh pages
and zeroes them: page faults, counted as system time (``training.evaluate`` spent about 30 % of its
wall time there, issue 20's twenty-fourth session). With ``SNN_MALLOC=keep`` (the default) the process
serves every block from its heap (``M_MMAP_MAX`` 0), never trims it (``M_TRIM_THRESHOLD`` at its maximum)
and grows it 64 MiB at a time (``M_TOP_PAD``): a step reuses the pages of the step before. Values are
unchanged (it only decides where blocks come from); the resident memory stays at the process's peak
instead of shrinking between steps. ``SNN_MALLOC=system`` leaves malloc as the system set it. Other C
libraries than glibc (macOS, musl) are left as they are, and the log says so.
"""

from __future__ import annotations

import ctypes
import os

from .errors import TrainError

ENV = "SNN_MALLOC"
CHOICES = ("keep", "system")
# mallopt's parameters (glibc's malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4
SETTINGS = ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1), (M_TOP_PAD, 64 << 20))


def choice() -> str:
    """``$SNN_MALLOC`` checked: keep (also when unset or blank) or system."""
    value = (os.environ.get(ENV) or "").strip() or "keep"
    if value not in CHOICES:
        raise TrainError(f"{ENV}={value!r} is not one of {', '.join(CHOICES)}",
                         f"unset it, or {ENV}=system to leave malloc as the system set it")
    return value


def _glibc():
    """The process's C library when it is glibc (it has ``mallopt``), else None."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        return libc
    except (OSError, AttributeError):
        return None


def configure() -> str:
    """Apply ``$SNN_MALLOC`` to this process (again is harmless); returns what was done, for a run's log."""
    if choice() == "system":
        return f"malloc as the system set it ({ENV}=system)"
    libc = _glibc()
    if libc is None:
        return "malloc as the system set it (not glibc)"
    refused = [param for param, value in SETTINGS if libc.mallopt(param, value) != 1]
    if refused:
        return f"malloc partly as the system set it (glibc refused mallopt parameters {refused})"
    return f"malloc keeps freed memory ({ENV}=keep)"
