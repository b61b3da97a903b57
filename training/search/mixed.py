"""The SpikeDHS supernet's mixed edge (every candidate op on one edge, its spikes weighted by softmax(alpha))
and its cell of mixed edges (``supernet.py`` places them on the trellis)."""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from compiler.interpret import Step
from compiler.names import neuron_name
from compiler.neurons import build_neuron
from compiler.ops import BUILDERS
from compiler.registry import OPS, ShapeError

from .decode import cell_sources
from .space import SearchSpace


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
            if ok and OPS[cand.op].has_neuron:
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
                y = step.neuron(neuron_name(name, edge=i), self.neurons[str(i)], y)
            out = out + weights[i] * y
        return out


class SuperCell(nn.Module):
    """A cell whose every possible edge (c_prev_prev, c_prev, earlier nodes -> node) is mixed."""

    def __init__(self, space: SearchSpace, c_prev: int, c_prev_prev: int, channels: int, dims: int, neurons):
        super().__init__()
        edge_neuron, node_neuron = neurons
        self.sources = cell_sources(space.nodes)
        width = {"c_prev": c_prev, "c_prev_prev": c_prev_prev}
        self.edges = nn.ModuleDict()
        for i, sources in enumerate(self.sources):
            for src in sources:
                self.edges[f"n{i}_{src}"] = MixedEdge(space, width.get(src, channels), channels, dims, edge_neuron)
        # each node's spiking function ("operations are summed ... and filtered by a sign function", g(b=3))
        self.node_neurons = nn.ModuleList([build_neuron(node_neuron) for _ in self.sources])

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
            values[f"n{i}"] = step.neuron(f"{name}.n{i}", self.node_neurons[i], total)
        return torch.cat([values[f"n{i}"] for i in range(len(self.sources))], dim=1)
