"""Safe YAML loading that keeps line numbers and refuses what PyYAML lets through.

PyYAML's ``safe_load`` silently keeps the last of two duplicate keys, expands aliases without
bound, recurses once per nesting level (a deep document is a ``RecursionError``) and builds the
whole document before anyone can count it. Here the text is limited before anything is built:
its size in bytes, then (scanning PyYAML's event stream, in C where libyaml is there) its nesting
depth and number of values; only then is the node graph composed with the safe loader and walked
by hand: every value gets the line it came from (keyed by its path), duplicate keys,
non-standard tags, alias bombs and aliases that contain themselves are errors, and nothing but
plain dicts, lists and scalars is ever constructed.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from .errors import GenotypeError

# Plain data only: anything else (``!!python/object``, ``!!binary``, custom ``!tags``) is refused.
_PLAIN_TAGS = {
    "tag:yaml.org,2002:" + t for t in ("str", "int", "float", "bool", "null", "map", "seq")
}
# A genotype is a few kB with a few hundred values nested about eight deep (docs/reliability.md).
MAX_BYTES = 1 << 20  # 1 MiB
MAX_DEPTH = 64
MAX_NODES = 100_000  # values after aliases are expanded; an alias bomb has billions
_EventLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's event scanner when installed


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


class YamlLimitError(GenotypeError):
    """The text is too large, too deep or has too many values (checked before it is built)."""


def join_path(parent: str, key: str | int) -> str:
    """``parent.key`` or ``parent[3]``; a key that holds a dot or a bracket is quoted,
    ``parent["a.b"]``, so that no key path can be mistaken for another."""
    if isinstance(key, int):
        return f"{parent}[{key}]"
    key = str(key)
    if not _PLAIN_KEY.fullmatch(key):
        return f"{parent}[{json.dumps(key, ensure_ascii=False)}]"
    return f"{parent}.{key}" if parent else key


def _limit(file: str, mark: Any, message: str, hint: str) -> YamlLimitError:
    return YamlLimitError(message, file=file, line=mark.line + 1 if mark is not None else None, hint=hint)


def check_limits(text: str, file: str = "<string>") -> None:
    """Refuse text over ``MAX_BYTES``, nested deeper than ``MAX_DEPTH`` or with more than
    ``MAX_NODES`` values, before any node is built (YAML syntax errors surface here too)."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_BYTES:
        raise YamlLimitError(f"the text is {size:,} bytes, more than the limit of {MAX_BYTES:,}", file=file,
                             hint="a genotype is a few kB: is this the right file?")
    depth = nodes = 0
    for event in yaml.parse(text, Loader=_EventLoader):
        if isinstance(event, (yaml.ScalarEvent, yaml.AliasEvent, yaml.CollectionStartEvent)):
            nodes += 1
            if nodes > MAX_NODES:
                raise _limit(file, event.start_mark, f"more than {MAX_NODES:,} values",
                             "a genotype has a few hundred: is this the right file?")
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise _limit(file, event.start_mark, f"nested more than {MAX_DEPTH} levels deep",
                             "a genotype is about eight levels deep")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


class _Walker:
    def __init__(self, file: str):
        self.file = file
        self.lines: dict[str, int] = {}
        self.count = 0
        self.active: set[int] = set()  # the nodes being walked: an alias to one of them is a cycle
        self.constructor = yaml.constructor.SafeConstructor()

    def error(self, node: yaml.Node, path: str, message: str, hint: str | None = None) -> GenotypeError:
        return GenotypeError(message, path=path, file=self.file, line=node.start_mark.line + 1, hint=hint)

    def walk(self, node: yaml.Node, path: str) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise self.error(node, path, f"the document expands to more than {MAX_NODES} values "
                             "(aliases that multiply, an 'alias bomb')", "write the values out plainly")
        if len(self.active) >= MAX_DEPTH:
            raise self.error(node, path, f"aliases nest the document more than {MAX_DEPTH} levels deep",
                             "write the values out plainly")
        if id(node) in self.active:
            raise self.error(node, path, "an alias refers to a value that contains it (a cycle)",
                             "write the values out plainly")
        self.lines.setdefault(path, node.start_mark.line + 1)
        if node.tag not in _PLAIN_TAGS:
            raise self.error(node, path, f"YAML tag {node.tag!r} is not allowed: genotypes hold plain data",
                             "remove the tag")
        if isinstance(node, yaml.ScalarNode):
            try:
                return self.constructor.construct_object(node, deep=True)
            except (yaml.YAMLError, ValueError) as exc:
                raise self.error(node, path, f"bad scalar {node.value!r}: {exc}") from None
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            return [self.walk(item, join_path(path, i)) for i, item in enumerate(node.value)]
        finally:
            self.active.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, path: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != "tag:yaml.org,2002:str":
                raise self.error(key_node, path, "mapping keys must be plain names", "quote the key or rename it")
            key = key_node.value
            if key == "<<":
                raise self.error(key_node, path, "YAML merge keys ('<<') are not supported", "write the keys out")
            if key in out:
                first = self.lines.get(join_path(path, key))
                raise self.error(key_node, join_path(path, key),
                                 f"duplicate key {key!r} (first given on line {first})", "keep one of them")
            # a key's own line, also when its value (a block) starts on the next one
            self.lines.setdefault(join_path(path, key), key_node.start_mark.line + 1)
            out[key] = self.walk(value_node, join_path(path, key))
        return out


def load_yaml(text: str, file: str = "<string>") -> tuple[Any, dict[str, int]]:
    """Parse YAML text into plain data and a map from key path to line number.

    Raises ``GenotypeError`` (``YamlLimitError`` for text over the limits), one line, located."""
    try:
        check_limits(text, file)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        what = " ".join(str(exc.problem or exc.context or "syntax error").split())
        raise GenotypeError(f"YAML syntax error: {what}", file=file, line=line,
                            hint="check indentation, colons and brackets near this line") from None
    except yaml.YAMLError as exc:
        raise GenotypeError(f"YAML error: {' '.join(str(exc).split())}", file=file) from None
    if node is None:
        raise GenotypeError("the file is empty", file=file,
                            hint="start from one of the files in genotypes/")
    walker = _Walker(file)
    data = walker.walk(node, "")
    return data, walker.lines
