"""Search spaces of the SpikeDHS search: reading and checking their YAML files (no torch).

A search space names a base genotype (input, neuron, stems, head, the layers around the cells) and,
per network, how its cells are searched::

    search_space: 1
    base: ../genotypes/stereo.yaml
    candidates: [{op: conv3x3, b: 3}, {op: conv3x3, b: 5}, {op: skip}]
    nodes: 3
    networks:
      feature: {cell: feature, layers: 2, start_level: 0, end_level: 0}

Errors are the genotype parser's: one line with file, line, key path and a fix
(``compiler.reader.Ctx`` / ``MapReader``). The torch modules live in ``supernet.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from compiler.errors import GenotypeError, close_match_hint
from compiler.genotype import load_genotype
from compiler.ir import CellLayer, Genotype
from compiler.reader import Ctx, MapReader, check_type
from compiler.registry import OPS
from compiler.yamlio import join_path, load_yaml

SPACE_VERSION = 1


@dataclass(frozen=True)
class Candidate:
    op: str
    b: float | None = None

    @property
    def name(self) -> str:
        return self.op if self.b is None else f"{self.op}_b{self.b:g}"


@dataclass(frozen=True)
class SearchedNetwork:
    network: str
    cell: str
    layers: int
    start_level: int = 0
    end_level: int = 0
    path: tuple[int, ...] | None = None  # a fixed level path: normal and reduction cells, no beta
    reduction_cell: str = ""

    @property
    def fixed(self) -> bool:
        return self.path is not None


@dataclass(frozen=True)
class SearchSpace:
    base: Genotype
    candidates: tuple[Candidate, ...]
    nodes: int
    keep: int
    networks: tuple[SearchedNetwork, ...]
    file: str = ""

    def searched(self, name: str) -> SearchedNetwork | None:
        return next((s for s in self.networks if s.network == name), None)


def load_search_space(path: str | Path, overrides: dict | list | None = None) -> SearchSpace:
    """Read and check a search-space YAML file (errors as GenotypeError: file, line, key, fix)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise GenotypeError(f"cannot read the search space ({reason})", file=str(path)) from None
    data, lines = load_yaml(text, str(path))
    ctx = Ctx(str(path), lines, {})
    m = MapReader(ctx, data, "", ("search_space", "base", "candidates", "nodes", "keep", "networks"))
    if m.get("search_space", int) != SPACE_VERSION:
        raise ctx.error("search_space", f"expected search_space: {SPACE_VERSION}", "add 'search_space: 1'")
    base = load_genotype(path.parent / m.get("base", str), overrides=overrides)
    cands = tuple(_candidate(ctx, c, join_path("candidates", i)) for i, c in enumerate(m.get("candidates", list)))
    if not cands:
        raise ctx.error("candidates", "at least one candidate op is needed")
    nodes = m.get("nodes", int, 3, low=1)
    keep = m.get("keep", int, 2, low=1)
    nets = tuple(_searched(ctx, base, name, spec, join_path("networks", name))
                 for name, spec in m.get("networks", dict).items())
    if not nets:
        raise ctx.error("networks", "name at least one network whose cells are searched")
    return SearchSpace(base, cands, nodes, keep, nets, str(path))


def _candidate(ctx: Ctx, data, key: str) -> Candidate:
    c = MapReader(ctx, data, key, ("op", "b"))
    op = c.get("op", str)
    if op not in OPS:
        raise ctx.error(join_path(key, "op"), f"unknown op {op!r}", close_match_hint(op, OPS, "ops"))
    b = c.get("b", float, None, low=0.0, low_open=True) if c.has("b") else None
    return Candidate(op, b)


def _searched(ctx: Ctx, base: Genotype, name: str, data, key: str) -> SearchedNetwork:
    names = [n.name for n in base.networks]
    if name not in names:
        raise ctx.error(key, f"the base genotype has no network {name!r}", close_match_hint(name, names, "networks"))
    net = base.network(name)
    levels = len(net.rates)
    m = MapReader(ctx, data, key, ("cell", "layers", "start_level", "end_level", "path", "reduction_cell"))
    cell = m.get("cell", str)
    if cell not in [c.name for c in base.cells]:
        raise ctx.error(join_path(key, "cell"), f"the base genotype has no cell {cell!r}",
                        close_match_hint(cell, [c.name for c in base.cells], "cells"))
    start = m.get("start_level", int, 0, low=0, high=levels - 1)
    if m.has("path"):  # DARTS-style: the levels are fixed, normal and reduction cells are searched
        if m.has("layers") or m.has("end_level"):
            raise ctx.error(key, "give either a fixed 'path' or 'layers' (and 'end_level') to search the path")
        path = tuple(m.get("path", list))
        for i, v in enumerate(path):
            check_type(ctx, join_path(join_path(key, "path"), i), v, int)
        if (not path or any(not 0 <= v < levels for v in path)
                or any(abs(b - a) > 1 for a, b in zip(path, path[1:], strict=False))):
            raise ctx.error(join_path(key, "path"),
                            f"a list of levels 0..{levels - 1} moving at most one level a layer")
        if abs(path[0] - start) > 1:
            raise ctx.error(join_path(key, "path"), "the first level must be within one level of start_level")
        s = SearchedNetwork(name, cell, len(path), start, path[-1], path,
                            m.get("reduction_cell", str, f"{cell}_reduce"))
    else:
        s = SearchedNetwork(name, cell, m.get("layers", int, low=1), start,
                            m.get("end_level", int, 0, low=0, high=levels - 1))
        if abs(s.end_level - s.start_level) > s.layers:
            raise ctx.error(key, "end_level cannot be reached from start_level in that many layers")
    if not any(isinstance(layer, CellLayer) for layer in net.layers):
        raise ctx.error(key, "the base network has no cell layer to search")
    return s
