"""What the planner produces (``compiler.planner.plan``): the ``Plan`` of a genotype, its lowered graph
(``Node``s in the order one time step runs them), its networks' ``NetPlan``s and ``LayerPlan``s, and its
``NeuronLayer``s. Read by the torch model, the NIR export, the summary table, the ONNX metadata, the
supernet and the searchers.

The lowered graph is flat: every node names the values it reads (``inputs``, other nodes' names) and is
one of these kinds (``attrs`` per kind):

- ``input``        a data input (``input``: its contract name)
- ``op``           a layer's or an edge's op (``op``, ``kind``: the op's kind, ``kernel``, ``stride``,
                   ``dims``, ``in_channels``, ``out_channels``, ``at``: the name of the layer or edge)
- ``neuron``       a neuron layer (``neuron``: the resolved ``Neuron``, ``site``: its ``NeuronSite``)
- ``sum``          the sum of a cell node's inputs, in edge order
- ``delay_read``   a delayed edge: the state its op wrote one step before (``state``, ``at``)
- ``delay_write``  the end of a delayed edge: its op's output on the source becomes state (``state``, ``at``)
- ``resample``     nearest resampling to a level (``size``, ``at``: the layer, ``part``: which input)
- ``concat``       a cell's output nodes along channels (``parts``: the node names, ``at``: the layer)
- ``cost_volume``  the stereo cost volume (``disparities``, ``shift``)
- ``cost``         the matching cost at input resolution (``size``)
- ``estimator``    the disparity estimator (``estimator``, ``support``, ``step``)
- ``global_pool``  mean over every position;  ``linear``  the classifier (``in_features``, ``out_features``,
                   ``bias`` default true, ``flatten``: flattens its input first);  ``aux_head``  the
                   training-only auxiliary classifier (``training_only``)
- ``avgpool``      average pooling by ``kernel`` (SNASNet's vectorize block)
- ``group_mean``   the mean of each class's ``groups`` consecutive outputs (``classes``, ``groups``)

How a cell node mixes (membrane, spike, spike_sum, current) and what a delayed edge reads are decided in lowering only:
the backends run the nodes. ``module`` is where a node's torch module lives in the model
(``nets.NET.layers.I.op`` ...) and ``rank`` the order modules are created in (the genotype's declaration
order, which fixes the seeded initialisation and the parameter order); ``scope`` the layer container it
runs inside (which names its operators in a traced ONNX graph)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .ir import Genotype, Layer, Network, Neuron
from .names import NeuronSite
from .registry import NEURONS, Shape


@dataclass(frozen=True)
class Node:
    """One node of the lowered graph: its output value is named ``name``."""

    kind: str
    name: str
    inputs: tuple[str, ...]
    shape: Shape  # of its output, per sample
    attrs: dict = field(default_factory=dict)
    state: tuple[tuple[str, Shape], ...] = ()  # the state tensors it reads or writes
    module: tuple[str, ...] | None = None  # where its module lives in the torch model
    rank: tuple[int, ...] = ()  # creation order of the modules
    scope: tuple[str, ...] = ()  # the module it runs inside (a layer's container), for traced names
    layer: str | None = None  # the flattened layer it belongs to (for cost tables)
    path: str = ""  # genotype key path, for messages
    params: int = 0
    macs: int = 0
    fan_out: float = 0.0  # a spiking neuron: synapses one of its spikes reaches
    dense_macs: int = 0  # a consumer (neuron, linear): MACs per step on non-binary input


@dataclass(frozen=True)
class NeuronLayer:
    name: str  # e.g. "feature.left.cell0.n1"
    shape: Shape
    neuron: Neuron
    site: NeuronSite

    @property
    def spiking(self) -> bool:
        return NEURONS[self.neuron.kind].spiking

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Part:
    """A channel block of a tensor: who produced it and whether it is binary spikes."""

    producer: str
    channels: int
    binary: bool


@dataclass
class Value:
    """A tensor while the planner lowers: its shape, its channel blocks and its value name in the graph."""

    shape: Shape
    parts: tuple[Part, ...]
    ref: str = ""


@dataclass
class LayerPlan:
    layer: Layer
    path: str  # genotype key path, for messages
    inputs: dict[str, Shape]  # c_prev / c_prev_prev (cells) or c_prev (conv), before resampling
    target: tuple[int, ...] | None  # spatial size the inputs are resampled to, if any
    out_shape: Shape
    node_channels: int = 0
    node_shapes: dict[str, Shape] = field(default_factory=dict)
    params: int = 0
    macs: int = 0
    name: str = ""  # flattened name (of the first instance of a shared network)
    output: str = ""  # value name of its output in the lowered graph (of that instance)


@dataclass
class NetPlan:
    network: Network
    input_shape: Shape
    level_sizes: list[tuple[int, ...]]
    layers: list[LayerPlan]

    @property
    def out_shape(self) -> Shape:
        return self.layers[-1].out_shape


@dataclass
class Plan:
    genotype: Genotype
    nets: dict[str, NetPlan]
    neurons: dict[str, NeuronLayer]  # every neuron layer of every network instance
    states: list[tuple[str, Shape]]  # every state tensor (per sample), in a fixed order
    fan_out: dict[str, float]  # spiking layer -> synapses reached by one spike
    dense_macs: dict[str, int]  # consumer layer -> MACs per step on non-binary input
    params: int  # of the deployed network (the auxiliary head excluded)
    activation_bytes: int
    aux_params: int = 0
    graph: list[Node] = field(default_factory=list)  # the lowered graph, in execution order
    outputs: dict[str, str] = field(default_factory=dict)  # task output -> value name
    layer_io: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # layer -> c_prev, c_prev_prev, output

    def layer_cost(self, layer: str) -> tuple[int, int, int]:
        """(parameters, MACs, dense MACs) of one flattened layer, summed over its nodes."""
        nodes = [n for n in self.graph if n.layer == layer]
        return sum(n.params for n in nodes), sum(n.macs for n in nodes), sum(n.dense_macs for n in nodes)

    @property
    def spiking_layers(self) -> list[NeuronLayer]:
        return [n for n in self.neurons.values() if n.spiking]
