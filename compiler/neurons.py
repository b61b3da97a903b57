"""Spiking neurons with explicit state, and the surrogate gradients of the Heaviside spike.

All neurons are one discrete time step ``y, state = neuron(I, state)``; state is a dict of tensors
of the input's shape, zero at t = 0. Equations (Che et al., journal version, eqs. 1-8), with
``v`` the membrane potential carried after the reset of the previous step:

- LIF:  u[t] = tau * v[t-1] + I[t];  y[t] = H(u[t] - V_th);  v[t] = u[t] * (1 - y[t])   (hard reset)
        or v[t] = u[t] - V_th * y[t] (soft reset)
- IF:   the LIF with tau = 1
- ALIF: u[t] = tau * v[t-1] + I[t];  A[t] = V_th + beta * a[t];  y[t] = H(u[t] - A[t]);
        a[t+1] = tau_a * a[t] + y[t]   (a is carried as state)
- LI:   u[t] = tau * u[t-1] + I[t];  output u[t] (a leaky integrator that never fires)
- ReLU: y[t] = max(0, I[t]); no state (for hybrid ANN/SNN networks)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .ir import Neuron

# ---------------------------------------------------------------------------------------- surrogates
# Each takes v = u - V_th (distance to the threshold) and the temperature b, returns dy/du.


def dspike_grad(v: Tensor, b: float) -> Tensor:
    """Dspike (supplement eq. 7): b/2 (1 - tanh^2(b (x - 1/2))) / tanh(b/2) for 0 <= x <= 1, x = v + 1/2."""
    x = v + 0.5
    g = (b / 2) * (1 - torch.tanh(b * (x - 0.5)) ** 2) / math.tanh(b / 2)
    return torch.where((x >= 0) & (x <= 1), g, torch.zeros_like(g))


def triangle_grad(v: Tensor, b: float) -> Tensor:
    """Triangle (supplement eq. 8): b max(0, 1 - |x - 1/2|), x = v + 1/2."""
    return b * torch.clamp(1 - torch.abs(v), min=0)


def superspike_grad(v: Tensor, b: float) -> Tensor:
    """SuperSpike (supplement eq. 9): 1 / (b |x| + 1)^2, x = v."""
    return 1.0 / (b * torch.abs(v) + 1) ** 2


def arctan_grad(v: Tensor, b: float) -> Tensor:
    """ArcTan (supplement eq. 10): (b/3) / (1 + (pi x)^2), x = v."""
    return (b / 3) / (1 + (math.pi * v) ** 2)


SURROGATE_GRADS = {"dspike": dspike_grad, "triangle": triangle_grad,
                   "superspike": superspike_grad, "arctan": arctan_grad}


class _Spike(torch.autograd.Function):
    """Heaviside forward, surrogate backward."""

    @staticmethod
    def forward(ctx, v: Tensor, kind: str, b: float) -> Tensor:
        ctx.save_for_backward(v)
        ctx.kind, ctx.b = kind, b
        return (v >= 0).to(v.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (v,) = ctx.saved_tensors
        return grad * SURROGATE_GRADS[ctx.kind](v, ctx.b), None, None


def spike(v: Tensor, kind: str = "dspike", b: float = 3.0) -> Tensor:
    """y = H(v) with the named surrogate gradient. Exported to ONNX as a comparison."""
    if torch.onnx.is_in_onnx_export() or not v.requires_grad:
        return (v >= 0).to(v.dtype)
    return _Spike.apply(v, kind, b)


# ------------------------------------------------------------------------------------------- neurons
class NeuronModule(nn.Module):
    """One neuron layer. ``forward(I, state) -> (y, new_state)``; ``state_names`` lists its state."""

    state_names: tuple[str, ...] = ()
    spiking = True

    def __init__(self, spec: Neuron):
        super().__init__()
        self.spec = spec
        # Time constants are buffers so that TPS can move them and checkpoints keep them.
        self.register_buffer("tau", torch.tensor(float(spec.tau)))
        self.register_buffer("b", torch.tensor(float(spec.surrogate.b)))

    def fire(self, v: Tensor) -> Tensor:
        return spike(v, self.spec.surrogate.kind, float(self.b))

    def extra_repr(self) -> str:
        s = self.spec
        return f"tau={s.tau}, threshold={s.threshold}, reset={s.reset}, surrogate={s.surrogate.kind}(b={s.surrogate.b})"


class LIF(NeuronModule):
    state_names = ("v",)

    def reset(self, u: Tensor, y: Tensor) -> Tensor:
        if self.spec.reset == "hard":
            return u * (1 - y)
        return u - self.spec.threshold * y

    def forward(self, current: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        u = self.tau * state["v"] + current
        y = self.fire(u - self.spec.threshold)
        return y, {"v": self.reset(u, y)}


class IF(LIF):
    def __init__(self, spec: Neuron):
        super().__init__(spec)
        self.tau.fill_(1.0)


class ALIF(LIF):
    state_names = ("v", "a")

    def forward(self, current: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        u = self.tau * state["v"] + current
        threshold = self.spec.threshold + self.spec.beta * state["a"]
        y = self.fire(u - threshold)
        v = u * (1 - y) if self.spec.reset == "hard" else u - threshold * y
        return y, {"v": v, "a": self.spec.tau_a * state["a"] + y}


class LI(NeuronModule):
    state_names = ("v",)
    spiking = False

    def forward(self, current: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        u = self.tau * state["v"] + current
        return u, {"v": u}


class ReLU(NeuronModule):
    spiking = False

    def forward(self, current: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        return torch.relu(current), {}


NEURON_MODULES: dict[str, type[NeuronModule]] = {"lif": LIF, "if": IF, "alif": ALIF, "li": LI, "relu": ReLU}


def build_neuron(spec: Neuron) -> NeuronModule:
    return NEURON_MODULES[spec.kind](spec)
