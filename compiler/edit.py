"""Edits of a genotype by neuron layer name: where a layer's neuron lives, and a new genotype with a
sparse neuron override there (what DGS, TPS and HNS write back).

Neuron layer names are those of the Plan: ``NET[.INSTANCE].LAYER`` (a conv layer),
``NET[.INSTANCE].LAYER.NODE`` (a node's neuron, mixing at the membrane) and
``NET[.INSTANCE].LAYER.NODE.EDGE`` (an edge's neuron, mixing at the spike); the instance is
``left``/``right`` for the stereo feature network, whose two instances share one genotype entry.
A cell used by several layers is cloned (``CELL_LAYER``) before one layer's copy is edited, so the
edit changes that layer only. Genotypes are immutable: every function returns a new, validated one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .errors import GenotypeError, close_match_hint
from .genotype import Cell, Genotype, Stereo, parse_genotype, to_dict


@dataclass(frozen=True)
class NeuronSite:
    """Where a neuron layer's parameters live in the genotype."""

    network: str
    layer: str
    layer_index: int
    node: str | None = None
    edge: int | None = None

    @property
    def path(self) -> str:
        """The genotype key path of the neuron override."""
        base = f"networks.{self.network}.layers[{self.layer_index}]"
        return base if self.node is None else f"{base} (node {self.node}" + (
            f", edge {self.edge})" if self.edge is not None else ")")


def _err(name: str, message: str, hint: str | None = None) -> GenotypeError:
    return GenotypeError(f"neuron layer {name!r}: {message}", file="<edit>", hint=hint)


def locate(g: Genotype, name: str) -> NeuronSite:
    """The genotype location of neuron layer ``name``. Raises GenotypeError with a close match."""
    parts = name.split(".")
    nets = {n.name: n for n in g.networks}
    if parts[0] not in nets:
        raise _err(name, f"unknown network {parts[0]!r}", close_match_hint(parts[0], nets, "networks"))
    net = nets[parts[0]]
    rest = parts[1:]
    if isinstance(g.head, Stereo) and net.name == g.head.feature:
        if not rest or rest[0] not in ("left", "right"):
            raise _err(name, "the feature network's layers are named NET.left.LAYER or NET.right.LAYER")
        rest = rest[1:]
    if not rest:
        raise _err(name, "no layer named")
    layers = {layer.name: i for i, layer in enumerate(net.layers)}
    if rest[0] not in layers:
        raise _err(name, f"unknown layer {rest[0]!r}", close_match_hint(rest[0], layers, "layers"))
    index = layers[rest[0]]
    layer = net.layers[index]
    if layer.kind == "conv":
        if len(rest) != 1:
            raise _err(name, f"{layer.name} is a conv layer with one neuron; drop {'.'.join(rest[1:])!r}")
        return NeuronSite(net.name, layer.name, index)
    cell = g.cell(layer.cell)
    nodes = [n.name for n in cell.nodes]
    if len(rest) < 2 or rest[1] not in nodes:
        raise _err(name, "a cell layer's neurons are LAYER.NODE (membrane mixing) or LAYER.NODE.EDGE (spike)",
                   close_match_hint(rest[1] if len(rest) > 1 else "", nodes, "nodes"))
    node = cell.node(rest[1])
    if g.mixing == "membrane":
        if len(rest) != 2:
            raise _err(name, "with mixing at the membrane each node has one neuron", "name LAYER.NODE")
        return NeuronSite(net.name, layer.name, index, node.name)
    if len(rest) != 3 or not rest[2].isdigit() or int(rest[2]) >= len(node.inputs):
        raise _err(name, f"with mixing at the spike each edge has its own neuron: LAYER.NODE.EDGE with EDGE in "
                   f"0..{len(node.inputs) - 1}")
    edge = int(rest[2])
    if node.inputs[edge].op == "skip":
        raise _err(name, "a skip edge has no neuron")
    return NeuronSite(net.name, layer.name, index, node.name, edge)


def merge_override(old: dict, new: dict) -> dict:
    """Sparse neuron overrides merged key by key (``surrogate`` one level deeper)."""
    out = dict(old)
    for k, v in new.items():
        out[k] = {**out.get(k, {}), **v} if k == "surrogate" else v
    return out


def _clean(value: Any) -> Any:
    """Plain Python numbers (no numpy or tensor scalars) so the YAML stays readable."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float):
        return round(value, 6)
    return value


def set_neuron(g: Genotype, name: str, override: dict) -> Genotype:
    """A new genotype in which neuron layer ``name`` has ``override`` merged into its sparse override."""
    site = locate(g, name)
    override = _clean(override)
    net = g.network(site.network)
    layer = net.layers[site.layer_index]
    cells = list(g.cells)
    if site.node is None:
        layer = dataclasses.replace(layer, neuron=merge_override(layer.neuron, override))
    else:
        users = sum(1 for n in g.networks for la in n.layers if la.kind == "cell" and la.cell == layer.cell)
        cell = g.cell(layer.cell)
        if users > 1:  # clone, so the edit changes this layer only
            taken = {c.name for c in cells}
            new_name = f"{cell.name}_{layer.name}"
            while new_name in taken:
                new_name += "_"
            cell = dataclasses.replace(cell, name=new_name)
            cells.append(cell)
            layer = dataclasses.replace(layer, cell=new_name)
        nodes = []
        for node in cell.nodes:
            if node.name == site.node:
                if site.edge is None:
                    node = dataclasses.replace(node, neuron=merge_override(node.neuron, override))
                else:
                    edges = list(node.inputs)
                    edges[site.edge] = dataclasses.replace(edges[site.edge],
                                                           neuron=merge_override(edges[site.edge].neuron, override))
                    node = dataclasses.replace(node, inputs=tuple(edges))
            nodes.append(node)
        new_cell: Cell = dataclasses.replace(cell, nodes=tuple(nodes))
        cells = [new_cell if c.name == new_cell.name else c for c in cells]
    layers = list(net.layers)
    layers[site.layer_index] = layer
    new_net = dataclasses.replace(net, layers=tuple(layers))
    networks = tuple(new_net if n.name == net.name else n for n in g.networks)
    edited = dataclasses.replace(g, cells=tuple(cells), networks=networks)
    return parse_genotype(to_dict(edited), file=g.file or "<edited>")


def set_meta(g: Genotype, key: str, value: Any) -> Genotype:
    """A new genotype with ``meta[key] = value`` (provenance of a search)."""
    return dataclasses.replace(g, meta={**g.meta, key: _clean(value) if isinstance(value, dict) else value})


def neuron_layer_names(g: Genotype, spiking_only: bool = True) -> list[str]:
    """Every neuron layer of the genotype (one name per genotype location: the left instance only)."""
    from .graph import plan

    seen: set[NeuronSite] = set()
    names = []
    for name, layer in plan(g).neurons.items():
        if spiking_only and not layer.spiking:
            continue
        site = locate(g, name)
        if site not in seen:
            seen.add(site)
            names.append(name)
    return names
