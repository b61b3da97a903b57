"""Drawings of a genotype (``python -m compiler.build GENOTYPE --draw OUT.svg``): each cell as a DAG (its inputs,
nodes and outputs; an edge labelled with its op and its neuron's surrogate and temperature, a delayed edge
dashed) and each network as the trellis of its levels with the layer path through it (conv layers boxes, cell
layers ellipses, at the level they run on), then the head (cost volume and estimator, or pooling and the
classifier).

The drawing is a ``graphviz.Digraph`` (``drawing``): its structure (node names, edges, labels) is what the
tests read. ``write_drawing`` renders it with graphviz's ``dot`` program to SVG, PNG or PDF (``dot`` is a
system package: ``apt-get install graphviz``), or writes the DOT text (``.dot``, ``.gv``) without it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import graphviz

from runtime.core.atomic import write_bytes_atomic

from .ir import CellLayer, Genotype
from .plantypes import NetPlan, Plan

RENDERED = ("svg", "png", "pdf")
TEXT = ("dot", "gv")


class DrawError(ValueError):
    """The drawing cannot be written (a format dot lacks, no dot program); the message is one line."""


def _edge_label(g: Genotype, layer_neuron: dict, node, edge) -> str:
    """``op``, the surrogate kind and temperature of the neuron the edge feeds: its own under mixing at the
    spike (``spike``, ``spike_sum``), its node's at the membrane."""
    n = (g.node_neuron_of(layer_neuron, node.neuron) if g.mixing == "membrane"
         else g.edge_neuron_of(layer_neuron, node.neuron, edge.neuron))
    s = n.surrogate
    label = f"{edge.op}\\n{s.kind} b={s.b:g}"
    return label + (f"\\ndelay {edge.delay}" if edge.delay else "")


def _cell(dot: graphviz.Digraph, g: Genotype, cell, layer_neuron: dict) -> None:
    with dot.subgraph(name=f"cluster_cell_{cell.name}") as sub:
        sub.attr(label=f"cell {cell.name} (mixing at the {g.mixing})", style="rounded", color="gray40")
        p = f"cell.{cell.name}."
        for src in ("c_prev_prev", "c_prev"):
            sub.node(p + src, src, shape="box", style="filled", fillcolor="lightgray")
        for node in cell.nodes:
            text = node.name
            if g.mixing != "spike_sum":  # the node's own neuron (spiking function under spike)
                s = g.node_neuron_of(layer_neuron, node.neuron).surrogate
                text += f"\\n{s.kind} b={s.b:g}"
            sub.node(p + node.name, text, shape="circle", style="filled", fillcolor="lightblue")
            for edge in node.inputs:
                sub.edge(p + edge.source, p + node.name, label=_edge_label(g, layer_neuron, node, edge),
                         style="dashed" if edge.delay else "solid", constraint="false" if edge.delay else "true")
        sub.node(p + "output", "concat" if len(cell.output) > 1 else "output", shape="box", style="filled",
                 fillcolor="lightyellow")
        for out in cell.output:
            sub.edge(p + out, p + "output")


def _level(np_: NetPlan, i: int) -> int:
    """The level a network's layer runs at (a conv layer without one: the level of its output's size)."""
    lp = np_.layers[i]
    if lp.layer.level is not None:
        return lp.layer.level
    size = tuple(lp.out_shape[1:])
    return next((k for k, s in enumerate(np_.level_sizes) if tuple(s) == size), 0)


def _network(dot: graphviz.Digraph, name: str, np_: NetPlan) -> tuple[str, str]:
    """The trellis of one network: a lane per level, a column per layer, the path through them. Returns the
    names of its first and last layer nodes."""
    levels = len(np_.level_sizes)
    with dot.subgraph(name=f"cluster_net_{name}") as sub:
        sub.attr(label=f"network {name} ({np_.network.dims}-D; levels: "
                 + ", ".join("x".join(map(str, s)) for s in np_.level_sizes) + ")", color="gray40")
        path = []
        for i, lp in enumerate(np_.layers):
            level = _level(np_, i)
            with sub.subgraph() as col:
                col.attr(rank="same")
                for k in range(levels):
                    cell_name = f"net.{name}.{i}.L{k}"
                    if k == level:
                        layer = lp.layer
                        text = (f"{layer.name}\\ncell {layer.cell}" if isinstance(layer, CellLayer)
                                else f"{layer.name}\\n{layer.op} {layer.channels}ch"
                                + (f" /{layer.stride}" if layer.stride != 1 else ""))
                        col.node(cell_name, f"{text}\\nlevel {k}", shape="ellipse" if isinstance(layer, CellLayer)
                                 else "box", style="filled", fillcolor="lightblue")
                        path.append(cell_name)
                    else:
                        col.node(cell_name, "", shape="point", width="0.05", color="gray80")
                    if i:
                        sub.edge(f"net.{name}.{i - 1}.L{k}", cell_name, style="invis", weight="10")
                    if k:  # the lanes in order, level 0 (full size) on top
                        col.edge(f"net.{name}.{i}.L{k - 1}", cell_name, style="invis")
        for a, b in zip(path, path[1:], strict=False):
            sub.edge(a, b, color="blue", penwidth="2")
        with sub.subgraph() as lanes:  # lane labels
            lanes.attr(rank="same")
            for k in range(levels):
                lanes.node(f"net.{name}.lane{k}", f"level {k}", shape="plaintext")
                sub.edge(f"net.{name}.lane{k}", f"net.{name}.0.L{k}", style="invis", weight="10")
                if k:
                    lanes.edge(f"net.{name}.lane{k - 1}", f"net.{name}.lane{k}", style="invis")
    return path[0], path[-1]


def drawing(p: Plan) -> graphviz.Digraph:
    """The drawing of a planned genotype: its cells, its networks' trellises and its head."""
    g = p.genotype
    dot = graphviz.Digraph(name=g.name, graph_attr={"rankdir": "LR", "label": f"{g.name} ({g.task})",
                                                    "labelloc": "t", "fontsize": "18", "compound": "true"})
    dot.attr("node", fontname="Helvetica", fontsize="10")
    dot.attr("edge", fontname="Helvetica", fontsize="8")
    for cell in g.cells:
        users = [layer.neuron for net in g.networks for layer in net.layers
                 if isinstance(layer, CellLayer) and layer.cell == cell.name]
        _cell(dot, g, cell, users[0] if users else {})
    ends = {name: _network(dot, name, np_) for name, np_ in p.nets.items()}
    head = g.head
    dot.node("input", f"input {g.input.encoding}\\n{g.input.height}x{g.input.width}", shape="cds")
    if g.task == "stereo":
        feat, match = ends[head.feature], ends[head.matching]
        dot.edge("input", feat[0], label="left, right")
        dot.node("head.cost_volume", f"cost volume\\n{head.disparities} disparities", shape="box3d")
        dot.edge(feat[1], "head.cost_volume")
        dot.edge("head.cost_volume", match[0])
        dot.node("head.estimator", f"{head.estimator} estimator", shape="box3d")
        dot.edge(match[1], "head.estimator")
    else:
        back = ends[head.backbone]
        dot.edge("input", back[0])
        dot.node("head.classifier", f"global pool\\nlinear {head.classes}", shape="box3d")
        dot.edge(back[1], "head.classifier")
    return dot


def dot_program() -> str | None:
    """The path of graphviz's ``dot`` program, or None."""
    return shutil.which("dot")


def write_drawing(p: Plan, path: str | Path) -> Path:
    """Render ``drawing(p)`` to ``path`` (format from its suffix), atomically. Raises ``DrawError``."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in RENDERED + TEXT:
        raise DrawError(f"--draw {path}: unknown format {fmt!r} (use .svg, .png, .pdf or .dot)")
    dot = drawing(p)
    if fmt in TEXT:
        data = dot.source.encode()
    elif dot_program() is None:
        raise DrawError(f"--draw {path}: graphviz's dot program is not installed (apt-get install graphviz); "
                        "a .dot file is written without it")
    else:
        data = dot.pipe(format=fmt)
    try:
        write_bytes_atomic(path, data)
    except OSError as exc:
        raise DrawError(f"--draw {path}: cannot write ({exc.strerror or exc})") from None
    return path
