"""The SpikeDHS supernet: searched cells whose edges mix every candidate op (at the spike), on a
trellis of resolution levels weighted by beta, built from the compiler's registry and neurons.

A search space (``load_search_space``) names a base genotype (input, neuron, stems, head, the
layers around the cells) and, per network, how its cells are searched::

    search_space: 1
    base: ../genotypes/stereo.yaml
    candidates: [{op: conv3x3, b: 3}, {op: conv3x3, b: 5}, {op: skip}]
    nodes: 3
    networks:
      feature: {cell: feature, layers: 2, start_level: 0, end_level: 0}

In a searched network the base's cell layers are replaced by ``layers`` trellis layers. At layer l,
level j, one cell per incoming level k in {j-1, j, j+1} runs on the previous layer's output at
level k (resampled), and the level's output is the softmax(beta[l, j])-weighted sum. Every edge of
a cell is ``sum_o softmax(alpha[edge])_o * y_o`` with ``y_o`` the spikes of candidate o (its own
neuron and surrogate temperature), i.e. mixed at the spike; a candidate whose shape rule cannot
hold on an edge (skip between different channel counts) is masked out there. Alphas are shared by
every cell of a network (one searched cell per network, as in the paper); betas are per network.
State is explicit, as in the compiled model.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from compiler.errors import GenotypeError, close_match_hint
from compiler.genotype import load_genotype
from compiler.ir import CellLayer, Genotype, Network
from compiler.model import BUILDERS, ConvBlock, Step, cost_volume, estimate_disparity, resample
from compiler.neurons import build_neuron
from compiler.planner import plan
from compiler.registry import OPS, ShapeError
from compiler.yamlio import load_yaml

from .decode import cell_sources, decode_cell, decode_path

SPACE_VERSION = 1


@dataclass(frozen=True)
class Candidate:
    op: str
    b: float | None = None

    @property
    def name(self) -> str:
        return self.op if self.b is None else f"{self.op}_b{self.b:g}"


@dataclass(frozen=True)
class SearchedNetwork:
    network: str
    cell: str
    layers: int
    start_level: int = 0
    end_level: int = 0
    path: tuple[int, ...] | None = None  # a fixed level path: normal and reduction cells, no beta
    reduction_cell: str = ""

    @property
    def fixed(self) -> bool:
        return self.path is not None


@dataclass(frozen=True)
class SearchSpace:
    base: Genotype
    candidates: tuple[Candidate, ...]
    nodes: int
    keep: int
    networks: tuple[SearchedNetwork, ...]
    file: str = ""

    def searched(self, name: str) -> SearchedNetwork | None:
        return next((s for s in self.networks if s.network == name), None)


def load_search_space(path: str | Path, overrides: dict | list | None = None) -> SearchSpace:
    """Read and check a search-space YAML file (errors as GenotypeError: file, line, key, fix)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise GenotypeError(f"cannot read the search space ({exc.strerror or exc})", file=str(path)) from None
    data, lines = load_yaml(text, str(path))

    def err(key: str, message: str, hint: str | None = None) -> GenotypeError:
        return GenotypeError(message, path=key, file=str(path), line=lines.get(key), hint=hint)

    if not isinstance(data, dict):
        raise err("", "expected a mapping")
    allowed = ("search_space", "base", "candidates", "nodes", "keep", "networks")
    for key in data:
        if key not in allowed:
            raise err(key, f"unknown key {key!r}", close_match_hint(key, allowed, "keys"))
    if data.get("search_space") != SPACE_VERSION:
        raise err("search_space", f"expected search_space: {SPACE_VERSION}", "add 'search_space: 1'")
    if not isinstance(data.get("base"), str):
        raise err("base", "missing the base genotype (a path relative to this file)", "base: ../genotypes/x.yaml")
    base = load_genotype(path.parent / data["base"], overrides=overrides)
    cands = []
    for i, c in enumerate(data.get("candidates") or []):
        key = f"candidates[{i}]"
        if not isinstance(c, dict) or set(c) - {"op", "b"} or "op" not in c:
            raise err(key, "a candidate is {op: NAME, b: TEMPERATURE}", "e.g. {op: conv3x3, b: 3}")
        if c["op"] not in OPS:
            raise err(f"{key}.op", f"unknown op {c['op']!r}", close_match_hint(c["op"], OPS, "ops"))
        b = c.get("b")
        if b is not None and (not isinstance(b, int | float) or isinstance(b, bool) or b <= 0):
            raise err(f"{key}.b", f"b must be a number > 0, got {b!r}")
        cands.append(Candidate(c["op"], None if b is None else float(b)))
    if not cands:
        raise err("candidates", "at least one candidate op is needed")
    nodes, keep = data.get("nodes", 3), data.get("keep", 2)
    for key, value in (("nodes", nodes), ("keep", keep)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise err(key, f"must be an integer >= 1, got {value!r}")
    nets = []
    for name, spec in (data.get("networks") or {}).items():
        key = f"networks.{name}"
        names = [n.name for n in base.networks]
        if name not in names:
            raise err(key, f"the base genotype has no network {name!r}", close_match_hint(name, names, "networks"))
        fields = {"cell", "layers", "start_level", "end_level", "path", "reduction_cell"}
        if not isinstance(spec, dict) or set(spec) - fields:
            raise err(key, f"expected a mapping of {sorted(fields)}")
        net = base.network(name)
        levels = len(net.rates)
        levels_path = spec.get("path")
        if levels_path is not None:  # DARTS-style: the levels are fixed, normal and reduction cells are searched
            if (not isinstance(levels_path, list) or not levels_path
                    or any(not isinstance(v, int) or not 0 <= v < levels for v in levels_path)
                    or any(abs(b - a) > 1 for a, b in zip(levels_path, levels_path[1:], strict=False))):
                raise err(f"{key}.path", f"a list of levels 0..{levels - 1} moving at most one level a layer")
            if "layers" in spec or "end_level" in spec:
                raise err(key, "give either a fixed 'path' or 'layers' (and 'end_level') to search the path")
            spec = {**spec, "layers": len(levels_path), "end_level": levels_path[-1],
                    "start_level": spec.get("start_level", 0)}
            if abs(levels_path[0] - spec["start_level"]) > 1:
                raise err(f"{key}.path", "the first level must be within one level of start_level")
        s = SearchedNetwork(name, spec.get("cell", ""), spec.get("layers", 0), spec.get("start_level", 0),
                            spec.get("end_level", 0), None if levels_path is None else tuple(levels_path),
                            spec.get("reduction_cell", f"{spec.get('cell', '')}_reduce") if levels_path else "")
        if s.cell not in [c.name for c in base.cells]:
            raise err(f"{key}.cell", f"the base genotype has no cell {s.cell!r}")
        if not isinstance(s.layers, int) or s.layers < 1:
            raise err(f"{key}.layers", "must be an integer >= 1")
        for lk in ("start_level", "end_level"):
            v = getattr(s, lk)
            if not isinstance(v, int) or not 0 <= v < levels:
                raise err(f"{key}.{lk}", f"must be a level 0..{levels - 1}")
        if abs(s.end_level - s.start_level) > s.layers:
            raise err(key, "end_level cannot be reached from start_level in that many layers")
        if not any(layer.kind == "cell" for layer in net.layers):
            raise err(key, "the base network has no cell layer to search")
        nets.append(s)
    if not nets:
        raise err("networks", "name at least one network whose cells are searched")
    return SearchSpace(base, tuple(cands), nodes, keep, tuple(nets), str(path))


# ------------------------------------------------------------------------------------------ modules
class MixedEdge(nn.Module):
    """Every candidate on one edge; their spike outputs mixed by the given weights."""

    def __init__(self, space: SearchSpace, c_in: int, c_out: int, dims: int, neuron_base):
        super().__init__()
        self.ops = nn.ModuleList()
        self.neurons = nn.ModuleDict()
        mask = []
        for i, cand in enumerate(space.candidates):
            try:
                OPS[cand.op].out_shape((c_in, 1), c_out)
                ok = True
            except ShapeError:
                ok = False
            mask.append(ok)
            self.ops.append(BUILDERS[cand.op](c_in, c_out, dims) if ok else nn.Identity())
            if ok and OPS[cand.op].kind != "skip":
                spec = neuron_base
                if cand.b is not None:
                    spec = dataclasses.replace(spec, surrogate=dataclasses.replace(spec.surrogate, b=cand.b))
                self.neurons[str(i)] = build_neuron(spec)
        self.register_buffer("mask", torch.tensor(mask))

    def forward(self, x: Tensor, weights: Tensor, step: Step, name: str) -> Tensor:
        out = 0
        for i, op in enumerate(self.ops):
            if not bool(self.mask[i]):
                continue
            y = op(x)
            if str(i) in self.neurons:
                y = step.neuron(f"{name}.{i}", self.neurons[str(i)], y)
            out = out + weights[i] * y
        return out


class SuperCell(nn.Module):
    """A cell whose every possible edge (c_prev_prev, c_prev, earlier nodes -> node) is mixed."""

    def __init__(self, space: SearchSpace, c_prev: int, c_prev_prev: int, channels: int, dims: int, neuron):
        super().__init__()
        self.sources = cell_sources(space.nodes)
        width = {"c_prev": c_prev, "c_prev_prev": c_prev_prev}
        self.edges = nn.ModuleDict()
        for i, sources in enumerate(self.sources):
            for src in sources:
                self.edges[f"n{i}_{src}"] = MixedEdge(space, width.get(src, channels), channels, dims, neuron)

    def mask(self, i: int) -> Tensor:
        return torch.stack([self.edges[f"n{i}_{s}"].mask for s in self.sources[i]])  # (sources, candidates)

    def forward(self, prev: Tensor, prev_prev: Tensor, alphas: list[Tensor], step: Step, name: str) -> Tensor:
        values = {"c_prev": prev, "c_prev_prev": prev_prev}
        for i, sources in enumerate(self.sources):
            logits = alphas[i].masked_fill(~self.mask(i), float("-inf"))
            w = torch.softmax(logits, dim=-1)  # (sources, candidates)
            total = 0
            for s_idx, src in enumerate(sources):
                total = total + self.edges[f"n{i}_{src}"](values[src], w[s_idx], step, f"{name}.n{i}.{src}")
            values[f"n{i}"] = total
        return torch.cat([values[f"n{i}"] for i in range(len(self.sources))], dim=1)


def _prev_prev(outputs: dict, j: int, k: int):
    """c_{k-2} of the cell on level j fed from level k: the output two layers back on level j, else on
    level k, else on the lowest level it has (the same rule builds the cells and runs them)."""
    if j in outputs:
        return outputs[j]
    return outputs[k] if k in outputs else next(iter(outputs.values()))


class Trellis(nn.Module):
    """``layers`` layers over the network's levels; see the module docstring."""

    def __init__(self, space: SearchSpace, s: SearchedNetwork, net: Network, c_in: int, c_in_prev: int,
                 in_size: tuple[int, ...], neuron):
        super().__init__()
        self.s = s
        self.levels = len(net.rates)
        self.sizes = []
        size = in_size
        for rate in net.rates:
            size = tuple(math.ceil(v / rate) for v in size)
            self.sizes.append(size)
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
                                                                    net.node_channels[j], net.dims, neuron)
                        here[j] = self.channels[j]
            self.reach.append(sorted(here))
            prev_prev_channels = dict(prev_levels)
            prev_levels = here
        self.out_channels = self.channels[s.end_level]

    def forward(self, x: Tensor, x_prev: Tensor, alphas: list[Tensor], betas: Tensor, step: Step,
                name: str) -> Tensor:
        prev = {self.s.start_level: x}
        prev_prev = {self.s.start_level: x_prev}
        for layer, levels in enumerate(self.reach):
            here = {}
            for j in levels:
                ks = [k for k in (j - 1, j, j + 1) if f"{layer}_{j}_{k}" in self.cells]
                logits = torch.stack([betas[layer, j, k - j + 1] for k in ks])
                w = torch.softmax(logits, dim=0)
                total = 0
                for w_k, k in zip(w, ks, strict=True):
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
                 in_size: tuple[int, ...], neuron):
        super().__init__()
        self.s = s
        self.sizes = []
        size = in_size
        for rate in net.rates:
            size = tuple(math.ceil(v / rate) for v in size)
            self.sizes.append(size)
        self.reduction = []
        self.cells = nn.ModuleList()
        prev_c, prev_prev_c, level = c_in, c_in_prev, s.start_level
        for j in s.path:
            self.reduction.append(j != level)
            self.cells.append(SuperCell(space, prev_c, prev_prev_c, net.node_channels[j], net.dims, neuron))
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

    ``weights()`` are the ordinary parameters, ``arch_parameters()`` the alphas and betas.
    """

    def __init__(self, space: SearchSpace):
        super().__init__()
        self.space = space
        g = space.base
        p = plan(g)
        self.genotype = g
        self._state_shapes: dict[str, tuple[int, ...]] | None = None
        self.plan = SimpleNamespace(spiking_layers=[])  # neuron counts vary with alpha: no firing rate
        self.blocks = nn.ModuleDict()
        self.alphas = nn.ParameterDict()
        self.betas = nn.ParameterDict()
        self.layout: dict[str, list[tuple[str, str]]] = {}
        for net in g.networks:
            s = space.searched(net.name)
            np_ = p.nets[net.name]
            mods = nn.ModuleDict()
            layout = []
            if s is None:
                for lp in np_.layers:
                    mods[lp.layer.name] = _base_layer(lp, g, net)
                    layout.append(("layer", lp.layer.name))
            else:
                cells = [i for i, layer in enumerate(net.layers) if layer.kind == "cell"]
                first, last = cells[0], cells[-1]
                for lp in np_.layers[:first]:
                    mods[lp.layer.name] = _base_layer(lp, g, net)
                    layout.append(("layer", lp.layer.name))
                before = np_.layers[first].inputs
                in_size = np_.input_shape[1:]
                block = FixedPath if s.fixed else Trellis
                trellis = block(space, s, net, before["c_prev"][0], before["c_prev_prev"][0], in_size,
                                g.resolve_neuron(net.layers[first].neuron))
                mods["trellis"] = trellis
                layout.append(("trellis", "trellis"))
                c = trellis.out_channels
                for lp in np_.layers[last + 1:]:
                    lp = dataclasses.replace(lp, inputs={"c_prev": (c, *lp.inputs["c_prev"][1:])})
                    mods[lp.layer.name] = _base_layer(lp, g, net)
                    layout.append(("layer", lp.layer.name))
                    c = lp.out_shape[0]
                n_sources = [len(x) for x in cell_sources(space.nodes)]
                self.alphas[net.name] = nn.Parameter(1e-3 * torch.randn(sum(n_sources), len(space.candidates)))
                if s.fixed:
                    self.alphas[f"{net.name}__reduce"] = nn.Parameter(
                        1e-3 * torch.randn(sum(n_sources), len(space.candidates)))
                else:
                    self.betas[net.name] = nn.Parameter(1e-3 * torch.randn(s.layers, len(net.rates), 3))
            self.blocks[net.name] = mods
            self.layout[net.name] = layout
        head = g.head
        if hasattr(head, "backbone"):
            width = self._net_out_channels(head.backbone, p)
            self.classifier = nn.Linear(width, head.classes)

    def _net_out_channels(self, name: str, p) -> int:
        last_kind, last_name = self.layout[name][-1]
        if last_kind == "trellis":
            return self.blocks[name]["trellis"].out_channels
        return self.blocks[name][last_name].op.conv.out_channels

    def weights(self) -> list[nn.Parameter]:
        arch = {id(v) for v in self.arch_parameters()}
        return [q for q in self.parameters() if id(q) not in arch]

    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.alphas.values()) + list(self.betas.values())

    def node_alphas(self, network: str, reduce: bool = False) -> list[Tensor]:
        flat = self.alphas[f"{network}__reduce" if reduce else network]
        out, start = [], 0
        for n in (len(x) for x in cell_sources(self.space.nodes)):
            out.append(flat[start:start + n])
            start += n
        return out

    def _run(self, name: str, x: Tensor, step: Step, instance: str) -> Tensor:
        mods = self.blocks[name]
        prev = prev_prev = x
        for i, (kind, key) in enumerate(self.layout[name]):
            if kind == "trellis" and isinstance(mods[key], FixedPath):
                out = mods[key](prev, prev_prev, self.node_alphas(name), self.node_alphas(name, True), step,
                                f"{instance}.searched")
            elif kind == "trellis":
                out = mods[key](prev, prev_prev, self.node_alphas(name), self.betas[name], step, f"{instance}.trellis")
            else:
                out = mods[key](f"{instance}.{key}", step, prev, prev_prev)
            prev_prev, prev = (out if i == 0 else prev), out  # the input is never a c_{k-2}
        return prev

    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-sample shape of every state tensor, found once by a step from the empty state."""
        if self._state_shapes is None:
            inp = self.genotype.input
            device = next(self.parameters()).device
            x = torch.zeros(1, inp.in_channels, inp.height, inp.width, device=device)
            names = ["left", "right"] if self.genotype.task == "stereo" else ["image"]
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
        g = self.genotype
        head = g.head
        out: dict = {}
        if hasattr(head, "feature"):
            left = self._run(head.feature, inputs["left"], step, f"{head.feature}.left")
            right = self._run(head.feature, inputs["right"], step, f"{head.feature}.right")
            volume = cost_volume(left, right, head.disparities, head.shift)
            cost = self._run(head.matching, volume, step, head.matching)[:, 0]
            cost = F.interpolate(cost, size=(g.input.height, g.input.width), mode="bilinear", align_corners=False)
            out["cost"] = cost
            out["disparity"] = estimate_disparity(cost, head.estimator, head.support, head.disparity_step)
        else:
            feats = self._run(head.backbone, inputs["image"], step, head.backbone)
            out["logits"] = self.classifier(feats.flatten(2).mean(2))
        out["spikes"] = step.spikes
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
            betas = self.betas[s.network].detach().numpy()
            allowed = np.zeros(betas.shape, dtype=bool)  # the transitions the trellis has
            for layer in range(s.layers):
                for j in range(block.levels):
                    for k in (j - 1, j, j + 1):
                        allowed[layer, j, k - j + 1] = f"{layer}_{j}_{k}" in block.cells
            result[s.network] = {"cell": cell, "path": decode_path(betas, s.start_level, allowed)}
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

    def __init__(self, state: dict[str, Tensor]):
        super().__init__(dict(state))

    def neuron(self, name: str, module, current: Tensor) -> Tensor:
        for s in module.state_names:
            self.state_in.setdefault(f"{name}.{s}", torch.zeros_like(current))
        return super().neuron(name, module, current)


def _base_layer(lp, g: Genotype, net: Network) -> nn.Module:
    if lp.layer.kind != "conv":
        raise GenotypeError("only conv layers may stand outside the searched cells of a network",
                            path=f"networks.{net.name}.layers", file=g.file or None)
    return ConvBlock(lp, g, net.dims)


def _cell(name: str, decoded: dict, candidates: dict):
    """A genotype Cell from a decoded {node: [(source, candidate name), ...]}."""
    from compiler.ir import Cell, Edge, Node

    nodes = []
    for node_name, edges in decoded.items():
        out_edges = []
        for src, cand_name in edges:
            cand = candidates[cand_name]
            neuron = {} if cand.b is None else {"surrogate": {"b": cand.b}}
            out_edges.append(Edge(source=src, op=cand.op, neuron=neuron))
        nodes.append(Node(name=node_name, inputs=tuple(out_edges)))
    return Cell(name=name, nodes=tuple(nodes), output=tuple(n.name for n in nodes))


def to_genotype(space: SearchSpace, decoded: dict, meta: dict | None = None) -> Genotype:
    """The base genotype with each searched network's cell and layer path replaced by the decoded ones."""
    g = space.base
    by_name = {c.name: c for c in space.candidates}
    cells = {c.name: c for c in g.cells}
    networks = []
    for net in g.networks:
        s = space.searched(net.name)
        if s is None:
            networks.append(net)
            continue
        d = decoded[net.name]
        cells[s.cell] = _cell(s.cell, d["cell"], by_name)
        if "reduction_cell" in d:
            cells[s.reduction_cell] = _cell(s.reduction_cell, d["reduction_cell"], by_name)
        cell_idx = [i for i, layer in enumerate(net.layers) if layer.kind == "cell"]
        searched = []
        level = s.start_level
        for i, j in enumerate(d["path"]):
            name = s.reduction_cell if "reduction_cell" in d and j != level else s.cell
            searched.append(CellLayer(name=f"cell{i}", cell=name, level=j))
            level = j
        layers = list(net.layers[:cell_idx[0]]) + searched + list(net.layers[cell_idx[-1] + 1:])
        networks.append(dataclasses.replace(net, layers=tuple(layers)))
    head = g.head
    aux = getattr(head, "aux_after", None)
    if aux is not None:  # keep the auxiliary head at the same relative depth of the backbone
        old_n = len(g.network(head.backbone).layers)
        new_n = len(next(n for n in networks if n.name == head.backbone).layers)
        head = dataclasses.replace(head, aux_after=min(new_n - 2, round(aux * (new_n - 1) / (old_n - 1))))
    new = dataclasses.replace(g, cells=tuple(cells.values()), networks=tuple(networks), mixing="spike",
                              head=head, meta={**g.meta, **(meta or {})})
    from compiler.genotype import parse_genotype

    return parse_genotype(new.to_dict(), file="<decoded>")  # validated like any file


# ------------------------------------------------------------------------------ random baselines
def random_path(rng: np.random.Generator, layers: int, levels: int, start: int, end: int) -> list[int]:
    """A uniformly chosen next level at each layer among those the trellis has: one level up or down
    at most, and ``end`` still reachable in the layers left."""
    path, level = [], start
    for k in range(layers):
        left = layers - k - 1
        options = [j for j in (level - 1, level, level + 1) if 0 <= j < levels and abs(j - end) <= left]
        level = int(rng.choice(options))
        path.append(level)
    return path


def random_genotype(space: SearchSpace, rng: np.random.Generator) -> Genotype:
    """A genotype of the space drawn at random: per node ``keep`` distinct sources with a random
    candidate each (normal and reduction cells alike), and on a trellis a random layer path. The
    baseline a search must beat. Raises GenotypeError where the compiler refuses the draw."""
    names = [c.name for c in space.candidates]
    decoded = {}
    for s in space.networks:
        def cell() -> dict:
            out = {}
            for i, sources in enumerate(cell_sources(space.nodes)):
                picks = sorted(rng.choice(len(sources), size=min(space.keep, len(sources)), replace=False))
                out[f"n{i}"] = [(sources[p], names[int(rng.integers(len(names)))]) for p in picks]
            return out
        if s.fixed:
            decoded[s.network] = {"cell": cell(), "path": list(s.path), "reduction_cell": cell()}
        else:
            levels = len(space.base.network(s.network).rates)
            decoded[s.network] = {"cell": cell(),
                                  "path": random_path(rng, s.layers, levels, s.start_level, s.end_level)}
    return to_genotype(space, decoded)


def random_genotypes(space: SearchSpace, n: int, seed: int = 0) -> list[Genotype]:
    """``n`` random genotypes of the space (``random_genotype``), seeded, redrawing refused ones."""
    rng = np.random.default_rng(seed)
    out: list[Genotype] = []
    refused = 0
    while len(out) < n:  # redraw cells the compiler refuses (a skip between different channel counts)
        try:
            out.append(random_genotype(space, rng))
        except GenotypeError as exc:
            refused += 1
            if refused >= 1000:
                raise GenotypeError(f"1000 random genotypes in a row were refused, the last: {exc.message}",
                                    file=space.file or "<search space>", hint="check the candidates against the "
                                    "cells' channel counts") from None
    return out
