"""The SpikeDHS supernet's graph (``training.search.supernet``): the base genotype's lowered graph with
its modules where the supernet keeps them and every searched network's cell layers replaced by one
``trellis`` node per instance, which reads the first cell layer's inputs and stands for the last one's
output. ``net`` below is the ``Supernet`` (its search space, its trellis modules and widths)."""

from __future__ import annotations

import dataclasses

from compiler.ir import CellLayer, Genotype
from compiler.names import layer_name
from compiler.plantypes import Node


def remap_modules(p) -> list[Node]:
    """The base graph with its layers' modules where the supernet keeps them: ``blocks.NET.LAYER.op``."""
    out = []
    for node in p.graph:
        if node.module is not None and node.module[0] == "nets":
            layer = p.genotype.network(node.module[1]).layers[int(node.module[3])].name
            node = dataclasses.replace(node, module=("blocks", node.module[1], layer, *node.module[4:]))
        out.append(node)
    return out


def searched_graph(net, p, graph: list[Node], partial: bool = False) -> list[Node]:
    """``graph`` with every searched network's cell layers replaced by one trellis node per instance; the
    layer after it reads the trellis (resampled to its level, in the trellis's channels). The training-only
    auxiliary head is left out; the classifier reads the network's (possibly searched) width."""
    out: list[Node] = []
    replaced: dict[str, str] = {}  # value name -> the value that replaces it
    for node in graph:
        if node.kind == "aux_head":
            continue
        where = _searched_layer(net, p, node)
        if where == "cells":
            first_cell = int(node.scope[3]) == _cell_span(p.genotype, node.scope[1])[0]
            if not partial and first_cell and node.layer not in replaced:
                replaced[node.layer] = node.name
                out.append(_trellis_node(net, p, node))
            continue
        node = dataclasses.replace(node, inputs=tuple(replaced.get(i, i) for i in node.inputs))
        if where == "after" and node.kind == "resample":
            replaced[node.name] = node.inputs[0]
            continue
        if where == "after" and node.kind == "op":
            node = _after_trellis(net, p, node, out)
        if node.kind == "linear":
            node = dataclasses.replace(node, attrs={**node.attrs, "in_features": net._net_out_channels(
                net.genotype.head.backbone)})
        out.append(node)
    return out


def _cell_span(g: Genotype, network: str) -> tuple[int, int]:
    """Indices of the first and last cell layer of a network."""
    cells = [i for i, layer in enumerate(g.network(network).layers) if isinstance(layer, CellLayer)]
    return cells[0], cells[-1]


def _searched_layer(net, p, node: Node) -> str | None:
    """'cells' for a node of a searched network's cell layers, 'after' for one of the layer right after."""
    if not node.scope or net.space.searched(node.scope[1]) is None:
        return None
    first, last = _cell_span(p.genotype, node.scope[1])
    index = int(node.scope[3])
    return "cells" if first <= index <= last else "after" if index == last + 1 else None


def _trellis_node(net, p, node: Node) -> Node:
    """The trellis of a searched network's instance: reads the first cell layer's c_prev and c_prev_prev,
    stands for the last cell layer's output."""
    network = node.scope[1]
    layers = p.genotype.network(network).layers
    first, last = _cell_span(p.genotype, network)
    instance = node.layer[: -len(layers[first].name) - 1]
    c_prev, c_prev_prev, _ = p.layer_io[node.layer]
    output = p.layer_io[layer_name(instance, layers[last].name)][2]
    key = layer_name(instance, "searched" if net.space.searched(network).fixed else "trellis")
    return Node("trellis", output, (c_prev, c_prev_prev), (), attrs={"network": network, "at": key},
                module=("blocks", network, "trellis"))


def _after_trellis(net, p, node: Node, out: list[Node]) -> Node:
    """The op of the layer after a trellis: on the trellis's output resampled to its level, in its width."""
    network = node.module[1]
    lp = next(lp for lp in p.nets[network].layers if lp.layer.name == node.module[2])
    x = node.inputs[0]
    if lp.target is not None:
        x = f"{node.attrs['at']}:resample"
        out.append(Node("resample", x, node.inputs, (), attrs={"size": tuple(lp.target), "at": node.attrs["at"],
                                                                "part": None}, layer=node.layer))
    channels = net.blocks[network]["trellis"].out_channels
    return dataclasses.replace(node, inputs=(x,), attrs={**node.attrs, "in_channels": channels})
