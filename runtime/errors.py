"""The one error type the runtime raises for bad input (model, data, options).

The command line prints it as ``error: <where>: <what>`` and exits with status 2.
"""

from __future__ import annotations


class RuntimeInputError(Exception):
    """Bad input from the user: a model off the contract, a missing file, a wrong option."""

    def __init__(self, where: str, what: str) -> None:
        super().__init__(f"{where}: {what}")
        self.where = where
        self.what = what


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none), for one-line
    errors. The one place this is written; the compiler and training use it too."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
