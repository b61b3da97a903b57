"""``--set KEY=VALUE`` overrides: applied to the raw genotype data before it is parsed, so the parser
validates an overridden value exactly like one in the file (and blames ``--set`` for it)."""

from __future__ import annotations

import re
from typing import Any

from .errors import GenotypeError
from .yamlio import YamlLimitError, join_path, load_yaml

_KEY = re.compile(r"[^.\[\]]+(?:\.[^.\[\]]+|\[-?[0-9]+\])*")
_TOKEN = re.compile(r"([^.\[\]]+)|\[(-?[0-9]+)\]")


def _parse_key(key: str) -> list[str | int]:
    """``networks.feature.layers[2].channels`` -> ["networks", "feature", "layers", 2, "channels"].

    The whole key must be names joined by dots and ``[integer]`` indices; anything else (an unclosed
    bracket, an empty name, a stray dot) is refused rather than guessed."""
    if not _KEY.fullmatch(key):
        raise GenotypeError(f"bad key {key!r}", file=f"--set {key}",
                            hint="write names joined by dots and integer indices in brackets, "
                                 "e.g. networks.feature.layers[2].channels")
    return [name if name else int(index) for name, index in _TOKEN.findall(key)]


def _value(text: str, value: str) -> Any:
    """The YAML value of ``--set KEY=VALUE`` (plain data, within the YAML limits), or the text itself
    when it is not YAML."""
    if not value.strip():
        return ""
    try:
        data, _ = load_yaml(value, file=f"--set {text}")
    except YamlLimitError:
        raise
    except GenotypeError:
        return value
    return data


def apply_overrides(data: dict, overrides: dict[str, Any] | list[str] | None) -> tuple[dict, dict[str, str]]:
    """Apply ``{"input.height": 66}`` or ``["input.height=66"]`` to raw genotype data.

    Returns the new data and, per overridden key path, the text to quote in errors. The parser
    then validates the result exactly as if the values had been in the file.
    """
    import copy

    data = copy.deepcopy(data)
    items: list[tuple[str, Any, str]] = []
    if isinstance(overrides, dict):
        items = [(k, v, f"{k}={v}"[:80]) for k, v in overrides.items()]
    elif overrides:
        for text in overrides:
            key, eq, value = text.partition("=")
            shown = text if len(text) <= 80 else text[:60] + f"... ({len(text):,} characters)"
            if not eq or not key.strip():
                raise GenotypeError(f"bad override {shown!r}", file="--set",
                                    hint="write KEY=VALUE, e.g. input.height=66")
            items.append((key.strip(), _value(shown, value), shown))
    overridden: dict[str, str] = {}
    for key, value, text in items:
        parts = _parse_key(key)
        node: Any = data
        path = ""
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(part, int):
                if not isinstance(node, list) or not -len(node) <= part < len(node):
                    size = len(node) if isinstance(node, list) else "no"
                    raise GenotypeError(f"index [{part}] out of range ({size} items at {path or 'top'})",
                                        file=f"--set {text}", path=key)
            elif not isinstance(node, dict):
                raise GenotypeError(f"{path or 'the top level'} is not a mapping", file=f"--set {text}", path=key)
            path = join_path(path, part)
            if last:
                node[part] = value
            else:
                if isinstance(part, str) and part not in node:
                    node[part] = {}
                node = node[part]
        overridden[path] = text
    return data, overridden
