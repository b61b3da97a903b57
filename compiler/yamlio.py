"""Safe YAML loading that keeps line numbers and refuses what PyYAML lets through.

PyYAML's ``safe_load`` silently keeps the last of two duplicate keys and expands aliases without
bound. Here the node graph is composed with the safe loader and walked by hand: every value gets
the line it came from (keyed by its dotted path), duplicate keys, non-standard tags and alias
bombs are errors, and nothing but plain dicts, lists and scalars is ever constructed.
"""

from __future__ import annotations

from typing import Any

import yaml

from .errors import GenotypeError

# Plain data only: anything else (``!!python/object``, ``!!binary``, custom ``!tags``) is refused.
_PLAIN_TAGS = {
    "tag:yaml.org,2002:" + t for t in ("str", "int", "float", "bool", "null", "map", "seq")
}
MAX_NODES = 100_000  # a genotype has a few hundred values; an alias bomb has billions


def join_path(parent: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else str(key)


class _Walker:
    def __init__(self, file: str):
        self.file = file
        self.lines: dict[str, int] = {}
        self.count = 0
        self.constructor = yaml.constructor.SafeConstructor()

    def error(self, node: yaml.Node, path: str, message: str, hint: str | None = None) -> GenotypeError:
        return GenotypeError(message, path=path, file=self.file, line=node.start_mark.line + 1, hint=hint)

    def walk(self, node: yaml.Node, path: str) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise self.error(node, path, f"the document expands to more than {MAX_NODES} values "
                             "(aliases that multiply, an 'alias bomb')", "write the values out plainly")
        self.lines.setdefault(path, node.start_mark.line + 1)
        if node.tag not in _PLAIN_TAGS:
            raise self.error(node, path, f"YAML tag {node.tag!r} is not allowed: genotypes hold plain data",
                             "remove the tag")
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != "tag:yaml.org,2002:str":
                    raise self.error(key_node, path, "mapping keys must be plain names",
                                     "quote the key or rename it")
                key = key_node.value
                if key == "<<":
                    raise self.error(key_node, path, "YAML merge keys ('<<') are not supported",
                                     "write the keys out")
                if key in out:
                    first = self.lines.get(join_path(path, key))
                    raise self.error(key_node, join_path(path, key),
                                     f"duplicate key {key!r} (first given on line {first})",
                                     "keep one of them")
                out[key] = self.walk(value_node, join_path(path, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.walk(item, join_path(path, i)) for i, item in enumerate(node.value)]
        try:
            return self.constructor.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError) as exc:
            raise self.error(node, path, f"bad scalar {node.value!r}: {exc}") from None


def load_yaml(text: str, file: str = "<string>") -> tuple[Any, dict[str, int]]:
    """Parse YAML text into plain data and a map from dotted key path to line number."""
    try:
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
