"""NIR export (Neuromorphic Intermediate Representation, ``nir`` 1.0.8): the compiled network as a
graph of NIR nodes in an HDF5 file, for other SNN frameworks and neuromorphic chips.

    from compiler import build_model, export_nir
    graph = export_nir(model, "model.nir")     # folds BN on a copy, writes atomically, returns the NIRGraph

NIR neurons are continuous-time; a reader discretises them (forward Euler at a step ``dt`` it must be
told: NIR files have no dt field). This project's neurons are one discrete step (compiler/neurons.py):

    LIF:  u[t] = decay * v[t-1] + I[t];  spike if u[t] >= V_th;  v[t] = u[t] * (1 - spike)   (hard reset to 0)

Euler at step DT of NIR's LIF ``tau dv/dt = (v_leak - v) + r I`` is ``v <- (1 - DT/tau) v + (DT/tau) r I``,
so with DT = 1e-4 (the step snnTorch's importer assumes):

    tau = DT / (1 - decay)   (float64, so that float32(1 - DT/tau) == float32(decay) exactly)
    r = 1 / (1 - decay)      (float64: (DT/tau) r == 1)
    v_leak = 0, v_reset = 0  (hard reset to zero; NIR has no subtract reset, so soft reset has no form)
    v_threshold = nextafter(float32(V_th), -inf): NIR fires on v > v_threshold, this project on u >= V_th,
                  and for float32 u these agree exactly
    IF: r = 1 / DT, v_threshold as above;  LI: tau and r as for the LIF, no threshold.

Graph form: a node's incoming edges are summed (NIR's rule), so a node's sum of currents or spikes
needs no node of its own; BN is folded into each ``Conv2d`` (bias always written); ``avgpool3x3``
(count_include_pad=False) is ``SumPool2d`` then ``Scale`` by 1/count per position; nearest downsampling
by a whole factor is ``SumPool2d`` with kernel 1; a cell's channel concatenation is one 1x1 ``Conv2d``
per output node that places its channels (weights 0/1); a delayed edge is its op then ``Delay(DT)``;
the classifier head is ``AvgPool2d`` over the whole map, ``Flatten(start_dim=0)`` (NIR dims exclude the
batch) and ``Affine``. docs/deploy.md gives the full mapping and the readers' known traps.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import nir
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import GenotypeError
from .fold import fold_batchnorm
from .interpret import submodule
from .model import SNNModel
from .neurons import NeuronModule
from .ops import AvgPool, FoldedConv
from .registry import NEURONS

DT = 1e-4  # the Euler step a reader must use (snnTorch's importer hard-codes it)
NIR_NEURONS = "LIF, IF or LI with hard reset"


class NIRExportError(GenotypeError):
    """The genotype uses something NIR cannot express; the message names the genotype key."""


@dataclass(frozen=True)
class _Value:
    """A tensor of the network as NIR sees it: the NIR nodes whose outputs sum to it."""

    terms: tuple[str, ...]
    shape: tuple[int, ...]  # (C, H, W), no batch


def _full(shape, value, dtype) -> np.ndarray:
    return np.full(shape, value, dtype=dtype)


def lif_tau(decay: float, dt: float = DT) -> np.float64:
    """NIR tau (float64) with float32(1 - dt / tau) == float32(decay), the reader's decay factor."""
    target = np.float32(decay)
    tau = np.float64(dt) / (1.0 - np.float64(target))
    for _ in range(64):  # tau = dt/(1-decay) is exact in practice; nudge by ulps otherwise
        got = np.float32(1.0 - np.float64(dt) / tau)
        if got == target:
            return tau
        tau = np.nextafter(tau, np.inf if got < target else -np.inf)
    raise ValueError(f"no float64 tau reproduces the decay {decay!r} at dt {dt}")


def threshold_for(v_th: float) -> np.float32:
    """The NIR threshold (strict ``v > thr``) equal to the project's ``u >= V_th`` in float32."""
    return np.nextafter(np.float32(v_th), np.float32(-np.inf))


class _Builder:
    """Collects the NIR nodes and edges of a folded model, node by node of its lowered graph."""

    def __init__(self, model: SNNModel):
        self.model, self.g, self.plan = model, model.genotype, model.plan
        self.nodes: dict[str, nir.NIRNode] = {}
        self.edges: list[tuple[str, str]] = []
        self._resampled: dict[tuple, _Value] = {}

    def error(self, path: str, message: str, hint: str | None = None) -> NIRExportError:
        return NIRExportError(message, path=path, file=self.g.file or None, hint=hint)

    def add(self, name: str, node: nir.NIRNode, inputs: _Value | None, shape: tuple[int, ...]) -> _Value:
        """Add ``node`` fed by the sum of ``inputs``; a term counted k times goes through Scale(k)."""
        if name in self.nodes:
            raise ValueError(f"NIR node {name!r} made twice")  # a bug of this module, not user input
        self.nodes[name] = node
        if inputs is not None:
            for term, count in Counter(inputs.terms).items():
                if count > 1:
                    scaled = f"{name}.input.{term}.x{count}"
                    self.add(scaled, nir.Scale(_full(inputs.shape, float(count), np.float32)),
                             _Value((term,), inputs.shape), inputs.shape)
                    term = scaled
                self.edges.append((term, name))
        return _Value((name,), shape)

    # -- ops ----------------------------------------------------------------------------------
    def conv(self, conv: nn.Module, x: _Value, name: str, path: str) -> _Value:
        if not isinstance(conv, nn.Conv2d):
            raise self.error(path, f"{type(conv).__name__}: NIR has no 3-D convolution (it has Conv1d and Conv2d)")
        weight = conv.weight.detach().cpu().numpy().astype(np.float32)
        bias = (conv.bias.detach().cpu().numpy() if conv.bias is not None else np.zeros(weight.shape[0])).astype(
            np.float32)
        h, w = x.shape[1:]
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = conv.kernel_size, conv.stride, conv.padding, conv.dilation
        out = (weight.shape[0], (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1)
        node = nir.Conv2d(input_shape=(h, w), weight=weight, stride=conv.stride, padding=conv.padding,
                          dilation=conv.dilation, groups=conv.groups, bias=bias)
        return self.add(name, node, x, out)

    def op(self, node, module: nn.Module, args: list[_Value]) -> _Value:
        """An edge or layer op: conv (BN folded), identity (skip) or 3x3 average pooling."""
        x, name, path = args[0], node.attrs["at"], node.path
        if isinstance(module, FoldedConv):
            return self.conv(module.conv, x, f"{name}.conv", path)
        if isinstance(module, nn.Identity):
            return x
        if isinstance(module, AvgPool) and isinstance(module.pool, nn.AvgPool2d):
            k, p = module.pool.kernel_size, module.pool.padding
            summed = self.add(f"{name}.sumpool", nir.SumPool2d(kernel_size=np.array([k, k]), stride=np.array([1, 1]),
                                                               padding=np.array([p, p])), x, x.shape)
            ones = torch.ones(1, 1, *x.shape[1:])
            count = F.conv2d(ones, torch.ones(1, 1, k, k), padding=p)[0, 0].numpy()  # (H, W) cells in the window
            scale = np.broadcast_to((1.0 / count).astype(np.float32), x.shape).copy()
            return self.add(f"{name}.scale", nir.Scale(scale), summed, x.shape)
        raise self.error(path, f"{type(module).__name__} has no NIR form (NIR has 2-D convolution and pooling)")

    def resample(self, node, module, args: list[_Value]) -> _Value:
        """Nearest resampling to a trellis level: a whole-factor downsampling is SumPool2d(kernel 1)."""
        x, target = args[0], node.attrs["size"]
        key = (x.terms, tuple(target))
        if key in self._resampled:
            return self._resampled[key]
        (h, w), (th, tw) = x.shape[1:], target
        size = f"{h}x{w} -> {th}x{tw}"
        if th > h or tw > w:
            raise self.error(f"{node.path}.level", f"nearest upsampling {size}: NIR has no upsampling node",
                             "keep this network's levels from going back up, or export to ONNX")
        if h % th or w % tw:
            raise self.error(f"{node.path}.level", f"nearest downsampling {size} is not by a whole factor, so it is "
                             "no strided selection NIR can express", "use input sizes divisible by the level rates")
        part = node.attrs["part"]
        name = f"{node.attrs['at']}.resample" + (f".{part}" if part else "")
        pool = nir.SumPool2d(kernel_size=np.array([1, 1]), stride=np.array([h // th, w // tw]),
                             padding=np.array([0, 0]))
        out = self.add(name, pool, x, (x.shape[0], th, tw))
        self._resampled[key] = out
        return out

    # -- neurons ------------------------------------------------------------------------------
    def neuron(self, node, module: NeuronModule, args: list[_Value]) -> _Value:
        """A neuron layer: NIR LIF / IF / LI as its kind's ``nir`` form says (module docstring)."""
        name, x = node.name, args[0]
        layer = self.plan.neurons[name]
        spec, shape = layer.neuron, layer.shape
        where = layer.site.path
        form = NEURONS[spec.kind].nir
        if form is None:
            raise self.error(where, f"neuron kind {spec.kind!r} (in {name}) has no NIR form (NIR has {NIR_NEURONS})",
                             "use kind lif, if or li for a NIR export")
        fires = form == "lif"
        if fires and spec.reset != "hard":
            raise self.error(where, f"{spec.reset} reset (in {name}): NIR neurons reset to v_reset, there is no "
                             "subtract reset", "use reset: hard for a NIR export")
        decay = float(module.tau)
        meta = {"project_neuron": name, "project_kind": spec.kind, "project_decay": decay, "dt": DT}
        if fires:
            meta["project_threshold"] = float(spec.threshold)
        if not 0.0 <= decay <= 1.0:
            raise self.error(where, f"decay factor tau = {decay} (in {name}) is outside [0, 1]",
                             "a NIR time constant needs 0 <= tau <= 1")
        thr = _full(shape, threshold_for(spec.threshold), np.float32) if fires else None
        zeros = _full(shape, 0.0, np.float32)
        if decay == 1.0:  # IF (or a LIF whose trained tau reached 1); an LI without leak is an integrator
            r = _full(shape, 1.0 / DT, np.float64)
            nir_node = (nir.IF(r=r, v_threshold=thr, v_reset=zeros, metadata=meta) if fires
                        else nir.I(r=r, metadata=meta))
        else:
            tau = lif_tau(decay)
            tau_a, r_a = _full(shape, tau, np.float64), _full(shape, tau / np.float64(DT), np.float64)
            if fires:
                nir_node = nir.LIF(tau=tau_a, r=r_a, v_leak=zeros, v_threshold=thr, v_reset=zeros.copy(),
                                   metadata=meta)
            else:
                nir_node = nir.LI(tau=tau_a, r=r_a, v_leak=zeros, metadata=meta)
        return self.add(name, nir_node, x, shape)

    # -- cells and the head --------------------------------------------------------------------
    def delay_write(self, node, module, args: list[_Value]) -> _Value:
        """A delayed edge: its op's output through Delay(DT), read by the edge's consumer."""
        x = args[0]
        return self.add(f"{node.attrs['at']}.delay", nir.Delay(delay=_full(x.shape, DT, np.float64)), x, x.shape)

    def concat(self, node, module, outs: list[_Value]) -> _Value:
        """Channel concatenation: per part a 1x1 Conv2d with 0/1 weights that places its channels."""
        total = sum(v.shape[0] for v in outs)
        spatial = outs[0].shape[1:]
        terms, offset = [], 0
        for value, part in zip(outs, node.attrs["parts"], strict=True):
            c = value.shape[0]
            weight = np.zeros((total, c, 1, 1), np.float32)
            weight[offset + np.arange(c), np.arange(c), 0, 0] = 1.0
            conv = nir.Conv2d(input_shape=spatial, weight=weight, stride=1, padding=0, dilation=1, groups=1,
                              bias=np.zeros(total, np.float32), metadata={"project_concat_offset": offset})
            terms += self.add(f"{node.attrs['at']}.concat.{part}", conv, value, (total, *spatial)).terms
            offset += c
        return _Value(tuple(terms), (total, *spatial))

    def cost_volume(self, node, module, args: list[_Value]) -> _Value:
        raise self.error("head.cost_volume", "the stereo cost volume (disparity-shifted concatenation) and the "
                         "3-D matching network have no NIR form", "export stereo models to ONNX")

    def global_pool(self, node, module, args: list[_Value]) -> _Value:
        """AvgPool2d over the whole map, then Flatten (NIR dims exclude the batch)."""
        c, h, w = args[0].shape
        pooled = self.add("head.avgpool", nir.AvgPool2d(kernel_size=np.array([h, w]), stride=np.array([h, w]),
                                                        padding=np.array([0, 0])), args[0], (c, 1, 1))
        return self.add("head.flatten", nir.Flatten(input_type={"input": np.array([c, 1, 1])}, start_dim=0,
                                                    end_dim=-1), pooled, (c,))

    def avgpool(self, node, module, args: list[_Value]) -> _Value:
        """SNASNet's vectorize block: average pooling by ``kernel``."""
        k = node.attrs["kernel"]
        return self.add("head.pool", nir.AvgPool2d(kernel_size=np.array([k, k]), stride=np.array([k, k]),
                                                   padding=np.array([0, 0])), args[0], node.shape)

    def linear(self, node, lin: nn.Module, args: list[_Value]) -> _Value:
        """The classifier (Affine), or the vectorize block's Flatten and Linear without bias."""
        x, weight = args[0], lin.weight.detach().cpu().numpy().astype(np.float32)
        name = "head.linear" if node.name == "head:linear" else "head.vectorize"
        if node.attrs.get("flatten"):
            x = self.add(f"{name}.flatten", nir.Flatten(input_type={"input": np.array(x.shape)}, start_dim=0,
                                                        end_dim=-1), x, (int(np.prod(x.shape)),))
        if lin.bias is None:
            return self.add(name, nir.Linear(weight=weight), x, node.shape)
        return self.add(name, nir.Affine(weight=weight, bias=lin.bias.detach().cpu().numpy().astype(np.float32)),
                        x, node.shape)

    def group_mean(self, node, module, args: list[_Value]) -> _Value:
        """The mean of each class's group of outputs: a fixed Linear (1/groups on each class's block)."""
        classes, groups = node.attrs["classes"], node.attrs["groups"]
        weight = np.kron(np.eye(classes), np.full((1, groups), 1.0 / groups)).astype(np.float32)
        return self.add("head.group_mean", nir.Linear(weight=weight), args[0], node.shape)


# One handler per node kind of the lowered graph: (builder, node, module, input values) -> value.
NIR_HANDLERS = {
    "input": lambda b, n, m, args: b.add(n.name, nir.Input(input_type={"input": np.array(n.shape)}), None, n.shape),
    "op": _Builder.op,
    "neuron": _Builder.neuron,
    "sum": lambda b, n, m, args: _Value(tuple(s for t in args for s in t.terms), n.shape),
    "delay_read": lambda b, n, m, args: _Value((f"{n.attrs['at']}.delay",), n.shape),
    "delay_write": _Builder.delay_write,
    "resample": _Builder.resample,
    "concat": _Builder.concat,
    "cost_volume": _Builder.cost_volume,
    "global_pool": _Builder.global_pool,
    "linear": _Builder.linear,
    "avgpool": _Builder.avgpool,
    "group_mean": _Builder.group_mean,
}


def to_nir(model: SNNModel) -> nir.NIRGraph:
    """The NIR graph of a classification model (BN folded on a copy). Raises NIRExportError, naming
    the genotype key, for anything NIR cannot express (stereo heads, 3-D convolutions, upsampling,
    ALIF / ReLU / soft-reset neurons)."""
    was_training = model.training
    model.eval()
    try:
        folded = fold_batchnorm(model)
    finally:
        model.train(was_training)
    b = _Builder(folded)
    values: dict[str, _Value] = {}
    for node in b.plan.graph:
        if node.attrs.get("training_only"):
            continue
        module = submodule(folded, node.module) if node.module is not None else None
        values[node.name] = NIR_HANDLERS[node.kind](b, node, module, [values[i] for i in node.inputs])
    out = values[b.plan.outputs[model.output_name]]
    b.add(model.output_name, nir.Output(output_type={"output": np.array(out.shape)}), out, out.shape)
    g = b.g
    meta = {"dt": DT, "producer": "snn-search-toolchain", "genotype": g.name, "time_steps": int(g.input.timesteps),
            "neuron_rule": "u = decay*v + I; spike if u >= threshold; v = u*(1-spike) (hard reset to 0)"}
    return nir.NIRGraph(nodes=b.nodes, edges=b.edges, metadata=meta)


def write_nir(graph: nir.NIRGraph, path: str | Path) -> None:
    """Write a NIR graph to ``path`` (HDF5 via ``nir.write``) atomically: a file in a temporary folder
    beside it, fsync, rename; a failed write leaves no partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmp:
        staged = Path(tmp) / path.name
        nir.write(staged, graph)
        with open(staged, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(staged, path)


def export_nir(model: SNNModel, path: str | Path) -> nir.NIRGraph:
    """Write ``to_nir(model)`` to ``path`` and return the graph; the graph is complete (or the export
    refused) before anything is written."""
    graph = to_nir(model)
    write_nir(graph, path)
    return graph


__all__ = ["DT", "NIRExportError", "export_nir", "lif_tau", "threshold_for", "to_nir", "write_nir"]
