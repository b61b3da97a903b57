"""The torch interpreter of a lowered graph (``Plan.graph``, see ``compiler.plantypes``): one handler per
node kind, a module factory (``build``, for the kinds that own weights or buffers) and a step function
(``run``). ``build_modules`` creates a model's modules where the nodes say they live, in declaration
order; ``run_graph`` runs one time step over the nodes in order. The compiled model (``compiler.model``)
and the SpikeDHS supernet (which adds its own kinds) are both this interpreter over their graphs.
"""

from __future__ import annotations

import functools
import itertools
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .names import state_name
from .neurons import NeuronModule, build_neuron
from .ops import BUILDERS, STACKED, ConvBN, aux_head, convbn_together, estimate_disparity, resample
from .order import concat_channels
from .plantypes import Node
from .registry import OPS
from .upsample import materialise, takes_upsampled
from .views import batchable, interleave, split, view_twins


class Step:
    """The state going in and out of one time step, and the spike counts, as the model runs."""

    def __init__(self, state: dict[str, Tensor], steps: int = 1):
        self.steps = steps  # > 1: every value holds this many time steps stacked in the batch (time-major)
        self.state_in = state
        self.state_out: dict[str, Tensor] = {}
        self.spikes: dict[str, Tensor] = {}

    def neuron(self, name: str, module: NeuronModule, current: Tensor, twin: str | None = None) -> Tensor:
        """One neuron layer's step (or T steps); with ``twin`` (multi-step only) the layer and its twin of the
        other view at once (``compiler.views``): ``current`` holds both, (step, view, sample), and each keeps
        its own state and spike counts."""
        names = [name] if twin is None else [name, twin]
        mine = {s: torch.cat([self.state_in[state_name(n, s)] for n in names]) if twin else
                self.state_in[state_name(name, s)] for s in module.state_names}
        if self.steps == 1:
            y, new = module(current, mine)
        else:
            y, new = run_steps(module, current.unflatten(0, (self.steps, -1)), mine)
        for s, t in new.items():
            for n, part in zip(names, _parts(t, len(names)), strict=True):
                self.state_out[state_name(n, s)] = part
        if module.spiking:
            counts = spike_counts(_rows(y, 1 if self.steps == 1 else 2))
            for n, part in zip(names, _parts(counts, len(names), dim=-1), strict=True):
                self.spikes[n] = part
        return y if self.steps == 1 else y.flatten(0, 1)


def _parts(t: Tensor, n: int, dim: int = 0) -> tuple[Tensor, ...]:
    """``t`` cut into ``n`` equal parts along ``dim``; one part is ``t`` itself (not ``t.chunk(1)``, which
    the ONNX exporter writes as a Slice whose end it computes from the tensor's shape at every step)."""
    return (t,) if n == 1 else t.chunk(n, dim=dim)


# The largest count a half-precision sum holds exactly (every integer up to 2^8 in bfloat16, 2^11 in float16).
_EXACT = {torch.bfloat16: 256, torch.float16: 2048}


def _rows(y: Tensor, lead: int) -> Tensor:
    """``y`` with every axis after the first ``lead`` in one, in memory order where the channels come last
    in memory (channels-last), so that no copy is made; a count over them does not depend on the order."""
    if y.dim() == lead + 3 and not y.is_contiguous():
        order = (*range(lead), lead + 1, lead + 2, lead)
        if y.permute(order).is_contiguous():
            return y.permute(order).flatten(lead)
    return y.flatten(lead)


def spike_counts(y: Tensor) -> Tensor:
    """Spikes (0/1) summed over the last axis, exactly, in float32 for half-precision spikes.

    Half-precision spikes are summed in blocks small enough for their own type to hold every partial
    count exactly, then the blocks in float32: the same integers as a float32 sum of the whole row,
    without a float32 copy of the spikes (5x faster on a training layer under bf16 autocast)."""
    k = _EXACT.get(y.dtype)
    if k is None:
        return y.sum(-1)
    n = y.shape[-1]
    whole = n - n % k
    counts = y[..., :whole].unflatten(-1, (-1, k)).sum(-1).float().sum(-1)
    if whole < n:
        counts = counts + y[..., whole:].sum(-1, dtype=torch.float32)
    return counts


def run_steps(module: nn.Module, current: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
    """A neuron module over T steps (current (T, B, ...)): its own ``run_steps`` where it has one (the fused
    update), else its step T times (a searcher's wrapper)."""
    if isinstance(module, NeuronModule):
        return module.run_steps(current, state)
    ys = []
    for t in range(current.shape[0]):
        y, state = module(current[t], state)
        ys.append(y)
    return torch.stack(ys), state


@dataclass
class Context:
    """What a step function may use besides its node, module and inputs."""

    model: nn.Module
    step: Step
    inputs: dict[str, Tensor]
    lazy: frozenset[str] = frozenset()  # resample nodes whose readers convolve on the coarse grid


@dataclass(frozen=True)
class Handler:
    run: Callable  # (node, module or None, input values, Context) -> output value
    build: Callable | None = None  # node -> nn.Module


def _sum(node: Node, module, args: list[Tensor], ctx: Context) -> Tensor:
    total = args[0]
    for t in args[1:]:
        total = total + t
    return total


def _delay_write(node: Node, module, args: list[Tensor], ctx: Context) -> Tensor:
    ctx.step.state_out[node.attrs["state"]] = args[0]
    return args[0]


def _cost(node: Node, module, args: list[Tensor], ctx: Context) -> Tensor:
    """The matching network's 1-channel output (B, 1, D, h, w) -> cost (B, D, H, W)."""
    return F.interpolate(args[0][:, 0], size=tuple(node.attrs["size"]), mode="bilinear", align_corners=False)


def _build_op(node: Node) -> nn.Module:
    a = node.attrs
    return BUILDERS[a["op"]](a["in_channels"], a["out_channels"], a["dims"], a["stride"])


def _aux(node: Node) -> nn.Module:
    return aux_head(node.attrs["in_channels"], node.attrs["head"])


HANDLERS: dict[str, Handler] = {
    "input": Handler(lambda n, m, args, ctx: ctx.inputs[n.attrs["input"]]),
    "op": Handler(lambda n, m, args, ctx: m(args[0]), _build_op),
    "neuron": Handler(lambda n, m, args, ctx: ctx.step.neuron(n.name, m, args[0]),
                      lambda n: build_neuron(n.attrs["neuron"])),
    "sum": Handler(_sum),
    "delay_read": Handler(lambda n, m, args, ctx: ctx.step.state_in[n.attrs["state"]]),
    "delay_write": Handler(_delay_write),
    "resample": Handler(lambda n, m, args, ctx: resample(args[0], n.attrs["size"], n.name in ctx.lazy)),
    "concat": Handler(lambda n, m, args, ctx: concat_channels(args)),
    "cost_volume": Handler(lambda n, m, args, ctx: ctx.model.volume(args[0], args[1], n.attrs["disparities"],
                                                                     n.attrs["shift"])),
    "cost": Handler(_cost),
    "estimator": Handler(lambda n, m, args, ctx: estimate_disparity(args[0], n.attrs["estimator"],
                                                                    n.attrs["support"], n.attrs["step"])),
    "global_pool": Handler(lambda n, m, args, ctx: args[0].flatten(2).mean(2)),
    "avgpool": Handler(lambda n, m, args, ctx: F.avg_pool2d(args[0], n.attrs["kernel"])),
    "linear": Handler(lambda n, m, args, ctx: m(args[0].flatten(1) if n.attrs.get("flatten") else args[0]),
                      lambda n: nn.Linear(n.attrs["in_features"], n.attrs["out_features"],
                                          bias=n.attrs.get("bias", True))),
    "group_mean": Handler(lambda n, m, args, ctx: args[0].unflatten(1, (n.attrs["classes"],
                                                                         n.attrs["groups"])).mean(2)),
    "aux_head": Handler(lambda n, m, args, ctx: m(args[0]), _aux),
}


def submodule(root: nn.Module, path: tuple[str, ...]) -> nn.Module | None:
    """The module at ``path`` under ``root`` (looked up at every step: passes and searchers replace
    modules in place), or None if there is none."""
    m = root
    for key in path:
        m = m._modules.get(key)
        if m is None:
            return None
    return m


def build_modules(root: nn.Module, nodes: list[Node], handlers: dict[str, Handler] = HANDLERS) -> None:
    """Create every node's module where it says it lives (containers must exist), in ``rank`` order; a
    module two nodes share (the stereo feature network's two views) is created once."""
    for node in sorted((n for n in nodes if n.module is not None), key=lambda n: n.rank):
        if submodule(root, node.module) is not None:
            continue
        parent = submodule(root, node.module[:-1])
        module = handlers[node.kind].build(node)
        if isinstance(parent, nn.ModuleDict):
            parent[node.module[-1]] = module
        else:
            setattr(parent, node.module[-1], module)


class Scope(nn.Module):
    """A container the nodes of its scope run inside (``forward(thunk)`` calls it), so that a traced
    graph names their operators after it (``/model/NET/layers.I/...``)."""

    def forward(self, thunk: Callable[[], None]) -> None:
        thunk()


_GROUPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> (its nodes, their groups)


def _same_input_ops(nodes: list[Node], root: nn.Module | None = None) -> dict[str, list[Node]]:
    """Op nodes that read the same value with the same op, stride and width, by their first node: multistep
    training runs each such group's convolutions as one (``compiler.ops.convbn_together``). Kept per model
    (``root``) while it lives."""
    hit = _GROUPS.get(root) if root is not None else None
    if hit is not None and hit[0] is nodes:
        return hit[1]
    groups: dict[tuple, list[Node]] = {}
    for n in nodes:
        if n.kind == "op" and len(n.inputs) == 1 and n.module is not None and not n.attrs.get("training_only") \
                and n.attrs["op"] in OPS and OPS[n.attrs["op"]].kind == "conv":
            a = n.attrs
            groups.setdefault((n.inputs[0], a["op"], a["dims"], a["stride"], a["in_channels"]), []).append(n)
    found = {g[0].name: g for g in groups.values() if len(g) > 1}
    if root is not None:
        _GROUPS[root] = (nodes, found)
    return found


_READERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> (its nodes, resample -> readers)


def _lazy_upsamples(nodes: list[Node], root: nn.Module) -> frozenset[str]:
    """The resample nodes every reader of which is a convolution that computes on the coarse grid
    (``compiler.upsample``; a ``ConvBN`` of the form ``takes_upsampled`` accepts, looked up now: searchers
    replace modules), and that are no output of the model."""
    hit = _READERS.get(root)
    if hit is None or hit[0] is not nodes:
        readers: dict[str, list[Node]] = {n.name: [] for n in nodes if n.kind == "resample"}
        for n in nodes:
            for i in n.inputs:
                if i in readers:
                    readers[i].append(n)
        outputs = set(getattr(getattr(root, "plan", None), "outputs", {}).values())
        hit = (nodes, {k: v for k, v in readers.items() if v and k not in outputs})
        _READERS[root] = hit
    return frozenset(name for name, users in hit[1].items() if all(_takes_upsampled(root, n) for n in users))


def _takes_upsampled(root: nn.Module, n: Node) -> bool:
    m = submodule(root, n.module) if n.kind == "op" and n.module is not None else None
    return type(m) is ConvBN and not n.attrs.get("training_only") and len(n.inputs) == 1 and takes_upsampled(m.conv)


class _Views:
    """The stereo feature network's two instances run as one under multi-step training (``compiler.views``):
    ``take(node)`` runs a left twin on both views, skips a right one, and puts into ``env`` the values that
    nodes outside the twins (or the model's outputs) read."""

    def __init__(self, root: nn.Module, nodes: list[Node], env: dict[str, Tensor], ctx: Context, twins: dict):
        self.root, self.env, self.ctx, self.step, self.twins = root, env, ctx, ctx.step, twins
        self.right = set(twins.values())
        inside = set(twins) | self.right
        outputs = set(getattr(getattr(root, "plan", None), "outputs", {}).values())
        self.needed = {i for n in nodes if n.name not in inside for i in n.inputs if i in inside} | (outputs & inside)
        self.both: dict[str, Tensor] = {}  # left name -> its value on both views ("left": both inputs)
        self.early: dict[str, Tensor] = {}

    @classmethod
    def of(cls, root: nn.Module, nodes: list[Node], env: dict[str, Tensor], ctx: Context) -> _Views | None:
        """The views at once where the model has twin instances that allow it (``compiler.views``), else None."""
        twins = view_twins(nodes, root)
        if not twins or not batchable([submodule(root, n.module) for n in nodes if n.name in twins and n.kind == "op"]):
            return None
        return cls(root, nodes, env, ctx, twins)

    def _arg(self, name: str) -> Tensor:
        if name == "left" and name not in self.both:
            self.both[name] = interleave(self.env["left"], self.env["right"], self.step.steps)
        return self.both[name]

    def take(self, node: Node, together: dict[str, list[Node]], handlers: dict[str, Handler]) -> bool:
        if node.name in self.right:
            return True
        if node.name not in self.twins:
            return False
        stacked = STACKED.get()
        stacked.views = 2
        try:
            self.both[node.name] = self._run(node, together, handlers)
        finally:
            stacked.views = 1
        twin = self.twins[node.name]
        if node.name in self.needed or twin in self.needed:
            self.env[node.name], self.env[twin] = split(materialise(self.both[node.name]), self.step.steps)
        return True

    def _run(self, node: Node, together: dict[str, list[Node]], handlers: dict[str, Handler]) -> Tensor:
        if node.name in self.early:
            return self.early.pop(node.name)
        args = [self._arg(i) for i in node.inputs]
        value = _together(self.root, node, together, args, self.early)
        if value is not None:
            return value
        module = submodule(self.root, node.module) if node.module is not None else None
        if node.kind == "neuron":
            return self.step.neuron(node.name, module, args[0], twin=self.twins[node.name])
        return handlers[node.kind].run(node, module, args, self.ctx)


def _together(root: nn.Module, node: Node, together: dict[str, list[Node]], args: list[Tensor],
              early: dict[str, Tensor]) -> Tensor | None:
    """``node``'s value where it leads a group of convolutions run as one (``convbn_together``), the other
    members' put in ``early``; None where it does not, or the group cannot run as one."""
    if node.name not in together:
        return None
    members = together[node.name]
    outs = convbn_together([submodule(root, n.module) for n in members], args[0])
    if outs is None:
        return None
    early.update(zip((n.name for n in members), outs, strict=True))
    return early.pop(node.name)


def run_graph(root: nn.Module, nodes: list[Node], inputs: dict[str, Tensor], step: Step,
              handlers: dict[str, Handler] = HANDLERS) -> dict[str, Tensor]:
    """One time step over ``nodes`` in order; returns every value by name. A run of nodes with the same
    ``scope`` runs inside the ``Scope`` modules on that path; training-only nodes run in training mode only."""
    env: dict[str, Tensor] = {}
    fast = root.training and STACKED.get() is not None and handlers["op"] is HANDLERS["op"] \
        and handlers["neuron"] is HANDLERS["neuron"]
    lazy = fast and handlers["resample"] is HANDLERS["resample"]
    ctx = Context(root, step, inputs, _lazy_upsamples(nodes, root) if lazy else frozenset())
    together = _same_input_ops(nodes, root) if fast else {}
    early: dict[str, Tensor] = {}  # outputs computed with an earlier node's (``together``)
    paired = _Views.of(root, nodes, env, ctx) if fast else None

    def run(group: list[Node]) -> None:
        for node in group:
            if node.attrs.get("training_only") and not root.training:
                continue
            if paired is not None and paired.take(node, together, handlers):
                continue
            if node.name in early:
                env[node.name] = early.pop(node.name)
                continue
            value = _together(root, node, together, [env[i] for i in node.inputs], early)
            if value is not None:
                env[node.name] = value
                continue
            module = submodule(root, node.module) if node.module is not None else None
            env[node.name] = handlers[node.kind].run(node, module, [env[i] for i in node.inputs], ctx)

    for scope, group in itertools.groupby(nodes, key=lambda n: n.scope):
        thunk = functools.partial(run, list(group))
        scopes = [m for m in (submodule(root, scope[:k]) for k in range(1, len(scope) + 1)) if isinstance(m, Scope)]
        for module in reversed(scopes):
            thunk = functools.partial(module, thunk)
        thunk()
    return env
