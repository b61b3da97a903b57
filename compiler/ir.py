"""The genotype IR, schema version 1: frozen dataclasses and their canonical plain-data form.

Data only: no parsing, no validation, no torch (``compiler.genotype`` parses and validates plain
data into these classes; ``compiler.planner`` infers shapes). Every default is written once, here,
as a dataclass field; the parser reads it from the field. ``Genotype.to_dict()`` is the canonical
plain data: ``parse_genotype(g.to_dict()) == g`` (tested for every shipped genotype).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import yaml

from runtime.core.names import encoding_channels

SCHEMA_VERSION = 1
TASKS = ("stereo", "classification")
# How a cell node mixes its edges: ``membrane`` sums the edges' currents into the node's neuron; ``spike``
# gives each edge (op) its own neuron and passes the sum of their spikes through the node's spiking
# function (SpikeDHS eq. 3, ``node_neuron``); ``spike_sum`` is ``spike`` without the node's function (the
# node passes the count of its edges' spikes; the semantics before issue 19, kept for old checkpoints);
# ``current`` is SNASNet's LIF-conv-BN: a node is the sum of its edges' currents, a conv edge reads the
# spikes of the neuron on its source's current, a skip or pool passes the current itself.
MIXINGS = ("membrane", "spike", "spike_sum", "current")
EDGE_FIRES = ("spike", "spike_sum")  # mixings in which an edge's op has its own neuron
NODE_FIRES = ("membrane", "spike")  # mixings in which a node has a neuron
# The node's spiking function under ``mixing: spike`` unless ``node_neuron`` says otherwise: the
# genotype's neuron with the paper's g(b = 3), Dspike ("For the sign function we use g(b=3)").
NODE_NEURON_DEFAULT = {"surrogate": {"kind": "dspike", "b": 3.0}}
ENCODINGS = ("sbt", "count", "image")
RESETS = ("hard", "soft")
CELL_INPUTS = ("c_prev", "c_prev_prev")
NEURON_KEYS = ("kind", "tau", "threshold", "reset", "tau_a", "beta", "surrogate")
DEFAULT_ENCODING = {"stereo": "sbt", "classification": "image"}  # per task
DEFAULT_MIXING = "membrane"


def default(cls: type, name: str) -> Any:
    """The default of field ``name`` of dataclass ``cls`` (the one place a default is written)."""
    f = cls.__dataclass_fields__[name]
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise KeyError(f"{cls.__name__}.{name} has no default")


@dataclass(frozen=True)
class Surrogate:
    kind: str = "dspike"
    b: float = 3.0


@dataclass(frozen=True)
class Neuron:
    """A neuron layer's parameters (see compiler/neurons.py for the update equations)."""

    kind: str = "lif"
    tau: float = 0.2
    threshold: float = 0.5
    reset: str = "hard"
    tau_a: float = 0.2
    beta: float = 0.1
    surrogate: Surrogate = field(default_factory=Surrogate)


@dataclass(frozen=True)
class Input:
    height: int
    width: int
    encoding: str  # default per task: DEFAULT_ENCODING
    bins: int = 5
    window_ms: float = 50.0
    channels: int = 3
    timesteps: int = 1

    @property
    def in_channels(self) -> int:
        """Channels of one input frame: image channels, or the event encoding's (the contract's rule,
        ``runtime.core.names.encoding_channels``)."""
        if self.encoding == "image":
            return self.channels
        return encoding_channels(self.encoding, self.bins)


@dataclass(frozen=True)
class Edge:
    source: str
    op: str
    delay: int = 0
    neuron: dict = field(default_factory=dict)  # sparse override of the neuron (spike mixing)


@dataclass(frozen=True)
class Node:
    name: str
    inputs: tuple[Edge, ...]
    neuron: dict = field(default_factory=dict)  # sparse override of the node's neuron (spike_sum: the edges')


@dataclass(frozen=True)
class Cell:
    name: str
    nodes: tuple[Node, ...]
    output: tuple[str, ...]

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)


@dataclass(frozen=True)
class ConvLayer:
    """A layer of a network that is one op (conv + BN) and one neuron."""

    kind: ClassVar[str] = "conv"
    name: str
    op: str
    channels: int
    stride: int = 1
    level: int | None = None  # resample the input to this trellis level first
    neuron: dict = field(default_factory=dict)


@dataclass(frozen=True)
class CellLayer:
    """A layer of a network that runs a cell at a trellis level (inputs resampled to it)."""

    kind: ClassVar[str] = "cell"
    name: str
    cell: str
    level: int
    neuron: dict = field(default_factory=dict)


Layer = ConvLayer | CellLayer


@dataclass(frozen=True)
class Network:
    name: str
    layers: tuple[Layer, ...]
    dims: int = 2
    rates: tuple[int, ...] = (1, 2, 2, 2)
    node_channels: tuple[int, ...] = (16, 32, 64, 128)


@dataclass(frozen=True)
class Stereo:
    feature: str
    matching: str
    disparities: int = 33
    shift: int = 1
    estimator: str = "subpixel"
    support: int = 2
    disparity_step: float = 2.0

    @property
    def max_disparity(self) -> float:
        return (self.disparities - 1) * self.disparity_step

    def to_dict(self) -> dict[str, Any]:
        """The head's canonical plain-data form (the genotype's ``head:``)."""
        return {"feature": self.feature, "matching": self.matching,
                "cost_volume": {"disparities": self.disparities, "shift": self.shift},
                "estimator": {"kind": self.estimator, "support": self.support, "disparity_step": self.disparity_step}}


@dataclass(frozen=True)
class Vectorize:
    """SNASNet's classifier (the authors' code): average pooling by ``pool``, flatten, a linear layer without
    bias to ``hidden`` neurons, their spikes, a linear layer to ``groups`` x classes, the mean of each
    class's group of outputs."""

    pool: int = 2
    hidden: int = 1024
    groups: int = 10


@dataclass(frozen=True)
class Classifier:
    backbone: str
    classes: int = 10
    aux_after: int | None = None
    aux_weight: float = 0.4
    aux_channels: int = 128
    vectorize: Vectorize | None = None  # SNASNet's vectorize block instead of the global pool

    def to_dict(self) -> dict[str, Any]:
        """The head's canonical plain-data form (the genotype's ``head:``)."""
        hd: dict[str, Any] = {"backbone": self.backbone, "classes": self.classes}
        if self.aux_after is not None:
            hd["aux"] = {"after": self.aux_after, "weight": self.aux_weight, "channels": self.aux_channels}
        if self.vectorize is not None:
            hd["vectorize"] = dataclasses.asdict(self.vectorize)
        return hd


@dataclass(frozen=True)
class Genotype:
    name: str
    task: str
    input: Input
    neuron: Neuron
    mixing: str
    cells: tuple[Cell, ...]
    networks: tuple[Network, ...]
    head: Stereo | Classifier
    source: str = ""
    schema: int = SCHEMA_VERSION
    meta: dict = field(default_factory=dict)  # free-form provenance (search results, notes)
    file: str = field(default="", compare=False)
    node_neuron: dict = field(default_factory=dict)  # sparse override of the nodes' spiking function (spike)

    def cell(self, name: str) -> Cell:
        return next(c for c in self.cells if c.name == name)

    def network(self, name: str) -> Network:
        return next(n for n in self.networks if n.name == name)

    def to_dict(self) -> dict:
        return to_dict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=110)

    def resolve_neuron(self, *overrides: dict) -> Neuron:
        """The default neuron with sparse overrides applied in order (later wins)."""
        return resolve_neuron(self.neuron, *overrides)

    def node_neuron_of(self, layer: dict, node: dict) -> Neuron:
        """A cell node's neuron: under ``mixing: spike`` its spiking function (the genotype's neuron, the
        paper's Dspike b = 3, ``node_neuron``, the layer's and the node's overrides); under ``membrane``
        the genotype's neuron with the layer's and the node's overrides."""
        if self.mixing == "spike":
            return resolve_neuron(self.neuron, NODE_NEURON_DEFAULT, self.node_neuron, layer, node)
        return resolve_neuron(self.neuron, layer, node)

    def edge_neuron_of(self, layer: dict, node: dict, edge: dict) -> Neuron:
        """An edge's neuron (mixing at the spike): the node's override is the edges' default only under
        ``spike_sum``, where a node has no neuron of its own."""
        return resolve_neuron(self.neuron, layer, node if self.mixing == "spike_sum" else {}, edge)


def resolve_neuron(base: Neuron, *overrides: dict) -> Neuron:
    out = base
    for ov in overrides:
        if not ov:
            continue
        fields = {k: v for k, v in ov.items() if k != "surrogate"}
        sur = out.surrogate
        if "surrogate" in ov:
            sur = dataclasses.replace(sur, **ov["surrogate"])
        out = dataclasses.replace(out, **fields, surrogate=sur)
    return out


# ------------------------------------------------------------------------------------------- dumping
def _layer_dict(layer: Layer) -> dict[str, Any]:
    if isinstance(layer, CellLayer):
        out: dict[str, Any] = {"cell": layer.cell, "level": layer.level, "name": layer.name}
    else:
        out = {"conv": layer.op, "channels": layer.channels}
        if layer.stride != 1:
            out["stride"] = layer.stride
        if layer.level is not None:
            out["level"] = layer.level
        out["name"] = layer.name
    if layer.neuron:
        out["neuron"] = layer.neuron
    return out


def _cell_dict(c: Cell) -> dict[str, Any]:
    nodes = {}
    for n in c.nodes:
        nd: dict[str, Any] = {"inputs": []}
        for e in n.inputs:
            ed: dict[str, Any] = {"from": e.source, "op": e.op}
            if e.delay:
                ed["delay"] = e.delay
            if e.neuron:
                ed["neuron"] = e.neuron
            nd["inputs"].append(ed)
        if n.neuron:
            nd["neuron"] = n.neuron
        nodes[n.name] = nd
    cd: dict[str, Any] = {"nodes": nodes}
    if list(c.output) != [n.name for n in c.nodes]:
        cd["output"] = list(c.output)
    return cd


def to_dict(g: Genotype) -> dict:
    """The canonical plain-data form; ``parse_genotype(to_dict(g)) == g``."""
    out: dict[str, Any] = {"schema": g.schema, "name": g.name, "task": g.task}
    if g.source:
        out["source"] = g.source
    inp = dataclasses.asdict(g.input)
    if g.input.encoding == "image":
        inp.pop("bins")
        inp.pop("window_ms")
    else:
        inp.pop("channels")
        inp.pop("timesteps") if g.input.timesteps == 1 else None
    out["input"] = inp
    out["neuron"] = dataclasses.asdict(g.neuron)
    out["mixing"] = g.mixing
    if g.node_neuron:
        out["node_neuron"] = g.node_neuron
    out["cells"] = {c.name: _cell_dict(c) for c in g.cells}
    out["networks"] = {net.name: {"dims": net.dims, "rates": list(net.rates),
                                  "node_channels": list(net.node_channels),
                                  "layers": [_layer_dict(layer) for layer in net.layers]}
                       for net in g.networks}
    out["head"] = g.head.to_dict()
    if g.meta:
        out["meta"] = g.meta
    return out
