"""The node kinds a NIR graph adds to the lowered graph (``compiler.nir_import``), and their torch handlers
(``compiler.interpret.Handler``: a module factory and a step function), run by the same interpreter, traced
by the same ONNX export as a genotype's nodes.

Kinds (``attrs`` per kind; arrays are float32 numpy arrays, shapes exclude the batch):

- ``nir_linear``  ``Linear`` / ``Affine``: ``weight`` (out, in), ``bias`` or None
- ``nir_conv``    ``Conv1d`` / ``Conv2d``: ``dims``, ``weight``, ``bias``, ``stride``, ``padding``, ``dilation``,
                  ``groups`` (numeric padding, per dimension)
- ``nir_pool``    ``SumPool2d`` / ``AvgPool2d``: ``mode`` (sum, avg), ``kernel``, ``stride``, ``padding``
- ``nir_scale``   ``Scale``: ``scale`` (broadcast to the node's shape)
- ``reshape``     ``Flatten``, and the contract's [batch, C, H, W] input to the graph's own input shape
- ``nir_neuron``  ``LIF``, ``IF``, ``LI``, ``I``, ``CubaLIF``, ``CubaLI``, ``Threshold``: the forward-Euler
                  step at the graph's ``dt`` (``coefficients``; the equations are in ``NIRNeuron``)
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .interpret import HANDLERS, Handler


def _buffer(module: nn.Module, name: str, value) -> None:
    module.register_buffer(name, torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)))


class NIRNeuron(nn.Module):
    """One NIR neuron layer, stepped by forward Euler at ``dt`` with coefficients computed in float64 and
    rounded once to float32 (``compiler.nir_import.coefficients``)::

        synaptic current (CubaLIF, CubaLI):  i <- a_syn * i + b_syn * x;  x <- i
        membrane:                            v <- a * v + b * x + c
        firing (LIF, IF, CubaLIF):           z = v > v_threshold;  v <- v_reset where z;  output z
        Threshold:                           z = x > threshold (no state);  output z
        LI, I, CubaLI:                       output v

    A coefficient that is exactly 1 (a multiplication) or 0 (an addition) everywhere is left out, so an
    snnTorch ``Leaky`` (a = beta, b = 1, c = 0) runs as ``beta * v + x``, as snnTorch computes it."""

    def __init__(self, model: str, coefficients: dict[str, np.ndarray], fires: bool):
        super().__init__()
        self.model, self.fires = model, fires
        self.synaptic = "a_syn" in coefficients
        self.skip = {k for k, v in coefficients.items() if (k.startswith("a") or k.startswith("b")) and np.all(v == 1)
                     or k == "c" and np.all(v == 0)}
        for key, value in coefficients.items():
            _buffer(self, key, value)

    @property
    def state_names(self) -> tuple[str, ...]:
        if self.model == "threshold":
            return ()
        return ("i", "v") if self.synaptic else ("v",)

    @property
    def spiking(self) -> bool:
        return self.fires

    def _affine(self, state: Tensor, x: Tensor, a: str, b: str, c: str | None) -> Tensor:
        out = state if a in self.skip else getattr(self, a) * state
        out = out + (x if b in self.skip else getattr(self, b) * x)
        return out if c is None or c in self.skip else out + getattr(self, c)

    def forward(self, x: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        if self.model == "threshold":
            return (x > self.v_threshold).to(x.dtype), {}
        new: dict[str, Tensor] = {}
        if self.synaptic:
            x = new["i"] = self._affine(state["i"], x, "a_syn", "b_syn", None)
        v = self._affine(state["v"], x, "a", "b", "c")
        if not self.fires:
            new["v"] = v
            return v, new
        fired = v > self.v_threshold
        new["v"] = torch.where(fired, self.v_reset, v)
        return fired.to(v.dtype), new


def _linear(node) -> nn.Module:
    w, b = node.attrs["weight"], node.attrs["bias"]
    lin = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(w))
        if b is not None:
            lin.bias.copy_(torch.from_numpy(b))
    return lin


def _conv(node) -> nn.Module:
    a = node.attrs
    w = a["weight"]
    cls = nn.Conv1d if a["dims"] == 1 else nn.Conv2d
    conv = cls(w.shape[1] * a["groups"], w.shape[0], tuple(w.shape[2:]), stride=a["stride"], padding=a["padding"],
               dilation=a["dilation"], groups=a["groups"], bias=a["bias"] is not None)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(w))
        if a["bias"] is not None:
            conv.bias.copy_(torch.from_numpy(a["bias"]))
    return conv


class Scale(nn.Module):
    def __init__(self, scale: np.ndarray):
        super().__init__()
        _buffer(self, "scale", scale)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


def _pool(node, module, args: list[Tensor], ctx) -> Tensor:
    a = node.attrs
    kw = {"kernel_size": a["kernel"], "stride": a["stride"], "padding": a["padding"], "count_include_pad": True}
    if a["mode"] == "sum":
        return F.avg_pool2d(args[0], divisor_override=1, **kw)
    return F.avg_pool2d(args[0], **kw)


# The handlers of an imported graph: the interpreter's own (input, sum, delay_read, delay_write) and these.
NIR_HANDLERS: dict[str, Handler] = {
    **HANDLERS,
    "nir_linear": Handler(lambda n, m, args, ctx: m(args[0]), _linear),
    "nir_conv": Handler(lambda n, m, args, ctx: m(args[0]), _conv),
    "nir_pool": Handler(_pool),
    "nir_scale": Handler(lambda n, m, args, ctx: m(args[0]), lambda n: Scale(n.attrs["scale"])),
    "reshape": Handler(lambda n, m, args, ctx: args[0].reshape(-1, *n.attrs["shape"])),
    "nir_neuron": Handler(lambda n, m, args, ctx: ctx.step.neuron(n.name, m, args[0]),
                          lambda n: NIRNeuron(n.attrs["model"], n.attrs["coefficients"], n.attrs["fires"])),
}
