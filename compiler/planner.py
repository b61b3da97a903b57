"""The planner: graph checks (networkx), shape inference and lowering, before any tensor exists.

``plan(genotype)`` walks every network in order and every cell in the topological order of its
DAG (delayed edges removed), applying each op's shape rule from the registry, and lowers the
genotype to one flat graph of typed nodes in execution order (``Plan.graph``; node kinds in
``compiler.plantypes``; the heads per task in ``compiler.tasks``). How a cell node mixes (membrane or
spike) and what a delayed edge reads are decided here and nowhere else. The ``Plan`` is what the torch
model, the NIR export, the supernet, the summary table and the ONNX metadata (neuron counts, fan-out
for SynOps, dense MACs) all read, so they can never disagree. A genotype is planned
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
from .ir import CELL_INPUTS, EDGE_FIRES, NODE_FIRES, Cell, CellLayer, ConvLayer, Genotype, Network, Neuron
from .names import NeuronSite, cell_inputs_after, delayed_state_name, layer_name, neuron_name, state_name
from .plantypes import LayerPlan, NetPlan, NeuronLayer, Node, Part, Plan, Value
from .registry import NEURONS, OPS, RULES, Shape, ShapeError
from .synaptic import synaptic_work
from .tasks import TASKS

# Refuse genotypes whose weights + one step of activations (batch 1, float32) exceed this.
DEFAULT_MAX_BYTES = int(float(os.environ.get("SNN_MAX_BYTES", 16 * 2**30)))


@dataclass
class _CellWalk:
    """What the walker knows while it lowers one cell layer."""

    net: Network
    layer: CellLayer
    cell: Cell
    lpath: str
    name: str
    site: NeuronSite
    channels: int
    node_shape: Shape
    first_consumer: int  # the walker's consumers from here on are this cell's
    module: tuple[str, ...]  # the layer's module in the torch model
    rank: tuple[int, ...]
    decl: dict = field(default_factory=dict)  # (node, edge) / node -> its modules' declaration rank
    values: dict[str, Value] = field(default_factory=dict)
    placeholders: dict[str, str] = field(default_factory=dict)  # placeholder producer -> delayed source
    spikes: dict[str, Value] = field(default_factory=dict)  # current mixing: source -> its neuron's spikes
    delayed: list[tuple[str, int, str]] = field(default_factory=list)  # (consumer, MACs, source), delayed convs
    params: int = 0
    macs: int = 0


def _declaration_ranks(cell: Cell) -> dict:
    """The order a cell's modules are created in: per node in declaration order, each edge's op and
    neuron, then the node's neuron."""
    ranks: dict = {}
    for node in cell.nodes:
        for i in range(len(node.inputs)):
            ranks[(node.name, i)] = len(ranks) * 2
        ranks[node.name] = len(ranks) * 2
    return ranks


def _op_attrs(op, in_channels: int, out_channels: int, dims: int, stride: int, at: str) -> dict:
    return {"op": op.name, "kind": op.kind, "kernel": op.kernel, "stride": stride, "dims": dims,
            "in_channels": in_channels, "out_channels": out_channels, "at": at}


class _Walker:
    def __init__(self, g: Genotype, ctx):
        self.g = g
        self.ctx = ctx
        self.neurons: dict[str, NeuronLayer] = {}
        self.states: list[tuple[str, Shape]] = []
        self.consumers: list[tuple[str, int, tuple[Part, ...], int]] = []
        self.activations = 0
        self.nodes: list[Node] = []
        self.net_rank: dict[str, int] = {}
        self.scope: tuple[str, ...] = ()  # the layer container being lowered
        self.layer_io: dict[str, tuple[str, str, str]] = {}  # layer -> (c_prev, c_prev_prev, output) values

    def error(self, path: str, message: str, hint: str | None = None) -> GenotypeError:
        if self.ctx is not None:
            return self.ctx.error(path, message, hint)
        return GenotypeError(message, path=path, file=self.g.file or None, hint=hint)

    # -- bookkeeping ------------------------------------------------------------------------------
    def emit(self, kind: str, name: str, inputs, shape: Shape, **fields) -> str:
        """Append a node to the lowered graph; returns its value name."""
        fields.setdefault("scope", self.scope)
        self.nodes.append(Node(kind, name, tuple(inputs), tuple(shape), **fields))
        return name

    def neuron(self, name: str, shape: Shape, neuron: Neuron, site: NeuronSite, source: str,
               **fields) -> Value:
        spec = NEURONS[neuron.kind]
        self.neurons[name] = NeuronLayer(name, shape, neuron, site)
        state = tuple((state_name(name, s), shape) for s in spec.state)
        self.states.extend(state)
        self.activations += math.prod(shape) * (1 + len(spec.state))
        self.emit("neuron", name, [source], shape, attrs={"neuron": neuron, "site": site}, state=state, **fields)
        return Value(shape, (Part(name, shape[0], spec.spiking),), name)

    def consume(self, consumer: str, macs: int, value: Value) -> None:
        self.consumers.append((consumer, macs, value.parts, value.shape[0]))

    def resample(self, value: Value, target, layer: str, part: str | None, path: str) -> Value:
        """``value`` at a level's size: a resample node where the size changes."""
        if target is None:
            return value
        shape = RULES["resample"].shape(value.shape, target)
        if shape == value.shape:
            return Value(shape, value.parts, value.ref)
        name = f"{layer}:resample" + (f".{part}" if part else "")
        self.emit("resample", name, [value.ref], shape, attrs={"size": tuple(target), "at": layer, "part": part},
                  layer=layer, path=path)
        return Value(shape, value.parts, name)

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
        self.net_rank.setdefault(net.name, len(self.net_rank))
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
            self.scope = ("nets", net.name, "layers", str(i))
            if isinstance(layer, ConvLayer):
                lp, out = self.conv_layer(net, layer, lpath, name, site, prev, target)
            else:
                lp, out = self.cell_layer(net, layer, lpath, name, site, prev, prev_prev, target)
            self.scope = ()
            lp.name, lp.output = name, out.ref
            self.layer_io[name] = (prev.ref, prev_prev.ref, out.ref)
            layers.append(lp)
            prev, prev_prev = cell_inputs_after(i, prev, out)
        return NetPlan(net, value.shape, sizes, layers), prev

    def conv_layer(self, net, layer: ConvLayer, lpath, name, site, prev: Value, target) -> tuple[LayerPlan, Value]:
        op = OPS[layer.op]
        x = self.resample(prev, target, name, None, lpath)
        try:
            out_shape = op.out_shape(x.shape, layer.channels, layer.stride)
        except ShapeError as exc:
            raise self.error(lpath, str(exc), exc.hint) from None
        self._check_size(lpath, out_shape)
        macs = op.macs(x.shape, out_shape)
        params = op.params(x.shape[0], layer.channels, net.dims)
        module, rank = ("nets", net.name, "layers", str(site.layer_index)), (self.net_rank[net.name], site.layer_index)
        neuron = self.g.resolve_neuron(layer.neuron)
        # current mixing (SNASNet): LIF-conv-BN, the neuron on the incoming current; none on the network input
        first = self.g.mixing == "current" and any(p.producer != "input" for p in x.parts)
        if first:
            x = self.neuron(name, x.shape, neuron, site, x.ref, module=(*module, "neuron"), rank=(*rank, 0),
                            layer=name, path=lpath)
        self.consume(f"{name}:op" if self.g.mixing == "current" else name, macs, x)  # the op holds its dense MACs
        ref = self.emit("op", f"{name}:op", [x.ref], out_shape, module=(*module, "op"), rank=(*rank, 0),
                        attrs=_op_attrs(op, x.shape[0], layer.channels, net.dims, layer.stride, name),
                        layer=name, path=lpath, params=params, macs=macs)
        if self.g.mixing == "current":
            out = Value(out_shape, (Part(ref, layer.channels, False),), ref)
        else:
            out = self.neuron(name, out_shape, neuron, site, ref, module=(*module, "neuron"), rank=(*rank, 1),
                              layer=name, path=lpath)
        lp = LayerPlan(layer, lpath, {"c_prev": prev.shape}, target, out_shape, params=params, macs=macs)
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
        c = _CellWalk(net, layer, cell, lpath, name, site, channels, (channels, *target), len(self.consumers),
                      ("nets", net.name, "layers", str(site.layer_index)),
                      (self.net_rank[net.name], site.layer_index), _declaration_ranks(cell))
        c.values = {"c_prev": self.resample(prev, target, name, "c_prev", lpath),
                    "c_prev_prev": self.resample(prev_prev, target, name, "c_prev_prev", lpath)}
        order = cell_order(cell)
        for node_name in order:
            self._node(c, cell.node(node_name))
        self._resolve_delayed(c, order)
        outs = [c.values[o] for o in cell.output]
        try:
            out_shape = RULES["concat"].shape([v.shape for v in outs], list(cell.output))
        except ShapeError as exc:
            raise self.error(f"cells.{cell.name}.output", str(exc), exc.hint) from None
        ref = outs[0].ref if len(outs) == 1 else self.emit(
            "concat", f"{name}:concat", [v.ref for v in outs], out_shape,
            attrs={"parts": list(cell.output), "at": name}, layer=name, path=lpath)
        out = Value(out_shape, tuple(p for v in outs for p in v.parts), ref)
        lp = LayerPlan(layer, lpath, {"c_prev": prev.shape, "c_prev_prev": prev_prev.shape}, target, out_shape,
                       node_channels=channels, node_shapes={n: c.values[n].shape for n in order},
                       params=c.params, macs=c.macs)
        return lp, out

    def _node(self, c: _CellWalk, node) -> None:
        """Lower one node of a cell: its edges, their sum and, unless the genotype mixes by ``spike_sum``,
        the node's neuron (at the membrane: its only neuron; at the spike: its spiking function, the
        paper's sign function f of eq. 3, after the edges' own neurons)."""
        npath = f"cells.{c.cell.name}.nodes.{node.name}"
        edge_values = [self._edge(c, node, e_idx, edge, f"{npath}.inputs[{e_idx}]")
                       for e_idx, edge in enumerate(node.inputs)]
        try:
            shape = RULES["sum"].shape([v.shape for v in edge_values], [e.source for e in node.inputs])
        except ShapeError as exc:
            raise self.error(f"{npath}.inputs", f"{exc} (in {c.lpath})", exc.hint) from None
        name = neuron_name(c.name, node.name)
        total = self.emit("sum", f"{name}:sum", [v.ref for v in edge_values], shape, layer=c.name, path=npath)
        if self.g.mixing == "spike":  # each edge's spike reaches one synapse of weight 1: the node's neuron
            for v in edge_values:
                self.consume(name, math.prod(shape), v)
        if self.g.mixing == "current":  # the node is its current; a conv reading it makes its neuron
            c.values[node.name] = Value(shape, (Part(total, shape[0], False),), total)
        elif self.g.mixing in NODE_FIRES:  # membrane: the node's neuron; spike: its spiking function
            neuron = self.g.node_neuron_of(c.layer.neuron, node.neuron)
            c.values[node.name] = self.neuron(name, shape, neuron, dataclasses.replace(c.site, node=node.name), total,
                                              module=(*c.module, "neurons", node.name),
                                              rank=(*c.rank, c.decl[node.name]), layer=c.name, path=npath)
        else:  # spike_sum: the plain sum of the edges' spikes (counts, not spikes)
            c.values[node.name] = Value(shape, tuple(p for v in edge_values for p in v.parts), total)

    def _edge(self, c: _CellWalk, node, e_idx: int, edge, epath: str) -> Value:
        """Lower one edge: its op (or, delayed, the state it reads), its cost, its consumer's synaptic
        work, its neuron (spike mixing)."""
        edge_name = neuron_name(c.name, node.name, e_idx)
        if edge.delay:  # the source is lowered later in the order: a placeholder part, resolved later
            c.placeholders[f"{c.name}.{edge.source}.delayed"] = edge.source
            src = Value(c.node_shape, (Part(f"{c.name}.{edge.source}.delayed", c.channels, True),))
        else:
            src = self._source(c, edge)
        op = OPS[edge.op]
        try:
            shape = op.out_shape(src.shape, c.channels)
        except ShapeError as exc:
            raise self.error(f"{epath}.op", f"{exc} (in {c.lpath}, from {edge.source} {src.shape})",
                             exc.hint) from None
        e_macs = op.macs(src.shape, shape)
        c.params += op.params(src.shape[0], c.channels, c.net.dims)
        c.macs += e_macs
        consumer = edge_name if self.g.mixing in EDGE_FIRES else neuron_name(c.name, node.name)
        if op.kind == "conv" and edge.delay:
            c.delayed.append((consumer, e_macs, edge.source))
        elif op.kind == "conv":
            self.consume(consumer, e_macs, src)
        if edge.delay:
            state = delayed_state_name(c.name, node.name, e_idx)
            ref = self.emit("delay_read", f"{edge_name}:delayed", [], shape, attrs={"state": state, "at": edge_name},
                            state=((state, shape),), layer=c.name, path=epath)
        else:
            ref = self._edge_op(c, node.name, e_idx, op, src, shape, epath)
        if self.g.mixing in EDGE_FIRES and op.has_neuron:
            neuron = self.g.edge_neuron_of(c.layer.neuron, node.neuron, edge.neuron)
            edge_site = dataclasses.replace(c.site, node=node.name, edge=e_idx)
            return self.neuron(edge_name, shape, neuron, edge_site, ref,
                               module=(*c.module, "neurons", f"{node.name}_{e_idx}"),
                               rank=(*c.rank, c.decl[(node.name, e_idx)] + 1), layer=c.name, path=epath)
        parts = src.parts if op.binary_preserving else tuple(Part(p.producer, p.channels, False) for p in src.parts)
        return Value(shape, parts, ref)

    def _source(self, c: _CellWalk, edge) -> Value:
        """What an edge (or a delayed conv's source name) reads: the source's value, or under current
        mixing for a conv the spikes of the neuron on the source's current (made at its first reader)."""
        source = edge if isinstance(edge, str) else edge.source
        if self.g.mixing != "current" or (not isinstance(edge, str) and OPS[edge.op].kind != "conv"):
            return c.values[source]
        if source not in c.spikes:
            node = next((n for n in c.cell.nodes if n.name == source), None)
            site = dataclasses.replace(c.site, node=source) if node else c.site
            rank = c.decl[source] if node else -1 - CELL_INPUTS.index(source)
            c.spikes[source] = self.neuron(
                neuron_name(c.name, source), c.values[source].shape,
                self.g.node_neuron_of(c.layer.neuron, node.neuron if node else {}), site, c.values[source].ref,
                module=(*c.module, "neurons", source), rank=(*c.rank, rank), layer=c.name, path=c.lpath)
        return c.spikes[source]

    def _edge_op(self, c: _CellWalk, node: str, e_idx: int, op, src: Value, shape: Shape, epath: str) -> str:
        """The op node of an edge (on its source now, or for a delayed edge at the end of the step)."""
        edge_name = neuron_name(c.name, node, e_idx)
        return self.emit("op", f"{edge_name}:op", [src.ref], shape, module=(*c.module, "ops", f"{node}_{e_idx}"),
                         rank=(*c.rank, c.decl[(node, e_idx)]),
                         attrs=_op_attrs(op, src.shape[0], c.channels, c.net.dims, 1, edge_name), layer=c.name,
                         path=f"{epath} (in {c.lpath})", params=op.params(src.shape[0], c.channels, c.net.dims),
                         macs=op.macs(src.shape, shape))

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
            old = c.values[node_name]
            c.values[node_name] = Value(old.shape, resolve(old.parts), old.ref)
        self.consumers[c.first_consumer:] = [(k, m, resolve(parts), ch) for k, m, parts, ch
                                             in self.consumers[c.first_consumer:]]
        for consumer, e_macs, source in c.delayed:
            self.consume(consumer, e_macs, self._source(c, source))
        for node in c.cell.nodes:
            for e_idx, edge in enumerate(node.inputs):
                if edge.delay:
                    src = self._source(c, edge)
                    shape = OPS[edge.op].out_shape(src.shape, c.channels)
                    state = delayed_state_name(c.name, node.name, e_idx)
                    self.states.append((state, shape))
                    self.activations += math.prod(shape)
                    epath = f"cells.{c.cell.name}.nodes.{node.name}.inputs[{e_idx}]"
                    ref = self._edge_op(c, node.name, e_idx, OPS[edge.op], src, shape, epath)
                    at = neuron_name(c.name, node.name, e_idx)
                    self.emit("delay_write", f"{at}:delayed.write", [ref], shape, attrs={"state": state, "at": at},
                              state=((state, shape),), layer=c.name, path=epath)

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
    task = TASKS[g.task]
    used, outputs = task.lower(w, plans)
    for name in (n.name for n in g.networks):
        if name not in used:
            raise w.error(f"networks.{name}", "network is not used by the head",
                          "remove it or name it in head")
    head_params, aux_params = task.params(g, plans)
    params = sum(lp.params for np_ in plans.values() for lp in np_.layers) + head_params
    fan_out, dense = synaptic_work(w.neurons, w.consumers)
    total = 4 * (params + w.activations + aux_params + task.aux_activations(g, plans))  # training holds the aux head
    limit = DEFAULT_MAX_BYTES if max_bytes is None else max_bytes
    if total > limit:
        raise w.error("input", f"the network would need about {total / 2**30:.1f} GiB for its weights and "
                      f"one step of activations at batch 1 (limit {limit / 2**30:.1f} GiB)",
                      "reduce input size, channels or disparities (or raise SNN_MAX_BYTES)")
    graph = [dataclasses.replace(n, fan_out=fan_out.get(n.name, 0.0), dense_macs=dense.get(n.attrs.get(
        "consumer", n.name), 0)) if n.kind in ("neuron", "linear", "op") else n for n in w.nodes]
    return Plan(g, plans, w.neurons, w.states, fan_out, dense, params, 4 * w.activations, aux_params,
                graph, outputs, w.layer_io)
