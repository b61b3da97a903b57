"""The structure of an imported NIR graph (``compiler.nir_import``): nested graphs flattened, and one step's
order with its recurrent edges (the edges that close a cycle without a ``Delay``)."""

from __future__ import annotations

import graphlib
import re

import nir

from .errors import GenotypeError


def flatten_graph(graph: nir.NIRGraph, prefix: str = "") -> tuple[dict[str, nir.NIRNode], list[tuple[str, str]]]:
    """The nodes and edges of ``graph`` with every nested ``NIRGraph`` inlined (its nodes named
    ``SUB.NODE``; edges into it go to its ``Input``, edges out of it leave its ``Output``, which become
    pass-through nodes here)."""
    nodes: dict[str, nir.NIRNode] = {}
    edges: list[tuple[str, str]] = []
    entry, exit_ = {}, {}
    for name, node in graph.nodes.items():
        full = prefix + name
        if isinstance(node, nir.NIRGraph):
            inner, inner_edges = flatten_graph(node, full + ".")
            ins = [n for n, v in node.nodes.items() if isinstance(v, nir.Input)]
            outs = [n for n, v in node.nodes.items() if isinstance(v, nir.Output)]
            if len(ins) != 1 or len(outs) != 1:
                raise GenotypeError(f"a nested graph with {len(ins)} Input and {len(outs)} Output nodes; one of "
                                    "each is needed", path=f"nodes.{full}")
            for n, v in inner.items():
                nodes[n] = _Pass() if n in (f"{full}.{ins[0]}", f"{full}.{outs[0]}") else v
            edges += inner_edges
            entry[name], exit_[name] = f"{full}.{ins[0]}", f"{full}.{outs[0]}"
        else:
            nodes[full] = node
    for src, dst in graph.edges:  # an edge names a nested graph (its boundary) or a node inside it ("SUB.NODE")
        edges.append((exit_.get(src, prefix + src), entry.get(dst, prefix + dst)))
    for src, dst in edges:
        for end in (src, dst):
            if end not in nodes:
                raise GenotypeError(f"an edge {src} -> {dst} names no node {end!r}", path="edges")
    return nodes, edges


class _Pass(nir.NIRNode):
    """The boundary of an inlined graph: its input is its output."""

    def __init__(self):
        self.metadata = {}


def is_pass(node) -> bool:
    return isinstance(node, _Pass)


def safe_name(name: str) -> str:
    """A NIR node name as a contract name (letters, digits, ``_ . -``), prefixed ``nir.``."""
    return "nir." + re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def order_graph(nodes: dict, edges: list[tuple[str, str]],
                file: str = "") -> tuple[list[str], dict[str, list[str]], set[tuple[str, str]]]:
    """The order one step runs the nodes in, each node's sources (in edge order), and the recurrent edges.

    Edges out of a ``Delay`` are no dependencies (the delay's output is its state). Walking back from the
    output (then from any node not yet reached), depth first, sources in edge order, an edge from a node
    still on the walk's path closes a cycle: it is recurrent (its source's value of the step before). For
    snnTorch's ``RLeaky`` (LIF -> W_rec -> LIF) that is the LIF's spikes into W_rec: W_rec runs on the
    spikes of the step before, its bias included from the first step, as snnTorch computes it."""
    sources: dict[str, list[str]] = {n: [] for n in nodes}
    for src, dst in edges:
        sources[dst].append(src)
    recurrent: set[tuple[str, str]] = set()
    state: dict[str, int] = {}  # 1 on the path, 2 done
    feeds = {n: [s for s in sources[n] if not isinstance(nodes[s], nir.Delay)] for n in nodes}

    def walk(start: str) -> None:
        stack = [(start, iter(feeds[start]))]
        state[start] = 1
        while stack:
            node, it = stack[-1]
            src = next(it, None)
            if src is None:
                state[node] = 2
                stack.pop()
            elif state.get(src) == 1:
                recurrent.add((src, node))
            elif src not in state:
                state[src] = 1
                stack.append((src, iter(feeds[src])))

    starts = [n for n, v in nodes.items() if isinstance(v, nir.Output)] + list(nodes)
    for n in starts:
        if n not in state:
            walk(n)
    deps = {n: [s for s in sources[n] if not isinstance(nodes[s], nir.Delay) and (s, n) not in recurrent]
            for n in nodes}
    try:
        order = list(graphlib.TopologicalSorter(deps).static_order())
    except graphlib.CycleError as exc:  # not reachable: the walk cut every cycle
        raise GenotypeError(f"a cycle through {exc.args[1]}", path="edges", file=file or None) from None
    return order, sources, recurrent
