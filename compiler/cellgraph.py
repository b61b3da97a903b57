"""The graph of a cell (networkx): the checks every cell passes before shapes are inferred, and the
order its nodes run in. Used by the planner (``compiler.planner``) and the torch cells."""

from __future__ import annotations

import networkx as nx

from .errors import close_match_hint
from .ir import CELL_INPUTS, Cell


def cell_order(cell: Cell) -> list[str]:
    """Nodes in topological order of the cell's DAG without delayed edges."""
    graph = nx.DiGraph()
    graph.add_nodes_from(n.name for n in cell.nodes)
    for node in cell.nodes:
        for edge in node.inputs:
            if not edge.delay and edge.source not in CELL_INPUTS:
                graph.add_edge(edge.source, node.name)
    return list(nx.lexicographical_topological_sort(graph, key=[n.name for n in cell.nodes].index))


def check_cell(cell: Cell, err) -> None:
    names = [n.name for n in cell.nodes]
    graph = nx.DiGraph()
    graph.add_nodes_from([*CELL_INPUTS, *names, "<output>"])
    delayed = nx.DiGraph()
    for node in cell.nodes:
        for i, edge in enumerate(node.inputs):
            path = f"cells.{cell.name}.nodes.{node.name}.inputs[{i}].from"
            if edge.source not in names and edge.source not in CELL_INPUTS:
                raise err(path, f"unknown node {edge.source!r}",
                          close_match_hint(edge.source, [*CELL_INPUTS, *names], "sources"))
            if edge.delay and edge.source in CELL_INPUTS:
                raise err(path, "a delayed edge must come from a node of the cell, not a cell input",
                          "remove 'delay' or take the input from a node")
            (delayed if edge.delay else graph).add_edge(edge.source, node.name)
    try:
        cycle = nx.find_cycle(graph)
    except nx.NetworkXNoCycle:
        cycle = None
    if cycle:
        loop = " -> ".join([u for u, _ in cycle] + [cycle[0][0]])
        raise err(f"cells.{cell.name}.nodes.{cycle[0][1]}", f"cycle without a delay: {loop}",
                  "mark one edge of the loop 'delay: 1' (a backward connection)")
    for out in cell.output:
        graph.add_edge(out, "<output>")
    full = nx.compose(graph, delayed)
    reachable = set(nx.descendants(full, "c_prev")) | set(nx.descendants(full, "c_prev_prev"))
    for name in names:
        if name not in reachable:
            raise err(f"cells.{cell.name}.nodes.{name}", "node is not reachable from a cell input",
                      "give it an edge from c_prev, c_prev_prev or a reachable node")
        if not nx.has_path(full, name, "<output>"):
            raise err(f"cells.{cell.name}.nodes.{name}", "node does not reach the cell output",
                      "add it to the cell's output or feed it into a node that does")
