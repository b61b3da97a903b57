"""``--set KEY=VALUE`` overrides: applied to the raw genotype data before it is parsed, so the parser
validates an overridden value exactly like one in the file (and blames ``--set`` for it)."""

from __future__ import annotations

from typing import Any

import yaml

from .errors import GenotypeError
from .yamlio import join_path


def _parse_key(key: str) -> list[str | int]:
    parts: list[str | int] = []
    for token in key.split("."):
        name, _, rest = token.partition("[")
        if name:
            parts.append(name)
        while rest:
            idx, _, rest = rest.partition("]")
            if not idx.lstrip("-").isdigit():
                raise GenotypeError(f"bad index [{idx}] in key {key!r}", file=f"--set {key}",
                                    hint="indices are integers, e.g. networks.feature.layers[2].channels")
            parts.append(int(idx))
            rest = rest[1:] if rest.startswith("[") else rest
    if not parts or any(p == "" for p in parts):
        raise GenotypeError(f"bad key {key!r}", file=f"--set {key}", hint="write KEY=VALUE, e.g. input.height=66")
    return parts


def apply_overrides(data: dict, overrides: dict[str, Any] | list[str] | None) -> tuple[dict, dict[str, str]]:
    """Apply ``{"input.height": 66}`` or ``["input.height=66"]`` to raw genotype data.

    Returns the new data and, per overridden key path, the text to quote in errors. The parser
    then validates the result exactly as if the values had been in the file.
    """
    import copy

    data = copy.deepcopy(data)
    items: list[tuple[str, Any, str]] = []
    if isinstance(overrides, dict):
        items = [(k, v, f"{k}={v}") for k, v in overrides.items()]
    elif overrides:
        for text in overrides:
            key, eq, value = text.partition("=")
            if not eq or not key.strip():
                raise GenotypeError(f"bad override {text!r}", file="--set",
                                    hint="write KEY=VALUE, e.g. input.height=66")
            try:
                parsed = yaml.safe_load(value) if value.strip() else ""
            except yaml.YAMLError:
                parsed = value
            items.append((key.strip(), parsed, text))
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
