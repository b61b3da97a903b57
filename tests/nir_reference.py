"""A small NIR reader for the tests: steps a ``nir.NIRGraph`` in discrete time with the forward-Euler
discretisation docs/deploy.md tells readers to use (step ``dt``), for the node types snnTorch 1.0.0
cannot import (IF, LI, I, Scale, Delay, SumPool2d with padding). It reads only the graph: NIR nodes,
their parameters and edges (a node's inputs are summed), nothing from the project.

    LIF: v <- f32(1 - dt/tau) v + f32(dt r / tau) I + f32(dt/tau) v_leak;  z = v > v_threshold;  v <- v_reset where z
    IF:  v <- v + f32(dt r) I, then threshold and reset as LIF;  LI: the LIF update, output v;  I: v <- v + f32(dt r) I
    Delay(d): output at step t = input at step t - d/dt (zero before the first step)
"""

from __future__ import annotations

import graphlib
from collections import defaultdict

import nir
import numpy as np
import torch
import torch.nn.functional as F


def _t(a, dtype=torch.float32) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float64)).to(dtype)


def _pair(v) -> tuple[int, int]:
    a = np.atleast_1d(np.asarray(v)).astype(int)
    return (int(a[0]), int(a[-1]))


class NIRStepper:
    """``out = stepper.step(x)``: one time step of every node; ``out[name]`` is that node's output."""

    def __init__(self, graph: nir.NIRGraph, dt: float):
        self.graph, self.dt = graph, dt
        self.inputs: dict[str, list[str]] = defaultdict(list)
        for src, dst in graph.edges:
            self.inputs[dst].append(src)
        self.delays = [n for n, node in graph.nodes.items() if isinstance(node, nir.Delay)]
        for name in self.delays:
            steps = np.asarray(graph.nodes[name].delay) / dt
            assert np.allclose(steps, 1.0), f"{name}: only one-step delays are read here"
        deps = {n: [s for s in self.inputs[n] if s not in self.delays] for n in graph.nodes if n not in self.delays}
        self.order = list(graphlib.TopologicalSorter(deps).static_order())
        self.state: dict[str, torch.Tensor] = {}

    def reset(self) -> None:
        self.state = {}

    def _sum(self, name: str, out: dict[str, torch.Tensor]) -> torch.Tensor:
        terms = [out[s] for s in self.inputs[name]]
        total = terms[0]
        for t in terms[1:]:
            total = total + t
        return total

    def step(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for name in self.delays:  # what entered the delay one step ago (zeros at the first step)
            shape = (x.shape[0], *np.asarray(self.graph.nodes[name].delay).shape)
            out[name] = self.state.get(name, torch.zeros(shape))
        for name in self.order:
            node = self.graph.nodes[name]
            out[name] = x if isinstance(node, nir.Input) else self._node(name, node, self._sum(name, out))
        for name in self.delays:
            self.state[name] = self._sum(name, out)
        return out

    def _node(self, name: str, node, x: torch.Tensor) -> torch.Tensor:  # noqa: C901 - one branch per node type
        if isinstance(node, nir.Output):
            return x
        if isinstance(node, nir.Conv2d):
            return F.conv2d(x, _t(node.weight), _t(node.bias), stride=_pair(node.stride), padding=_pair(node.padding),
                            dilation=_pair(node.dilation), groups=int(node.groups))
        if isinstance(node, nir.SumPool2d):
            return F.avg_pool2d(x, _pair(node.kernel_size), _pair(node.stride), _pair(node.padding),
                                count_include_pad=True, divisor_override=1)
        if isinstance(node, nir.AvgPool2d):
            return F.avg_pool2d(x, _pair(node.kernel_size), _pair(node.stride), _pair(node.padding),
                                count_include_pad=True)
        if isinstance(node, nir.Scale):
            return x * _t(node.scale)
        if isinstance(node, nir.Flatten):
            end = node.end_dim if node.end_dim < 0 else node.end_dim + 1
            return x.flatten(int(node.start_dim) + 1, int(end))  # NIR dims exclude the batch
        if isinstance(node, nir.Affine):
            return F.linear(x, _t(node.weight), _t(node.bias))
        if isinstance(node, nir.Linear):
            return F.linear(x, _t(node.weight))
        return self._neuron(name, node, x)

    def _neuron(self, name: str, node, x: torch.Tensor) -> torch.Tensor:
        dt = np.float64(self.dt)
        v = self.state.get(name, torch.zeros_like(x))
        if isinstance(node, (nir.LIF, nir.LI)):
            tau = np.asarray(node.tau, np.float64)
            v = _t(1 - dt / tau) * v + _t(dt * np.asarray(node.r) / tau) * x + _t(dt / tau * np.asarray(node.v_leak))
        elif isinstance(node, (nir.IF, nir.I)):
            v = v + _t(dt * np.asarray(node.r, np.float64)) * x
        else:
            raise NotImplementedError(f"{name}: {type(node).__name__} is not read here")
        if isinstance(node, (nir.LI, nir.I)):
            self.state[name] = v
            return v
        z = (v > _t(node.v_threshold)).to(v.dtype)
        self.state[name] = torch.where(z > 0, _t(node.v_reset), v)
        return z
