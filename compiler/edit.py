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
from typing import Any

from .errors import GenotypeError, close_match_hint
from .genotype import parse_genotype
from .ir import Cell, CellLayer, Genotype, to_dict
from .names import NeuronSite
from .planner import plan


def _err(name: str, message: str, hint: str | None = None) -> GenotypeError:
    return GenotypeError(f"neuron layer {name!r}: {message}", file="<edit>", hint=hint)


def locate(g: Genotype, name: str) -> NeuronSite:
    """The genotype location of neuron layer ``name`` (the plan's site). Raises GenotypeError with a
    close match when the name is not a neuron layer."""
    layer = plan(g).neurons.get(name)
    if layer is None:
        raise _unknown(g, name)
    if layer.site.head:
        raise _err(name, "the vectorize head's neurons are the genotype's top-level neuron, not a layer's",
                   "edit the genotype's neuron")
    return layer.site


def _unknown(g: Genotype, name: str) -> GenotypeError:
    """Why ``name`` is not a neuron layer: the first of its dotted parts that no neuron layer has,
    with the valid choices at that point, or what to add when it names a group of neuron layers."""
    names = [n.split(".") for n in plan(g).neurons]
    parts = name.split(".")
    depth = 0
    while depth < len(parts) and any(n[:depth + 1] == parts[:depth + 1] for n in names):
        depth += 1
    below = [n for n in names if n[:depth] == parts[:depth] and len(n) > depth]
    choices = sorted({n[depth] for n in below})
    if depth == 0:
        return _err(name, f"unknown network {parts[0]!r}", close_match_hint(parts[0], choices, "names"))
    if depth == len(parts):
        sites = {plan(g).neurons[".".join(n)].site for n in below}
        what = "EDGE" if all(s.edge is not None and s.node == parts[-1] for s in sites) else "NAME"
        if what == "EDGE":
            return _err(name, "with mixing at the spike each edge has its own neuron: "
                        f"LAYER.NODE.EDGE with EDGE in {', '.join(choices)} (a skip edge has none)")
        return _err(name, f"names several neuron layers: add .{what}", close_match_hint("", choices, "names"))
    return _err(name, f"unknown part {parts[depth]!r}", close_match_hint(parts[depth], choices, "names"))


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
        users = sum(1 for n in g.networks for la in n.layers if isinstance(la, CellLayer) and la.cell == layer.cell)
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
    seen: set[NeuronSite] = set()
    names = []
    for name, layer in plan(g).neurons.items():
        if (spiking_only and not layer.spiking) or layer.site.head:  # the head's: no location of their own
            continue
        if layer.site not in seen:
            seen.add(layer.site)
            names.append(name)
    return names
