"""The torch spiking model of a genotype: an interpreter over its lowered graph (``Plan.graph``), one
time step per call, state explicit.

    model = build_model(genotype)           # or build_model(plan(genotype))
    state = model.initial_state(batch_size=2)
    out, state = model({"left": x, "right": y}, state)   # x, y: (B, bins, H, W)

``out`` holds the task output (``disparity`` (B, H, W) and ``cost`` (B, D, H, W) for stereo;
``logits`` (B, classes), and ``aux_logits`` in training mode, for classification) and ``spikes``:
per spiking layer the number of spikes each sample emitted at this step, shape (B,). Nothing is
kept between calls: the state dict is the only memory.

The modules live in a tree the checkpoints name: ``nets.NET.layers.I`` is a layer's container
(``ConvBlock``: ``op``, ``neuron``; ``CellBlock``: ``ops``, ``neurons`` keyed ``NODE_EDGE`` / ``NODE``),
then ``classifier`` and ``aux``. Each graph node says where its module lives; the handlers of
``compiler.interpret`` create and run them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .interpret import HANDLERS, Scope, Step, build_modules, run_graph, submodule
from .ir import ConvLayer, Genotype
from .ops import cost_volume, time_steps
from .planner import plan
from .plantypes import LayerPlan, NetPlan, Node, Plan


class ConvBlock(Scope):
    """The modules of a conv layer: ``op`` and ``neuron`` (created by the graph's handlers)."""

    def __init__(self, lp: LayerPlan, g: Genotype):
        super().__init__()
        self.target = lp.target


class CellBlock(Scope):
    """The modules of a cell layer: ``ops`` (one per edge) and ``neurons`` (per edge under mixing at the
    spike, per node at the membrane); ``delayed`` lists (node, input index, source) of each delayed edge."""

    def __init__(self, lp: LayerPlan, g: Genotype):
        super().__init__()
        self.cell = g.cell(lp.layer.cell)
        self.target = lp.target
        self.ops = nn.ModuleDict()
        self.neurons = nn.ModuleDict()
        self.delayed = [(n.name, i, e.source) for n in self.cell.nodes for i, e in enumerate(n.inputs) if e.delay]


class NetworkModule(Scope):
    """A network's layer containers, in order."""

    def __init__(self, np_: NetPlan, g: Genotype):
        super().__init__()
        self.names = [lp.layer.name for lp in np_.layers]
        self.layers = nn.ModuleList(ConvBlock(lp, g) if isinstance(lp.layer, ConvLayer) else CellBlock(lp, g)
                                    for lp in np_.layers)


def task_names(g: Genotype) -> tuple[list[str], str]:
    """The model's input names and its data output's name (those of the ONNX contract)."""
    from runtime.core.names import data_inputs, data_output

    return data_inputs(g.task), data_output(g.task)


class SNNModel(nn.Module):
    """A compiled genotype. ``forward`` is one time step; see the module docstring.

    ``volume`` builds the stereo matching network's input from the two views' features (the cost
    volume; a factorised copy replaces it, see compiler.factorize)."""

    volume = staticmethod(cost_volume)
    handlers = HANDLERS  # node kind -> its handler (compiler.interpret); an imported NIR graph adds kinds

    def __init__(self, p: Plan):
        super().__init__()
        self.genotype = p.genotype
        self.plan = p
        self.nets = nn.ModuleDict({name: NetworkModule(np_, p.genotype) for name, np_ in p.nets.items()})
        build_modules(self, p.graph, self.handlers)

    @property
    def input_names(self) -> list[str]:
        return task_names(self.genotype)[0]

    @property
    def output_name(self) -> str:
        return task_names(self.genotype)[1]

    def state_shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        return list(self.plan.states)

    def spiking_neurons(self) -> int:
        """Neurons per sample of all spiking layers (the denominator of a firing rate)."""
        return sum(n.size for n in self.plan.spiking_layers)

    def initial_state(self, batch_size: int = 1, device=None, dtype=torch.float32) -> dict[str, Tensor]:
        """Zeros for every state tensor, (batch_size, *shape) each."""
        if device is None:
            device = next(self.parameters()).device
        return {name: torch.zeros((batch_size, *shape), device=device, dtype=dtype)
                for name, shape in self.plan.states}

    def _check_inputs(self, inputs: dict[str, Tensor]) -> None:
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise KeyError(f"missing model input(s) {missing}; this model takes {self.input_names}")

    def forward(self, inputs: dict[str, Tensor], state: dict[str, Tensor]) -> tuple[dict, dict[str, Tensor]]:
        self._check_inputs(inputs)
        step = Step(state)
        values = run_graph(self, self.plan.graph, inputs, step, self.handlers)
        out = {key: values[name] for key, name in self.plan.outputs.items() if name in values}
        out["spikes"] = step.spikes
        return out, step.state_out

    @property
    def multistep_exact(self) -> bool:
        """Whether ``forward_steps`` runs all T steps stacked (no delayed edge: no step reads what the same
        step of another node wrote), rather than step by step."""
        return stackable(self.plan.graph)

    def forward_steps(self, inputs: dict[str, Tensor], state: dict[str, Tensor],
                      outputs: tuple[str, ...] | None = None) -> tuple[dict, dict[str, Tensor]]:
        """T time steps in one call: ``inputs`` (T, B, ...) each -> outputs (T, B, ...) (``spikes``: per layer
        (T, B)) and the state after the last step; the same values as T calls of ``forward``. Where exact
        (``multistep_exact``) every layer's convolution runs once over the T steps stacked in the batch
        and each neuron layer's recurrence over T at once; otherwise it steps. ``outputs`` (keys of
        ``plan.outputs``): where it runs stacked, only those are computed, with every node that carries state
        (training reads the matching cost alone, and the disparity estimator is left out; the same values for
        what is computed); where it steps, everything is."""
        steps = next(iter(inputs.values())).shape[0]
        if not self.multistep_exact:
            return step_by_step(self, inputs, state)
        self._check_inputs(inputs)
        step = Step(state, steps)
        nodes = self.plan.graph if outputs is None else self._nodes_for(tuple(outputs))
        shared = shared_modules(self, self.plan.graph)
        return run_stacked(self, nodes, self.plan.outputs, inputs, step, self.handlers, shared), step.state_out

    def _nodes_for(self, outputs: tuple[str, ...]) -> list[Node]:
        """The plan's nodes that ``outputs`` or any state depends on, in order (cached per ``outputs``)."""
        cache = self.__dict__.setdefault("_pruned", {})  # a plain attribute, made on first use
        if outputs not in cache:
            unknown = [k for k in outputs if k not in self.plan.outputs]
            if unknown:
                raise KeyError(f"unknown model output(s) {unknown}; this model has {list(self.plan.outputs)}")
            by_name = {n.name: n for n in self.plan.graph}
            todo = [self.plan.outputs[k] for k in outputs] + [n.name for n in self.plan.graph if n.state]
            needed: set[str] = set()
            while todo:
                name = todo.pop()
                if name not in needed:
                    needed.add(name)
                    todo.extend(by_name[name].inputs)
            cache[outputs] = [n for n in self.plan.graph if n.name in needed]
        return cache[outputs]


def stackable(graph: list[Node]) -> bool:
    """Whether a graph's T steps may run stacked in the batch: no delayed edge (no step reads what the same step
    of another node wrote)."""
    return not any(n.kind in ("delay_read", "delay_write") for n in graph)


def shared_modules(root: nn.Module, graph: list[Node]) -> frozenset[int]:
    """id() of every module under a node module that more than one node runs (the stereo feature net)."""
    paths = [n.module for n in graph if n.module is not None]
    shared = {p for p in paths if paths.count(p) > 1}
    return frozenset(id(m) for p in shared if (top := submodule(root, p)) is not None for m in top.modules())


def run_stacked(root: nn.Module, nodes: list[Node], outputs: dict[str, str], inputs: dict[str, Tensor], step: Step,
                handlers: dict, shared: frozenset[int]) -> dict:
    """``nodes`` over ``step.steps`` time steps stacked in the batch (``inputs`` (T, B, ...) each): the
    outputs named in ``outputs`` (key -> node) as (T, B, ...), ``spikes`` per layer (T, B); the state after
    the last step is in ``step.state_out``; ``shared``: ``shared_modules`` of the whole graph. The compiled
    model's and the supernet's ``forward_steps``."""
    steps = step.steps
    with time_steps(steps, shared):
        values = run_graph(root, nodes, {k: v.flatten(0, 1) for k, v in inputs.items()}, step, handlers)
    out = {key: values[name].unflatten(0, (steps, -1)) for key, name in outputs.items() if name in values}
    # (a single step runs the per-step path, whose counts are (B,): (1, B) as for any T)
    out["spikes"] = {k: v.unsqueeze(0) for k, v in step.spikes.items()} if steps == 1 else step.spikes
    return out


def step_by_step(model: nn.Module, inputs: dict[str, Tensor], state: dict[str, Tensor]) -> tuple[dict, dict]:
    """``forward_steps`` as T calls of ``model`` (a graph with a delayed edge: a step reads what the previous
    step wrote)."""
    outs = []
    for t in range(next(iter(inputs.values())).shape[0]):
        out, state = model({k: v[t] for k, v in inputs.items()}, state)
        outs.append(out)
    return stack_steps(outs), state


def stack_steps(outs: list[dict]) -> dict:
    """Per-step outputs -> one dict of (T, B, ...) tensors (spikes: per layer (T, B))."""
    out = {k: torch.stack([o[k] for o in outs]) for k in outs[0] if k != "spikes"}
    out["spikes"] = {k: torch.stack([o["spikes"][k] for o in outs]) for k in outs[0]["spikes"]}
    return out


def build_model(source: Genotype | Plan) -> SNNModel:
    """Build the torch model of a validated genotype, or of its plan (weights freshly initialised).
    A genotype is planned once (its parser's plan is reused)."""
    return SNNModel(source if isinstance(source, Plan) else plan(source))
