"""The one error type the runtime raises for bad input (model, data, options).

The command line prints it as ``error: <where>: <what>`` and exits with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from collections.abc import Callable, Iterator


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


class ArgumentParser(argparse.ArgumentParser):
    """``argparse`` with the project's error form: a bad or missing option is one line, ``error: ...``,
    exit status 2 (the usage stays in ``--help``)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {' '.join(message.split())} (see {self.prog} --help)\n")


def int_between(low: int, high: int | None = None) -> Callable[[str], int]:
    """An ``argparse`` type: an integer from ``low`` to ``high`` (no bound: None); anything else is the
    parser's one-line error."""
    def integer(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < low or (high is not None and value > high):
            bound = f"at least {low}" if high is None else f"from {low} to {high}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value
    return integer


@contextlib.contextmanager
def quiet_warnings() -> Iterator[None]:
    """Keep library warnings (numpy's floating-point RuntimeWarnings, torch's and ONNX's UserWarnings)
    off a command line's stderr: what they would say, the project checks, counts and reports itself
    (docs/reliability.md). Left alone when warnings were asked for (``python -W``, ``PYTHONWARNINGS``)."""
    if sys.warnoptions:
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def run_main(body: Callable[[], int], errors: tuple[type[BaseException], ...],
             interrupted: str = "interrupted") -> int:
    """A command line's exit code: ``body()``'s, or 2 with ``error: <one line>`` on stderr for an
    expected error (``errors``), or 130 after Ctrl-C; library warnings stay off stderr
    (``quiet_warnings``). The compiler's and training's command lines use it."""
    try:
        with quiet_warnings():
            return body()
    except errors as exc:
        print(f"error: {first_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"error: {interrupted}", file=sys.stderr)
        return 130
