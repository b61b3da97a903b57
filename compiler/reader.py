"""Reading a genotype's raw YAML data with located errors: ``Ctx`` (where each value came from: file,
line, ``--set``), ``MapReader`` (typed getters, unknown keys with close matches), ``check_type`` and
``check_name``. The genotype parser (``compiler.genotype``) and the search-space loader
(``training.search.space``) read through them."""

from __future__ import annotations

import math
import re
from typing import Any

from .errors import GenotypeError, close_match_hint
from .names import RESERVED_NAMES
from .yamlio import join_path


class Ctx:
    """Where values came from: file name, line per key path, and --set overrides."""

    def __init__(self, file: str, lines: dict[str, int], overridden: dict[str, str]):
        self.file = file
        self.lines = lines
        self.overridden = overridden

    def error(self, path: str, message: str, hint: str | None = None) -> GenotypeError:
        for p, text in self.overridden.items():
            created = path not in self.lines and p.startswith((path + ".", path + "["))  # a key --set made
            if path == p or path.startswith((p + ".", p + "[")) or created:
                return GenotypeError(message, path=path, file=f"--set {text}", hint=hint)
        line = None
        probe = path
        while probe:
            if probe in self.lines:
                line = self.lines[probe]
                break
            probe = probe.rsplit(".", 1)[0] if "." in probe else ""
        return GenotypeError(message, path=path, file=self.file, line=line, hint=hint)


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
               dict: "a mapping", list: "a list"}


class MapReader:
    """A mapping being parsed: typed getters, and unknown keys reported with close matches."""

    def __init__(self, ctx: Ctx, data: Any, path: str, allowed: tuple[str, ...]):
        if not isinstance(data, dict):
            raise ctx.error(path, f"expected a mapping, got {_describe(data)}")
        unknown = [k for k in data if k not in allowed]
        if unknown:
            key = unknown[0]
            head, _, rest = str(key).partition(".")
            hint = (f"write it nested, {head}: {{{rest}: ...}}" if rest and head in allowed
                    else close_match_hint(key, allowed, "keys here"))
            raise ctx.error(join_path(path, key), f"unknown key {key!r}", hint)
        self.ctx, self.data, self.path = ctx, data, path

    def has(self, key: str) -> bool:
        return key in self.data

    def get(self, key: str, kind: type, default: Any = ..., *, choices: tuple | None = None,
            low: float | None = None, high: float | None = None, low_open: bool = False) -> Any:
        path = join_path(self.path, key)
        if key not in self.data:
            if default is ...:
                raise self.ctx.error(self.path, f"missing required key {key!r}",
                                     f"add '{key}: ...' (see docs/genotype.md)")
            return default
        value = self.data[key]
        value = check_type(self.ctx, path, value, kind)
        if choices is not None and value not in choices:
            raise self.ctx.error(path, f"unknown value {value!r}", close_match_hint(value, choices))
        if low is not None and (value <= low if low_open else value < low):
            bound = f"> {low}" if low_open else f">= {low}"
            raise self.ctx.error(path, f"must be {bound}, got {value}", f"use a value {bound}")
        if high is not None and value > high:
            raise self.ctx.error(path, f"must be <= {high}, got {value}", f"use a value <= {high}")
        return value


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, dict | list):
        return type(value).__name__
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:50] + f'... ({len(text):,} characters)'}"


def check_type(ctx: Ctx, path: str, value: Any, kind: type) -> Any:
    """``value`` if it is of ``kind`` (an integer is a number too); numbers must be finite."""
    ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            raise ctx.error(path, "the number is too large", "write a finite number here") from None
    if not ok:
        expected = _TYPE_NAMES.get(kind, kind.__name__)
        raise ctx.error(path, f"expected {expected}, got {_describe(value)}", f"write {expected} here")
    if kind is float and not math.isfinite(value):
        raise ctx.error(path, f"must be a finite number, got {value}", "write a finite number here")
    if kind is int and abs(value) > MAX_INT:
        raise ctx.error(path, f"the integer is too large (at most {MAX_INT:,})", "write a smaller integer")
    return value


MAX_INT = 2**31 - 1  # no size, count or index of a genotype comes near it; beyond it, arithmetic overflows


NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def check_name(ctx: Ctx, path: str, name: Any, what: str) -> str:
    """A cell, node, network or layer name: a plain identifier (names are joined with dots into the
    flattened namespace, so a dot would make two names collide) that torch's module API does not use."""
    check_type(ctx, path, name, str)
    if not NAME_RE.fullmatch(name):
        fixed = re.sub(r"[^A-Za-z0-9_]", "_", name)[:64]  # \W would keep letters like ö, which are refused
        fixed = fixed if re.match(r"[A-Za-z_]", fixed) else f"{what}_{fixed}".rstrip("_")
        raise ctx.error(path, f"bad {what} name {name!r}: names are letters, digits and '_' (at most 64, "
                        "not starting with a digit)", f"rename it, e.g. {fixed[:64]}")
    if name in RESERVED_NAMES:
        raise ctx.error(path, f"{what} name {name!r} is reserved (a name of torch's module API)",
                        f"rename it, e.g. {name}_")
    return name
