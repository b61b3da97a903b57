"""What the planner produces (``compiler.planner.plan``): the ``Plan`` of a genotype, its networks'
``NetPlan``s and ``LayerPlan``s, and its ``NeuronLayer``s. Read by the torch builder, the summary
table, the ONNX metadata and the searchers."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .ir import Genotype, Layer, Network, Neuron
from .names import NeuronSite
from .registry import NEURONS, Shape


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

    @property
    def spiking_layers(self) -> list[NeuronLayer]:
        return [n for n in self.neurons.values() if n.spiking]
