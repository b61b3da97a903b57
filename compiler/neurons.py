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
from .registry import NEURONS, Registry

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
    """One neuron layer: ``forward(I, state) -> (y, new_state)``, split as in SpikingJelly's ``BaseNode``
    into ``charge`` (the membrane potential u from the input and the carried state), ``fire`` (the output
    from u) and ``reset`` (the state carried to the next step). A kind's facts (state names, whether it
    spikes, its NIR form, which searchers may search it) are its ``compiler.registry.NEURONS`` entry."""

    def __init__(self, spec: Neuron):
        super().__init__()
        self.spec = spec
        # Time constants are buffers so that TPS can move them and checkpoints keep them.
        self.register_buffer("tau", torch.tensor(float(spec.tau)))
        self.register_buffer("b", torch.tensor(float(spec.surrogate.b)))

    @property
    def state_names(self) -> tuple[str, ...]:
        return NEURONS[self.spec.kind].state

    @property
    def spiking(self) -> bool:
        return NEURONS[self.spec.kind].spiking

    def spike(self, v: Tensor) -> Tensor:
        """H(v) with this layer's surrogate gradient and temperature."""
        return spike(v, self.spec.surrogate.kind, float(self.b))

    def charge(self, current: Tensor, state: dict[str, Tensor], tau: Tensor | None = None) -> Tensor:
        """u[t] = tau * v[t-1] + I[t] (``tau``: this layer's, unless a searcher tries another)."""
        return (self.tau if tau is None else tau) * state["v"] + current

    def fire(self, u: Tensor, state: dict[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def reset(self, u: Tensor, y: Tensor, state: dict[str, Tensor]) -> dict[str, Tensor]:
        raise NotImplementedError

    def forward(self, current: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        u = self.charge(current, state)
        y = self.fire(u, state)
        return y, self.reset(u, y, state)

    def extra_repr(self) -> str:
        s = self.spec
        return f"tau={s.tau}, threshold={s.threshold}, reset={s.reset}, surrogate={s.surrogate.kind}(b={s.surrogate.b})"


class LIF(NeuronModule):
    def threshold(self, state: dict[str, Tensor]) -> Tensor | float:
        return self.spec.threshold

    def fire(self, u: Tensor, state: dict[str, Tensor]) -> Tensor:
        return self.spike(u - self.threshold(state))

    def reset(self, u: Tensor, y: Tensor, state: dict[str, Tensor]) -> dict[str, Tensor]:
        if self.spec.reset == "hard":
            return {"v": u * (1 - y)}
        return {"v": u - self.threshold(state) * y}


class IF(LIF):
    def __init__(self, spec: Neuron):
        super().__init__(spec)
        self.tau.fill_(1.0)


class ALIF(LIF):
    def threshold(self, state: dict[str, Tensor]) -> Tensor:
        return self.spec.threshold + self.spec.beta * state["a"]

    def reset(self, u: Tensor, y: Tensor, state: dict[str, Tensor], tau_a: Tensor | None = None) -> dict[str, Tensor]:
        """a[t+1] = tau_a * a[t] + y[t] (``tau_a``: this layer's, unless a searcher tries another)."""
        tau_a = self.spec.tau_a if tau_a is None else tau_a
        return {**super().reset(u, y, state), "a": tau_a * state["a"] + y}


class LI(NeuronModule):
    def fire(self, u: Tensor, state: dict[str, Tensor]) -> Tensor:
        return u

    def reset(self, u: Tensor, y: Tensor, state: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"v": u}


class ReLU(NeuronModule):
    def charge(self, current: Tensor, state: dict[str, Tensor], tau: Tensor | None = None) -> Tensor:
        return current

    def fire(self, u: Tensor, state: dict[str, Tensor]) -> Tensor:
        return torch.relu(u)

    def reset(self, u: Tensor, y: Tensor, state: dict[str, Tensor]) -> dict[str, Tensor]:
        return {}


# Kind -> its step definition; a new kind is one ``NEURONS.register`` and one ``NEURON_MODULES.register``.
NEURON_MODULES = Registry("neuron module")
for _kind, _cls in (("lif", LIF), ("if", IF), ("alif", ALIF), ("li", LI), ("relu", ReLU)):
    NEURON_MODULES.register(_kind, _cls)


def build_neuron(spec: Neuron) -> NeuronModule:
    return NEURON_MODULES[spec.kind](spec)
