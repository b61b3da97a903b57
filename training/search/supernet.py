"""The SpikeDHS supernet: searched cells whose edges mix every candidate op (at the spike), on a
trellis of resolution levels weighted by beta, built from the compiler's registry and neurons and
run by the compiler's graph interpreter (``compiler.interpret``).

The search space (``space.py``) names a base genotype and, per network, how its cells are searched.
In a searched network the base's cell layers are replaced by ``layers`` trellis layers. At layer l,
level j, one cell per incoming level k in {j-1, j, j+1} runs on the previous layer's output at level k
(resampled); the level's output is their sum, each weighted by its transition's probability: as in
Auto-DeepLab (sec. 3.2, its model_search.py) ``beta[l, k]`` is normalised over level k's OUTGOING moves
(``transition_weights``), so the Viterbi path (``decode.decode_path``) is a real choice. Every edge of
a cell is ``sum_o softmax(alpha[edge])_o * y_o``, ``y_o`` the spikes of candidate o (its own neuron and
b), and each node's sum passes the node's spiking function (``mixing: spike``, the paper's g(b = 3)),
as the decoded genotype compiles it; a candidate whose shape rule cannot hold on an edge (skip between
different channel counts) is masked out there. Alphas are shared by every cell of a network; betas are
per network. State is explicit. The supernet runs the base genotype's lowered graph with the
compiler's handlers; a ``trellis`` node (``searchgraph.py``) stands where the cells were, with its own
handler. Level sizes are the plan's. Decoding to a genotype is ``decode.py``'s.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from compiler.errors import GenotypeError
from compiler.interpret import HANDLERS, Handler, Step, build_modules, run_graph
from compiler.ir import NODE_NEURON_DEFAULT, CellLayer, ConvLayer, Genotype, Network, resolve_neuron
from compiler.model import ConvBlock, run_stacked, shared_modules, stackable, step_by_step, task_names
from compiler.names import state_name
from compiler.neurons import NeuronModule, build_neuron
from compiler.ops import cost_volume, resample
from compiler.planner import plan
from compiler.plantypes import NetPlan, Node

from .decode import cell_sources, decode_cell, decode_path
from .mixed import SuperCell
from .searchgraph import remap_modules, searched_graph
from .space import SearchedNetwork, SearchSpace


# ------------------------------------------------------------------------------------------ modules
def transition_weights(betas: Tensor, allowed: Tensor) -> Tensor:
    """``betas[l, k]`` (level k's moves at layer l to k - 1, k, k + 1) softmaxed over the moves ``allowed``
    has, 0 elsewhere: Auto-DeepLab's normalisation over a cell's outgoing transitions."""
    allowed = allowed.to(betas.device)  # -1e9, not -inf: no NaN gradient on a level with no move
    w = torch.softmax(betas.masked_fill(~allowed, -1e9), dim=-1)
    return torch.where(allowed, w, torch.zeros_like(w))


def _to_relu(mods: nn.ModuleDict, layout: list[tuple[str, str]]) -> None:
    """The stems (base layers before the cells) with a ReLU for their neuron during search; the decoded
    genotype keeps the base's spiking stems ("converted to SNN ... and retrain", SpikeDHS sec. 3.2)."""
    for _, key in layout:
        if isinstance(getattr(mods[key], "neuron", None), NeuronModule):
            mods[key].neuron = build_neuron(dataclasses.replace(mods[key].neuron.spec, kind="relu"))


def _prev_prev(outputs: dict, j: int, k: int):
    """c_{k-2} of the cell on level j fed from level k: the output two layers back on level j, else on
    level k, else on the lowest level it has (the same rule builds the cells and runs them)."""
    if j in outputs:
        return outputs[j]
    return outputs[k] if k in outputs else next(iter(outputs.values()))


class Trellis(nn.Module):
    """``layers`` layers over the network's levels; see the module docstring."""

    def __init__(self, space: SearchSpace, s: SearchedNetwork, net: Network, c_in: int, c_in_prev: int,
                 sizes: list[tuple[int, ...]], neurons):
        super().__init__()
        self.s = s
        self.levels = len(net.rates)
        self.sizes = sizes  # spatial size of each level (the plan's)
        self.channels = [space.nodes * c for c in net.node_channels]
        self.cells = nn.ModuleDict()
        self.reach: list[list[int]] = []
        prev_levels = {s.start_level: c_in}
        prev_prev_channels = {s.start_level: c_in_prev}
        for layer in range(s.layers):
            here = {}
            for j in range(self.levels):
                if abs(j - s.start_level) > layer + 1 or abs(j - s.end_level) > s.layers - layer - 1:
                    continue
                for k in (j - 1, j, j + 1):
                    if k in prev_levels:
                        cpp = _prev_prev(prev_prev_channels, j, k)
                        self.cells[f"{layer}_{j}_{k}"] = SuperCell(space, prev_levels[k], cpp,
                                                                    net.node_channels[j], net.dims, neurons)
                        here[j] = self.channels[j]
            self.reach.append(sorted(here))
            prev_prev_channels = dict(prev_levels)
            prev_levels = here
        self.out_channels = self.channels[s.end_level]

    def allowed(self) -> Tensor:
        """(layers, levels, 3) bool, as beta: [layer, k, d] where the trellis has the move k -> k + d - 1."""
        out = torch.zeros(self.s.layers, self.levels, 3, dtype=torch.bool)
        for key in self.cells:
            layer, j, k = (int(v) for v in key.split("_"))
            out[layer, k, j - k + 1] = True
        return out

    def forward(self, x: Tensor, x_prev: Tensor, alphas: list[Tensor], betas: Tensor, step: Step,
                name: str) -> Tensor:
        prev = {self.s.start_level: x}
        prev_prev = {self.s.start_level: x_prev}
        weights = transition_weights(betas, self.allowed())
        for layer, levels in enumerate(self.reach):
            here = {}
            for j in levels:
                total = 0
                for k in (j - 1, j, j + 1):
                    if f"{layer}_{j}_{k}" not in self.cells:
                        continue
                    w_k = weights[layer, k, j - k + 1]
                    pp = _prev_prev(prev_prev, j, k)
                    cell = self.cells[f"{layer}_{j}_{k}"]
                    y = cell(resample(prev[k], self.sizes[j]), resample(pp, self.sizes[j]), alphas, step,
                             f"{name}.L{layer}.{j}from{k}")
                    total = total + w_k * y
                here[j] = total
            prev_prev, prev = prev, here
        return prev[self.s.end_level]


class FixedPath(nn.Module):
    """Searched cells on a fixed level path; a cell that changes level is a reduction cell."""

    def __init__(self, space: SearchSpace, s: SearchedNetwork, net: Network, c_in: int, c_in_prev: int,
                 sizes: list[tuple[int, ...]], neurons):
        super().__init__()
        self.s = s
        self.sizes = sizes  # spatial size of each level (the plan's)
        self.reduction = []
        self.cells = nn.ModuleList()
        prev_c, prev_prev_c, level = c_in, c_in_prev, s.start_level
        for j in s.path:
            self.reduction.append(j != level)
            self.cells.append(SuperCell(space, prev_c, prev_prev_c, net.node_channels[j], net.dims, neurons))
            prev_prev_c, prev_c, level = prev_c, space.nodes * net.node_channels[j], j
        self.out_channels = prev_c

    def forward(self, x: Tensor, x_prev: Tensor, alphas: list[Tensor], reduce_alphas: list[Tensor], step: Step,
                name: str) -> Tensor:
        prev, prev_prev = x, x_prev
        for i, (cell, j) in enumerate(zip(self.cells, self.s.path, strict=True)):
            a = reduce_alphas if self.reduction[i] else alphas
            out = cell(resample(prev, self.sizes[j]), resample(prev_prev, self.sizes[j]), a, step, f"{name}.cell{i}")
            prev_prev, prev = prev, out
        return prev


class Supernet(nn.Module):
    """The whole searchable network: base layers around the trellises, the base head.

    It runs the base genotype's lowered graph with the compiler's handlers (``compiler.interpret``), each
    searched network's cell layers replaced by one ``trellis`` node (its own handler, ``_run_trellis``).
    ``weights()`` are the ordinary parameters, ``arch_parameters()`` the alphas and betas.
    """

    volume = staticmethod(cost_volume)

    def __init__(self, space: SearchSpace, ann_stems: bool = False):
        super().__init__()
        self.space = space
        self.ann_stems = ann_stems  # "ANN stem layers in the search phase": ReLU stems (``_to_relu``)
        g = space.base
        p = plan(g)
        self.genotype = g
        self._state_shapes: dict[str, tuple[int, ...]] | None = None
        self.blocks = nn.ModuleDict()
        self.alphas = nn.ParameterDict()
        self.betas = nn.ParameterDict()
        self.layout: dict[str, list[tuple[str, str]]] = {}  # per network: (layer name, key in blocks)
        graph = remap_modules(p)
        for net in g.networks:
            self.blocks[net.name], self.layout[net.name] = self._network(space, g, net, p.nets[net.name], graph)
        self.graph = searched_graph(self, p, graph)
        build_modules(self, [n for n in self.graph if n.kind == "linear"])

    def _network(self, space: SearchSpace, g: Genotype, net: Network, np_: NetPlan, graph: list[Node]):
        """The modules of one network and their order: base layers, and a trellis for the cell layers."""
        mods = nn.ModuleDict()
        self.blocks[net.name] = mods
        s = space.searched(net.name)
        cells = [i for i, layer in enumerate(net.layers) if isinstance(layer, CellLayer)]
        first, last = (cells[0], cells[-1]) if s is not None else (len(net.layers), len(net.layers))
        layout = self._base_layers(g, net, np_.layers[:first], graph)
        if s is None:
            return mods, layout
        if self.ann_stems:
            _to_relu(mods, layout)
        before = np_.layers[first].inputs
        block = FixedPath if s.fixed else Trellis
        layer_neuron = net.layers[first].neuron  # the edges' neurons and the nodes' spiking functions (the
        neurons = (g.resolve_neuron(layer_neuron),  # decoded genotype mixes at the spike: compiler.ir)
                   resolve_neuron(g.neuron, NODE_NEURON_DEFAULT, g.node_neuron, layer_neuron))
        mods["trellis"] = block(space, s, net, before["c_prev"][0], before["c_prev_prev"][0], np_.level_sizes,
                                neurons)
        layout.append(("searched" if s.fixed else "trellis", "trellis"))
        layout += self._base_layers(g, net, np_.layers[last + 1:], graph)
        n_sources = sum(len(x) for x in cell_sources(space.nodes))
        self.alphas[net.name] = nn.Parameter(1e-3 * torch.randn(n_sources, len(space.candidates)))
        if s.fixed:
            self.alphas[f"{net.name}__reduce"] = nn.Parameter(1e-3 * torch.randn(n_sources, len(space.candidates)))
        else:
            self.betas[net.name] = nn.Parameter(1e-3 * torch.randn(s.layers, len(net.rates), 3))
        return mods, layout

    def _base_layers(self, g: Genotype, net: Network, lps: list, graph: list[Node]) -> list[tuple[str, str]]:
        """Containers of base conv layers, their modules made by the graph's handlers (in the channels the
        searched graph gives them)."""
        for lp in lps:
            if not isinstance(lp.layer, ConvLayer):
                raise GenotypeError("only conv layers may stand outside the searched cells of a network",
                                    path=f"networks.{net.name}.layers", file=g.file or None)
            self.blocks[net.name][lp.layer.name] = ConvBlock(lp, g)
        names = {lp.layer.name for lp in lps}
        mine = [n for n in graph if n.module is not None and n.module[:2] == ("blocks", net.name)
                and n.module[2] in names]  # (both views of a shared network: built once)
        build_modules(self, searched_graph(self, plan(g), mine, partial=True))
        return [(lp.layer.name, lp.layer.name) for lp in lps]

    def _net_out_channels(self, name: str) -> int:
        last = self.blocks[name][self.layout[name][-1][1]]
        return last.out_channels if isinstance(last, Trellis | FixedPath) else last.op.conv.out_channels

    def weights(self) -> list[nn.Parameter]:
        arch = {id(v) for v in self.arch_parameters()}
        return [q for q in self.parameters() if id(q) not in arch]

    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.alphas.values()) + list(self.betas.values())

    def spiking_neurons(self) -> int:
        """Neurons per sample of the spiking layers: none counted here, as the neuron set a step uses
        depends on alpha (so the training loop reports no firing rate for a supernet)."""
        return 0

    def node_alphas(self, network: str, reduce: bool = False) -> list[Tensor]:
        flat = self.alphas[f"{network}__reduce" if reduce else network]
        out, start = [], 0
        for n in (len(x) for x in cell_sources(self.space.nodes)):
            out.append(flat[start:start + n])
            start += n
        return out

    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-sample shape of every state tensor, found once by a step from the empty state."""
        if self._state_shapes is None:
            inp = self.genotype.input
            device = next(self.parameters()).device
            x = torch.zeros(1, inp.in_channels, inp.height, inp.width, device=device)
            names = task_names(self.genotype)[0]
            was_training = self.training
            self.eval()
            try:
                with torch.no_grad():
                    _, state = self.forward(dict.fromkeys(names, x), {})
            finally:
                self.train(was_training)
            self._state_shapes = {k: tuple(v.shape[1:]) for k, v in state.items()}
        return self._state_shapes

    def initial_state(self, batch_size: int = 1, device=None) -> dict[str, Tensor]:
        """Zeros for every state tensor, (batch_size, *shape) each (an empty dict also means zeros)."""
        device = device or next(self.parameters()).device
        return {k: torch.zeros((batch_size, *s), device=device) for k, s in self.state_shapes().items()}

    def forward(self, inputs: dict[str, Tensor], state: dict[str, Tensor]) -> tuple[dict, dict[str, Tensor]]:
        step = _ZeroStep(state)
        values = run_graph(self, self.graph, inputs, step, SUPERNET_HANDLERS)
        out = {key: values[name] for key, name in plan(self.genotype).outputs.items() if name in values}
        out["spikes"] = step.spikes
        return out, step.state_out

    def forward_steps(self, inputs: dict[str, Tensor], state: dict[str, Tensor],
                      outputs: tuple[str, ...] | None = None) -> tuple[dict, dict[str, Tensor]]:
        """T time steps in one call (training's multi-step mode, as ``SNNModel.forward_steps``): every
        convolution once over the T steps stacked in the batch, BatchNorm per step, each neuron layer's
        recurrence over T; the same values as T calls of ``forward``. ``outputs`` is accepted and everything is
        computed. A graph with a delayed edge steps (a step reads what the previous step wrote)."""
        if not stackable(self.graph):
            return step_by_step(self, inputs, state)
        step = _ZeroStep(state, next(iter(inputs.values())).shape[0])
        out = run_stacked(self, self.graph, plan(self.genotype).outputs, inputs, step, SUPERNET_HANDLERS,
                          shared_modules(self, self.graph))
        return out, step.state_out

    # ------------------------------------------------------------------------------------- decoding
    def decode(self) -> dict:
        """The discrete architecture: per searched network its cell edges and its level path (and, on a
        fixed path, the reduction cell)."""
        names = [c.name for c in self.space.candidates]
        result = {}
        for s in self.space.networks:
            block = self.blocks[s.network]["trellis"]
            if s.fixed:
                normal = [c for c, r in zip(block.cells, block.reduction, strict=True) if not r]
                reduce = [c for c, r in zip(block.cells, block.reduction, strict=True) if r]
                result[s.network] = {"cell": self._decode_cell(s.network, False, normal, names),
                                     "path": list(s.path)}
                if reduce:
                    result[s.network]["reduction_cell"] = self._decode_cell(s.network, True, reduce, names)
                continue
            cell = self._decode_cell(s.network, False, list(block.cells.values()), names)
            betas = self.betas[s.network].detach().cpu().numpy()
            result[s.network] = {"cell": cell, "path": decode_path(betas, s.start_level, block.allowed().numpy(),
                                                                   s.end_level)}
        return result

    def _decode_cell(self, network: str, reduce: bool, cells: list[SuperCell], names: list[str]) -> dict:
        alphas = []
        for i, a in enumerate(self.node_alphas(network, reduce)):
            mask = cells[0].mask(i).clone()  # a pair counts only where every such cell can have it
            for c in cells[1:]:
                mask &= c.mask(i)
            a = a.detach().clone()
            a[~mask] = -1e9
            alphas.append(a.numpy())
        return decode_cell(alphas, names, keep=self.space.keep)


class _ZeroStep(Step):
    """A step whose missing state tensors are zeros (the supernet's state set depends on its trellis)."""

    def __init__(self, state: dict[str, Tensor], steps: int = 1):
        super().__init__(dict(state), steps)

    def neuron(self, name: str, module, current: Tensor) -> Tensor:
        per_step = current.unflatten(0, (self.steps, -1))[0] if self.steps > 1 else current  # (B, ...)
        for s in module.state_names:
            self.state_in.setdefault(state_name(name, s), torch.zeros_like(per_step))
        return super().neuron(name, module, current)


def _run_trellis(node: Node, module: nn.Module, args: list[Tensor], ctx) -> Tensor:
    """A trellis (or fixed path) with its network's architecture weights bound."""
    net, network = ctx.model, node.attrs["network"]
    if isinstance(module, FixedPath):
        return module(args[0], args[1], net.node_alphas(network), net.node_alphas(network, True), ctx.step,
                      node.attrs["at"])
    return module(args[0], args[1], net.node_alphas(network), net.betas[network], ctx.step, node.attrs["at"])


SUPERNET_HANDLERS = {**HANDLERS, "trellis": Handler(_run_trellis)}
