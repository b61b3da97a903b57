"""The planner: graph checks (networkx) and shape inference in topological order, before any tensor exists.

``plan(genotype)`` walks every network in order and every cell in the topological order of its
DAG (delayed edges removed), applying each op's shape rule from the registry. The result, a
``Plan``, is what the torch builder, the summary table and the ONNX metadata (neuron counts,
fan-out for SynOps, dense MACs) all read, so the three can never disagree. A genotype is planned
once: ``parse_genotype`` plans it to validate it and the plan is kept with the (immutable)
genotype, so ``plan(g)`` afterwards returns that same object.

Names of the flattened namespace come from ``compiler.names``. Each ``NeuronLayer`` carries its
``NeuronSite`` (where its parameters live in the genotype), so nothing parses names back.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field

from .cellgraph import cell_order, check_cell
from .errors import GenotypeError, close_match_hint
from .ir import Cell, CellLayer, Classifier, ConvLayer, Genotype, Network, Neuron, Stereo
from .names import (
    NeuronSite,
    cell_inputs_after,
    delayed_state_name,
    instance_name,
    layer_name,
    neuron_name,
    state_name,
)
from .plantypes import LayerPlan, NetPlan, NeuronLayer, Plan
from .registry import NEURONS, OPS, RULES, Shape, ShapeError

# Refuse genotypes whose weights + one step of activations (batch 1, float32) exceed this.
DEFAULT_MAX_BYTES = int(float(os.environ.get("SNN_MAX_BYTES", 16 * 2**30)))


@dataclass(frozen=True)
class Part:
    """A channel block of a tensor: who produced it and whether it is binary spikes."""

    producer: str
    channels: int
    binary: bool


@dataclass
class Value:
    shape: Shape
    parts: tuple[Part, ...]


@dataclass
class _CellWalk:
    """What the walker knows while it plans one cell layer."""

    net: Network
    layer: CellLayer
    cell: Cell
    lpath: str
    name: str
    site: NeuronSite
    channels: int
    node_shape: Shape
    first_consumer: int  # the walker's consumers from here on are this cell's
    values: dict[str, Value] = field(default_factory=dict)
    placeholders: dict[str, str] = field(default_factory=dict)  # placeholder producer -> delayed source
    delayed: list[tuple[str, int, str]] = field(default_factory=list)  # (consumer, MACs, source), delayed convs
    params: int = 0
    macs: int = 0


class _Walker:
    def __init__(self, g: Genotype, ctx):
        self.g = g
        self.ctx = ctx
        self.neurons: dict[str, NeuronLayer] = {}
        self.states: list[tuple[str, Shape]] = []
        self.consumers: list[tuple[str, int, tuple[Part, ...], int]] = []
        self.activations = 0

    def error(self, path: str, message: str, hint: str | None = None) -> GenotypeError:
        if self.ctx is not None:
            return self.ctx.error(path, message, hint)
        return GenotypeError(message, path=path, file=self.g.file or None, hint=hint)

    # -- bookkeeping ------------------------------------------------------------------------------
    def neuron(self, name: str, shape: Shape, neuron: Neuron, site: NeuronSite) -> Value:
        spec = NEURONS[neuron.kind]
        self.neurons[name] = NeuronLayer(name, shape, neuron, site)
        self.states.extend((state_name(name, s), shape) for s in spec.state)
        self.activations += math.prod(shape) * (1 + len(spec.state))
        return Value(shape, (Part(name, shape[0], spec.spiking),))

    def consume(self, consumer: str, macs: int, value: Value) -> None:
        self.consumers.append((consumer, macs, value.parts, value.shape[0]))

    # -- walk -------------------------------------------------------------------------------------
    def network(self, net: Network, instance: str, value: Value) -> tuple[NetPlan, Value]:
        path = f"networks.{net.name}"
        if len(value.shape) - 1 != net.dims:
            raise self.error(f"{path}.dims", f"the network gets {len(value.shape) - 1}-D feature maps "
                             f"{value.shape} but is declared with dims: {net.dims}")
        sizes = []
        spatial = value.shape[1:]
        for rate in net.rates:
            spatial = tuple(math.ceil(s / rate) for s in spatial)
            sizes.append(spatial)
        if len(net.node_channels) < len(net.rates):
            raise self.error(f"{path}.node_channels", f"gives {len(net.node_channels)} channel counts for "
                             f"{len(net.rates)} levels", "give one per level")
        layers: list[LayerPlan] = []
        prev = prev_prev = value
        for i, layer in enumerate(net.layers):
            lpath = f"{path}.layers[{i}]"
            name = layer_name(instance, layer.name)
            site = NeuronSite(net.name, layer.name, i)
            target = None
            if layer.level is not None:
                if layer.level >= len(sizes):
                    raise self.error(f"{lpath}.level", f"level {layer.level} does not exist: the network has "
                                     f"levels 0..{len(sizes) - 1}", "lower the level or add a rate")
                target = sizes[layer.level]
            if isinstance(layer, ConvLayer):
                lp, out = self.conv_layer(net, layer, lpath, name, site, prev, target)
            else:
                lp, out = self.cell_layer(net, layer, lpath, name, site, prev, prev_prev, target)
            layers.append(lp)
            prev, prev_prev = cell_inputs_after(i, prev, out)
        return NetPlan(net, value.shape, sizes, layers), prev

    def conv_layer(self, net, layer: ConvLayer, lpath, name, site, prev: Value, target) -> tuple[LayerPlan, Value]:
        op = OPS[layer.op]
        x = prev if target is None else Value(RULES["resample"].shape(prev.shape, target), prev.parts)
        try:
            out_shape = op.out_shape(x.shape, layer.channels, layer.stride)
        except ShapeError as exc:
            raise self.error(lpath, str(exc), exc.hint) from None
        self._check_size(lpath, out_shape)
        macs = op.macs(x.shape, out_shape)
        self.consume(name, macs, x)
        neuron = self.g.resolve_neuron(layer.neuron)
        out = self.neuron(name, out_shape, neuron, site)
        lp = LayerPlan(layer, lpath, {"c_prev": prev.shape}, target, out_shape,
                       params=op.params(x.shape[0], layer.channels, net.dims), macs=macs)
        return lp, out

    def cell_layer(self, net, layer: CellLayer, lpath, name, site, prev, prev_prev,
                   target) -> tuple[LayerPlan, Value]:
        cells = {c.name: c for c in self.g.cells}
        if layer.cell not in cells:
            raise self.error(f"{lpath}.cell", f"unknown cell {layer.cell!r}",
                             close_match_hint(layer.cell, cells, "cells"))
        cell = cells[layer.cell]
        channels = net.node_channels[layer.level]
        self._check_size(lpath, (channels, *target))
        c = _CellWalk(net, layer, cell, lpath, name, site, channels, (channels, *target), len(self.consumers))
        c.values = {"c_prev": Value(RULES["resample"].shape(prev.shape, target), prev.parts),
                    "c_prev_prev": Value(RULES["resample"].shape(prev_prev.shape, target), prev_prev.parts)}
        order = cell_order(cell)
        for node_name in order:
            self._node(c, cell.node(node_name))
        self._resolve_delayed(c, order)
        outs = [c.values[o] for o in cell.output]
        try:
            out_shape = RULES["concat"].shape([v.shape for v in outs], list(cell.output))
        except ShapeError as exc:
            raise self.error(f"cells.{cell.name}.output", str(exc), exc.hint) from None
        out = Value(out_shape, tuple(p for v in outs for p in v.parts))
        lp = LayerPlan(layer, lpath, {"c_prev": prev.shape, "c_prev_prev": prev_prev.shape}, target, out_shape,
                       node_channels=channels, node_shapes={n: c.values[n].shape for n in order},
                       params=c.params, macs=c.macs)
        return lp, out

    def _node(self, c: _CellWalk, node) -> None:
        """Plan one node of a cell: its edges, their sum, its neuron (mixing at the membrane)."""
        npath = f"cells.{c.cell.name}.nodes.{node.name}"
        edge_values = [self._edge(c, node, e_idx, edge, f"{npath}.inputs[{e_idx}]")
                       for e_idx, edge in enumerate(node.inputs)]
        try:
            shape = RULES["sum"].shape([v.shape for v in edge_values], [e.source for e in node.inputs])
        except ShapeError as exc:
            raise self.error(f"{npath}.inputs", f"{exc} (in {c.lpath})", exc.hint) from None
        if self.g.mixing == "membrane":
            neuron = self.g.resolve_neuron(c.layer.neuron, node.neuron)
            c.values[node.name] = self.neuron(neuron_name(c.name, node.name), shape, neuron,
                                              dataclasses.replace(c.site, node=node.name))
        else:
            c.values[node.name] = Value(shape, tuple(p for v in edge_values for p in v.parts))

    def _edge(self, c: _CellWalk, node, e_idx: int, edge, epath: str) -> Value:
        """Plan one edge: its op's shape and cost, its consumer's synaptic work, its neuron (spike mixing)."""
        if edge.delay:  # the source is planned later in the order: a placeholder part, resolved later
            c.placeholders[f"{c.name}.{edge.source}.delayed"] = edge.source
            src = Value(c.node_shape, (Part(f"{c.name}.{edge.source}.delayed", c.channels, True),))
        else:
            src = c.values[edge.source]
        op = OPS[edge.op]
        try:
            shape = op.out_shape(src.shape, c.channels)
        except ShapeError as exc:
            raise self.error(f"{epath}.op", f"{exc} (in {c.lpath}, from {edge.source} {src.shape})",
                             exc.hint) from None
        e_macs = op.macs(src.shape, shape)
        c.params += op.params(src.shape[0], c.channels, c.net.dims)
        c.macs += e_macs
        edge_name = neuron_name(c.name, node.name, e_idx)
        consumer = edge_name if self.g.mixing == "spike" else neuron_name(c.name, node.name)
        if op.kind == "conv" and edge.delay:
            c.delayed.append((consumer, e_macs, edge.source))
        elif op.kind == "conv":
            self.consume(consumer, e_macs, src)
        if self.g.mixing == "spike" and op.has_neuron:
            neuron = self.g.resolve_neuron(c.layer.neuron, node.neuron, edge.neuron)
            edge_site = dataclasses.replace(c.site, node=node.name, edge=e_idx)
            return self.neuron(edge_name, shape, neuron, edge_site)
        parts = src.parts if op.binary_preserving else tuple(Part(p.producer, p.channels, False) for p in src.parts)
        return Value(shape, parts)

    def _resolve_delayed(self, c: _CellWalk, order: list[str]) -> None:
        """A delayed edge reads what its source produced (its neuron under membrane mixing, its edges'
        neurons under spike mixing), one level deep; its op runs on the source at the end of the step
        and its output is the state read one step later."""
        def resolve(parts: tuple[Part, ...]) -> tuple[Part, ...]:
            out: list[Part] = []
            for part in parts:
                if part.producer in c.placeholders:
                    out += [q for q in c.values[c.placeholders[part.producer]].parts
                            if q.producer not in c.placeholders]
                else:
                    out.append(part)
            return tuple(out)

        for node_name in order:
            c.values[node_name] = Value(c.values[node_name].shape, resolve(c.values[node_name].parts))
        self.consumers[c.first_consumer:] = [(k, m, resolve(parts), ch) for k, m, parts, ch
                                             in self.consumers[c.first_consumer:]]
        for consumer, e_macs, source in c.delayed:
            self.consume(consumer, e_macs, c.values[source])
        for node in c.cell.nodes:
            for e_idx, edge in enumerate(node.inputs):
                if edge.delay:
                    shape = OPS[edge.op].out_shape(c.values[edge.source].shape, c.channels)
                    self.states.append((delayed_state_name(c.name, node.name, e_idx), shape))
                    self.activations += math.prod(shape)

    def _check_size(self, path: str, shape: Shape) -> None:
        if any(s < 1 for s in shape):
            raise self.error(path, f"the output shape {shape} has an empty dimension",
                             "use a larger input or fewer downsampling steps")


def plan(g: Genotype, ctx=None, max_bytes: int | None = None) -> Plan:
    """Check the genotype's graphs and infer every shape. Raises GenotypeError.

    The plan of a genotype (under the default memory limit) is kept with it: planning a parsed
    genotype again returns the plan its parser made. ``ctx`` (the parser's) locates errors at lines.
    """
    cached = g.__dict__.get("_plan")
    if cached is not None and max_bytes is None:
        return cached
    p = _plan(g, ctx, max_bytes)
    if max_bytes is None:
        object.__setattr__(g, "_plan", p)  # a cache beside the frozen fields (not compared, not dumped)
    return p


def _plan(g: Genotype, ctx, max_bytes: int | None) -> Plan:
    w = _Walker(g, ctx)
    for cell in g.cells:
        check_cell(cell, w.error)
    plans: dict[str, NetPlan] = {}
    used = _plan_stereo(w, plans) if isinstance(g.head, Stereo) else _plan_classifier(w, plans)
    for name in (n.name for n in g.networks):
        if name not in used:
            raise w.error(f"networks.{name}", "network is not used by the head",
                          "remove it or name it in head")
    params, aux_params = _params(g, plans)
    fan_out, dense = _synaptic_work(w)
    total = 4 * (params + w.activations + aux_params + _aux_activations(g, plans))  # training holds the aux head
    limit = DEFAULT_MAX_BYTES if max_bytes is None else max_bytes
    if total > limit:
        raise w.error("input", f"the network would need about {total / 2**30:.1f} GiB for its weights and "
                      f"one step of activations at batch 1 (limit {limit / 2**30:.1f} GiB)",
                      "reduce input size, channels or disparities (or raise SNN_MAX_BYTES)")
    return Plan(g, plans, w.neurons, w.states, fan_out, dense, params, 4 * w.activations, aux_params)


def _network(w: _Walker, key: str, name: str, dims: int) -> Network:
    """The network the head names under ``key``, checked to exist and to have ``dims`` dimensions."""
    nets = {n.name: n for n in w.g.networks}
    if name not in nets:
        raise w.error(f"head.{key}", f"unknown network {name!r}", close_match_hint(name, nets, "networks"))
    if nets[name].dims != dims:
        raise w.error(f"networks.{name}.dims", f"the {key} network must be {dims}-D")
    return nets[name]


def _input_value(g: Genotype) -> Value:
    inp = g.input
    return Value((inp.in_channels, inp.height, inp.width), (Part("input", inp.in_channels, False),))


def _plan_stereo(w: _Walker, plans: dict[str, NetPlan]) -> set[str]:
    """Feature network on both views, cost volume, matching network, estimator; the networks used."""
    head, inp = w.g.head, w.g.input
    feat = _network(w, "feature", head.feature, 2)
    match = _network(w, "matching", head.matching, 3)
    image = _input_value(w.g)
    plans[feat.name], left = w.network(feat, instance_name(feat.name, "left"), image)
    _, right = w.network(feat, instance_name(feat.name, "right"), image)
    volume = Value(RULES["cost_volume"].shape(left.shape, right.shape, head.disparities), left.parts + right.parts)
    plans[match.name], cost = w.network(match, instance_name(match.name), volume)
    if cost.shape[0] != 1:
        raise w.error(f"networks.{match.name}.layers[{len(match.layers) - 1}].channels",
                      f"the matching network must end with 1 channel (the matching cost), got {cost.shape[0]}",
                      "set channels: 1 on its last layer")
    if cost.shape[1] != head.disparities:
        raise w.error(f"networks.{match.name}", f"the matching cost has {cost.shape[1]} disparities, "
                      f"the cost volume {head.disparities}", "end the matching network on level 0")
    try:
        RULES[head.estimator].shape(cost.shape, inp.height, inp.width)
    except ShapeError as exc:
        raise w.error(f"networks.{match.name}", str(exc), exc.hint) from None
    w.activations += head.disparities * inp.height * inp.width * 2
    return {feat.name, match.name}


def _plan_classifier(w: _Walker, plans: dict[str, NetPlan]) -> set[str]:
    """Backbone, global average pooling, linear head (and the auxiliary head's position)."""
    head = w.g.head
    back = _network(w, "backbone", head.backbone, 2)
    plans[back.name], out = w.network(back, instance_name(back.name), _input_value(w.g))
    pooled = RULES["global_avgpool"].shape(out.shape)
    RULES["linear"].shape(pooled, head.classes)
    w.consume("head.linear", pooled[0] * head.classes, Value(out.shape, tuple(
        Part(p.producer, p.channels, False) for p in out.parts)))
    if head.aux_after is not None and head.aux_after >= len(back.layers) - 1:
        raise w.error("head.aux.after", f"must name a layer before the last (0..{len(back.layers) - 2})")
    return {back.name}


def _params(g: Genotype, plans: dict[str, NetPlan]) -> tuple[int, int]:
    """Parameters of the deployed network, and of the training-only auxiliary head."""
    head = g.head
    params = sum(lp.params for np_ in plans.values() for lp in np_.layers)
    aux_params = 0
    if isinstance(head, Classifier):
        params += (plans[head.backbone].out_shape[0] + 1) * head.classes
        if head.aux_after is not None:  # training only: not part of the exported graph
            aux_in = plans[head.backbone].layers[head.aux_after].out_shape
            aux_params = aux_in[0] * head.aux_channels + 2 * head.aux_channels + (head.aux_channels + 1) * head.classes
    return params, aux_params


def _aux_activations(g: Genotype, plans: dict[str, NetPlan]) -> int:
    """Values of one step of the training-only auxiliary head (its 1x1 convolution's output)."""
    head = g.head
    if not isinstance(head, Classifier) or head.aux_after is None:
        return 0
    return head.aux_channels * math.prod(plans[head.backbone].layers[head.aux_after].out_shape[1:])


def _synaptic_work(w: _Walker) -> tuple[dict[str, float], dict[str, int]]:
    """Fan-out per spiking layer (synapses one spike reaches) and dense MACs per consumer.

    Parts are channel blocks; under spike mixing several parts are summed into the same channels.
    Every spike of every part reaches the consumer's synapses (fan-out per channel share); the dense
    work is the consumer's MACs once, split over the parts that are not spikes."""
    fan_out: dict[str, float] = {n.name: 0.0 for n in w.neurons.values() if n.spiking}
    dense: dict[str, int] = {}
    for consumer, macs, parts, channels in w.consumers:
        stacked = sum(part.channels for part in parts)
        for part in parts:
            producer = w.neurons.get(part.producer)
            if part.binary and producer is not None and producer.spiking:
                fan_out[part.producer] += macs * part.channels / channels / producer.size
            else:
                dense[consumer] = dense.get(consumer, 0) + round(macs * part.channels / stacked)
    return fan_out, dense
