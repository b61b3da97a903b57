"""NIR import: a NIR graph (``nir`` 1.0.8, written by snnTorch, Norse, Sinabs, Rockpool, Lava-DL or this
project's ``compiler.nir_export``) lowered to the compiler's graph (``Plan.graph``), then built and exported
to ONNX by the one export path a genotype takes (``compiler.export``), under the same contract.

    python -m compiler.build model.nir -o model.onnx [--dt 1e-4]

Why a lowered graph and not a genotype: a genotype is cells on a trellis with a task head, per-layer scalar
neurons of this project's kinds; a NIR graph is any graph of NIR nodes with per-neuron parameter arrays,
``v_leak``, ``v_reset``, synaptic currents and recurrent edges anywhere. The lowered graph is what every
backend reads (the torch interpreter, the ONNX export, the cost tables), so the imported graph's nodes are
lowered-graph nodes (``input``, ``sum``, ``delay_read``, ``delay_write`` and the ``compiler.nir_nodes`` kinds)
and the model is the same interpreter (``SNNModel`` over the imported ``Plan``) traced by the same export.

Semantics (NIR's continuous-time equations, forward Euler at ``dt``; a NIR file has no dt field: ``--dt``,
else the graph's ``metadata["dt"]``, else 1e-4, the step snnTorch writes and reads with). Coefficients are
computed in float64 and rounded once to float32 (``coefficients``); firing is strict (``v > v_threshold``);
a neuron that fires is set to ``v_reset``. A node's incoming edges are summed. A ``Delay`` of ``d`` is
``d / dt`` steps (a whole number). A cycle without a ``Delay`` is a recurrent edge: the edge that closes it
(the first met walking forward from the input, in edge order) reads its source's value of the step before,
which is how snnTorch's ``RLeaky`` (``mem = beta mem + x + W spk[t-1]``) runs. The graph must have one
``Input`` and one ``Output``; the data input is the contract's ``image`` [batch, C, H, W] (a graph input of
shape (N,) is read as (N, 1, 1), (C, L) as (C, 1, L)) and the output is ``logits`` [batch, prod(shape)].
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import nir
import numpy as np
from torch import nn

from .errors import GenotypeError
from .interpret import HANDLERS, build_modules
from .ir import Classifier, Genotype, Input, Neuron
from .model import SNNModel
from .names import NeuronSite
from .nir_graph import flatten_graph, order_graph, safe_name
from .nir_nodes import NIR_HANDLERS
from .nir_rules import lower_node
from .plantypes import NeuronLayer, Node, Plan

DEFAULT_DT = 1e-4
MODULE_KINDS = ("nir_linear", "nir_conv", "nir_scale", "nir_neuron")  # the kinds with a torch module


class NIRImportError(GenotypeError):
    """A NIR graph this compiler cannot express; the message names the NIR node."""


def _contract_input(shape: tuple[int, ...], where: str) -> tuple[int, int, int]:
    if len(shape) == 3:
        return shape
    if len(shape) == 2:
        return (shape[0], 1, shape[1])
    if len(shape) == 1:
        return (shape[0], 1, 1)
    raise NIRImportError(f"an input of shape {shape}: the contract's data input is [batch, C, H, W]", path=where)


def read_nir(path: str | Path) -> nir.NIRGraph:
    """The NIR graph in ``path``; an unreadable file is a one-line ``NIRImportError``."""
    path = Path(path)
    if not path.is_file():
        raise NIRImportError("no such NIR file", path="", file=str(path))
    try:
        return nir.read(path)
    except Exception as exc:  # noqa: BLE001 - h5py and nir raise many types for a bad file
        detail = str(exc).splitlines()[0] if str(exc) else ""
        raise NIRImportError(f"not a readable NIR graph ({type(exc).__name__}: {detail})", path="",
                             file=str(path)) from None


def import_plan(graph: nir.NIRGraph, name: str = "nir", dt: float | None = None, file: str = "") -> Plan:
    """The lowered graph of ``graph`` as a ``Plan`` (its ``genotype`` a description: the input, the source,
    no networks). Raises ``NIRImportError`` naming the first node it cannot express."""
    if dt is None:
        dt = float(graph.metadata.get("dt", DEFAULT_DT)) if isinstance(graph.metadata, dict) else DEFAULT_DT
    if not (math.isfinite(dt) and dt > 0):
        raise NIRImportError(f"dt must be a positive number, got {dt}", path="dt", file=file or None)
    nodes, edges = flatten_graph(graph)
    order, sources, recurrent = order_graph(nodes, edges, file)
    inputs = [n for n in order if isinstance(nodes[n], nir.Input)]
    outputs = [n for n in order if isinstance(nodes[n], nir.Output)]
    if len(outputs) > 1:  # the Output nodes nir adds for nodes that feed nothing ("output_NODE") are no outputs
        outputs = [n for n in outputs if sources[n] != [n.removeprefix("output_")]]
    for kind, found in (("Input", inputs), ("Output", outputs)):
        if len(found) != 1:
            raise NIRImportError(f"the graph has {len(found)} {kind} nodes; one is needed", path="nodes",
                                 file=file or None)
    low = _Lowering(nodes, sources, recurrent, dt, file)
    for n in order:
        if not isinstance(nodes[n], nir.Output) or n in outputs:
            low.node(n)
    low.finish()
    shape = low.shapes[inputs[0]]
    c, h, w = _contract_input(shape, inputs[0])
    out_shape = low.shapes[outputs[0]]
    g = Genotype(name=name, task="classification", input=Input(height=h, width=w, encoding="image", channels=c),
                 neuron=Neuron(), mixing="membrane", cells=(), networks=(),
                 head=Classifier(backbone="", classes=math.prod(out_shape)),
                 source=f"imported from a NIR graph ({Path(file).name if file else name}); not a buildable genotype",
                 meta={"nir": {"dt": dt, "nodes": len(nodes), "recurrent_edges": sorted(map(list, recurrent))}},
                 file=file)
    return low.plan(g)


class _Lowering:
    """Walks the NIR nodes in order, emitting lowered-graph nodes (``compiler.nir_rules`` per NIR type).
    Rules call ``emit``, ``state`` and ``neuron`` with NIR node names; the lowered graph's names are
    ``safe_name``s of them."""

    def __init__(self, nodes, sources, recurrent, dt: float, file: str):
        self.nir_nodes, self.sources, self.recurrent = nodes, sources, recurrent
        self.dt, self.file = dt, file
        self.graph: list[Node] = []
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.values: dict[str, str] = {}  # NIR node -> its value in the lowered graph
        self.states: list[tuple[str, tuple[int, ...]]] = []
        self.neurons: dict[str, NeuronLayer] = {}
        self.reads: list[Node] = []  # delay and recurrent reads, run at the start of the step
        self.writes: list[Node] = []  # delay and recurrent writes, run at the end of the step
        self.pending: dict[str, str] = {}  # recurrent source -> the state its value is kept in
        self.delay_steps: dict[str, int] = {}
        self.delay_shapes: dict[str, tuple[int, ...]] = {}
        self.output = ""
        for name, node in nodes.items():
            if isinstance(node, nir.Delay):
                self._delay_reads(name, node)

    def error(self, name: str, message: str) -> NIRImportError:
        return NIRImportError(message, path=f"nodes.{name}", file=self.file or None)

    def emit(self, kind: str, name: str, inputs, shape, **fields) -> str:
        name = name if name == "image" else safe_name(name)
        rank = (len(self.graph),)
        module = ("nir", name.replace(".", "_")) if kind in MODULE_KINDS else None
        self.graph.append(Node(kind, name, tuple(inputs), tuple(int(s) for s in shape), module=module,
                               rank=rank if module else (), layer=name, **fields))
        return name

    def state(self, name: str, shape) -> str:
        name = safe_name(name)
        self.states.append((name, tuple(int(s) for s in shape)))
        return name

    def neuron(self, name: str, shape, fires: bool) -> None:
        kind = "lif" if fires else "li"  # the project kind it is counted as (spiking or not)
        name = safe_name(name)
        self.neurons[name] = NeuronLayer(name, tuple(shape), Neuron(kind=kind), NeuronSite("nir", name, 0))

    def write_node(self, state: str, src: str, shape) -> Node:
        return Node("delay_write", f"{state}:write", (src,), tuple(shape), attrs={"state": state, "at": state},
                    state=((state, tuple(shape)),), layer=state)

    def _read(self, state: str, ref: str, shape) -> str:
        self.reads.append(Node("delay_read", ref, (), tuple(shape), attrs={"state": state, "at": state},
                               state=((state, tuple(shape)),), layer=state))
        return ref

    def _delay_reads(self, name: str, node) -> None:
        """A Delay of k steps keeps k states; its output is the oldest, read at the start of the step."""
        delay = np.asarray(node.delay, dtype=np.float64)
        steps = delay / self.dt
        k = int(round(float(steps.ravel()[0]))) if delay.size else 0
        if delay.size == 0 or not np.allclose(steps, k, rtol=1e-6, atol=1e-6) or k < 1:
            raise self.error(name, f"a delay of {np.unique(delay)[:3]} is no whole number (>= 1) of steps of "
                             f"dt {self.dt}")
        shape = delay.shape if delay.ndim else tuple(np.asarray(node.input_type.get("input", ())).ravel())
        self.delay_steps[name], self.delay_shapes[name] = k, tuple(int(s) for s in shape)
        for i in range(k):
            ref = self._read(self.state(f"{name}.delay{i}", shape), f"{safe_name(name)}:delay{i}", shape)
            self.values[name if i == 0 else f"{name}@{i}"] = ref
        self.shapes[name] = self.delay_shapes[name]

    def summed(self, name: str) -> tuple[str, tuple[int, ...] | None]:
        """The sum of a node's inputs (recurrent ones read from state); its value name and shape."""
        refs, shapes = [], []
        for src in self.sources[name]:
            if (src, name) in self.recurrent:
                if src not in self.pending:
                    self.pending[src] = f"{src}.recurrent"
                refs.append(f"{safe_name(src)}:recurrent")
                shapes.append(self.shapes.get(src) or self._declared(src))
            else:
                refs.append(self.values[src])
                shapes.append(self.shapes[src])
        known = {s for s in shapes if s is not None}
        if len(known) > 1:
            raise self.error(name, f"its inputs have different shapes {sorted(known)}; NIR sums a node's inputs")
        if not refs:
            raise self.error(name, "has no inputs")
        shape = known.pop() if known else None
        if len(refs) == 1:
            return refs[0], shape
        return self.emit("sum", f"{name}:sum", refs, shape or ()), shape

    def _declared(self, name: str) -> tuple[int, ...] | None:
        """A node's declared output shape (NIR's ``output_type``), if it declares one."""
        out = getattr(self.nir_nodes[name], "output_type", None) or {}
        shape = tuple(int(s) for s in np.asarray(out.get("output", ())).ravel())
        return shape or None

    def node(self, name: str) -> None:
        node = self.nir_nodes[name]
        if isinstance(node, nir.Input):
            shape = tuple(int(s) for s in np.asarray(node.input_type["input"]).ravel())
            c, h, w = _contract_input(shape, f"nodes.{name}")
            ref = self.emit("input", "image", [], (c, h, w), attrs={"input": "image"})
            if shape != (c, h, w):
                ref = self.emit("reshape", f"{name}:reshape", [ref], shape, attrs={"shape": shape})
            self.values[name], self.shapes[name] = ref, shape
            return
        x, shape = self.summed(name)
        if shape is None:
            raise self.error(name, "is reached only through recurrent edges from nodes that declare no output "
                             "shape (output_type), so its input shape is unknown")
        value, out_shape = lower_node(self, name, node, x, shape)
        if not isinstance(node, nir.Delay):
            self.values[name], self.shapes[name] = value, out_shape
        if isinstance(node, nir.Output):
            self.output = value

    def finish(self) -> None:
        """The recurrent reads (shapes now known), then every read first and every write last."""
        for src, state in self.pending.items():
            shape = self.shapes[src]
            if self._declared(src) not in (None, shape):
                raise self.error(src, f"declares the output shape {self._declared(src)} but computes {shape}")
            state = self.state(state, shape)
            self._read(state, f"{safe_name(src)}:recurrent", shape)
            self.writes.append(self.write_node(state, self.values[src], shape))
        self.graph = self.reads + self.graph + self.writes

    def plan(self, g: Genotype) -> Plan:
        fan_out, dense = _synaptic_work(self.graph, self.neurons)
        params = sum(n.params for n in self.graph)
        activations = sum(math.prod(n.shape) for n in self.graph) + sum(math.prod(s) for _, s in self.states)
        graph = [dataclasses.replace(n, fan_out=fan_out.get(n.name, 0.0), dense_macs=dense.get(n.name, 0))
                 for n in self.graph]
        return Plan(g, {}, self.neurons, self.states, fan_out, dense, params, 4 * activations, 0, graph,
                    {"logits": self.output}, {})


_PASS_THROUGH = ("sum", "reshape", "nir_scale", "nir_pool", "delay_write", "delay_read")


def _synaptic_work(graph: list[Node], neurons: dict[str, NeuronLayer]) -> tuple[dict[str, float], dict[str, int]]:
    """Fan-out of each spiking layer (the MACs of the weighted nodes its spikes reach, through sums, reshapes,
    scales, pools and delays, per neuron) and the dense MACs of weighted nodes fed by anything else."""
    consumers: dict[str, list[Node]] = {}
    for n in graph:
        for i in n.inputs:
            consumers.setdefault(i, []).append(n)
    by_state = {n.attrs["state"]: n for n in graph if n.kind == "delay_read"}

    def reached(ref: str, seen: set[str]) -> list[Node]:
        out: list[Node] = []
        for c in consumers.get(ref, []):
            if c.name in seen:
                continue
            seen.add(c.name)
            if c.kind == "delay_write":
                out += reached(by_state[c.attrs["state"]].name, seen)
            elif c.kind in _PASS_THROUGH:
                out += reached(c.name, seen)
            elif c.macs:
                out.append(c)
        return out

    fan_out = {name: sum(c.macs for c in reached(name, set())) / math.prod(layer.shape)
               for name, layer in neurons.items() if layer.spiking}
    fed_by_spikes = {c.name for name in fan_out for c in reached(name, set())}
    dense = {n.name: n.macs for n in graph if n.macs and n.name not in fed_by_spikes}
    return fan_out, dense


def is_nir_file(path: str | Path) -> bool:
    """Whether ``path`` names a NIR graph (by its suffix, ``.nir``)."""
    return Path(path).suffix.lower() == ".nir"


def is_imported(p: Plan) -> bool:
    """Whether ``p`` is the plan of an imported NIR graph (its nodes need ``NIRModel``)."""
    return any(n.kind in NIR_HANDLERS and n.kind not in HANDLERS for n in p.graph)


class NIRModel(SNNModel):
    """The torch model of an imported graph: the interpreter with the NIR node kinds (``compiler.nir_nodes``);
    its modules live in ``nir.NAME``. Exported by ``compiler.export`` like any compiled model."""

    handlers = NIR_HANDLERS

    def __init__(self, p: Plan):
        nn.Module.__init__(self)
        self.genotype, self.plan = p.genotype, p
        self.nets = nn.ModuleDict()
        self.nir = nn.ModuleDict()
        build_modules(self, p.graph, self.handlers)


def load_nir(path: str | Path, dt: float | None = None) -> Plan:
    """Read and lower the NIR file at ``path`` (``import_plan``); errors name the file and the node."""
    graph = read_nir(path)
    try:
        p = import_plan(graph, Path(path).stem, dt, str(path))
    except NIRImportError:
        raise
    except GenotypeError as exc:  # the graph walk's errors
        raise NIRImportError(exc.message, path=exc.path, file=str(path)) from None
    if not p.params:
        raise NIRImportError("the graph has no weighted node (Affine, Linear, Conv): nothing to deploy",
                             path="nodes", file=str(path))
    return p
