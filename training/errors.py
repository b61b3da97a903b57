"""The one user-facing error of training: bad paths, malformed datasets, bad options."""

from __future__ import annotations


class TrainError(Exception):
    """Something the user can fix; ``str(err)`` is one line, printed as ``error: ...`` by the CLI."""

    def __init__(self, message: str, hint: str | None = None):
        self.message = message
        self.hint = hint
        text = message if not hint else f"{message} (fix: {hint})"
        super().__init__(" ".join(text.split("\n")))
