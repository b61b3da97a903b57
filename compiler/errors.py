"""The one error type for bad genotypes: it carries where (file, line, key path) and what to do."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class GenotypeError(ValueError):
    """A genotype (or an override of it) is invalid.

    ``str(err)`` is one line: ``FILE:LINE: PATH: WHAT (fix: HINT)``.
    """

    def __init__(self, message: str, *, path: str = "", file: str | None = None,
                 line: int | None = None, hint: str | None = None):
        self.message = message
        self.path = path
        self.file = file
        self.line = line
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.file or "<genotype>"
        if self.line is not None:
            where += f":{self.line}"
        text = f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"
        if self.hint:
            text += f" (fix: {self.hint})"
        return " ".join(text.split("\n"))


def close_match_hint(name: str, choices: Iterable[str], what: str = "") -> str:
    """A hint naming the closest valid names, or listing them all when nothing is close."""
    choices = sorted(set(map(str, choices)))
    close = difflib.get_close_matches(str(name), choices, n=3, cutoff=0.5)
    if close:
        return "did you mean " + " or ".join(repr(c) for c in close) + "?"
    prefix = f"valid {what}: " if what else "valid: "
    return prefix + ", ".join(choices)


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure (``MemoryError``, or torch's ``RuntimeError`` /
    ``torch.OutOfMemoryError`` from its CPU or CUDA allocator): a model under the planner's memory limit
    may still not fit the machine, and that is one line, not a traceback."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(
        s in text for s in ("out of memory", "can't allocate memory", "not enough memory", "failed to allocate",
                            "defaultcpuallocator"))


def unreadable_checkpoint(path: str, exc: BaseException) -> str:
    """Why ``torch.load(path, weights_only=True)`` failed, in words (torch's own first line for a file
    that is no checkpoint at all advises loading it with ``weights_only=False``, which could run code)."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return "not a checkpoint written by torch.save (not a zip archive: damaged, truncated or another format)"
    text = " ".join(str(exc).split())
    if "Weights only load failed" in text or "weights_only" in text:
        return ("it holds objects other than tensors and plain data, which are not loaded (loading them could "
                "run code)")
    return f"damaged or unreadable ({text[:200] or type(exc).__name__})"
